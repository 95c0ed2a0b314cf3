"""Summary stage: summary.json's content from train_results.json and the artifacts."""

from __future__ import annotations

from freqjax import artifacts, classmap, errors
from freqjax.data import datasets
from freqjax.evaluation import dfm_summary, dynamics as dyn_lib, metrics, shortcut
from freqjax.stages import context, dfm as dfm_stage, shortcut as shortcut_stage

SUBSET_RATES = ("tpr", "fpr", "tpr_unfiltered", "fpr_unfiltered")


def summarise(config, ctx: context.Context, stage_seconds: dict) -> dict:
  wd = ctx.wd
  train = wd.train_results()
  if train is None:
    raise errors.WorkdirError(
        f"{wd.train_results_file} is missing or unreadable; it is "
        "written when training ends: run launch/train.py first."
    )
  sc = artifacts.load(wd.artifact("shortcut"), "shortcut")
  dfm_art = artifacts.load(wd.artifact("dfm"), "dfm")
  scores = artifacts.load(dfm_stage.scores_path(config, wd), "scores")
  threshold = float(config.analysis.threshold)
  summary = {
      "config": config.data.name,
      "model": config.model.name,
      "class_names": ctx.class_names,
      # The analysed checkpoint ('best' by validation loss by default) on the test set, and
      # the last checkpoint's, as training reported it.
      "test_accuracy": metrics.accuracy(sc["confusion_unfiltered"]),
      "test_per_class_accuracy": metrics.per_class_accuracy(sc["confusion_unfiltered"]).tolist(),
      "final_test_accuracy": train["test_accuracy"],
      "final_step": train["steps"],
      "checkpoint_step": ctx.checkpoint["checkpoint_step"],
      "dfm_threshold": threshold,
      "tpr": sc["tpr"].tolist(),
      "fpr": sc["fpr"].tolist(),
      "tpr_unfiltered": sc["tpr_unfiltered"].tolist(),
      "fpr_unfiltered": sc["fpr_unfiltered"].tolist(),
      "dfm_keep_fraction": sc["keep_fraction"].tolist(),
      "dfm_seconds": dfm_art.meta.get("seconds"),
      "dfm_search": search_summary(scores.meta),
      "stage_seconds": stage_seconds,
  }
  uses = classmap.analyses(config)
  if uses is not None:  # a model with more outputs than classes: how each analysis maps them
    subset = shortcut.subset_view(sc.arrays)
    summary["class_map"] = uses
    if subset is not None:
      summary["test_accuracy_subset"] = metrics.accuracy(subset["confusion_unfiltered"])
      summary.update({f"{k}_subset": subset[k].tolist() for k in SUBSET_RATES})
  planted = datasets.planted_masks(ctx.dataset)
  if planted is not None:
    summary.update(
        dfm_summary.planted_overlap(
            dfm_summary.dfm_at(dfm_art, threshold), planted, scores["scores"]
        )
    )
  if artifacts.exists(wd.artifact("dynamics"), "dynamics"):
    dyn = artifacts.load(wd.artifact("dynamics"), "dynamics")
    steps = dyn["learned_step"]
    summary["learned_step"] = {v: steps[i].tolist() for i, v in enumerate(dyn.meta["views"])}
    summary["learned_first"] = {
        v: [ctx.class_names[c] for c in first]
        for v, first in zip(dyn.meta["views"], dyn_lib.learned_first(steps))
    }
  for root in config.analysis.ood_dirs:
    name = shortcut_stage.ood_name(root)
    ood = artifacts.load(wd.artifact("shortcut", f"_ood_{name}"), "shortcut")
    summary.setdefault("ood", {})[name] = {
        "tpr": ood["tpr"].tolist(),
        "fpr": ood["fpr"].tolist(),
        "tpr_unfiltered": ood["tpr_unfiltered"].tolist(),
        "fpr_unfiltered": ood["fpr_unfiltered"].tolist(),
        **{
            f"{k}_subset": ood[f"{k}_subset"].tolist()
            for k in SUBSET_RATES
            if "tpr_subset" in ood.arrays
        },
    }
  return summary


def search_summary(meta: dict) -> dict:
  """How the DFM scores were searched: the method, its forward-equivalents against the
  exhaustive ranking's and, for `auto`, the missed-mass bound per class."""
  out = {
      "method": (meta.get("search") or {}).get("method", "exhaustive"),
      "forward_equivalents": meta.get("forward_equivalents"),
      "exhaustive_forwards": meta.get("exhaustive_forwards"),
  }
  for key in (
      "tolerance",
      "missed_mass_bound_per_class",
      "bound_met_per_class",
      "stop_per_class",
      "scored_per_class",
      "raced_per_class",
      "forwards_per_class",
      "confidence",
  ):
    if key in meta:
      out[key] = meta[key]
  return out
