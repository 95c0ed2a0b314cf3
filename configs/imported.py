r"""The config a workdir records (its config.json): how the analysis launchers read a model
imported with launch/import_model.py (or any run), with every field still overridable.

  python launch/import_model.py --from=model.ckpt --arch=resnet18 --workdir=runs/imported \
      --config=configs/tiny_imagenet10.py --config.data.image_size=32
  python launch/dfm.py --config=configs/imported.py:runs/imported --workdir=runs/imported
  python launch/pipeline.py --config=configs/imported.py:runs/imported --workdir=runs/imported

The variant is the workdir's path.
"""

import json
import os

from freqjax import config as config_lib, errors


def get_config(arg=None):
  if not arg:
    raise errors.ConfigError(
        "configs/imported.py needs the workdir whose config to read: "
        "--config=configs/imported.py:<workdir>."
    )
  path = os.path.join(arg, "config.json")
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise errors.ConfigError(
        f"Cannot read {path} ({e}); it is written by launch/import_model.py and by training. "
        "Import or train into that workdir first."
    ) from e
  return config_lib.from_dict(stored)
