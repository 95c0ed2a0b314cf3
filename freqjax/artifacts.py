"""The one on-disk format for analysis results, atomic writes, and the authors' pickles.

Format ("freqjax-artifact", version 1): one uncompressed NumPy `.npz` file per artifact,
read with `allow_pickle=False`. It holds named arrays plus an entry `__meta__`: UTF-8 JSON
bytes (uint8) with at least
    {"format": "freqjax-artifact", "version": 1, "kind": <kind>, "created": <ISO time>}
and, for analysis results, the provenance: model, checkpoint (path and step), config,
dataset, class names, image_size, layout ("centred": index (H/2, W/2) is DC), patch_size,
thresholds. Kinds and their arrays (C classes, H×W spectrum):
    adcs      adcs (C,H,W) int32; class_mean_amplitude (C,H,W,3) float64; counts (C,)
    scores    scores (C,H,W) float32: summed class cross-entropy with each candidate removed
    dfm       dfm (T,C,H,W) bool: top-t cells per threshold in meta['thresholds']
    shortcut  confusion (C,C,C): per DFM k, rows = true class; confusion_unfiltered (C,C);
              tpr, fpr (C,) filtered; tpr_unfiltered, fpr_unfiltered (C,)
    greedy    dfm (C,H,W) bool: frequencies DFM-X's greedy removal kept; order, correct
    dynamics  steps (S,), tpr, fpr, acc (S,V,C) per evaluation step, view and class
    heatmap   error, loss (H,W): test error / mean CE with each Fourier basis added (meta
              eps, patch_size, seed); candidate_error, candidate_loss (K,), candidate_rects;
              clean_error, clean_loss ()
    sensitivity  sensitivity (C,H,W) float64: per class, mean |F(grad_x L)|^2 (unitary FFT,
              summed over channels); radial (C,R): its mean over rings of integer radius;
              counts (C,); meta target ('loss' | 'logit')
    hfss      subsets (C,N,H,W) bool: each class's N best keep masks of HFSS's last stage,
              best first; dfm (C,H,W) bool = subsets[:, 0]; subset_loss, tpr, fpr,
              keep_fraction (C,N); tpr_unfiltered, fpr_unfiltered (C,); scores (C,H,W)
              float32; stage_best_loss (T,C,N); stage_num_masks, stage_num_distinct,
              forwards_per_stage (T,); forwards_evaluation, forwards (); meta params, grids
              (see freqjax.spectral.hfss.search)
Every file is written to a temporary name in the same directory and renamed into place,
so a reader never sees a half-written artifact; `load` checks the header and kind.

Importing DFMs in the authors' pickle format (`{class_index: 32×32 0/1 map}`, centred) uses
a restricted unpickler that resolves no global except NumPy's array reconstructors: a pickle
holding anything else is refused before any of its code could run.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from freqjax import errors

FORMAT = "freqjax-artifact"
VERSION = 1
KINDS = (
    "adcs",
    "scores",
    "dfm",
    "shortcut",
    "greedy",
    "dynamics",
    "heatmap",
    "sensitivity",
    "hfss",
)


# The launcher that writes each kind (named when an artifact cannot be read).
REGENERATE = {
    "adcs": "launch/adcs.py",
    "scores": "launch/dfm.py",
    "dfm": "launch/dfm.py",
    "shortcut": "launch/shortcut_test.py",
    "greedy": "launch/dfm.py --config.analysis.greedy=True",
    "dynamics": "launch/train.py with --config.dynamics.every_steps=N, then launch/pipeline.py",
    "heatmap": "launch/heatmap.py",
    "sensitivity": "launch/sensitivity.py",
    "hfss": "launch/dfm.py",  # HFSS runs in the DFM stage (freqjax.spectral.hfss)
}


class ArtifactError(errors.UserError, ValueError):
  """An artifact file is missing, damaged, of another kind or of an unknown version."""


def _umask() -> int:
  """The process umask, read without changing it where the OS tells (Linux /proc): setting
  it to read it back would, for an instant, give files other threads create mode 0666."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o077)  # elsewhere: briefly the strictest mask, never a looser one
  os.umask(mask)
  return mask


def _atomic_write(path: str, write) -> str:
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file follows the umask
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_bytes(path: str, data: bytes) -> str:
  return _atomic_write(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> str:
  return write_bytes(path, text.encode())


def write_json(path: str, obj: Any) -> str:
  return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def save_npy(path: str, array: np.ndarray) -> str:
  return _atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def to_jsonable(obj):
  """Converts NumPy scalars/arrays, tuples and ConfigDicts to JSON-able values."""
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return to_jsonable(obj.tolist())
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, float) and not np.isfinite(obj):
    return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
  return obj


class Artifact:

  def __init__(self, kind: str, arrays: dict[str, np.ndarray], meta: dict):
    self.kind, self.arrays, self.meta = kind, arrays, meta

  def __getitem__(self, name: str) -> np.ndarray:
    return self.arrays[name]

  def __repr__(self):
    shapes = {k: v.shape for k, v in self.arrays.items()}
    return f"Artifact(kind={self.kind!r}, arrays={shapes})"


def save(
    path: str, kind: str, arrays: Mapping[str, np.ndarray], meta: Mapping | None = None
) -> str:
  """Writes an artifact atomically; returns its path."""
  if kind not in KINDS:
    raise ValueError(f"Unknown artifact kind {kind!r}; known kinds: {', '.join(KINDS)}.")
  header = {
      "format": FORMAT,
      "version": VERSION,
      "kind": kind,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  full = to_jsonable({**(meta or {}), **header})
  payload = {k: np.asarray(v) for k, v in arrays.items()}
  for k, v in payload.items():
    if v.dtype == object:
      raise ValueError(f"Artifact array {k!r} has dtype object; store numbers only.")
  payload["__meta__"] = np.frombuffer(json.dumps(full).encode(), np.uint8)
  return _atomic_write(path, lambda f: np.savez(f, **payload))


def load(path: str, kind: str | None = None) -> Artifact:
  """Reads an artifact; checks its header (and kind, when given).

  Any failure raises ArtifactError, whose message names the launcher that regenerates it.
  """
  path = os.fspath(path)

  def fail(what: str, cause=None):
    hint = (
        f" Regenerate it with python {REGENERATE[kind]} --config=<the run's config> "
        f"--workdir=<its workdir>."
        if kind in REGENERATE
        else ""
    )
    raise ArtifactError(what + hint) from cause

  if not os.path.exists(path):
    fail(f"No {kind + ' ' if kind else ''}artifact at {path}.")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode()) if "__meta__" in arrays else None
  except Exception as e:  # pylint: disable=broad-except  (zip, JSON and NumPy errors alike)
    fail(
        f"{path} is not a readable freqjax artifact (truncated or damaged: "
        f"{type(e).__name__}: {e}).",
        e,
    )
  if meta is None:
    fail(f"{path} has no __meta__ entry: not a freqjax artifact.")
  if meta.get("format") != FORMAT:
    fail(f"{path}: unknown format {meta.get('format')!r}.")
  if meta.get("version") != VERSION:
    fail(
        f"{path}: format version {meta.get('version')} is not supported (this freqjax reads "
        f"version {VERSION})."
    )
  if kind is not None and meta.get("kind") != kind:
    fail(f"{path} holds a {meta.get('kind')!r} artifact, expected {kind!r}.")
  return Artifact(meta["kind"], arrays, meta)


def exists(path: str, kind: str | None = None) -> bool:
  """True when `path` is a complete, readable artifact (of `kind`)."""
  try:
    load(path, kind)
    return True
  except ArtifactError:
    return False


# ----------------------------------------------------------------- the authors' pickles ----

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class UnsafePickleError(ValueError):
  """A pickle asked for something other than arrays, dicts, lists and numbers."""


class _RestrictedUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _NUMPY_GLOBALS:
      import importlib  # pylint: disable=g-import-not-at-top

      if module.startswith("numpy.core") and not hasattr(np, "core"):
        module = module.replace("numpy.core", "numpy._core")
      return getattr(importlib.import_module(module), name)
    raise UnsafePickleError(
        f"Refused to load {module}.{name} from the pickle: only NumPy arrays, dicts, lists "
        "and numbers are allowed in DFM pickles. The file was not executed."
    )


def _check_plain(obj, where="pickle"):
  if isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, (int, np.integer, str)):
        raise UnsafePickleError(f"{where}: dict key {k!r} is not a number or string.")
      _check_plain(v, f"{where}[{k!r}]")
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      _check_plain(v, f"{where}[{i}]")
  elif isinstance(obj, np.ndarray):
    if obj.dtype == object:
      raise UnsafePickleError(f"{where}: object arrays are not allowed.")
  elif not isinstance(obj, (int, float, bool, np.number, np.bool_)):
    raise UnsafePickleError(f"{where}: {type(obj).__name__} is not an array, dict or number.")


def safe_unpickle(data: bytes):
  """Unpickles bytes admitting only NumPy arrays, dicts, lists and numbers."""
  obj = _RestrictedUnpickler(io.BytesIO(data)).load()
  _check_plain(obj)
  return obj


def import_official_dfms(path: str) -> np.ndarray:
  """The authors' `{class_index: H×W 0/1 map}` pickle -> bool array (C, H, W), centred."""
  with open(path, "rb") as f:
    obj = safe_unpickle(f.read())
  if not isinstance(obj, dict) or not obj:
    raise ValueError(f"{path}: expected a dict {{class_index: map}}, got {type(obj).__name__}.")
  keys = sorted(int(k) for k in obj)
  if keys != list(range(len(keys))):
    raise ValueError(f"{path}: class indices {keys} are not 0..{len(keys) - 1}.")
  maps = [np.asarray(obj[k] if k in obj else obj[str(k)], np.float64) for k in keys]
  shapes = {m.shape for m in maps}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"{path}: maps must all be 2-D of one shape, got {sorted(shapes)}.")
  stack = np.stack(maps)
  if not np.isin(stack, (0.0, 1.0)).all():
    raise ValueError(f"{path}: maps must hold only 0 and 1 (these look like scores).")
  return stack.astype(bool)


def export_official_dfms(path: str, dfms: np.ndarray) -> str:
  """Writes (C, H, W) maps as the authors' pickle: {class_index: float64 0/1 array}."""
  obj = {int(c): np.asarray(m, np.float64) for c, m in enumerate(np.asarray(dfms))}
  return write_bytes(path, pickle.dumps(obj, protocol=3))
