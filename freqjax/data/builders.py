"""tensorflow-datasets builders (array_record files, no TensorFlow needed).

- `SyntheticBuilder`: Syn-1..4 from `freqjax.data.synthetic`; uint8 (S, S, 3) images, labels,
  and metadata with every role's frequencies (and band), the distractor pool and all
  generator parameters.
- `FolderBuilder`: `<root>/<split>/<class folder>/<image>` folders decoded with PIL. The
  train split is stored at `storage_size` px (room for RandomResizedCrop), every other split
  at `image_size` px, resized exactly as the official test transform `Resize((s, s))` does.
  Metadata records the classes, their folders and every skipped file with its reason.

Each builder config is named after a hash of everything that defines the data, so changing a
generator parameter or a folder prepares a new dataset instead of reusing a stale one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

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
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(synthetic.CLASS_NAMES)),
        }),
        metadata=tfds.core.MetadataDict(
            params=p, roles=synthetic.draw_roles(p), class_names=list(synthetic.CLASS_NAMES)),
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

  @classmethod
  def make_config(cls, label: str, *, splits: dict[str, dict], class_folders,
                  class_names) -> _Config:
    """`splits` maps this dataset's split name to {'root', 'folder', 'size'}."""
    splits = {k: dict(v, root=os.path.abspath(v["root"])) for k, v in splits.items()}
    spec = {"splits": splits, "class_folders": list(class_folders),
            "class_names": list(class_names)}
    return _Config(label=label, spec=spec)

  def _info(self):
    spec = self.builder_config.spec
    return tfds.core.DatasetInfo(
        builder=self,
        description="Image folders: " + json.dumps(spec["splits"]),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                          encoding="bytes"),
            "label": tfds.features.ClassLabel(names=list(spec["class_names"])),
            "file": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(
            splits=spec["splits"], class_names=spec["class_names"],
            class_folders=spec["class_folders"], skipped_files=[], source_modes={}),
    )

  def _split_generators(self, dl_manager):
    spec = self.builder_config.spec
    out = {}
    for split, s in spec["splits"].items():
      entries = folder.scan_split(s["root"], s["folder"], spec["class_folders"],
                                  spec["class_names"])
      out[split] = self._generate_examples(split, s, entries)
    return out

  def _generate_examples(self, split, s, entries):
    meta = self.info.metadata
    modes = collections.Counter()
    for i, e in enumerate(entries):
      image, mode, reason = folder.load_rgb(e.path, int(s["size"]))
      rel = os.path.relpath(e.path, s["root"])
      if image is None:
        meta["skipped_files"].append({"split": split, "file": rel, "reason": reason})
        continue
      modes[mode] += 1
      yield i, {"image": image, "label": e.label, "file": rel}
    meta["source_modes"][split] = dict(modes)
