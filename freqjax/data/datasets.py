"""Preparing datasets (once, with tensorflow-datasets) and reading them back.

    ds = datasets.prepare(config.data)       # builds the array_record files if needed
    train = ds.source("train")                # random access: len(), get(indices)
    images, labels = ds.arrays("test")        # a whole split as NumPy arrays

Every dataset has the splits 'train' and 'test' and yields uint8 HWC images with int labels.
Splits smaller than `data.in_memory_mb` are read into memory once; larger ones are read
batch by batch from the array_record files (`tfds.data_source`-style random access).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from freqjax import config as config_lib, errors
from freqjax.data import builders, synthetic

tfds.disable_progress_bar()


class ArraySource:
  """A split held in memory."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels.astype(np.int32)

  def __len__(self):
    return len(self.labels)

  def get(self, indices) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]


class RecordSource:
  """A split read on demand from its array_record files."""

  def __init__(self, data_source):
    self._src = data_source

  def __len__(self):
    return len(self._src)

  def get(self, indices) -> tuple[np.ndarray, np.ndarray]:
    rows = self._src.__getitems__([int(i) for i in indices])
    return (np.stack([r["image"] for r in rows]), np.array([r["label"] for r in rows], np.int32))


@dataclasses.dataclass
class Dataset:
  path: str  # the prepared builder directory
  info: Any  # tfds.core.DatasetInfo
  in_memory_mb: float = 2048

  @property
  def metadata(self) -> dict:
    return dict(self.info.metadata or {})

  @property
  def class_names(self) -> list[str]:
    return list(self.info.features["label"].names)

  @property
  def num_classes(self) -> int:
    return self.info.features["label"].num_classes

  def num_examples(self, split: str) -> int:
    return self.info.splits[split].num_examples

  def __post_init__(self):
    self._sources = {}

  def source(self, split: str):
    """Random-access reader of a split (cached)."""
    if split not in self._sources:
      if split not in self.info.splits:
        raise KeyError(
            f"Dataset {self.path} has no split {split!r}; it has "
            f"{', '.join(self.info.splits.keys())}."
        )
      src = tfds.builder_from_directory(self.path).as_data_source(split)
      n = len(src)
      first = src[0]["image"] if n else np.zeros((0,))
      if n * first.nbytes <= self.in_memory_mb * 2**20:
        self._sources[split] = ArraySource(*_read_all(src))
      else:
        self._sources[split] = RecordSource(src)
    return self._sources[split]

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    src = self.source(split)
    if isinstance(src, ArraySource):
      return src.images, src.labels
    return src.get(np.arange(len(src)))


def _read_all(src, chunk: int = 4096):
  images, labels = [], []
  for start in range(0, len(src), chunk):
    rows = src.__getitems__(list(range(start, min(start + chunk, len(src)))))
    images.extend(r["image"] for r in rows)
    labels.extend(r["label"] for r in rows)
  return np.stack(images), np.array(labels, np.int32)


def data_dir(data_config) -> str:
  return os.path.expanduser(data_config.data_dir or config_lib.default_data_dir())


def make_builder(data_config):
  """The tfds builder that `data_config` describes (nothing is built yet)."""
  d = data_config
  if d.kind == "synthetic":
    params = synthetic.params_dict(d.synthetic)
    cfg = builders.SyntheticBuilder.make_config(f"syn{params['band']}", params)
    return builders.SyntheticBuilder(data_dir=data_dir(d), config=cfg, file_format="array_record")
  if d.kind == "folder":
    if not d.manual_dir:
      raise errors.DatasetError(
          "config.data.manual_dir is empty: set it to the dataset root laid out as "
          "<root>/<split>/<class folder>/<image> (e.g. --config.data.manual_dir=/data/imagenet10)."
      )
    test_root = d.test_manual_dir or d.manual_dir
    splits = {
        "train": {
            "root": d.manual_dir,
            "folder": d.train_split,
            "size": int(d.storage_size or d.image_size),
        },
        "test": {"root": test_root, "folder": d.test_split, "size": int(d.image_size)},
    }
    return folder_builder(
        d.name,
        splits,
        d.class_folders or d.class_names,
        d.class_names,
        data_dir(d),
        **config_lib.check_folder_options(d),
    )
  raise errors.ConfigError(f"Unknown data.kind {d.kind!r}; use 'synthetic' or 'folder'.")


def folder_builder(
    label: str,
    splits: dict,
    class_folders: Sequence[str],
    class_names: Sequence[str],
    directory: str,
    *,
    min_source_size: int = 16,
    unlisted_classes: str = "warn",
):
  """The FolderBuilder of `splits` (scans the folders: the config name covers every file)."""
  cfg = builders.FolderBuilder.make_config(
      label.replace("/", "_").replace(" ", "_") or "folder",
      splits=splits,
      class_folders=class_folders,
      class_names=class_names,
      min_source_size=min_source_size,
      unlisted_classes=unlisted_classes,
  )
  return builders.FolderBuilder(data_dir=directory, config=cfg, file_format="array_record")


def _prepare(builder, in_memory_mb: float) -> Dataset:
  """Builds on process 0 first (the others wait), then on any process that lacks it."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
      builder.download_and_prepare()
    multihost_utils.sync_global_devices("freqjax_prepare_dataset")
  if not os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    logging.info("Preparing dataset %s in %s", builder.builder_config.name, builder.data_dir)
  builder.download_and_prepare()
  meta = builder.info.metadata or {}
  skipped = meta.get("skipped_files", [])
  if skipped:
    logging.warning(
        "%d unreadable files were skipped while preparing %s; they are listed "
        "in its metadata.json (skipped_files).",
        len(skipped),
        builder.data_dir,
    )
  small = meta.get("small_files", [])
  if small:
    logging.warning(
        "%d source images of %s are smaller than data.min_source_size=%s px on a "
        "side and were upscaled; they are listed in its metadata.json "
        "(small_files).",
        len(small),
        builder.data_dir,
        meta.get("min_source_size"),
    )
  return open_prepared(str(builder.data_dir), in_memory_mb)


def open_prepared(path: str, in_memory_mb: float = 2048) -> Dataset:
  """A dataset prepared earlier, from its directory (e.g. an artifact's meta['dataset'])."""
  return Dataset(path, tfds.builder_from_directory(path).info, in_memory_mb)


CONTENT_FILE = "freqjax_content.json"
_CONTENT_CACHE: dict[str, str] = {}


def content_digest(path: str, chunk: int = 1024) -> str:
  """A hash of a prepared dataset's content: every split's images (shape and pixels) and
  labels, in order. Two preparations of the same images (a copy of the folder elsewhere,
  touched files) have the same digest; one replaced image changes it. Computed once and kept
  beside the dataset (`freqjax_content.json`)."""
  import hashlib  # pylint: disable=g-import-not-at-top

  from freqjax import artifacts  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(path)
  if path in _CONTENT_CACHE:
    return _CONTENT_CACHE[path]
  sidecar = os.path.join(path, CONTENT_FILE)
  try:
    with open(sidecar) as f:
      digest = str(json.load(f)["digest"])
  except (OSError, ValueError, KeyError, TypeError):
    builder = tfds.builder_from_directory(path)
    h = hashlib.sha1()
    for split in sorted(builder.info.splits.keys()):
      src = builder.as_data_source(split)
      h.update(f"split {split} {len(src)}".encode())
      for start in range(0, len(src), chunk):
        for r in src.__getitems__(list(range(start, min(start + chunk, len(src))))):
          image = np.ascontiguousarray(r["image"])
          h.update(f"{image.shape} {image.dtype} {int(r['label'])}".encode())
          h.update(image.tobytes())
    digest = h.hexdigest()[:16]
    if jax.process_index() == 0:
      try:
        artifacts.write_json(sidecar, {"digest": digest, "what": content_digest.__doc__})
      except OSError:  # a read-only data dir: recomputed next time
        pass
  _CONTENT_CACHE[path] = digest
  return digest


def prepare(data_config) -> Dataset:
  """Prepares (if needed) and opens the dataset that `config.data` describes."""
  return _prepare(make_builder(data_config), data_config.in_memory_mb)


def prepare_ood(data_config, root: str, split: str, label: str | None = None) -> Dataset:
  """A folder test set of the same classes (OOD), stored at image_size as split 'test'."""
  splits = {"test": {"root": root, "folder": split, "size": int(data_config.image_size)}}
  name = label or os.path.basename(os.path.normpath(root))
  b = folder_builder(
      name,
      splits,
      data_config.class_folders or data_config.class_names,
      data_config.class_names,
      data_dir(data_config),
      **config_lib.check_folder_options(data_config),
  )
  return _prepare(b, data_config.in_memory_mb)


def train_val_indices(n: int, val_fraction: float, seed: int):
  """Seeded split of range(n): first int(n·(1-f)) of a permutation train, rest validation."""
  perm = np.random.default_rng([seed, 0x7A11]).permutation(n)
  n_train = int(n * (1.0 - val_fraction))
  return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def planted_masks(ds: Dataset) -> np.ndarray | None:
  """Per-class planted-cell maps (num_classes, S, S) for synthetic sets, else None."""
  meta = ds.metadata
  if "roles" not in meta:
    return None
  return synthetic.planted_masks(meta["roles"], int(meta["params"]["size"]))
