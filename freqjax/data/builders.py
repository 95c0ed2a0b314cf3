"""tensorflow-datasets builders (array_record files, no TensorFlow needed).

- `SyntheticBuilder`: Syn-1..4 from `freqjax.data.synthetic`; uint8 (S, S, 3) images, labels,
  and metadata with every role's frequencies (and band), the distractor pool and all
  generator parameters.
- `FolderBuilder`: `<root>/<split>/<class folder>/<image>` folders decoded with PIL. The
  train split is stored at `storage_size` px (room for RandomResizedCrop), every other split
  at `image_size` px, resized exactly as the official test transform `Resize((s, s))` does.
  Metadata records the classes, their folders, every skipped file with its reason
  (`skipped_files`), the source PIL modes per split (`source_modes`), source images smaller
  than `min_source_size` px on either side (`small_files`: {split, file, size: [w, h]}) and
  class folders no configured class matches (`unlisted_class_folders`: {split: [folder]}).

Each builder config is named after a hash of everything that defines the data, so changing a
generator parameter, a folder or any image file (added, removed, replaced or touched: the
folder spec holds a digest of every file's path, size and mtime) prepares a new dataset
instead of reusing a stale one. Older prepared datasets stay on disk.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from freqjax.data import folder, synthetic


def fingerprint(obj) -> str:
  return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


class _Config(tfds.core.BuilderConfig):

  def __init__(self, *, label: str, spec: dict):
    super().__init__(name=f"{label}-{fingerprint(spec)}", description=json.dumps(spec))
    self.spec = spec


class SyntheticBuilder(tfds.core.GeneratorBasedBuilder):
  """Syn-k with the parameters of `config.data.synthetic` (see synthetic.md)."""

  VERSION = tfds.core.Version("1.0.0")
  name = "freqjax_synthetic"

  @classmethod
  def make_config(cls, label: str, params: dict) -> _Config:
    return _Config(label=label, spec={"generator": "freqjax-synthetic-v1", "params": params})

  def _info(self):
    p = self.builder_config.spec["params"]
    size = int(p["size"])
    return tfds.core.DatasetInfo(
        builder=self,
        description="freqjax synthetic set with planted class frequencies",
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=list(synthetic.CLASS_NAMES)),
            }
        ),
        metadata=tfds.core.MetadataDict(
            params=p, roles=synthetic.draw_roles(p), class_names=list(synthetic.CLASS_NAMES)
        ),
    )

  def _split_generators(self, dl_manager):
    return {s: self._generate_examples(s) for s in ("train", "test")}

  def _generate_examples(self, split):
    p = self.builder_config.spec["params"]
    roles = self.info.metadata["roles"]
    for key, image, label in synthetic.generate_split(p, roles, split):
      yield key, {"image": image, "label": label}


class FolderBuilder(tfds.core.GeneratorBasedBuilder):
  """Image-folder splits, each read from `<root>/<folder>/<class folder>/<image>`."""

  VERSION = tfds.core.Version("1.0.0")
  name = "freqjax_folder"
  MAX_SMALL_FILE_WARNINGS = 10  # per split; the rest are counted in one more warning

  @classmethod
  def make_config(
      cls,
      label: str,
      *,
      splits: dict[str, dict],
      class_folders,
      class_names,
      min_source_size: int = 16,
      unlisted_classes: str = "warn",
  ) -> _Config:
    """`splits` maps this dataset's split name to {'root', 'folder', 'size'}.

    Scans every split (one `os.stat` per image file, no decoding) and adds to its spec the
    file count and digest (`folder.SplitScan.digest`), so that the config name changes with
    the files. Warns about or, with `unlisted_classes='error'`, rejects class folders that
    no configured class matches (`folder.check_unlisted`).
    """
    splits = {k: dict(v, root=os.path.abspath(v["root"])) for k, v in splits.items()}
    scans = {
        k: folder.scan(v["root"], v["folder"], class_folders, class_names)
        for k, v in splits.items()
    }
    folder.check_unlisted(scans, unlisted_classes)
    for k, v in splits.items():
      v["files"] = {"count": len(scans[k].entries), "digest": scans[k].digest()}
    spec = {
        "splits": splits,
        "class_folders": list(class_folders),
        "class_names": list(class_names),
        "min_source_size": int(min_source_size),
        "unlisted_classes": unlisted_classes,
    }
    config = _Config(label=label, spec=spec)
    config.scans = scans  # what the digest covers; generation reads exactly these files
    return config

  def _info(self):
    spec = self.builder_config.spec
    return tfds.core.DatasetInfo(
        builder=self,
        description="Image folders: " + json.dumps(spec["splits"]),
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(
                    shape=(None, None, 3), dtype=np.uint8, encoding="bytes"
                ),
                "label": tfds.features.ClassLabel(names=list(spec["class_names"])),
                "file": tfds.features.Text(),
            }
        ),
        metadata=tfds.core.MetadataDict(
            splits=spec["splits"],
            class_names=spec["class_names"],
            class_folders=spec["class_folders"],
            min_source_size=spec["min_source_size"],
            skipped_files=[],
            source_modes={},
            small_files=[],
            unlisted_class_folders={},
        ),
    )

  def _split_generators(self, dl_manager):
    spec = self.builder_config.spec
    scans = getattr(self.builder_config, "scans", None) or {}
    out = {}
    for split, s in spec["splits"].items():
      scan = scans.get(split) or folder.scan(
          s["root"], s["folder"], spec["class_folders"], spec["class_names"]
      )
      if scan.unlisted_folders:
        self.info.metadata["unlisted_class_folders"][split] = list(scan.unlisted_folders)
      out[split] = self._generate_examples(split, s, scan.entries)
    return out

  def _generate_examples(self, split, s, entries):
    meta = self.info.metadata
    min_size = int(self.builder_config.spec["min_source_size"])
    size = int(s["size"])
    modes = collections.Counter()
    small = 0
    for i, e in enumerate(entries):
      image, mode, source_size, reason = folder.load_rgb(e.path, size)
      rel = os.path.relpath(e.path, s["root"])
      if image is None:
        meta["skipped_files"].append({"split": split, "file": rel, "reason": reason})
        continue
      if min(source_size) < min_size:
        small += 1
        if small <= self.MAX_SMALL_FILE_WARNINGS:
          logging.warning(
              "Source image %s is only %dx%d px (below data.min_source_size=%d); "
              "it is upscaled to %d px.",
              e.path,
              *source_size,
              min_size,
              size,
          )
        meta["small_files"].append({"split": split, "file": rel, "size": list(source_size)})
      modes[mode] += 1
      yield i, {"image": image, "label": e.label, "file": rel}
    if small > self.MAX_SMALL_FILE_WARNINGS:
      logging.warning(
          "%d more source images of split %s are smaller than %d px; all are "
          "listed in metadata.json (small_files).",
          small - self.MAX_SMALL_FILE_WARNINGS,
          split,
          min_size,
      )
    meta["source_modes"][split] = dict(modes)
