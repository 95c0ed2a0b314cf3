"""DFM stage: rank every candidate for every class (analysis/scores.npz), take the top
fraction per threshold (analysis/dfm.npz), optionally DFM-X's greedy DFMs (greedy.npz).

The scores' fingerprint covers the checkpoint, data and candidates; the DFMs' adds the
thresholds. So a missing or damaged dfm.npz, or new thresholds, are rebuilt from an intact
scores.npz without re-ranking; a killed ranking resumes from analysis/dfm_partial/<its
fingerprint>/ (rankings with other settings keep their own folders).
"""

from __future__ import annotations

import numpy as np

from freqjax import artifacts, parallel
from freqjax.data import datasets
from freqjax.evaluation import dfm_summary
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib, search
from freqjax.stages import context


def scores_path(config, wd) -> str:
  """analysis/scores.npz for the exhaustive ranking, scores_<method>.npz for the others: an
  exhaustive ranking (hours at 224 px) is never replaced by a fast search's scores. dfm.npz
  follows the method last run; it is rebuilt from the kept scores without re-ranking."""
  method = config.analysis.search
  return wd.artifact("scores", "" if method == "exhaustive" else f"_{method}")


def candidates(config) -> cand_lib.CandidateSet:
  a = config.analysis
  return cand_lib.make(int(config.data.image_size), int(a.patch_size), a.candidates)


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  """Writes scores.npz and dfm.npz (reusing what is fresh); prints the DFMs."""
  ctx = context.ensure(config, workdir, ctx)
  a = config.analysis
  scores = run_scores(config, ctx)
  thresholds = [float(t) for t in a.thresholds]

  def compute():
    meta = dict(scores.meta, thresholds=thresholds, scores_fingerprint=scores.meta["fingerprint"])
    return {"dfm": dfm_lib.dfms(dfm_key(scores), thresholds)}, meta

  art = context.cached(
      ctx.wd.artifact("dfm"),
      "dfm",
      ctx.fingerprint("dfm", scores.meta["fingerprint"], thresholds),
      compute,
  )
  if parallel.is_main_process():
    planted = datasets.planted_masks(ctx.dataset)
    print(dfm_summary.text(art, float(a.threshold), planted, dfm_key(scores)))
  if a.greedy:
    run_greedy(config, workdir, ctx)
  return art


def run_scores(config, ctx: context.Context) -> artifacts.Artifact:
  """scores.npz: every candidate's score per class, by `config.analysis.search` (resumable).

  The exhaustive ranking keeps the fingerprint it always had; other methods add theirs."""
  a = config.analysis
  cands = candidates(config)
  settings = search.settings(config)
  if a.search == "exhaustive":
    fp = ctx.fingerprint("scores", cands.describe())
  else:
    fp = ctx.fingerprint("scores", cands.describe(), settings)
  store = context.partial_store(ctx.wd.dfm_partial, fp)

  def compute():
    result = search.run(
        config,
        ctx.apply_fn,
        ctx.variables,
        ctx.mesh,
        ctx.images,
        ctx.labels,
        ctx.class_names,
        store_root=store.dir,
        progress=config.train.progress,
    )
    meta = ctx.meta(
        patch_size=int(a.patch_size),
        candidates=cands.describe(),
        search=settings,
        seconds=result.seconds,
        forward_equivalents=result.forwards,
        exhaustive_forwards=float(len(ctx.labels) * len(cands)),
        **result.info,
    )
    if result.hfss is not None and parallel.is_main_process():
      save_hfss(ctx, result.hfss, fp)
    return result.arrays(), meta

  art = context.cached(scores_path(config, ctx.wd), "scores", fp, compute)
  context.discard_partial(store, ctx.wd.dfm_partial)  # its results are in scores.npz now
  return art


def save_hfss(ctx: context.Context, output, fingerprint: str) -> None:
  """analysis/hfss.npz (HFSS's subsets per class, their TPR/FPR) and figures/hfss.png."""
  from freqjax import plotting  # pylint: disable=g-import-not-at-top

  arrays, meta = output
  artifacts.save(
      ctx.wd.artifact("hfss"), "hfss", arrays, dict(ctx.meta(**meta), fingerprint=fingerprint)
  )
  plotting.hfss_subsets(
      arrays["subsets"],
      ctx.class_names,
      ctx.wd.figure("hfss.png"),
      tpr=arrays["tpr"],
      fpr=arrays["fpr"],
      planted=datasets.planted_masks(ctx.dataset),
  )


def dfm_key(scores: artifacts.Artifact) -> np.ndarray:
  """The maps whose top fraction is the DFM (the scores themselves for older artifacts)."""
  return scores.arrays.get("dfm_key", scores["scores"])


@context.stage
def run_greedy(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  """greedy.npz: DFM-X's greedy removal per class, in the order of the exhaustive scores."""
  ctx = context.ensure(config, workdir, ctx)
  a = config.analysis
  scores = run_scores(config, ctx)
  cands = candidates(config)

  def compute():
    dfms, counts, orders = [], [], []
    for c in range(len(ctx.class_names)):
      order = np.argsort(scores["candidate_scores"][c], kind="stable")  # least important first
      g = dfm_lib.greedy_removal(
          ctx.apply_fn,
          ctx.variables,
          ctx.mesh,
          ctx.images[ctx.labels == c],
          c,
          cands,
          order,
          int(a.greedy_tolerance),
          int(a.greedy_parallel),
          progress=config.train.progress,
      )
      dfms.append(g["dfm"])
      counts.append(g["counts"][-1])
      orders.append(order)
    meta = ctx.meta(
        patch_size=int(a.patch_size), candidates=cands.describe(), tolerance=int(a.greedy_tolerance)
    )
    return (
        {"dfm": np.stack(dfms), "order": np.stack(orders), "final_correct": np.array(counts)},
        meta,
    )

  fp = ctx.fingerprint("greedy", scores.meta["fingerprint"], a.greedy_tolerance)
  return context.cached(ctx.wd.artifact("greedy"), "greedy", fp, compute)
