"""Folder datasets through tfds: real data, class order, and every bad input."""

import os

import numpy as np
import pytest
from PIL import Image

from freqjax import config as config_lib, errors
from freqjax.data import datasets, folder
from tests.conftest import load_config


def _write(path, mode="RGB", size=(20, 18), colour=(200, 10, 30)):
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
  assert sorted(s["file"] for s in skipped) == ["train/dog/garbage.jpg", "train/dog/truncated.png"]
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
  with pytest.raises(
      folder.FolderDatasetError, match=r"'bird' has no folder.*Folders found: dog, n001_cat"
  ):
    datasets.prepare(_config(root, tmp_path, classes=("cat", "bird")).data)


def test_empty_class_folder_is_an_error(tmp_path):
  root = _toy(tmp_path / "toy")
  (root / "val" / "dog").rename(root / "val" / "old")
  (root / "val" / "dog").mkdir()
  with pytest.raises(folder.FolderDatasetError, match=r"holds no images"):
    datasets.prepare(_config(root, tmp_path).data)


def _gradient8():
  return np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit level once


def _rows(ds, split="train"):
  """{file: image} of a prepared split."""
  src = datasets.tfds.builder_from_directory(ds.path).as_data_source(split)
  return {src[i]["file"].decode(): src[i]["image"] for i in range(len(src))}


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
  g8 = _gradient8()
  Image.fromarray(g8).save(tmp_path / "g8.png")
  as_16 = Image.fromarray(g8.astype(np.uint16) * 257)  # the same levels in 16 bits
  assert as_16.mode == "I;16"
  as_16.save(tmp_path / "g16.png")
  as_16.save(tmp_path / "g16.tif")
  Image.fromarray(g8.astype(np.int32) * 257).save(tmp_path / "gI.tif")  # mode I
  Image.fromarray(g8.astype(np.float32) / 255).save(tmp_path / "gF.tif")  # F in [0, 1]
  Image.fromarray(g8.astype(np.float32) * 3 - 100).save(tmp_path / "gF_wide.tif")
  expected, mode, _, _ = folder.load_rgb(str(tmp_path / "g8.png"), 16)
  assert mode == "L" and (expected[..., 0] == g8).all()
  for name, source_mode in (
      ("g16.png", "I;16"),
      ("g16.tif", "I;16"),
      ("gI.tif", "I"),
      ("gF.tif", "F"),
      ("gF_wide.tif", "F"),
  ):
    image, mode, size, reason = folder.load_rgb(str(tmp_path / name), 16)
    assert reason is None and mode == source_mode and size == (16, 16), name
    np.testing.assert_array_equal(image, expected, err_msg=name)
  # Values that are not multiples of 257 land on the nearest 8-bit level, never clipped.
  ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
  Image.fromarray(ramp).save(tmp_path / "ramp16.png")
  image = folder.load_rgb(str(tmp_path / "ramp16.png"), 8).image[..., 0].astype(int)
  assert (image == 255).mean() < 0.05 and image.max() == 255 and image.min() == 0
  assert (np.diff(image.ravel()) >= 0).all() and np.abs(image - ramp / 65535 * 255).max() <= 0.5


def test_16_bit_png_prepares_scaled_with_its_mode_recorded(tmp_path):
  root = _toy(tmp_path / "toy")
  Image.fromarray(_gradient8().astype(np.uint16) * 257).save(root / "train" / "dog" / "g16.png")
  ds = datasets.prepare(_config(root, tmp_path).data)
  assert ds.metadata["source_modes"]["train"]["I;16"] == 1
  np.testing.assert_array_equal(_rows(ds)["train/dog/g16.png"][..., 1], _gradient8())


def test_small_images_are_warned_about_and_listed(tmp_path, caplog):
  root = _toy(tmp_path / "toy")
  _write(root / "train" / "dog" / "dot", size=(1, 1), colour=(9, 99, 199))
  with caplog.at_level("WARNING"):
    ds = datasets.prepare(_config(root, tmp_path).data)
  assert ds.metadata["small_files"] == [
      {"split": "train", "file": "train/dog/dot.png", "size": [1, 1]}
  ]
  assert "dot.png is only 1x1 px" in caplog.text
  assert (_rows(ds)["train/dog/dot.png"] == (9, 99, 199)).all()  # still upscaled and kept


def test_changed_files_prepare_a_new_dataset_and_keep_the_old(tmp_path):
  root = _toy(tmp_path / "toy")
  c = _config(root, tmp_path)
  first = datasets.prepare(c.data)
  assert datasets.prepare(c.data).path == first.path  # unchanged files: reused
  paths = [first.path]
  img = root / "train" / "dog" / "img0.png"
  st = os.stat(img)
  os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch
  paths.append(datasets.prepare(c.data).path)
  _write(img.with_suffix(""), colour=(7, 8, 9))  # replaced; set mtime as clocks may be coarse
  os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
  replaced = datasets.prepare(c.data)
  paths.append(replaced.path)
  _write(root / "val" / "n001_cat" / "new")  # added
  paths.append(datasets.prepare(c.data).path)
  (root / "val" / "n001_cat" / "new.png").unlink()  # removed again: back to the replaced set
  assert datasets.prepare(c.data).path == replaced.path
  assert len(set(paths)) == 4 and all(os.path.isdir(p) for p in paths)
  assert (_rows(replaced)["train/dog/img0.png"] == (7, 8, 9)).all()
  assert (_rows(first)["train/dog/img0.png"] == (0, 0, 250)).all()
  assert len(replaced.info.description) < 2000  # a digest in the spec, not the file list


def test_unlisted_class_folder_is_a_warning_or_an_error(tmp_path, caplog):
  root = _toy(tmp_path / "toy")
  _write(root / "val" / "extra_class" / "img0")
  (root / "val" / ".hidden").mkdir()
  c = _config(root, tmp_path)
  with caplog.at_level("WARNING"):
    ds = datasets.prepare(c.data)
  assert ds.metadata["unlisted_class_folders"] == {"test": ["extra_class"]}
  assert "extra_class" in caplog.text and ".hidden" not in caplog.text
  assert ds.num_examples("test") == 6
  c.data.unlisted_classes = "error"
  with pytest.raises(
      folder.FolderDatasetError,
      match=r"extra_class.*config.data.class_folders" r".*unlisted_classes='warn'",
  ):
    datasets.prepare(c.data)
  c.data.unlisted_classes = "ignore"
  with pytest.raises(errors.ConfigError, match=r"unlisted_classes must be one of warn, error"):
    datasets.prepare(c.data)


def test_dataset_mistakes_are_user_errors(tmp_path):
  assert issubclass(folder.FolderDatasetError, errors.DatasetError)
  assert issubclass(errors.DatasetError, (errors.UserError, ValueError))
  c = _config(tmp_path / "toy", tmp_path)
  c.data.manual_dir = ""
  with pytest.raises(errors.DatasetError, match=r"manual_dir is empty"):
    datasets.prepare(c.data)
  c.data.kind = "imagenet"
  with pytest.raises(errors.ConfigError, match=r"Unknown data.kind 'imagenet'"):
    datasets.prepare(c.data)


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
  ds = datasets.prepare_ood(
      c.data, str(shared_data / "imagenet10-samples"), ".", label="imagenet10_samples"
  )
  images, labels = ds.arrays("test")
  assert images.shape == (10, 224, 224, 3) and sorted(labels.tolist()) == list(range(10))
  assert ds.class_names[:3] == ["airliner", "beach wagon", "hummingbird"]
  src = datasets.tfds.builder_from_directory(ds.path).as_data_source("test")
  for i in range(10):
    row = src[i]
    assert row["file"].decode().startswith(config_lib.IMAGENET10_CLASSES[row["label"]][1])
