"""configs/folder.py: classes from the folder names (ImageFolder's sorted order), mean/std from
the train split, and one clear error for a root without classes or with empty ones."""

import os

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from freqjax import config as config_lib, errors
from tests.conftest import REPO, load_config


def _folder(root, classes, per_class=2, colour=None):
  for split in ("train", "test"):
    for i, c in enumerate(classes):
      d = root / split / c
      d.mkdir(parents=True)
      for k in range(per_class):
        value = colour if colour is not None else (40 * i, 10 * k, 200)
        Image.new("RGB", (40, 40), value).save(d / f"{k}.png")
  return root


def _parse(*argv):
  """The config as a launcher gets it: configs/folder.py, then the command-line overrides."""
  fv, argv = flags.FlagValues(), ["launcher", *argv]
  config_flags.DEFINE_config_file(
      "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
  )
  fv(argv)
  return fv.config


def test_classes_sorted_and_stats_from_the_train_split(tmp_path):
  root = _folder(tmp_path / "mine", ["zebra", "ant", "moth"], colour=(255, 0, 51))
  c = load_config(f"configs/folder.py:root={root},size=16")
  assert c.data.class_names == ("ant", "moth", "zebra") and c.data.num_classes == 3
  assert c.data.mean == () and c.data.std == ()  # computed once the config is final
  assert (c.data.image_size, c.data.test_split, c.data.name) == (16, "test", "mine")
  config_lib.validate(c)
  np.testing.assert_allclose(c.data.mean, (1.0, 0.0, 0.2), atol=1e-6)
  np.testing.assert_allclose(c.data.std, (0.0, 0.0, 0.0), atol=1e-6)
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


def _real_folder(shared_data, root, per_class=4):
  """Three tiny-imagenet-10 classes, `per_class` train images each, linked as <root>/train/."""
  source = shared_data / "tiny-imagenet-10" / "train"
  for d in sorted(source.iterdir())[:3]:
    (root / "train" / d.name).mkdir(parents=True)
    for f in sorted(d.iterdir())[:per_class]:
      os.symlink(f, root / "train" / d.name / f.name)
  return sorted(p.name for p in (root / "train").iterdir())


def test_manual_dir_with_classes_computes_the_stats_as_root_does(shared_data, tmp_path):
  """--config=configs/folder.py:classes=a+b+c --config.data.manual_dir=DIR (the override comes
  after get_config) gets the train split's mean/std at the final image size, as root= does."""
  root = tmp_path / "mine"
  # By name: 'tailed_frog' is the folder n01644900_tailed_frog, as the dataset builder finds it.
  classes = "+".join(name.partition("_")[2] for name in _real_folder(shared_data, root))
  file = REPO / "configs" / "folder.py"
  by_root = _parse(f"--config={file}:root={root}", "--config.data.image_size=24")
  by_dir = _parse(
      f"--config={file}:classes={classes}",
      f"--config.data.manual_dir={root}",
      "--config.data.image_size=24",
  )
  assert by_dir.data.mean == () and by_dir.data.class_names[0] == "tailed_frog"
  for c in (by_root, by_dir):
    config_lib.validate(c)
  assert len(by_dir.data.mean) == 3 and by_dir.data.mean != config_lib.SYNTHETIC_MEAN
  assert (by_dir.data.mean, by_dir.data.std) == (by_root.data.mean, by_root.data.std)
  at_16 = _parse(f"--config={file}:root={root},size=16")
  config_lib.validate(at_16)
  assert at_16.data.mean != by_root.data.mean  # the stats follow the image size override
  typo = _parse(f"--config={file}:classes={classes}", f"--config.data.manual_dir={root}x")
  with pytest.raises(errors.DatasetError, match=r"mine.?x/train does not exist"):
    config_lib.validate(typo)


def test_one_class_is_refused_in_one_line(tmp_path):
  root = _folder(tmp_path / "one", ["cat"])
  for spec in (f"root={root}", f"root={root},classes=cat,mean=.5+.5+.5,std=.2+.2+.2"):
    c = load_config(f"configs/folder.py:{spec}")
    with pytest.raises(
        errors.ConfigError, match=r"num_classes=1: .* two classes \(class folders of .*: cat\)"
    ):
      config_lib.validate(c)
  with pytest.raises(errors.ConfigError, match="needs at least two classes") as e:
    config_lib.validate(c)
  assert "\n" not in str(e.value) and str(root / "train") in str(e.value)
