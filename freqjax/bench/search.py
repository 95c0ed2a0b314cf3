"""Fast DFM searches against the exhaustive ranking on one trained run: forward passes,
seconds, and how far each method's DFMs are from the exhaustive ones (score mass, IoU,
planted recall, the shortcut test's TPR/FPR; `freqjax.evaluation.search_compare`), beside
the exhaustive ranking's own split-half agreement (its noise floor, from per-image losses)
and, per class, whether each method meets the goal (`goal`)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Any

import numpy as np

from freqjax import artifacts, errors, parallel
from freqjax.spectral import dfm as dfm_lib


@dataclasses.dataclass
class _Comparison:
  """One comparison's run (`ctx`), the images the methods run on (test images `take`) and
  where their results are kept (`root`)."""

  config: Any
  ctx: Any
  cands: Any
  take: np.ndarray
  images: np.ndarray
  labels: np.ndarray
  root: str
  per_image_seconds: float = 0.0

  @property
  def n_used(self) -> int:
    return len(self.take)


def search_comparison(
    config,
    workdir: str,
    methods=("screened", "coarse_to_fine"),
    screen_targets=(),
    images_per_class: int = 0,
) -> dict:
  """Each fast DFM search against the exhaustive ranking on one trained run.

  The methods run on the first `images_per_class` test images of each class (0: all); the
  shortcut test uses the whole test set. Every result is kept under
  <workdir>/analysis/bench_search/<fingerprint>/ (resumable; a rerun reuses finished
  methods, reporting the seconds they took when they ran). Every candidate's per-image
  losses are computed once (the cost of one exhaustive ranking): their sums are the
  exhaustive reference (with all images, a fresh analysis/scores.npz of the run is used
  instead), their halves its split-half floor (`_split_half`).
  """
  # pylint: disable=g-import-not-at-top
  from freqjax.data import datasets
  from freqjax.evaluation import search_compare

  _check_arguments(methods, screen_targets, images_per_class)
  cmp = _setup(config, workdir, images_per_class)
  losses = _per_image_losses(cmp)
  ref = _reference(cmp, losses)
  ctx = cmp.ctx
  base = search_compare.class_losses(
      ctx.apply_fn,
      ctx.variables,
      ctx.mesh,
      cmp.images,
      cmp.labels,
      len(ctx.class_names),
      int(config.analysis.batch_size),
  )
  planted = datasets.planted_masks(ctx.dataset)
  figures, ref_rates = _reference_figures(cmp, ref, planted)
  figures.update(_split_half(cmp, losses, ref["scores"], ref_rates, base))
  runs = [_method_run(config, m) for m in methods]
  runs += [(f"screened_{tg}", "screened", {"target": tg}) for tg in screen_targets]
  per_class = []
  for name, method, overrides in runs:
    art = _result(cmp, name, method, overrides)
    f, row = _method_figures(cmp, name, art, ref["scores"], ref_rates, base, planted)
    figures.update(f)
    per_class.append(row)
  figures["methods"] = [name for name, _, _ in runs]
  figures["per_class"] = per_class
  for name, _, _ in runs:
    figures.update(goal(figures, name))
  return figures


def _check_arguments(methods, screen_targets, images_per_class: int) -> None:
  """One line naming the bad flag and its valid values, before the run is loaded."""
  from freqjax.spectral import search  # pylint: disable=g-import-not-at-top

  fast = [m for m in search.METHODS if m != "exhaustive"] + ["hfss_scaled"]
  for m in methods:
    if m not in fast:
      raise errors.ConfigError(f"--methods: {m!r} is not a search method; use any of {fast}.")
  for tg in screen_targets:
    if tg not in search.SCREEN_TARGETS:
      raise errors.ConfigError(
          f"--screen_targets: {tg!r} is not a screen target; use any of {search.SCREEN_TARGETS}."
      )
  if images_per_class < 0:
    raise errors.ConfigError("--images_per_class must be >= 0 (0: every test image).")


def _method_run(config, name: str) -> tuple[str, str, dict | None]:
  """(name, method, overrides): `hfss_scaled` is HFSS with its mask count scaled from
  ImageNet's 224 px to the image size by the spectrum's cells (at least 3 × num_best)."""
  if name != "hfss_scaled":
    return name, name, None
  h, size = config.analysis.hfss, int(config.data.image_size)
  n = 3 * max(int(h.num_best), round(int(h.num_masks) * (size / 224) ** 2 / 3))
  return name, "hfss", {"num_masks": n}


def _setup(config, workdir: str, images_per_class: int) -> _Comparison:
  """The trained run, the first `images_per_class` test images of each class (0: all) and the
  results' directory, named by the run, the candidates and those images."""
  # pylint: disable=g-import-not-at-top
  from freqjax.stages import context, dfm as dfm_stage

  ctx = context.load_context(config, workdir)
  cands = dfm_stage.candidates(config)
  take = np.concatenate(
      [
          np.nonzero(ctx.labels == c)[0][: images_per_class or None]
          for c in range(len(ctx.class_names))
      ]
  )
  root = os.path.join(
      ctx.wd.bench_search, ctx.fingerprint("bench_search", cands.describe(), take.tolist())
  )
  return _Comparison(config, ctx, cands, take, ctx.images[take], ctx.labels[take], root)


def _result(cmp: _Comparison, name: str, method: str, overrides: dict | None = None):
  """The scores artifact of `method` (with `overrides`), computed once and kept as
  <root>/<name>.npz."""
  # pylint: disable=g-import-not-at-top
  from freqjax.spectral import search
  from freqjax.stages import context

  config, ctx = cmp.config, cmp.ctx
  settings = dict(search.settings(config, method), **(overrides or {}))
  fp = search.settings_key([settings, cmp.take.tolist()])
  partial = os.path.join(cmp.root, f"{name}_{fp}_partial")

  def compute():
    print(f"bench_search: running {name} on {cmp.n_used} images ...", flush=True)
    r = search.run(
        config,
        ctx.apply_fn,
        ctx.variables,
        ctx.mesh,
        cmp.images,
        cmp.labels,
        ctx.class_names,
        method=method,
        store_root=partial,
        progress=config.train.progress,
        overrides=overrides,
    )
    meta = dict(seconds=r.seconds, forward_equivalents=r.forwards, search=settings, **r.info)
    return r.arrays(), meta

  art = context.cached(os.path.join(cmp.root, f"{name}.npz"), "scores", fp, compute)
  if parallel.is_main_process():
    shutil.rmtree(partial, ignore_errors=True)
  return art


def _per_image_losses(cmp: _Comparison) -> list[np.ndarray]:
  """Per class (K, n_c): each of its images' cross-entropy with each candidate removed (the
  exhaustive ranking's terms), computed once and kept as <root>/exhaustive_per_image.npz."""
  from freqjax.stages import context  # pylint: disable=g-import-not-at-top

  ctx, cands = cmp.ctx, cmp.cands
  classes = range(len(ctx.class_names))
  program = dfm_lib.removal_program(ctx.apply_fn, cands.size, cands.patch, per_image=True)

  def compute():
    print(f"bench_search: per-image losses of every candidate on {cmp.n_used} images ...")
    engine = dfm_lib.Engine(
        ctx.apply_fn,
        ctx.variables,
        ctx.mesh,
        cands,
        memory_budget_mb=cmp.config.analysis.memory_budget_mb,
        progress=cmp.config.train.progress,
        program=program,
    )
    store = dfm_lib.ChunkStore(os.path.join(cmp.root, "per_image_partial"), {"fingerprint": 1})
    out, t0 = {}, time.time()
    for c in classes:
      group = engine.class_groups(cmp.images, cmp.labels, [c], ctx.class_names)
      out[f"class{c:04d}"] = engine.evaluate(group, cmp.images.shape[1:], store=store)[0]
    return out, {"candidates": cands.describe(), "seconds": time.time() - t0}

  art = context.cached(
      os.path.join(cmp.root, "exhaustive_per_image.npz"), "scores", "per-image-v1", compute
  )
  if parallel.is_main_process():
    shutil.rmtree(os.path.join(cmp.root, "per_image_partial"), ignore_errors=True)
  cmp.per_image_seconds = float(art.meta.get("seconds") or 0.0)
  return [art[f"class{c:04d}"] for c in classes]


def _reference(cmp: _Comparison, losses) -> artifacts.Artifact:
  """The exhaustive ranking: the run's own fresh scores.npz when every test image is used,
  else the per-image losses summed (the same scores up to float rounding)."""
  from freqjax.stages import context  # pylint: disable=g-import-not-at-top

  ctx = cmp.ctx
  if cmp.n_used == len(ctx.labels):
    own = context.fresh(
        ctx.wd.artifact("scores"), "scores", ctx.fingerprint("scores", cmp.cands.describe())
    )
    if own is not None:
      return own
  scores = np.stack([x.sum(1, dtype=np.float64) for x in losses]).astype(np.float32)
  arrays = {"scores": dfm_lib.score_maps(cmp.cands, scores), "candidate_scores": scores}
  return artifacts.Artifact("scores", arrays, {"seconds": cmp.per_image_seconds})


def _split_half(cmp: _Comparison, losses, ref_map, ref_rates, base) -> dict:
  """The exhaustive ranking's own noise floor: per class, the DFM ranked on half its images
  (every other one) scored against the full ranking (mass) and in the shortcut test (the
  absolute TPR/FPR differences). From the per-image losses: no forwards beyond them."""
  from freqjax.evaluation import search_compare  # pylint: disable=g-import-not-at-top

  t = float(cmp.config.analysis.threshold)
  half = np.stack([cmp.cands.score_map(x[:, ::2].sum(1, dtype=np.float64)) for x in losses])
  mass = search_compare.compare(ref_map, half, base, thresholds=(t,))[f"mass{round(t * 100):d}"]
  tpr, fpr = _tpr_fpr(cmp, half)
  return {
      "exhaustive_split_half_mass5_per_class": mass.tolist(),
      "exhaustive_split_half_tpr_diff_per_class": np.abs(tpr - ref_rates[0]).tolist(),
      "exhaustive_split_half_fpr_diff_per_class": np.abs(fpr - ref_rates[1]).tolist(),
  }


def goal(r: dict, name: str) -> dict:
  """Per class, whether method `name` meets the search goal against the exhaustive ranking
  (≥ 10× fewer forwards; mass5 ≥ 0.95 or the split-half mass below it; |ΔTPR|, |ΔFPR| ≤ 0.03
  or the split-half difference above it; for auto, a bound ≥ the missed mass), and which
  classes sit at the floor."""
  floor_mass = np.minimum(0.95, r["exhaustive_split_half_mass5_per_class"])
  tol_tpr = np.maximum(0.03, r["exhaustive_split_half_tpr_diff_per_class"])
  tol_fpr = np.maximum(0.03, r["exhaustive_split_half_fpr_diff_per_class"])
  mass = np.asarray(r[f"{name}_mass5_per_class"])
  dtpr, dfpr = (np.abs(r[f"{name}_{k}_diff_per_class"]) for k in ("tpr", "fpr"))
  ok = (mass >= floor_mass - 1e-9) & (dtpr <= tol_tpr + 1e-9) & (dfpr <= tol_fpr + 1e-9)
  if f"{name}_missed_mass_bound_per_class" in r:
    ok &= (
        np.asarray(r[f"{name}_missed_mass_bound_per_class"])
        >= np.asarray(r[f"{name}_missed_mass_per_class"]) - 1e-6
    )
  ok &= np.asarray(r.get(f"{name}_speedup_per_class", r[f"{name}_speedup"])) >= 10
  at_floor = (floor_mass < 0.95) | (tol_tpr > 0.03) | (tol_fpr > 0.03)
  return {
      f"{name}_goal_met_per_class": ok.tolist(),
      "classes_at_floor": [n for n, f in zip(r["classes"], at_floor) if f],
  }


def _tpr_fpr(cmp: _Comparison, key_maps: np.ndarray):
  """The shortcut test's per-class TPR and FPR on the whole test set with the DFMs (at the
  threshold) of the score maps `key_maps`."""
  from freqjax.evaluation import search_compare  # pylint: disable=g-import-not-at-top

  ctx, a = cmp.ctx, cmp.config.analysis
  return search_compare.tpr_fpr(
      ctx.apply_fn,
      ctx.variables,
      ctx.mesh,
      ctx.images,
      ctx.labels,
      search_compare.top(key_maps, float(a.threshold)),
      int(a.batch_size),
  )


def _reference_figures(cmp: _Comparison, ref, planted):
  """The exhaustive ranking's figures (its cost, its DFMs' TPR/FPR and planted recall) and
  its (TPR, FPR) arrays."""
  from freqjax.evaluation import search_compare  # pylint: disable=g-import-not-at-top

  t = float(cmp.config.analysis.threshold)
  tpr_ref, fpr_ref = _tpr_fpr(cmp, ref["scores"])
  figures = {
      "exhaustive_forwards": float(cmp.n_used * len(cmp.cands)),
      "exhaustive_seconds": float(ref.meta.get("seconds") or 0.0),
      "images_used": cmp.n_used,
      "candidates": len(cmp.cands),
      "classes": list(cmp.ctx.class_names),
      "threshold": t,
      "tpr_exhaustive": tpr_ref.tolist(),
      "fpr_exhaustive": fpr_ref.tolist(),
  }
  if planted is not None:
    figures["exhaustive_planted_recall5"] = (
        (search_compare.top(ref["scores"], t) & planted).sum((1, 2)) / planted.sum((1, 2))
    ).tolist()
  return figures, (tpr_ref, fpr_ref)


def _method_figures(cmp: _Comparison, name: str, art, ref_map, ref_rates, base, planted):
  """One method's figures against the exhaustive ranking (scores `ref_map`, its DFMs' (TPR,
  FPR) `ref_rates`; `base`: the unfiltered class losses), and its row of `per_class`."""
  from freqjax.evaluation import search_compare  # pylint: disable=g-import-not-at-top

  t = float(cmp.config.analysis.threshold)
  key = art.arrays.get("dfm_key", art["scores"])
  c = search_compare.compare(ref_map, key, base, planted=planted, thresholds=(t, 0.01))
  tpr, fpr = _tpr_fpr(cmp, key)
  dtpr, dfpr = tpr - ref_rates[0], fpr - ref_rates[1]
  fwd = float(art.meta["forward_equivalents"])
  tag5 = f"{round(t * 100):d}"
  f = {
      f"{name}_forwards": fwd,
      f"{name}_speedup": float(cmp.n_used * len(cmp.cands)) / fwd,
      f"{name}_seconds": float(art.meta["seconds"]),
      f"{name}_mass5": float(c[f"mass{tag5}"].min()),
      f"{name}_iou5": float(c[f"iou{tag5}"].mean()),
      f"{name}_iou1": float(c["iou1"].mean()),
      f"{name}_max_tpr_diff": float(np.abs(dtpr).max()),
      f"{name}_max_fpr_diff": float(np.abs(dfpr).max()),
      f"{name}_mass5_per_class": c[f"mass{tag5}"].tolist(),
      f"{name}_iou5_per_class": c[f"iou{tag5}"].tolist(),
      f"{name}_tpr_diff_per_class": dtpr.tolist(),
      f"{name}_fpr_diff_per_class": dfpr.tolist(),
  }
  if planted is not None:
    f[f"{name}_planted_recall5"] = c[f"planted_recall{tag5}"].tolist()
  if "estimated_missed_per_class" in art.meta:
    f[f"{name}_estimated_missed"] = art.meta["estimated_missed_per_class"]
  if "missed_mass_bound_per_class" in art.meta:
    f[f"{name}_missed_mass_per_class"] = (1.0 - c[f"mass{tag5}"]).tolist()
    f[f"{name}_missed_mass_bound_per_class"] = art.meta["missed_mass_bound_per_class"]
    f[f"{name}_scored_per_class"] = art.meta["scored_per_class"]
    f[f"{name}_raced_per_class"] = art.meta["raced_per_class"]
    per_class_images = np.bincount(cmp.labels, minlength=len(cmp.ctx.class_names))
    f[f"{name}_speedup_per_class"] = [
        len(cmp.cands) * float(n) / fwd
        for n, fwd in zip(per_class_images, art.meta["forwards_per_class"])
    ]
    f[f"{name}_stop_per_class"] = art.meta["stop_per_class"]
  row = {
      "method": name,
      "mass5": c[f"mass{tag5}"].tolist(),
      "iou5": c[f"iou{tag5}"].tolist(),
      "dtpr": dtpr.tolist(),
      "dfpr": dfpr.tolist(),
  }
  return f, row


def search_table(r: dict) -> list[tuple[str, str]]:
  """The readable rows of `search_comparison`'s figures."""
  rows = [
      (
          "exhaustive",
          f"{r['exhaustive_forwards']:,.0f} forwards, {r['exhaustive_seconds']:.0f} s "
          f"({r['candidates']} candidates × {r['images_used']} images)",
      )
  ]
  for m in r["methods"]:
    rows.append(
        (
            m,
            f"{r[m + '_forwards']:,.0f} fwd-eq ({r[m + '_speedup']:.1f}× fewer), "
            f"{r[m + '_seconds']:.0f} s; mass5 min {r[m + '_mass5']:.3f}; IoU5 "
            f"{r[m + '_iou5']:.3f}, IoU1 {r[m + '_iou1']:.3f}; max |ΔTPR| "
            f"{r[m + '_max_tpr_diff']:.3f}, |ΔFPR| {r[m + '_max_fpr_diff']:.3f}",
        )
    )
  names = r["classes"]
  for c, name in enumerate(names):
    rows.append(
        (
            f"  split half / {name}",
            f"mass5 {r['exhaustive_split_half_mass5_per_class'][c]:.3f}  |ΔTPR| "
            f"{r['exhaustive_split_half_tpr_diff_per_class'][c]:.3f}  |ΔFPR| "
            f"{r['exhaustive_split_half_fpr_diff_per_class'][c]:.3f}"
            + ("  (at the floor)" if name in r.get("classes_at_floor", ()) else ""),
        )
    )
  for pc in r["per_class"]:
    m = pc["method"]
    for c, name in enumerate(names):
      extra = ""
      if m + "_planted_recall5" in r:
        extra = (
            f", planted recall {r[m + '_planted_recall5'][c]:.2f} (exhaustive "
            f"{r['exhaustive_planted_recall5'][c]:.2f})"
        )
      if m + "_estimated_missed" in r:
        extra += f", est. missed {r[m + '_estimated_missed'][c]:.1f}"
      if m + "_missed_mass_bound_per_class" in r:
        missed, bnd = r[m + "_missed_mass_per_class"][c], r[m + "_missed_mass_bound_per_class"][c]
        extra += (
            f", missed {missed:.3f} {'≤' if bnd >= missed - 1e-6 else '>'} bound {bnd:.3f}, "
            f"{r[m + '_raced_per_class'][c]} raced, {r[m + '_scored_per_class'][c]} on every "
            f"image ({r[m + '_speedup_per_class'][c]:.1f}× fewer; stop: "
            f"{r[m + '_stop_per_class'][c]})"
        )
      if m + "_goal_met_per_class" in r:
        extra += "" if r[m + "_goal_met_per_class"][c] else "  ✗ goal"
      rows.append(
          (
              f"  {m} / {name}",
              f"mass5 {pc['mass5'][c]:.3f}  IoU5 {pc['iou5'][c]:.3f}  ΔTPR "
              f"{pc['dtpr'][c]:+.3f}  ΔFPR {pc['dfpr'][c]:+.3f}{extra}",
          )
      )
  return rows
