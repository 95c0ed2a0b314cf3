"""A run's directory: the one place that names its files, knows its run, and locks it.

    wd = Workdir("runs/syn1_small")
    wd.checkpoints, wd.metrics, wd.artifact("dfm"), wd.figure("dfm_grid.png")
    with wd.lock():                      # one launch per workdir (process 0 holds an OS lock)
      wd.claim(identity, move_aside=False)  # refuses a workdir that holds another run

Layout:
    run.json              what defines the run (model and its shape, classes, dataset
                          fingerprint, seed, image size), written when training starts
    config.json           the exact config of the latest launch
    checkpoints/<step>/   Orbax checkpoints; checkpoints_corrupt/ holds unreadable ones
    metrics.jsonl, tensorboard/, train_results.json
    analysis/<kind>.npz   artifacts (analysis/dfm_partial/<fingerprint>/ while a DFM
                          ranking runs, heatmap_partial/<fingerprint>/ for a heat map)
    figures/*.png, report.md, summary.json
    .lock                 the PID and host of the launch that holds the workdir
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import socket
import threading
from typing import Any

import numpy as np

from freqjax import artifacts, classmap, errors, parallel

RUN_FILE = "run.json"
# The fields of run.json, in the order a conflict lists them.
IDENTITY_FIELDS = (
    "model.name",
    "model.width_multiplier",
    "model.stem",
    "num_classes",
    "class_names",
    "image_size",
    "seed",
    "dataset",
    "normalisation",
    "augment.dfmx",
    "class_map",
)


class Workdir:
  """Paths of one run directory (nothing is created until something is written).

  `other_data`: the analysis of data other than the run's, on purpose
  (`config.analysis.data='config'`), writes its artifacts and figures to
  analysis/<other_data>/ and figures/<other_data>/, never over the run's own.
  """

  def __init__(self, root: str | os.PathLike, other_data: str = ""):
    self.root = os.path.abspath(os.fspath(root))
    self.other_data = other_data

  def __fspath__(self) -> str:
    return self.root

  def __repr__(self) -> str:
    return f"Workdir({self.root!r})"

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  run_file = property(lambda self: self.path(RUN_FILE))
  config = property(lambda self: self.path("config.json"))
  checkpoints = property(lambda self: self.path("checkpoints"))
  checkpoints_corrupt = property(lambda self: self.path("checkpoints_corrupt"))
  metrics = property(lambda self: self.path("metrics.jsonl"))
  tensorboard = property(lambda self: self.path("tensorboard"))
  train_results_file = property(lambda self: self.path("train_results.json"))
  analysis = property(lambda self: self.path("analysis", self.other_data))
  figures = property(lambda self: self.path("figures", self.other_data))
  report = property(lambda self: self.path("report.md"))
  summary = property(lambda self: self.path("summary.json"))
  dfm_partial = property(lambda self: os.path.join(self.analysis, "dfm_partial"))
  heatmap_partial = property(lambda self: os.path.join(self.analysis, "heatmap_partial"))
  bench_search = property(lambda self: os.path.join(self.analysis, "bench_search"))
  lock_file = property(lambda self: self.path(".lock"))

  def artifact(self, kind: str, suffix: str = "") -> str:
    """analysis/<kind><suffix>.npz (e.g. artifact('shortcut', '_ood_cartoon'))."""
    return os.path.join(self.analysis, f"{kind}{suffix}.npz")

  def figure(self, name: str) -> str:
    return os.path.join(self.figures, name)

  def train_results(self) -> dict | None:
    """train_results.json's content, or None if training has not finished a launch."""
    try:
      with open(self.train_results_file) as f:
        return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
      return None

  def training_done(self) -> bool:
    r = self.train_results()
    return bool(r and r.get("done"))

  def lock(self) -> Lock:
    return Lock(self)

  # ------------------------------------------------------------------- run identity ----

  def recorded_identity(self) -> dict | None:
    """The identity in run.json, or one rebuilt from an older run's config.json, or None."""
    try:
      with open(self.run_file) as f:
        return json.load(f)
    except FileNotFoundError:
      pass
    except json.JSONDecodeError as e:
      raise errors.WorkdirError(
          f"{self.run_file} is not readable JSON ({e}); it records which run this workdir "
          "holds. Restore it, or use another --workdir."
      ) from e
    if not (os.path.exists(self.config) and self.holds_a_run()):
      return None
    try:  # a run trained before run.json existed: its config.json says what it was
      with open(self.config) as f:
        c = json.load(f)
      ident = identity_from_dict(c)
    except (OSError, ValueError, KeyError, TypeError):
      return None
    ident.pop("dataset")  # not recorded by older runs
    return ident

  def holds_a_run(self) -> bool:
    """True when the workdir has checkpoints or training logs (a run's work to protect)."""
    ck = self.checkpoints
    has_ck = os.path.isdir(ck) and any(not n.startswith(".") for n in os.listdir(ck))
    return has_ck or os.path.exists(self.metrics) or os.path.exists(self.train_results_file)

  def claim(self, identity: dict, *, move_aside: bool = False) -> None:
    """Records `identity` as this workdir's run, or stops if the workdir holds another.

    Called before anything is written. With `move_aside`, a conflicting run is renamed to
    `<workdir>.moved-<time>` (never deleted) and a fresh workdir takes its place.
    """
    # Every process reads the same state: none reads after process 0 has written.
    parallel.sync("freqjax_claim_read")
    recorded = self.recorded_identity()
    diff = identity_diff(recorded, identity) if recorded is not None else []
    parallel.sync("freqjax_claim_decided")
    if diff and not move_aside:
      raise errors.WorkdirError(conflict_message(self.root, diff))
    if diff:
      self._move_aside()
    fresh = diff or recorded is None or not os.path.exists(self.run_file)
    if fresh and parallel.is_main_process():
      artifacts.write_json(self.run_file, identity)
    parallel.sync("freqjax_claim_workdir")

  def claim_empty(self, identity: dict, *, move_aside: bool = False, what: str = "") -> None:
    """`claim` for a launch that writes a whole run at once (a model import): refuses a
    workdir that holds any run's work (checkpoints, training logs), even of the same model,
    unless `move_aside` (the old run is renamed, never deleted)."""
    parallel.sync("freqjax_claim_empty_read")
    busy = self.holds_a_run()
    parallel.sync("freqjax_claim_empty_decided")
    if busy and not move_aside:
      raise errors.WorkdirError(
          f"Workdir {self.root} already holds a run (checkpoints or training logs); writing "
          f"{what or 'a new run'} there would mix the two. Nothing was written. Use a new "
          f"--workdir, or pass --move_aside to move the old run to {self.root}.moved-<time> "
          "(it is kept, not deleted)."
      )
    if busy:
      self._move_aside()
    self.claim(identity)

  def _move_aside(self) -> None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = f"{self.root}.moved-{stamp}"
    n = 1
    while os.path.exists(dest):
      dest, n = f"{self.root}.moved-{stamp}-{n}", n + 1
    if parallel.is_main_process():
      held = _HELD.get(self.root)
      os.rename(self.root, dest)
      print(f"Moved the previous run in {self.root} to {dest} (nothing was deleted).", flush=True)
      if held is not None:  # keep holding the (fresh) workdir
        held.relock()
    parallel.sync("freqjax_move_aside")


def identity(config, dataset_path: str | None) -> dict:
  """What defines a run: a launch whose config differs in any of these is another run."""
  ident = identity_from_dict(config.to_dict() if hasattr(config, "to_dict") else config)
  if dataset_path:
    ident["dataset"] = dataset_fingerprint(dataset_path)
    ident["dataset_path"] = dataset_path_fingerprint(dataset_path)
  if hasattr(config, "augment") and _dfmx_on(config.augment.dfmx):
    ident["augment.dfmx"] = _dfmx_identity(config)
  return ident


def _dfmx_on(dfmx) -> bool:
  """DFM-X is on when it names DFMs and p > 0 (as `augment.dfmx_keep_masks`)."""
  return bool(dfmx.get("dfms")) and float(dfmx.get("p", 0.0)) > 0.0


def _dfmx_identity(config) -> str:
  """DFM-X's DFMs (by content, wherever the file lies) and its probability."""
  import hashlib  # pylint: disable=g-import-not-at-top

  from freqjax.data import augment  # pylint: disable=g-import-not-at-top

  masks = np.asarray(augment.dfmx_keep_masks(config))
  digest = hashlib.sha1(masks.tobytes()).hexdigest()[:12]
  return f"dfms {digest} p={float(config.augment.dfmx.p):g}"


def identity_from_dict(c: dict) -> dict:
  m, d = c["model"], c["data"]
  return {
      "model.name": m["name"],
      "model.width_multiplier": float(m["width_multiplier"]),
      "model.stem": m["stem"],
      "num_classes": int(d["num_classes"]),
      "class_names": list(d["class_names"]),
      "image_size": int(d["image_size"]),
      "seed": int(c["seed"]),
      "dataset": None,
      "normalisation": {
          "mean": [float(x) for x in d["mean"]],
          "std": [float(x) for x in d["std"]],
      },
      # Training with DFM-X makes another run; set by `identity` (it reads the DFMs).
      "augment.dfmx": None if _dfmx_on((c.get("augment") or {}).get("dfmx") or {}) else "off",
      # Which model output each class is (a run.json from before it has none: not compared).
      "class_map": classmap.identity_of(c),
  }


def dataset_fingerprint(path: str) -> str:
  """<builder>/content-<hash> of a prepared dataset: a hash of its images and labels
  (`datasets.content_digest`), so the same images copied elsewhere or touched are the same
  dataset, and one replaced image is another."""
  from freqjax.data import datasets  # pylint: disable=g-import-not-at-top

  builder = os.path.normpath(path).split(os.sep)[-3]
  return f"{builder}/content-{datasets.content_digest(path)}"


def dataset_path_fingerprint(path: str) -> str:
  """<builder>/<config>/<version> of a prepared dataset (what runs recorded as their dataset
  before the content hash): its config name hashes the files' paths, sizes and mtimes."""
  parts = os.path.normpath(path).split(os.sep)
  return "/".join(parts[-3:])


def identity_diff(recorded: dict, current: dict) -> list[tuple[str, Any, Any]]:
  """(field, recorded, current) for every field both record and that differs. A dataset
  recorded by an older run as its path fingerprint is compared as one."""
  out = []
  for k in IDENTITY_FIELDS:
    if k in recorded and k in current and recorded[k] is not None and current[k] is not None:
      if recorded[k] == current[k]:
        continue
      if k == "dataset" and "/content-" not in str(recorded[k]):
        if recorded[k] == current.get("dataset_path"):
          continue
      out.append((k, recorded[k], current[k]))
  return out


def conflict_message(root: str, diff) -> str:
  fields = "; ".join(f"{k}: {a!r} in the workdir, {b!r} now" for k, a, b in diff)
  return (
      f"Workdir {root} holds another run ({fields}). Nothing was written. Either use a "
      "new --workdir for this config, or pass --move_aside to move the old run to "
      f"{root}.moved-<time> (it is kept, not deleted) and start afresh here."
  )


# ------------------------------------------------------------------------------ lock ----

_HELD: dict[str, Lock] = {}
_HELD_GUARD = threading.Lock()


class Lock:
  """An exclusive OS lock (flock) on <workdir>/.lock, held by process 0 for a launch.

  Re-entrant within a process (the pipeline's stages each take it); a second launch on the
  same workdir fails at once with the holder's PID and host.
  """

  def __init__(self, wd: Workdir):
    self.wd = wd
    self._fd = None
    self._depth = 0
    self._created_root = False
    self._existing: set[str] = set()  # the workdir's entries when the launch took it

  def __enter__(self) -> Workdir:
    if not parallel.is_main_process():
      return self.wd
    with _HELD_GUARD:
      held = _HELD.get(self.wd.root)
      if held is not None:
        held._depth += 1
        return self.wd
      self._acquire()
      self._depth = 1
      _HELD[self.wd.root] = self
    return self.wd

  def __exit__(self, exc_type, *exc) -> None:
    if not parallel.is_main_process():
      return
    with _HELD_GUARD:
      held = _HELD[self.wd.root]
      held._depth -= 1
      if held._depth == 0:
        if exc_type is not None:
          held._tidy_after_failure()
        held._release()
        del _HELD[self.wd.root]

  def _acquire(self) -> None:
    root = self.wd.root
    if os.path.exists(root) and not os.path.isdir(root):
      raise errors.WorkdirError(
          f"--workdir {root} is a file, not a directory; nothing was written. Choose another "
          "--workdir (a new or existing directory)."
      )
    self._created_root = not os.path.exists(root)
    os.makedirs(root, exist_ok=True)
    self._existing = set(os.listdir(root))
    fd = os.open(self.wd.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = ""
      try:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        info = json.loads(holder)
        holder = (
            f"PID {info['pid']} on host {info['host']}, started {info['started']}, "
            f"command: {info['command']}"
        )
      except (OSError, ValueError, KeyError):
        holder = holder or "an unknown process"
      os.close(fd)
      raise errors.WorkdirError(
          f"Workdir {self.wd.root} is in use by another launch ({holder}). Wait for it to "
          "finish (or stop it), or use another --workdir."
      ) from None
    import sys  # pylint: disable=g-import-not-at-top

    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:500],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    self._fd = fd
    sweep_temporaries(root)  # ours alone now: any left is a killed launch's

  def _release(self) -> None:
    if self._fd is not None:
      try:
        os.ftruncate(self._fd, 0)
      except OSError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def _tidy_after_failure(self) -> None:
    """After a failed launch, leaves the workdir as the launch found it, as far as the launch
    wrote nothing worth keeping: a first run that failed before its first checkpoint loses
    the run.json and config.json it wrote (so they cannot block the corrected launch); the
    lock file and empty folders it made go too, and the workdir itself if it made it and it is
    now empty. Nothing that existed before the launch is touched."""
    root, new = self.wd.root, set()
    try:
      new = set(os.listdir(root)) - self._existing
    except OSError:
      return
    ck = self.wd.checkpoints
    checkpointed = os.path.isdir(ck) and any(n.isdigit() for n in os.listdir(ck))
    first_run = RUN_FILE not in self._existing and not checkpointed
    for name in sorted(new - {".lock"}):
      path = os.path.join(root, name)
      try:
        if first_run and name in _FIRST_RUN_FILES:
          os.remove(path)
        elif os.path.isdir(path):
          _remove_empty_dirs(path)
      except OSError:
        pass
    if ".lock" in new or self._created_root:
      try:
        os.remove(self.wd.lock_file)
      except OSError:
        pass
    if self._created_root:
      try:
        os.rmdir(root)  # only if now empty
      except OSError:
        pass

  def relock(self) -> None:
    """After the workdir was moved aside: lock the fresh one at the same path."""
    old = self._fd
    self._fd = None
    self._acquire()
    self._created_root, self._existing = True, set()
    if old is not None:
      fcntl.flock(old, fcntl.LOCK_UN)
      os.close(old)


# What records a first launch's run before its first checkpoint (removed if it fails, so that
# it cannot block the corrected launch; its training logs stay, to show what happened).
_FIRST_RUN_FILES = (RUN_FILE, "config.json")


# artifacts._atomic_write's temporary files: .<name>.<mkstemp's 8 characters>.tmp
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def sweep_temporaries(root: str) -> list[str]:
  """Removes the temporary files of atomic writes that a killed launch left among the
  workdir's own files (its top level, analysis/ and figures/; never a finished file, and
  nothing else is looked at). Called by the launch that has just taken the workdir's lock,
  so no other launch writes there."""
  paths = [os.path.join(root, n) for n in os.listdir(root)]
  for top in ("analysis", "figures"):
    for dirpath, _, files in os.walk(os.path.join(root, top)):
      paths += [os.path.join(dirpath, n) for n in files]
  removed = []
  for path in paths:
    if _TEMPORARY.match(os.path.basename(path)) and os.path.isfile(path):
      try:
        os.remove(path)
        removed.append(path)
      except OSError:
        pass
  return removed


def _remove_empty_dirs(top: str) -> None:
  """Removes `top` and the folders under it that hold no file (never a file)."""
  for dirpath, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(dirpath)
    except OSError:
      pass


def locked(root) -> Lock:
  """`with workdir.locked(path):` — the lock of the workdir at `path`."""
  return Workdir(root).lock()
