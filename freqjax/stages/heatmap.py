"""Fourier heat map stage: analysis/heatmap.npz and figures/heatmap.png.

The test error (and mean cross-entropy) of the run's model when a Fourier basis image of L2
norm ε is added to every test image, per frequency of the half-plane (patch p: one value per
patch), on the DFM ranking's chunked, sharded engine. A killed run resumes from
analysis/heatmap_partial/<fingerprint>/ with identical results.
"""

from __future__ import annotations

import time

import numpy as np

from freqjax import artifacts, config as config_lib, parallel, plotting
from freqjax.spectral import candidates as cand_lib, heatmap as heatmap_lib
from freqjax.stages import context


def settings(config) -> dict:
  h, size = config.analysis.heatmap, int(config.data.image_size)
  eps = float(h.eps) if h.eps is not None else heatmap_lib.default_eps(size)
  return {"eps": eps, "patch_size": config_lib.heatmap_patch(config), "seed": int(h.seed)}


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  ctx = context.ensure(config, workdir, ctx)
  s = settings(config)
  d = config.data
  cands = cand_lib.paired(int(d.image_size), s["patch_size"])
  fp = ctx.fingerprint("heatmap", cands.describe(), s)
  store = context.partial_store(ctx.wd.heatmap_partial, fp)

  def compute():
    # Back to pixel values in [0, 1] (the evaluation transform's resize kept).
    images01 = ctx.images * np.asarray(d.std, np.float32) + np.asarray(d.mean, np.float32)
    t0 = time.time()
    out = heatmap_lib.heatmap(
        ctx.apply_fn,
        ctx.variables,
        ctx.mesh,
        images01,
        ctx.labels,
        cands,
        eps=s["eps"],
        mean=tuple(d.mean),
        std=tuple(d.std),
        seed=s["seed"],
        store=store,
        memory_budget_mb=config.analysis.memory_budget_mb,
        progress=config.train.progress,
    )
    meta = ctx.meta(
        **s,
        candidates=cands.describe(),
        clip=[0.0, 1.0],
        seconds=time.time() - t0,
        rate_candidate_images_per_s=out.pop("rate"),
    )
    return dict(out, candidate_rects=cands.rects), meta

  def figure(arrays):
    plotting.heatmap(
        arrays["error"],
        arrays["loss"],
        ctx.wd.figure("heatmap.png"),
        clean_error=float(arrays["clean_error"]),
        title=f"Fourier heat map (ε = {s['eps']:g}, patch {s['patch_size']}) — {d.name}",
    )

  art = context.cached(ctx.wd.artifact("heatmap"), "heatmap", fp, compute, figure)
  context.discard_partial(store, ctx.wd.heatmap_partial)
  if parallel.is_main_process():
    print(summary_text(art))
  return art


def summary_text(art: artifacts.Artifact) -> str:
  """Clean error, the worst frequencies and the error by radius, for the console."""
  err = art["error"]
  s = err.shape[-1]
  u = np.arange(s) - s // 2
  worst = np.argsort(err.ravel())[::-1]
  seen, top = set(), []
  for k in worst:
    i, j = divmod(int(k), s)
    pair = frozenset({(int(u[i]), int(u[j])), (-int(u[i]), -int(u[j]))})
    if pair not in seen:
      seen.add(pair)
      top.append(f"({u[i]:+d},{u[j]:+d}) {err[i, j]:.3f}")
    if len(top) == 5:
      break
  return (
      f"Fourier heat map (ε = {art.meta['eps']:g}): clean error {float(art['clean_error']):.3f}, "
      f"mean error {float(err.mean()):.3f}, max {float(err.max()):.3f}; worst frequencies "
      f"(u,v): {', '.join(top)}"
  )
