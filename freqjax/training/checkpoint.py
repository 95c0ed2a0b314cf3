"""The one checkpoint manager (Orbax): every epoch, keep the last N and the best.

Each checkpoint (directory `<workdir>/checkpoints/<step>/`) holds two items:
- 'state': the TrainState (params, BatchNorm statistics, optimiser state, step);
- 'host': JSON with the loop's host-side state (epoch, position in the epoch, plateau
  scheduler, validation loss).
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint that looks finished. If the latest
checkpoint cannot be read anyway (a damaged disk, a truncated file), `restore_latest`
moves it to `<workdir>/checkpoints_corrupt/`, warns, and falls back to the one before. A
checkpoint that reads fine but holds another model (other shapes or structure) is never
moved: that is a CheckpointError naming the differences.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from freqjax import errors, parallel


class UnreadableCheckpoint(Exception):
  """A checkpoint's files cannot be read (damaged or truncated)."""


class Checkpoints:

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.keep = keep
    self._mgr = self._open()

  def _open(self) -> ocp.CheckpointManager:
    policy = pp.AnyPreservationPolicy(
        [
            pp.LatestN(self.keep),
            pp.BestN(
                get_metric_fn=lambda m: m["val_loss"],
                reverse=True,
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        enable_async_checkpointing=False,
        create=True,
        cleanup_tmp_directories=True,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "host": ocp.JsonCheckpointHandler()}
    mgr = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    # Orbax lists the directory for temporary paths in a background thread. A launch that
    # fails at once (no checkpoint yet) removes the folder it created, and that thread then
    # printed a traceback after the one-line error (seen once under load). The listing is
    # quick: wait for it here.
    settle = getattr(mgr, "_maybe_await_cleanup_tmp_directory", None)
    if settle is not None:
      settle()
    return mgr

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state, host: dict, val_loss: float | None) -> None:
    metrics = None if val_loss is None else {"val_loss": float(val_loss)}
    self._mgr.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            host=ocp.args.JsonSave(dict(host, val_loss=val_loss)),
        ),
        metrics=metrics,
    )
    self._mgr.wait_until_finished()

  def _restore(self, step: int, abstract_state):
    """(state, host); CheckpointError if it holds another model, UnreadableCheckpoint if its
    files cannot be read."""
    try:
      stored = self._mgr.item_metadata(step)["state"]
      stored = getattr(stored, "tree", stored)
      if stored is None:
        raise ValueError("no metadata for the item 'state'")
    except Exception as e:  # pylint: disable=broad-except  (any failure to read the metadata)
      raise UnreadableCheckpoint(f"{type(e).__name__}: {e}") from e
    diff = structure_diff(stored, abstract_state)
    if diff:
      raise errors.CheckpointError(
          f"Checkpoint {step} in {self.directory} holds another model than the configured "
          f"one: {diff}."
      )
    try:
      out = self._mgr.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()
          ),
      )
    except Exception as e:  # pylint: disable=broad-except  (the structure matched: bad files)
      raise UnreadableCheckpoint(f"{type(e).__name__}: {e}") from e
    return out["state"], dict(out["host"])

  def host_state(self, step: int) -> dict:
    out = self._mgr.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))
    return dict(out["host"])

  def restore_latest(self, abstract_state):
    """(state, host, step) of the newest checkpoint that restores, or None if none does."""
    for step in reversed(self.steps()):
      try:
        state, host = self._restore(step, abstract_state)
        return state, host, step
      except UnreadableCheckpoint as e:
        logging.warning(
            "Checkpoint %d in %s cannot be read (%s); moving it to "
            "checkpoints_corrupt/ and trying the previous one.",
            step,
            self.directory,
            e,
        )
        self._quarantine(step)
    return None

  def _quarantine(self, step: int) -> None:
    if parallel.is_main_process():
      bad = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupt")
      os.makedirs(bad, exist_ok=True)
      shutil.move(
          os.path.join(self.directory, str(step)), os.path.join(bad, f"{step}-{int(time.time())}")
      )
    parallel.sync("freqjax_quarantine_checkpoint")
    self._mgr.close()
    self._mgr = self._open()

  def best_step(self) -> int | None:
    best, best_loss = None, None
    for step in self.steps():
      try:
        loss = self.host_state(step).get("val_loss")
      except Exception:  # pylint: disable=broad-except
        continue
      if loss is not None and math.isfinite(loss) and (best_loss is None or loss < best_loss):
        best, best_loss = step, loss
    return best

  def restore(self, which, abstract_state):
    """Restores 'best', 'latest' or a step number; returns (state, host, step)."""
    steps = self.steps()
    if not steps:
      raise errors.CheckpointError(
          f"No checkpoint in {self.directory}. Train first (launch/train.py with the same "
          "--workdir), or point --workdir at a finished training run."
      )
    if which == "latest":
      step = steps[-1]
    elif which == "best":
      step = self.best_step() or steps[-1]
    else:
      step = int(which)
      if step not in steps:
        raise errors.CheckpointError(
            f"No checkpoint at step {step} in {self.directory}; " f"available steps: {steps}."
        )
    try:
      state, host = self._restore(step, abstract_state)
    except UnreadableCheckpoint as e:
      raise errors.CheckpointError(
          f"Checkpoint {step} in {self.directory} cannot be read ({e}). Choose another with "
          f"--config.analysis.checkpoint (available: {steps}), or resume training with "
          "launch/train.py, which sets unreadable checkpoints aside."
      ) from e
    return state, host, step

  def close(self):
    self._mgr.close()


def abstract(state, sharding):
  """ShapeDtypeStructs of `state`, placed with `sharding`, for restoring."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
  )


def _flat(tree) -> dict[str, tuple]:
  """{'params/Conv_0/kernel': shape} of a pytree of arrays or Orbax array metadata."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = []
    for k in path:
      for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
          names.append(str(getattr(k, attr)))
          break
    out["/".join(names)] = tuple(getattr(leaf, "shape", ()) or ())
  return out


def structure_diff(stored, abstract_state, limit: int = 3) -> str:
  """'' if `stored` (checkpoint metadata) has the arrays and shapes of `abstract_state`, else
  a short description of the first differences."""
  a, b = _flat(stored), _flat(abstract_state)
  # Orbax drops empty containers and may store tuples as dicts: compare the leaves only.
  missing = [k for k in b if k not in a]
  extra = [k for k in a if k not in b]
  shapes = [f"{k} {a[k]} stored, {b[k]} configured" for k in b if k in a and a[k] != b[k]]
  parts = []
  for what, items in (
      ("arrays differ in shape", shapes),
      ("configured arrays are not stored", missing),
      ("stored arrays are not in the configured model", extra),
  ):
    if items:
      more = ", ..." if len(items) > limit else ""
      parts.append(f"{len(items)} {what} (" + "; ".join(items[:limit]) + more + ")")
  return "; ".join(parts)
