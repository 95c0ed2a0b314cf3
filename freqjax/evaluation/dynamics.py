"""Learning dynamics: per-class TPR/FPR on band-limited test views during training.

Every `config.dynamics.every_steps` steps (up to `until_step`), the test split is evaluated
on each view of `config.dynamics.views` (see `spectral.masks.view_mask`), filtered on the
fly after normalisation. Records go to the run's metrics log with split 'dynamics/<view>'
and keys acc, tpr_<class>, fpr_<class>, acc_<class>.

A class counts as learned on a view at the first evaluated step where TPR - FPR >= the
threshold (0.5 by default): early on a model predicts one class for everything, and raw
per-class accuracy then says nothing about learning order (synthetic.md).
"""

from __future__ import annotations

import numpy as np

from freqjax.evaluation import inference, metrics
from freqjax.spectral import masks


class BandViewEvaluator:

  def __init__(self, config, model, mesh, test_loader, class_names):
    d = config.dynamics
    self.every, self.until = int(d.every_steps), int(d.until_step)
    self.views = list(d.views)
    self.class_names = list(class_names)
    self.masks = {v: masks.view_mask(v, int(config.data.image_size), d.bands) for v in self.views}
    self.loader, self.mesh = test_loader, mesh
    self.step_fn = inference.make_eval_step(model, config, mesh, filtered=True)

  def due(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0 and step <= self.until

  def __call__(self, variables, step: int, writer) -> None:
    for view in self.views:
      out = inference.evaluate(self.step_fn, variables, self.loader, self.mesh, self.masks[view])
      tpr, fpr = metrics.tpr_fpr(out["confusion"])
      acc_c = metrics.per_class_accuracy(out["confusion"])
      rec = {"acc": out["accuracy"]}
      for i, name in enumerate(self.class_names):
        rec[f"tpr_{name}"], rec[f"fpr_{name}"] = float(tpr[i]), float(fpr[i])
        rec[f"acc_{name}"] = float(acc_c[i])
      writer.write(step, f"dynamics/{view}", rec)


def collect(records, class_names) -> dict:
  """Metrics-log records -> {'steps': (S,), 'views': [...], 'tpr'/'fpr'/'acc': (S, V, C)}."""
  by_view: dict[str, dict[int, dict]] = {}
  for r in records:
    split = r.get("split", "")
    if split.startswith("dynamics/"):
      by_view.setdefault(split[len("dynamics/") :], {})[int(r["step"])] = r
  views = list(by_view)
  steps = sorted(set().union(*[set(v) for v in by_view.values()])) if views else []
  out = {"steps": np.array(steps, np.int64), "views": views}
  for key in ("tpr", "fpr", "acc"):
    arr = np.full((len(steps), len(views), len(class_names)), np.nan)
    for vi, v in enumerate(views):
      for si, s in enumerate(steps):
        r = by_view[v].get(s)
        if r is not None:
          arr[si, vi] = [r.get(f"{key}_{c}", np.nan) for c in class_names]
    out[key] = arr
  return out


def learned_steps(dyn: dict, threshold: float = 0.5) -> np.ndarray:
  """(V, C) first step with TPR - FPR >= threshold per view and class (-1: never)."""
  gap = dyn["tpr"] - dyn["fpr"]
  s, v, c = gap.shape
  out = np.full((v, c), -1, np.int64)
  for vi in range(v):
    for ci in range(c):
      hit = np.nonzero(gap[:, vi, ci] >= threshold)[0]
      if hit.size:
        out[vi, ci] = dyn["steps"][hit[0]]
  return out


def learned_first(steps: np.ndarray) -> list[list[int]]:
  """Per view, the classes learned at the earliest step (several on a tie, [] if none)."""
  out = []
  for row in steps:
    ok = row[row >= 0]
    out.append([] if ok.size == 0 else [int(i) for i in np.nonzero(row == ok.min())[0]])
  return out
