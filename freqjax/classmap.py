"""The class map: which of a model's outputs each dataset class is.

A model trained here has one output per class: class k is output k. A model trained elsewhere
may have more: a torchvision or timm ImageNet-1k model has 1000, of which a dataset of ten
ImageNet classes uses ten. `config.model.num_outputs` is the model's output count (0: one per
class) and `config.data.model_classes` the output of each class, in class-index order (empty:
the identity). A 1000-output model whose class folders are named by ImageNet synset
(`n02814533` or `n02814533_beach_wagon`) maps itself: each synset's index in ImageNet-1k's
order (tensorflow-datasets' `imagenet2012/labels.txt`); any other model with more outputs
than classes needs the map given.

Every analysis of a model sees its logits reordered (`output_order`, `Context.apply_fn`): the
classes' outputs first, in class order, then the others. Class k is logit k whatever the map,
so the stages pick images and label them by dataset class as before, while the
cross-entropy still runs over all the model's outputs, and a prediction >= num_classes is an
output outside the dataset's classes.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re

import numpy as np

from freqjax import errors

# A class folder named by its ImageNet synset (WNID), alone or followed by '_<anything>'.
SYNSET = re.compile(r"^(n\d{8})(?:_.*)?$")
IMAGENET_OUTPUTS = 1000  # a model of this many outputs is mapped by its classes' synsets
WAYS_OUT = (
    "rename the folder to its ImageNet synset (e.g. n02814533 or n02814533_beach_wagon), or "
    "give the model output of every class, in class-index order, with "
    "--config.data.model_classes='(i0, i1, ...)'"
)


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
  """ImageNet-1k's 1000 synsets in output-index order, as tensorflow-datasets ships them."""
  spec = importlib.util.find_spec("tensorflow_datasets")  # found, not imported (seconds)
  roots = list(spec.submodule_search_locations or []) if spec is not None else []
  for root in roots:
    path = os.path.join(root, "datasets", "imagenet2012", "labels.txt")
    if os.path.isfile(path):
      with open(path) as f:
        return tuple(line.strip() for line in f if line.strip())
  raise errors.ConfigError(
      "Mapping classes to an ImageNet-1k model's outputs by synset needs ImageNet's label "
      "list from tensorflow-datasets (tensorflow_datasets/datasets/imagenet2012/labels.txt), "
      "which is not installed; install it or give --config.data.model_classes."
  )


def synset_of(folder: str) -> str | None:
  m = SYNSET.match(os.path.basename(str(folder)))
  return m.group(1) if m else None


def outputs(config) -> int:
  """The model's output count: config.model.num_outputs, 0 meaning one per class."""
  return int(config.model.num_outputs) or int(config.data.num_classes)


def mapping(config) -> tuple[int, ...] | None:
  """The model output of each class, in class-index order; None for the identity."""
  ident = identity_of(config.to_dict())
  return None if ident == "identity" else tuple(ident["model_classes"])


def output_order(config) -> np.ndarray | None:
  """The permutation of the model's outputs every analysis applies to its logits: the
  classes' outputs in class order, then the others in index order. None for the identity."""
  m = mapping(config)
  if m is None:
    return None
  total = outputs(config)
  if not m or max(m) >= total:
    raise errors.ConfigError(
        f"config.data.model_classes={m} does not map the {config.data.num_classes} classes "
        f"into a model of {total} outputs (config.model.num_outputs="
        f"{config.model.num_outputs}); set config.model.num_outputs to the model's output "
        "count (an import sets it) and one output below it per class."
    )
  rest = np.setdiff1d(np.arange(total), np.asarray(m))
  return np.concatenate([np.asarray(m), rest]).astype(np.int32)


def resolve(config) -> None:
  """Checks the map (and fills it in place from synset-named class folders for a
  1000-output model); raises ConfigError with the one-line fix. `config.validate` calls it."""
  d, n = config.data, int(config.data.num_classes)
  total = config.model.num_outputs
  if isinstance(total, bool) or not isinstance(total, int) or total < 0:
    raise errors.ConfigError(
        f"config.model.num_outputs={total!r} must be a whole number >= 0 (0: one output per "
        "class)."
    )
  if 0 < total < n:
    raise errors.ConfigError(
        f"config.model.num_outputs={total} is fewer than the {n} classes: every class needs "
        "an output of its own."
    )
  if not d.model_classes and total > n:
    if total != IMAGENET_OUTPUTS:
      raise errors.ConfigError(
          f"The model has {total} outputs for {n} classes, and only an ImageNet-1k model "
          f"(1000 outputs) is mapped by synset: give the output of every class with "
          f"--config.data.model_classes='(i0, i1, ...)' ({n} indices below {total})."
      )
    d.model_classes = by_synset(d.class_folders or d.class_names, d.class_names)
  m = d.model_classes
  if not m:
    return
  if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in m):
    raise errors.ConfigError(
        f"config.data.model_classes={tuple(m)} must be whole numbers: the model output of "
        "each class."
    )
  if len(m) != n:
    raise errors.ConfigError(
        f"config.data.model_classes lists {len(m)} outputs for {n} classes; give one per "
        "class, in class-index order."
    )
  for k, i in enumerate(m):
    # With num_outputs=0 the output count is not known yet (an import takes it from the
    # file); `output_order` checks the range once a model is analysed.
    if i < 0 or (total and i >= total):
      raise errors.ConfigError(
          f"config.data.model_classes maps class {d.class_names[k]!r} to output {i}, but the "
          f"model's outputs are 0..{(total or n) - 1}."
      )
  for k, i in enumerate(m):
    first = list(m).index(i)
    if first != k:
      raise errors.ConfigError(
          f"config.data.model_classes maps two classes, {d.class_names[first]!r} and "
          f"{d.class_names[k]!r}, to output {i}; each class needs an output of its own."
      )


def by_synset(folders, class_names) -> tuple[int, ...]:
  """Each class's index in ImageNet-1k's output order, from its folder's synset."""
  synsets = imagenet_synsets()
  index = {s: i for i, s in enumerate(synsets)}
  out = []
  for name, folder in zip(class_names, folders):
    s = synset_of(folder)
    if s is None:
      raise errors.ConfigError(
          f"Class {name!r} (folder {folder!r}) is not named by an ImageNet synset, so which of "
          f"the model's {len(synsets)} outputs it is cannot be told: {WAYS_OUT}."
      )
    if s not in index:
      raise errors.ConfigError(
          f"Class {name!r} (folder {folder!r}): {s} is not one of ImageNet-1k's "
          f"{len(synsets)} synsets (tensorflow_datasets/datasets/imagenet2012/labels.txt), "
          f"so the model has no output for it: {WAYS_OUT}."
      )
    out.append(index[s])
  return tuple(out)


def check_trainable(config) -> None:
  """Training builds one output per class: a config that maps classes to other outputs is
  refused (it describes a model trained elsewhere)."""
  if mapping(config) is not None:
    raise errors.ConfigError(
        f"Training builds a model of {config.data.num_classes} outputs, one per class, but "
        f"this config maps the classes to a model's outputs (config.model.num_outputs="
        f"{config.model.num_outputs}, config.data.model_classes={tuple(config.data.model_classes)}"
        "): a model trained elsewhere, to import with launch/import_model.py; to train here, "
        "set --config.model.num_outputs=0 --config.data.model_classes='()'."
    )


def identity_of(c: dict):
  """The map as a run's identity records it (run.json 'class_map'): 'identity', or the
  output count and each class's output. `c` is a config as a dict."""
  m, d = c.get("model") or {}, c.get("data") or {}
  n = int(d["num_classes"])
  total = int(m.get("num_outputs") or 0) or n
  classes = [int(i) for i in d.get("model_classes") or ()]
  if total == n and classes in ([], list(range(n))):
    return "identity"
  return {"num_outputs": total, "model_classes": classes}


def analyses(config) -> dict | None:
  """How each analysis uses the map (summary.json's 'class_map' and the report); None for the
  identity."""
  m = mapping(config)
  if m is None:
    return None
  n, total = int(config.data.num_classes), outputs(config)
  return {
      "num_outputs": total,
      "model_classes": list(m),
      "classes": {name: int(i) for name, i in zip(config.data.class_names, m)},
      "adcs": "the data alone (no model)",
      "dfm": (
          f"summed cross-entropy over all {total} outputs, each image labelled with its "
          "class's output"
      ),
      "shortcut": (
          f"tpr/fpr: the prediction over all {total} outputs (one outside the {n} classes' "
          "outputs is a miss, the confusion matrices' last column 'other'); "
          f"tpr_subset/fpr_subset: the prediction over the {n} classes' outputs only"
          if total > n
          else f"the prediction over the {n} outputs, each read as its class"
      ),
      "sensitivity": f"gradient of the cross-entropy over all {total} outputs (or of the "
      "class's logit)",
      "heatmap": f"test error and cross-entropy over all {total} outputs",
      "test_accuracy": f"over all {total} outputs"
      + (f" (test_accuracy_subset: over the {n} classes' outputs)" if total > n else ""),
  }
