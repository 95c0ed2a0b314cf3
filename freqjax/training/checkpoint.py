"""The one checkpoint manager (Orbax): every epoch, keep the last N and the best.

Each checkpoint (directory `<workdir>/checkpoints/<step>/`) holds two items:
- 'state': the TrainState (params, BatchNorm statistics, optimiser state, step);
- 'host': JSON with the loop's host-side state (epoch, position in the epoch, plateau
  scheduler, validation loss).
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint that looks finished. If the latest
checkpoint cannot be restored anyway (a damaged disk, a truncated file), `restore_latest`
moves it to `<workdir>/checkpoints_corrupt/`, warns, and falls back to the one before.
"""

from __future__ import annotations

import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from freqjax import parallel


class Checkpoints:

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.keep = keep
    self._mgr = self._open()

  def _open(self) -> ocp.CheckpointManager:
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(self.keep),
        pp.BestN(get_metric_fn=lambda m: m["val_loss"], reverse=True, n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=False, create=True,
        cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state, host: dict, val_loss: float | None) -> None:
    metrics = None if val_loss is None else {"val_loss": float(val_loss)}
    self._mgr.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                host=ocp.args.JsonSave(dict(host, val_loss=val_loss))),
        metrics=metrics)
    self._mgr.wait_until_finished()

  def _restore(self, step: int, abstract_state):
    out = self._mgr.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      host=ocp.args.JsonRestore()))
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
      except Exception as e:  # any failure to read means: not a usable checkpoint
        logging.warning("Checkpoint %d in %s cannot be restored (%s: %s); moving it aside "
                        "and trying the previous one.", step, self.directory,
                        type(e).__name__, e)
        self._quarantine(step)
    return None

  def _quarantine(self, step: int) -> None:
    if parallel.is_main_process():
      bad = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupt")
      os.makedirs(bad, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)),
                  os.path.join(bad, f"{step}-{int(time.time())}"))
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
      if loss is not None and (best_loss is None or loss < best_loss):
        best, best_loss = step, loss
    return best

  def restore(self, which, abstract_state):
    """Restores 'best', 'latest' or a step number; returns (state, host, step)."""
    steps = self.steps()
    if not steps:
      raise FileNotFoundError(
          f"No checkpoint in {self.directory}. Train first (launch/train.py with the same "
          "--workdir), or point --workdir at a finished training run.")
    if which == "latest":
      step = steps[-1]
    elif which == "best":
      step = self.best_step() or steps[-1]
    else:
      step = int(which)
      if step not in steps:
        raise FileNotFoundError(f"No checkpoint at step {step} in {self.directory}; "
                                f"available steps: {steps}.")
    state, host = self._restore(step, abstract_state)
    return state, host, step

  def close(self):
    self._mgr.close()


def abstract(state, sharding):
  """ShapeDtypeStructs of `state`, placed with `sharding`, for restoring."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
