r"""ImageNet-10 at 224 px (the paper's natural-image experiments).

Data: a folder <root>/{train,val}/<WNID or class name>/<image> with the ten classes in the
official order (config_lib.IMAGENET10_CLASSES). Set the root with --config.data.manual_dir
or $FREQJAX_IMAGENET10_DIR. Train images are stored at 256 px (room for RandomResizedCrop),
test images at 224 px exactly as the official Resize((224, 224)).

Variants (comma-separated): a model — resnet18 (default) | resnet50 | vgg16 — and an
augmentation study — autoaugment | augmix | sin (train on a stylized copy, folder from
--config.data.manual_dir or $FREQJAX_IMAGENET10_SIN_DIR; test on the original set).

  python launch/pipeline.py --config=configs/imagenet10.py:resnet18 --workdir=runs/in10_r18 \
      --config.data.manual_dir=/data/imagenet10
  python launch/train.py --config=configs/imagenet10.py:resnet50,augmix \
      --workdir=runs/in10_r50_augmix
  python launch/pipeline.py --config=configs/imagenet10.py:vgg16,sin --workdir=runs/in10_vgg16_sin
  python launch/shortcut_test.py --config=configs/imagenet10.py:resnet18 --workdir=runs/in10_r18 \
      --config.analysis.ood_dirs='("/data/imagenet-sct/cartoon","/data/imagenet10-stylized")'
"""

import os

from freqjax import config as config_lib

VARIANTS = ("resnet18", "resnet50", "vgg16", "autoaugment", "augmix", "sin")


def get_config(arg=None):
  tokens = config_lib.parse_variant(arg or "resnet18", VARIANTS)
  models = [t for t in tokens if t in ("resnet18", "resnet50", "vgg16")] or ["resnet18"]
  c = config_lib.base_config()
  d = c.data
  d.kind = "folder"
  d.name = "imagenet10"
  d.manual_dir = os.environ.get("FREQJAX_IMAGENET10_DIR", "")
  d.image_size, d.storage_size = 224, 256
  d.num_classes = 10
  d.class_names = tuple(name for name, _ in config_lib.IMAGENET10_CLASSES)
  d.class_folders = tuple(wnid for _, wnid in config_lib.IMAGENET10_CLASSES)
  d.mean, d.std = config_lib.IMAGENET10_MEAN, config_lib.IMAGENET10_STD
  d.train_split, d.test_split = "train", "val"
  c.augment.crop = "random_resized_crop"
  c.model.name = models[0]
  c.train.eval_batch_size = 128
  c.analysis.batch_size = 64
  c.analysis.ood_split = "val"
  c.dynamics.views = ("full", "keep_b1", "remove_b1")
  c.dynamics.bands = ((0.0, 16.0), (16.0, 1e9))
  c.dynamics.until_step = 1200
  if "autoaugment" in tokens:
    c.augment.policy = "autoaugment"
  if "augmix" in tokens:
    c.augment.policy = "augmix"
  if "sin" in tokens:
    d.name = "imagenet10_sin"
    d.test_manual_dir = d.manual_dir
    d.manual_dir = os.environ.get("FREQJAX_IMAGENET10_SIN_DIR", "")
  if len(tokens) > 1 or tokens != ["resnet18"]:
    d.name += "_" + "_".join(tokens)
  return c
