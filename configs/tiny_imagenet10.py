r"""The real 64 px Tiny ImageNet stand-in for ImageNet-10 (shared/data/tiny-imagenet-10).

Ten classes in ImageNet-10's order, four of them the same ImageNet classes and six the
closest Tiny ImageNet has (bullet train for airliner, goose for hummingbird, tabby cat for
Siamese cat, gazelle for zebra, lifeboat for container ship, moving van for trailer truck).
500 train / 50 val images per class, 64×64. Runs on a CPU:

  python launch/pipeline.py --config=configs/tiny_imagenet10.py --workdir=runs/tiny_in10
  python launch/train.py --config=configs/tiny_imagenet10.py:full --workdir=runs/tiny_in10_full

Variants: (default) the CPU preset — width-16 ResNet-18, 15 epochs (about 40 minutes on two
cores), DFM patches of 4×4;
`full` — full-width ResNet-18, the paper's 200 epochs, patch 1.
"""

from freqjax import config as config_lib

VARIANTS = ("full",)
# (class name, folder WNID) in ImageNet-10's index order.
CLASSES = (
    ("bullet train", "n02917067"),
    ("beach wagon", "n02814533"),
    ("goose", "n01855672"),
    ("tabby cat", "n02123045"),
    ("ox", "n02403003"),
    ("golden retriever", "n02099601"),
    ("tailed frog", "n01644900"),
    ("gazelle", "n02423022"),
    ("lifeboat", "n03662601"),
    ("moving van", "n03796401"),
)


def get_config(arg=None):
  tokens = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.base_config()
  d = c.data
  d.kind = "folder"
  d.name = "tiny_imagenet10"
  d.manual_dir = str(config_lib.SHARED_DATA / "tiny-imagenet-10")
  d.image_size, d.storage_size = 64, 64
  d.num_classes = 10
  d.class_names = tuple(name for name, _ in CLASSES)
  d.class_folders = tuple(wnid for _, wnid in CLASSES)
  d.mean, d.std = config_lib.IMAGENET10_MEAN, config_lib.IMAGENET10_STD
  d.train_split, d.test_split = "train", "val"
  c.augment.crop = "random_resized_crop"
  c.train.eval_batch_size = 250
  c.dynamics.views = ("full", "keep_b1", "remove_b1")
  c.dynamics.bands = ((0.0, 8.0), (8.0, 1e9))
  if "full" not in tokens:
    c.model.width_multiplier = 0.25
    c.train.epochs = 15
    c.analysis.patch_size = 4
  return c
