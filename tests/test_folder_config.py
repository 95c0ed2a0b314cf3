"""configs/folder.py: classes from the folder names (ImageFolder's sorted order), mean/std from
the train split, and one clear error for a root without classes or with empty ones."""

import numpy as np
import pytest
from PIL import Image

from freqjax import config as config_lib, errors
from tests.conftest import load_config


def _folder(root, classes, per_class=2, colour=None):
  for split in ("train", "test"):
    for i, c in enumerate(classes):
      d = root / split / c
      d.mkdir(parents=True)
      for k in range(per_class):
        value = colour if colour is not None else (40 * i, 10 * k, 200)
        Image.new("RGB", (40, 40), value).save(d / f"{k}.png")
  return root


def test_classes_sorted_and_stats_from_the_train_split(tmp_path):
  root = _folder(tmp_path / "mine", ["zebra", "ant", "moth"], colour=(255, 0, 51))
  c = load_config(f"configs/folder.py:root={root},size=16")
  assert c.data.class_names == ("ant", "moth", "zebra") and c.data.num_classes == 3
  np.testing.assert_allclose(c.data.mean, (1.0, 0.0, 0.2), atol=1e-6)
  np.testing.assert_allclose(c.data.std, (0.0, 0.0, 0.0), atol=1e-6)
  assert (c.data.image_size, c.data.test_split, c.data.name) == (16, "test", "mine")
  config_lib.validate(c)
  given = load_config(
      f"configs/folder.py:root={root},classes=moth+ant+zebra,mean=.5+.5+.5,std=.2+.2+.2"
  )
  assert given.data.class_names == ("moth", "ant", "zebra") and given.data.std == (0.2,) * 3


def test_a_root_without_classes_or_with_empty_ones_is_named(tmp_path):
  (tmp_path / "none" / "train").mkdir(parents=True)
  with pytest.raises(errors.DatasetError, match="has no class folders"):
    load_config(f"configs/folder.py:root={tmp_path / 'none'}")
  root = _folder(tmp_path / "some", ["cat", "dog"])
  (root / "train" / "owl").mkdir()
  (root / "train" / "yak").mkdir()
  with pytest.raises(errors.DatasetError, match="no images in .*: owl, yak"):
    load_config(f"configs/folder.py:root={root}")
  with pytest.raises(errors.ConfigError, match="unknown option 'rot=x'"):
    load_config("configs/folder.py:rot=x")
