r"""Your own folder of images: `<root>/<train split>/<class>/*` and `<root>/<test split>/<class>/*`.

  python launch/pipeline.py --config=configs/folder.py:root=/data/mine --workdir=runs/mine
  python launch/pipeline.py --config=configs/folder.py:root=/data/mine,size=64,test=val \
      --workdir=runs/mine64

Options (comma-separated key=value): `root` (required, or set --config.data.manual_dir and
pass `classes`), `size` (image size, default 32), `train` / `test` (split folder names,
default train / test), `classes` (class folders in class-index order, joined by '+'; default:
every folder of the train split in sorted order, as torchvision's ImageFolder), `mean` and
`std` (three numbers joined by '+'; default: computed from the train split at the image size
when the launch validates the config, so `--config.data.manual_dir` and
`--config.data.image_size` count, and recorded in the run's config.json), `name` (a label,
default the root's folder name). At least two classes.
Training: a width-16 ResNet-18 for 15 epochs with flip + Pad(4) + random crop (CIFAR-style),
DFM patches of 4×4 at 64 px and above; override any field as usual.
"""

import os

from freqjax import config as config_lib, errors
from freqjax.data import folder

KEYS = ("root", "size", "train", "test", "classes", "mean", "std", "name")


def _options(arg):
  out = {}
  for token in (arg or "").split(","):
    if not token:
      continue
    key, sep, value = token.partition("=")
    if not sep or key not in KEYS:
      raise errors.ConfigError(
          f"configs/folder.py: unknown option {token!r}; use key=value with keys "
          f"{', '.join(KEYS)}, e.g. --config=configs/folder.py:root=/data/mine,size=32."
      )
    out[key] = value
  return out


def _triple(text, what):
  try:
    values = tuple(float(v) for v in text.split("+"))
  except ValueError:
    values = ()
  if len(values) != 3:
    raise errors.ConfigError(f"configs/folder.py: {what} needs three numbers joined by '+'.")
  return values


def get_config(arg=None):
  opts = _options(arg)
  c = config_lib.base_config()
  d = c.data
  d.kind = "folder"
  d.manual_dir = opts.get("root", "")
  d.image_size = int(opts.get("size", 32))
  d.storage_size = 0
  d.train_split, d.test_split = opts.get("train", "train"), opts.get("test", "test")
  d.name = opts.get("name") or os.path.basename(os.path.normpath(d.manual_dir or "folder"))
  if opts.get("classes"):
    classes = tuple(opts["classes"].split("+"))
  elif d.manual_dir:
    classes = tuple(folder.discover_classes(d.manual_dir, d.train_split))
  else:
    raise errors.ConfigError(
        "configs/folder.py needs the dataset's root: --config=configs/folder.py:root=/data/mine."
    )
  d.class_folders, d.class_names, d.num_classes = classes, classes, len(classes)
  # (): computed from the train split when the config is validated, after the command-line
  # overrides (manual_dir, image_size, ...); see config.resolve_channel_stats.
  d.mean = _triple(opts["mean"], "mean") if "mean" in opts else ()
  d.std = _triple(opts["std"], "std") if "std" in opts else ()
  c.augment.crop = "pad_crop"
  c.model.width_multiplier = 0.25
  c.train.epochs = 15
  c.train.eval_batch_size = 250
  c.analysis.patch_size = 4 if d.image_size >= 64 else 1
  c.dynamics.views = ("full", "keep_b1", "remove_b1")
  c.dynamics.bands = ((0.0, 8.0), (8.0, 1e9))
  return c
