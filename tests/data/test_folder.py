"""Folder datasets through tfds: real data, class order, and every bad input."""

import numpy as np
import pytest
from PIL import Image

from freqjax import config as config_lib
from freqjax.data import datasets, folder
from tests.conftest import load_config


def _write(path, mode="RGB", size=(20, 12), colour=(200, 10, 30)):
  path.parent.mkdir(parents=True, exist_ok=True)
  if mode == "CMYK":
    img = Image.new("CMYK", size, (10, 200, 30, 0))
    img.save(path.with_suffix(".jpg"))
    return path.with_suffix(".jpg")
  img = Image.new("RGB", size, colour)
  if mode == "L":
    img = img.convert("L")
  elif mode == "RGBA":
    img = img.convert("RGBA")
  elif mode == "P":
    img = img.convert("P", palette=Image.ADAPTIVE, colors=8)
  img.save(path.with_suffix(".png"))
  return path.with_suffix(".png")


def _config(root, tmp_path, classes=("cat", "dog")):
  c = config_lib.base_config()
  c.data.kind, c.data.name = "folder", "toy"
  c.data.manual_dir, c.data.data_dir = str(root), str(tmp_path / "prepared")
  c.data.class_names, c.data.num_classes = tuple(classes), len(classes)
  c.data.image_size, c.data.test_split = 16, "val"
  c.data.mean, c.data.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  return c


def _toy(root):
  for split in ("train", "val"):
    for cls, colour in (("n001_cat", (250, 0, 0)), ("dog", (0, 0, 250))):
      for i in range(3):
        _write(root / split / cls / f"img{i}", colour=colour)
  return root


def test_modes_are_converted_and_bad_files_recorded(tmp_path, caplog):
  root = _toy(tmp_path / "toy")
  for mode in ("L", "RGBA", "P", "CMYK"):
    _write(root / "train" / "dog" / f"mode_{mode}", mode=mode)
  good = _write(root / "train" / "dog" / "whole", colour=(1, 2, 3))
  data = open(good, "rb").read()
  (root / "train" / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])
  (root / "train" / "dog" / "garbage.jpg").write_bytes(b"not an image at all")
  with caplog.at_level("WARNING"):
    ds = datasets.prepare(_config(root, tmp_path).data)
  images, labels = ds.arrays("train")
  assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3)
  assert len(labels) == 3 + 3 + 4 + 1  # cat 3, dog 3 + 4 modes + 1 good; 2 skipped
  skipped = ds.metadata["skipped_files"]
  assert sorted(s["file"] for s in skipped) == ["train/dog/garbage.jpg",
                                                      "train/dog/truncated.png"]
  assert all(s["reason"] for s in skipped)
  assert set(ds.metadata["source_modes"]["train"]) >= {"L", "RGBA", "P", "CMYK", "RGB"}
  assert "Skipping unreadable image" in caplog.text
  assert ds.class_names == ["cat", "dog"]
  cat = images[labels == 0]
  assert (cat[..., 0] > 200).all() and (cat[..., 2] < 50).all()  # n001_cat matched 'cat'


def test_missing_dataset_folder_names_the_layout(tmp_path):
  with pytest.raises(folder.FolderDatasetError, match=r"<root>/<split>/<class folder>/<image>"):
    datasets.prepare(_config(tmp_path / "nowhere", tmp_path).data)


def test_missing_split_folder_lists_what_exists(tmp_path):
  root = _toy(tmp_path / "toy")
  c = _config(root, tmp_path)
  c.data.test_split = "test"
  with pytest.raises(folder.FolderDatasetError, match=r"found: train, val"):
    datasets.prepare(c.data)


def test_class_without_folder_lists_folders_found(tmp_path):
  root = _toy(tmp_path / "toy")
  with pytest.raises(folder.FolderDatasetError,
                     match=r"'bird' has no folder.*Folders found: dog, n001_cat"):
    datasets.prepare(_config(root, tmp_path, classes=("cat", "bird")).data)


def test_empty_class_folder_is_an_error(tmp_path):
  root = _toy(tmp_path / "toy")
  (root / "val" / "dog").rename(root / "val" / "old")
  (root / "val" / "dog").mkdir()
  with pytest.raises(folder.FolderDatasetError, match=r"holds no images"):
    datasets.prepare(_config(root, tmp_path).data)


def test_tiny_imagenet10_prepares_in_config_order(shared_data, tmp_path):
  c = load_config("configs/tiny_imagenet10.py")
  c.data.data_dir = str(tmp_path)
  ds = datasets.prepare(c.data)
  assert ds.num_examples("train") == 5000 and ds.num_examples("test") == 500
  images, labels = ds.arrays("test")
  assert images.shape == (500, 64, 64, 3) and np.bincount(labels).tolist() == [50] * 10
  src = datasets.tfds.builder_from_directory(ds.path).as_data_source("test")
  for i in range(0, 500, 37):
    row = src[i]
    wnid = row["file"].decode().split("/")[1].split("_")[0]  # val/<wnid>_<name>/...
    assert wnid == c.data.class_folders[row["label"]]


def test_imagenet10_samples_prepare_at_224_in_official_order(shared_data, tmp_path):
  c = load_config("configs/imagenet10.py")
  c.data.data_dir = str(tmp_path)
  ds = datasets.prepare_ood(c.data, str(shared_data / "imagenet10-samples"), ".",
                            label="imagenet10_samples")
  images, labels = ds.arrays("test")
  assert images.shape == (10, 224, 224, 3) and sorted(labels.tolist()) == list(range(10))
  assert ds.class_names[:3] == ["airliner", "beach wagon", "hummingbird"]
  src = datasets.tfds.builder_from_directory(ds.path).as_data_source("test")
  for i in range(10):
    row = src[i]
    assert row["file"].decode().startswith(config_lib.IMAGENET10_CLASSES[row["label"]][1])
