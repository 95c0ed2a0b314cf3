"""Runs side by side, from their saved artifacts only (never retrains): one run's ADCS, DFMs,
sensitivity and heat map (`views`), and two runs before/after a mitigation such as DFM-X
(`before_after`): clean accuracy and the shortcut test's TPR/FPR per class, both on the DFMs
of the run before (the shortcut being mitigated) and on each run's own DFMs."""

from __future__ import annotations

import os

import numpy as np

from freqjax import artifacts, errors, plotting, workdir as workdir_lib
from freqjax.evaluation import dfm_summary


def _load(wd: workdir_lib.Workdir, kind: str, suffix: str = ""):
  path = wd.artifact(kind, suffix)
  return artifacts.load(path, kind) if os.path.exists(path) else None


def views(workdir: str) -> dict:
  """What a run's analysis holds: class names, maps per kind (those present), accuracy."""
  wd = workdir_lib.Workdir(workdir)
  sc = _load(wd, "shortcut")
  other = _load(wd, "shortcut", "_dfms")
  if sc is None and other is None:
    raise errors.WorkdirError(
        f"{wd.root} has no analysis/shortcut.npz; run launch/pipeline.py (or the analysis "
        "launchers) on it first."
    )
  any_sc = sc if sc is not None else other
  out = {"class_names": any_sc.meta["classes"], "threshold": any_sc.meta["threshold"]}
  if sc is not None:
    out["shortcut"] = sc
  conf = any_sc["confusion_unfiltered"]
  out["accuracy"] = float(np.trace(conf) / conf.sum())
  for kind in ("adcs", "dfm", "sensitivity", "heatmap"):
    art = _load(wd, kind)
    if art is not None:
      out[kind] = art
  if other is not None:
    out["shortcut_dfms"] = other
  return out


def overview_figure(workdir: str, path: str | None = None) -> str:
  """figures/overview.png: ADCS, DFM and log10 sensitivity rows × classes, plus the heat map."""
  v = views(workdir)
  rows = {}
  if "adcs" in v:
    rows["ADCS"] = v["adcs"]["adcs"]
  if "dfm" in v:
    rows[f"DFM {100 * v['threshold']:g}%"] = dfm_summary.dfm_at(v["dfm"], v["threshold"])
  if "sensitivity" in v:
    rows["log10 sensitivity"] = np.log10(np.maximum(v["sensitivity"]["sensitivity"], 1e-30))
  heat = v["heatmap"]["error"] if "heatmap" in v else None
  path = path or workdir_lib.Workdir(workdir).figure("overview.png")
  return plotting.overview(rows, v["class_names"], path, heat=heat)


def before_after(before: str, after: str, figure: str | None = None) -> tuple[str, dict]:
  """Markdown table and numbers: clean accuracy; per class TPR/FPR on the DFMs of `before`
  (for `after`: its analysis/shortcut_dfms.npz, made with analysis.shortcut_dfms=<before>)
  and on each run's own DFMs."""
  b, a = views(before), views(after)
  if b["class_names"] != a["class_names"]:
    raise errors.ConfigError(
        f"The runs have other classes ({b['class_names']} vs {a['class_names']})."
    )
  if "shortcut_dfms" not in a:
    raise errors.WorkdirError(
        f"{after} has no analysis/shortcut_dfms.npz: rerun its shortcut test with "
        f"--config.analysis.shortcut_dfms={before} (launch/shortcut_test.py or the pipeline)."
    )
  if "shortcut" not in b:
    raise errors.WorkdirError(f"{before} has no analysis/shortcut.npz of its own DFMs.")
  names = b["class_names"]
  sb, sa, sa_own = b["shortcut"], a["shortcut_dfms"], a.get("shortcut")
  na = {"tpr": [float("nan")] * len(names), "fpr": [float("nan")] * len(names)}
  own_tpr = np.asarray(sa_own["tpr"] if sa_own is not None else na["tpr"], float)
  own_fpr = np.asarray(sa_own["fpr"] if sa_own is not None else na["fpr"], float)
  result = {
      "class_names": names,
      "accuracy": {"before": b["accuracy"], "after": a["accuracy"]},
      "on_before_dfms": {
          "tpr_before": sb["tpr"].tolist(),
          "tpr_after": sa["tpr"].tolist(),
          "fpr_before": sb["fpr"].tolist(),
          "fpr_after": sa["fpr"].tolist(),
      },
      "on_own_dfms": (
          {"tpr_after": own_tpr.tolist(), "fpr_after": own_fpr.tolist()}
          if sa_own is not None
          else None
      ),
  }
  rows = [
      "| class | TPR before | TPR after | FPR before | FPR after | TPR after, own DFMs | "
      "FPR after, own DFMs |",
      "|---|---|---|---|---|---|---|",
  ]
  for k, n in enumerate(names):
    rows.append(
        f"| {n} | {sb['tpr'][k]:.3f} | {sa['tpr'][k]:.3f} | {sb['fpr'][k]:.3f} | "
        f"{sa['fpr'][k]:.3f} | {own_tpr[k]:.3f} | {own_fpr[k]:.3f} |"
    )
  rows.append(
      f"| mean | {sb['tpr'].mean():.3f} | {sa['tpr'].mean():.3f} | {sb['fpr'].mean():.3f} | "
      f"{sa['fpr'].mean():.3f} | {own_tpr.mean():.3f} | {own_fpr.mean():.3f} |"
  )
  if sa_own is None:
    rows.append("")
    rows.append("(nan: the run after has no DFMs of its own yet; launch/dfm.py ranks them.)")
  text = (
      f"Clean test accuracy: before {100 * b['accuracy']:.2f}%, after {100 * a['accuracy']:.2f}%."
      f" TPR/FPR of each class on the test set filtered by the DFMs (top "
      f"{100 * b['threshold']:g}%) of the run before:\n\n" + "\n".join(rows)
  )
  if figure:
    runs = {
        "before": {"tpr": sb["tpr"], "fpr": sb["fpr"]},
        "after": {"tpr": sa["tpr"], "fpr": sa["fpr"]},
    }
    for lab, v in (("before", b), ("after", a)):
      if "heatmap" in v:
        runs[lab]["heat"] = v["heatmap"]["error"]
    plotting.compare_runs(
        runs, names, figure, title="Before / after, on the DFMs of the run before"
    )
  return text, result
