"""Figures stage: figures/scores.png, dfm_grid.png, confusion_*.png, shortcut_tpr_fpr.png
and overview.png (ADCS, DFMs, sensitivity and heat map side by side) from the saved
artifacts (the ADCS, sensitivity, heat-map and dynamics figures are drawn by their stages)."""

from __future__ import annotations

from freqjax import artifacts, parallel, plotting
from freqjax.data import datasets
from freqjax.evaluation import compare
from freqjax.stages import context, dfm as dfm_stage


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> None:
  if not parallel.is_main_process():
    return
  ctx = context.ensure(config, workdir, ctx)
  wd, names = ctx.wd, ctx.class_names
  scores = artifacts.load(dfm_stage.scores_path(config, wd), "scores")
  dfm_art = artifacts.load(wd.artifact("dfm"), "dfm")
  plotting.score_maps(scores["scores"], names, wd.figure("scores.png"))
  rows = {f"top {100 * t:g}%": dfm_art["dfm"][i] for i, t in enumerate(dfm_art.meta["thresholds"])}
  if artifacts.exists(wd.artifact("greedy"), "greedy"):
    rows["greedy (DFM-X)"] = artifacts.load(wd.artifact("greedy"), "greedy")["dfm"]
  plotting.dfm_grid(
      rows, names, wd.figure("dfm_grid.png"), planted=datasets.planted_masks(ctx.dataset)
  )
  sc = artifacts.load(wd.artifact("shortcut"), "shortcut")
  plotting.confusion(
      sc["confusion_unfiltered"],
      names,
      wd.figure("confusion_unfiltered.png"),
      "Unfiltered test set",
  )
  plotting.confusion_grid(sc["confusion"], names, wd.figure("confusion_dfm.png"))
  plotting.tpr_fpr_bars(
      sc.arrays,
      names,
      wd.figure("shortcut_tpr_fpr.png"),
      f"Shortcut test, DFMs at {100 * float(config.analysis.threshold):g}%",
  )
  compare.overview_figure(wd.root)
