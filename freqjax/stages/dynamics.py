"""Learning-dynamics stage: analysis/dynamics.npz and figures/dynamics.png from the band-view
records of the training log (None when training recorded none)."""

from __future__ import annotations

import hashlib
import os

from freqjax import artifacts, plotting, workdir as workdir_lib
from freqjax.evaluation import dynamics as dyn_lib
from freqjax.stages import context
from freqjax.training import logs


@context.stage
def run(config, workdir) -> artifacts.Artifact | None:
  wd = workdir_lib.Workdir(workdir)
  if not os.path.exists(wd.metrics):
    return None
  names = list(config.data.class_names)
  threshold = float(config.dynamics.threshold)
  with open(wd.metrics, "rb") as f:
    log_hash = hashlib.sha1(f.read()).hexdigest()[:16]
  dyn = dyn_lib.collect(logs.read_jsonl(wd.metrics), names)
  if not dyn["views"]:
    return None
  steps = dyn_lib.learned_steps(dyn, threshold)

  def compute():
    return (
        {
            "steps": dyn["steps"],
            "tpr": dyn["tpr"],
            "fpr": dyn["fpr"],
            "acc": dyn["acc"],
            "learned_step": steps,
        },
        {
            "views": dyn["views"],
            "classes": names,
            "threshold": threshold,
            "every_steps": int(config.dynamics.every_steps),
        },
    )

  def figure(_):
    plotting.dynamics(dyn, names, wd.figure("dynamics.png"), threshold, steps)

  fp = hashlib.sha1(repr((log_hash, names, threshold)).encode()).hexdigest()[:16]
  return context.cached(wd.artifact("dynamics"), "dynamics", fp, compute, figure)
