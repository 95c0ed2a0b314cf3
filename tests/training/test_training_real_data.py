"""Training on the real images in shared/data through the folder-dataset path."""

import numpy as np

from freqjax.training import loop
from tests.training.helpers import metrics_of


def test_tiny_imagenet10_trains_a_narrow_resnet_for_a_few_steps(shared_data, tmp_path):
  from tests.conftest import load_config

  c = load_config("configs/tiny_imagenet10.py")
  c.data.data_dir = str(tmp_path / "data")
  c.model.width_multiplier = 1 / 16
  c.train.batch_size, c.train.eval_batch_size, c.train.max_steps = 16, 100, 3
  c.train.log_every_steps, c.train.progress = 1, False
  results = loop.train_and_evaluate(c, str(tmp_path / "run"))
  losses = [r["loss"] for r in metrics_of(tmp_path / "run")]
  assert len(losses) == 3 and all(np.isfinite(losses))
  assert results["steps"] == 3 and len(results["test_confusion"]) == 10
  assert sum(map(sum, results["test_confusion"])) == 500


def test_imagenet10_config_trains_on_a_folder_in_its_layout(shared_data, tmp_path):
  """ImageNet-10's path (WNID folders, class order, 256→224-style storage, RandomResizedCrop,
  AugMix) on a folder built from the real samples, at a small size to stay quick."""
  import shutil

  from tests.conftest import load_config

  root = tmp_path / "imagenet10"
  for wnid_dir in sorted((shared_data / "imagenet10-samples").iterdir()):
    img = next(wnid_dir.iterdir())
    for split, n in (("train", 4), ("val", 1)):
      (root / split / wnid_dir.name).mkdir(parents=True)
      for i in range(n):
        shutil.copy(img, root / split / wnid_dir.name / f"{i}_{img.name}")
  c = load_config("configs/imagenet10.py:resnet18,augmix")
  c.data.manual_dir, c.data.data_dir = str(root), str(tmp_path / "data")
  c.data.image_size, c.data.storage_size, c.data.val_fraction = 48, 56, 0.25
  c.model.width_multiplier = 1 / 16
  c.train.batch_size, c.train.eval_batch_size, c.train.max_steps = 8, 8, 2
  c.train.log_every_steps, c.train.progress = 1, False
  results = loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["steps"] == 2 and results["class_names"][0] == "airliner"
  assert sum(map(sum, results["test_confusion"])) == 10
  from freqjax.data import datasets

  ds = datasets.prepare(c.data)
  assert ds.arrays("train")[0].shape[1:] == (56, 56, 3)
  assert ds.arrays("test")[0].shape[1:] == (48, 48, 3)
