"""Benchmarks: training throughput, input pipeline, DFM engine.

Every benchmark prints a readable table and, as its very last line, one JSON object with the
same figures, so scripts can compare runs (`tail -n 1 | python -m json.tool`). Rates are
measured after a warm-up call (compilation excluded) and are ratios of work to wall time in
the same run; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import numpy as np

from freqjax import errors, models, parallel


def emit(title: str, rows: list[tuple[str, str]], figures: dict) -> None:
  width = max(len(k) for k, _ in rows)
  print(title)
  print("-" * len(title))
  for k, v in rows:
    print(f"{k.ljust(width)}  {v}")
  print(json.dumps(figures, sort_keys=True))


def _time(fn, repeats: int) -> float:
  out = fn()
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get("flops", 0.0)) or None
  except Exception:  # pylint: disable=broad-except
    return None


def train_throughput(config, steps: int = 10) -> dict:
  """Images/s of the real training step (augmentation included) on random uint8 data."""
  from freqjax.training import loop, state as state_lib  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(config.train.num_devices)
  b = int(config.train.batch_size)
  parallel.check_batch_size(b, mesh)
  size = int(config.data.storage_size or config.data.image_size)
  model = models.from_config(config.model, int(config.data.num_classes))
  tx = state_lib.make_optimizer(config.train)
  state = loop.init_state(config, model, mesh, tx)
  step = loop.make_train_step(model, config, mesh, tx)
  rng = np.random.default_rng(0)
  local = parallel.local_batch_size(b, mesh)
  batch = parallel.shard_batch(
      mesh,
      {
          "image": rng.integers(0, 256, (local, size, size, 3), dtype=np.uint8),
          "label": rng.integers(0, int(config.data.num_classes), local).astype(np.int32),
          "valid": np.ones(local, bool),
      },
  )
  key = jax.random.key(0)
  compiled = step.lower(state, batch, key).compile()
  flops = _flops(compiled)
  holder = {"state": state}

  def one():
    holder["state"], m = step(holder["state"], batch, key)
    return m["loss"]

  seconds = _time(one, steps)
  out = {
      "model": config.model.name,
      "width_multiplier": float(config.model.width_multiplier),
      "image_size": int(config.data.image_size),
      "global_batch": b,
      "devices": int(mesh.devices.size),
      "platform": jax.devices()[0].platform,
      "dtype": config.model.dtype,
      "step_seconds": seconds,
      "images_per_second": b / seconds,
  }
  if flops:
    # XLA's cost analysis of the partitioned program counts one device's share.
    out["flops_per_step"] = flops * int(mesh.devices.size)
    out["achieved_tflops"] = out["flops_per_step"] / seconds / 1e12
  return out


def input_throughput(config, batches: int = 50) -> dict:
  """Images/s of the host pipeline alone (read, batch, shard to devices)."""
  from freqjax.data import datasets, loader as loader_lib  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(config.train.num_devices)
  ds = datasets.prepare(config.data)
  src = ds.source("train")
  b = int(config.train.batch_size)
  ld = loader_lib.Loader(
      src,
      np.arange(len(src)),
      b,
      shuffle=True,
      seed=0,
      drop_remainder=True,
      rows=parallel.process_slice(b, mesh),
      prefetch=config.train.prefetch,
  )
  n, t0, epoch = 0, None, 0
  while n < batches:
    for batch in ld.epoch(epoch):
      arr = parallel.shard_batch(mesh, batch)
      if t0 is None:
        jax.block_until_ready(arr)
        t0 = time.perf_counter()  # the first batch warms up the reader
        continue
      n += 1
      if n >= batches:
        break
    epoch += 1
  jax.block_until_ready(arr)
  seconds = time.perf_counter() - t0
  return {
      "images_per_second": n * b / seconds,
      "batches": n,
      "global_batch": b,
      "source": type(src).__name__,
  }


def dfm_throughput(
    model_name: str = "resnet18",
    width_multiplier: float = 0.25,
    image_size: int = 32,
    patch_size: int = 1,
    num_classes: int = 10,
    images_per_class: int = 100,
    mode: str = "paired",
    naive_candidates: int = 16,
    engine_candidates: int = 0,
    memory_budget_mb: float = 0,
    num_devices: int = 0,
    dtype: str = "float32",
    chunk_candidates: int = 0,
) -> dict:
  """Candidate-images/s of the DFM engine, of the naive loop, and of plain inference.
  `chunk_candidates` fixes the engine's chunk (0: the engine's own choice)."""
  from freqjax.spectral import candidates, dfm  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(num_devices)
  model = models.create(
      model_name, num_classes=num_classes, width_multiplier=width_multiplier, dtype=dtype
  )
  variables = models.init(model, jax.random.key(0), image_size)
  apply_fn = lambda v, x: model.apply(v, x, train=False)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(images_per_class, image_size, image_size, 3)).astype(np.float32)
  labels = np.zeros(images_per_class, np.int32)
  cands = candidates.make(image_size, patch_size, mode)
  engine_set = (
      cands
      if not engine_candidates
      else cands.subset(np.arange(min(engine_candidates, len(cands))))
  )
  engine = dfm.Engine(
      apply_fn,
      variables,
      mesh,
      engine_set,
      memory_budget_mb=memory_budget_mb,
      chunk_size=chunk_candidates or None,
      progress=False,
  )
  engine.tune_fraction = 1.0  # measuring chunk sizes may cost as much as the timed run
  t0 = time.perf_counter()
  engine.rank(images, labels, [0])  # warm-up: the chunk size by measurement, compilation
  warmup_s = time.perf_counter() - t0
  tuning = engine.tuning
  chunk = tuning["chunk"] if tuning else engine.chunk_size(images_per_class, images.shape[1:])
  engine.fixed_chunk = chunk
  t0 = time.perf_counter()
  engine.rank(images, labels, [0])
  engine_s = time.perf_counter() - t0
  engine_rate = len(engine_set) * images_per_class / engine_s

  sub = cands.subset(np.arange(min(naive_candidates, len(cands))))
  dfm.rank_naive(apply_fn, variables, images, 0, sub.subset([0]))  # compile
  t0 = time.perf_counter()
  dfm.rank_naive(apply_fn, variables, images, 0, sub)
  naive_rate = len(sub) * images_per_class / (time.perf_counter() - t0)

  # Plain inference of the same model on unmasked images, batch = the engine's chunk.
  batch = parallel.round_up(max(1, min(chunk * images_per_class, 16384)), mesh)
  plain_rate = _plain_rate(
      apply_fn, variables, mesh, np.resize(images, (batch,) + images.shape[1:])
  )

  official = candidates.official(image_size, patch_size)
  official_loop = (image_size // patch_size) * (image_size // patch_size // 2 + 1)
  sorted_labels = np.repeat(np.arange(num_classes), images_per_class)
  shuffled = np.random.default_rng(0).permutation(sorted_labels)
  return {
      "model": model_name,
      "width_multiplier": width_multiplier,
      "image_size": image_size,
      "patch_size": patch_size,
      "mode": mode,
      "devices": int(mesh.devices.size),
      "platform": jax.devices()[0].platform,
      "images_per_class": images_per_class,
      "num_classes": num_classes,
      "candidates": len(cands),
      "engine_candidates_timed": len(engine_set),
      "chunk_candidates": chunk,
      "chunk_by_measurement": bool(tuning),
      "chunk_rates": tuning["rates_candidate_images_per_s"] if tuning else None,
      "warmup_seconds": warmup_s,
      "engine": engine_rate,
      "naive": naive_rate,
      "plain": plain_rate,
      "engine_vs_plain": engine_rate / plain_rate,
      "engine_vs_naive": engine_rate / naive_rate,
      # Forward passes for one full DFM computation (all classes). The official loop forwards
      # every test batch (of 100) that holds any image of the class being ranked, for each of
      # its loop's masks: with a class-sorted ImageFolder few batches are wasted, with a
      # shuffled test set nearly all of them.
      "official_forwards_sorted_test_set": official_loop * official_forward_count(sorted_labels),
      "official_forwards_shuffled_test_set": official_loop * official_forward_count(shuffled),
      "freqjax_forwards": len(cands) * images_per_class * num_classes,
      # The engine's rate counted in the official loop's work: the same DFMs, at this rate,
      # would replace that many of its forward passes per second (class-sorted / shuffled
      # test set). Only a ratio of work: the official loop's own speed is not measured here.
      "official_work_ratio_sorted": official_loop
      * official_forward_count(sorted_labels)
      / (len(cands) * images_per_class * num_classes),
      "official_work_ratio_shuffled": official_loop
      * official_forward_count(shuffled)
      / (len(cands) * images_per_class * num_classes),
      "official_unique_masks": len(official),
      "official_loop_masks": official_loop,
  }


def _plain_rate(apply_fn, variables, mesh, x: np.ndarray, repeats: int = 3) -> float:
  """Images/s of one forward pass of the batch x, sharded over the mesh (after a warm-up)."""
  x = jax.device_put(x, parallel.batch_sharding(mesh))
  v = parallel.replicate(mesh, variables)
  fwd = jax.jit(apply_fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))
  return len(x) / _time(lambda: fwd(v, x), repeats)


def official_forward_count(labels_in_order: np.ndarray, batch: int = 100) -> int:
  """Images the official ranking forwards per mask, summed over classes: every batch of the
  test loader (in `labels_in_order`) that contains at least one image of the class."""
  total = 0
  for c in np.unique(labels_in_order):
    for lo in range(0, len(labels_in_order), batch):
      chunk = labels_in_order[lo : lo + batch]
      if (chunk == c).any():
        total += len(chunk)
  return total


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
  methods, reporting the seconds they took when they ran). With all images, a fresh exhaustive
  analysis/scores.npz of the run is reused as the reference.
  """
  # pylint: disable=g-import-not-at-top
  from freqjax.data import datasets
  from freqjax.evaluation import search_compare
  from freqjax.spectral import search
  from freqjax.stages import context, dfm as dfm_stage

  fast = [m for m in search.METHODS if m != "exhaustive"]
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
  ctx = context.load_context(config, workdir)
  a = config.analysis
  cands = dfm_stage.candidates(config)
  num_classes = len(ctx.class_names)
  take = np.concatenate(
      [np.nonzero(ctx.labels == c)[0][: images_per_class or None] for c in range(num_classes)]
  )
  images, labels = ctx.images[take], ctx.labels[take]
  n_used = len(take)
  root = os.path.join(
      ctx.wd.bench_search, ctx.fingerprint("bench_search", cands.describe(), take.tolist())
  )

  def result(name: str, method: str, overrides: dict | None = None):
    settings = dict(search.settings(config, method), **(overrides or {}))
    fp = search.settings_key([settings, take.tolist()])
    if method == "exhaustive" and n_used == len(ctx.labels):
      own = context.fresh(
          ctx.wd.artifact("scores"), "scores", ctx.fingerprint("scores", cands.describe())
      )
      if own is not None:
        return own
    partial = os.path.join(root, f"{name}_{fp}_partial")

    def compute():
      print(f"bench_search: running {name} on {n_used} images ...", flush=True)
      r = search.run(
          config,
          ctx.apply_fn,
          ctx.variables,
          ctx.mesh,
          images,
          labels,
          ctx.class_names,
          method=method,
          store_root=partial,
          progress=config.train.progress,
          overrides=overrides,
      )
      meta = dict(seconds=r.seconds, forward_equivalents=r.forwards, search=settings, **r.info)
      return r.arrays(), meta

    art = context.cached(os.path.join(root, f"{name}.npz"), "scores", fp, compute)
    if parallel.is_main_process():
      shutil.rmtree(partial, ignore_errors=True)
    return art

  ref = result("exhaustive", "exhaustive")
  ref_forwards = float(n_used * len(cands))
  ref_seconds = float(ref.meta.get("seconds") or 0.0)
  base = search_compare.class_losses(
      ctx.apply_fn, ctx.variables, ctx.mesh, images, labels, num_classes, int(a.batch_size)
  )
  planted = datasets.planted_masks(ctx.dataset)
  t = float(a.threshold)
  ref_map = ref["scores"]
  tpr_ref, fpr_ref = search_compare.tpr_fpr(
      ctx.apply_fn,
      ctx.variables,
      ctx.mesh,
      ctx.images,
      ctx.labels,
      search_compare.top(ref_map, t),
      int(a.batch_size),
  )
  runs = [(m, m, None) for m in methods]
  runs += [(f"screened_{tg}", "screened", {"target": tg}) for tg in screen_targets]
  figures = {
      "exhaustive_forwards": ref_forwards,
      "exhaustive_seconds": ref_seconds,
      "images_used": n_used,
      "candidates": len(cands),
      "classes": list(ctx.class_names),
      "threshold": t,
      "tpr_exhaustive": tpr_ref.tolist(),
      "fpr_exhaustive": fpr_ref.tolist(),
  }
  if planted is not None:
    figures["exhaustive_planted_recall5"] = (
        (search_compare.top(ref_map, t) & planted).sum((1, 2)) / planted.sum((1, 2))
    ).tolist()
  rows, per_class = [], []
  for name, method, overrides in runs:
    art = result(name, method, overrides)
    key = art.arrays.get("dfm_key", art["scores"])
    cmp = search_compare.compare(ref_map, key, base, planted=planted, thresholds=(t, 0.01))
    tpr, fpr = search_compare.tpr_fpr(
        ctx.apply_fn,
        ctx.variables,
        ctx.mesh,
        ctx.images,
        ctx.labels,
        search_compare.top(key, t),
        int(a.batch_size),
    )
    fwd = float(art.meta["forward_equivalents"])
    tag5 = f"{round(t * 100):d}"
    f = {
        f"{name}_forwards": fwd,
        f"{name}_speedup": ref_forwards / fwd,
        f"{name}_seconds": float(art.meta["seconds"]),
        f"{name}_mass5": float(cmp[f"mass{tag5}"].min()),
        f"{name}_iou5": float(cmp[f"iou{tag5}"].mean()),
        f"{name}_iou1": float(cmp["iou1"].mean()),
        f"{name}_max_tpr_diff": float(np.abs(tpr - tpr_ref).max()),
        f"{name}_max_fpr_diff": float(np.abs(fpr - fpr_ref).max()),
        f"{name}_mass5_per_class": cmp[f"mass{tag5}"].tolist(),
        f"{name}_iou5_per_class": cmp[f"iou{tag5}"].tolist(),
        f"{name}_tpr_diff_per_class": (tpr - tpr_ref).tolist(),
        f"{name}_fpr_diff_per_class": (fpr - fpr_ref).tolist(),
    }
    if planted is not None:
      f[f"{name}_planted_recall5"] = cmp[f"planted_recall{tag5}"].tolist()
    if "estimated_missed_per_class" in art.meta:
      f[f"{name}_estimated_missed"] = art.meta["estimated_missed_per_class"]
    figures.update(f)
    rows.append(name)
    per_class.append((name, cmp[f"mass{tag5}"], cmp[f"iou{tag5}"], tpr - tpr_ref, fpr - fpr_ref))
  figures["methods"] = rows
  figures["per_class"] = [
      {
          "method": n,
          "mass5": m.tolist(),
          "iou5": i.tolist(),
          "dtpr": dt.tolist(),
          "dfpr": df.tolist(),
      }
      for n, m, i, dt, df in per_class
  ]
  return figures


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
      rows.append(
          (
              f"  {m} / {name}",
              f"mass5 {pc['mass5'][c]:.3f}  IoU5 {pc['iou5'][c]:.3f}  ΔTPR "
              f"{pc['dtpr'][c]:+.3f}  ΔFPR {pc['dfpr'][c]:+.3f}{extra}",
          )
      )
  return rows


def plain_throughput(
    model_name: str = "resnet18",
    width_multiplier: float = 1.0,
    image_size: int = 32,
    batch: int = 100,
    num_devices: int = 0,
    dtype: str = "float32",
    repeats: int = 5,
) -> dict:
  """Images/s of plain inference (random weights and images), the batch sharded over the
  devices: the ceiling the DFM engine is measured against, under the process's XLA flags."""
  mesh = parallel.make_mesh(num_devices)
  model = models.create(model_name, num_classes=10, width_multiplier=width_multiplier, dtype=dtype)
  variables = models.init(model, jax.random.key(0), image_size)
  b = parallel.round_up(batch, mesh)
  x = np.random.default_rng(0).normal(size=(b, image_size, image_size, 3)).astype(np.float32)
  rate = _plain_rate(lambda v, x: model.apply(v, x, train=False), variables, mesh, x, repeats)
  return {
      "model": model_name,
      "width_multiplier": width_multiplier,
      "image_size": image_size,
      "batch": b,
      "devices": int(mesh.devices.size),
      "dtype": dtype,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "plain": rate,
  }
