"""Benchmarks: training throughput, input pipeline, DFM engine.

Every benchmark prints a readable table and, as its very last line, one JSON object with the
same figures, so scripts can compare runs (`tail -n 1 | python -m json.tool`). Rates are
measured after a warm-up call (compilation excluded) and are ratios of work to wall time in
the same run; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from freqjax import models, parallel


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
) -> dict:
  """Candidate-images/s of the DFM engine, of the naive loop, and of plain inference."""
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
      apply_fn, variables, mesh, engine_set, memory_budget_mb=memory_budget_mb, progress=False
  )
  chunk = engine.chunk_size(images_per_class, images.shape[1:])  # at most len(engine_set)
  engine.fixed_chunk = chunk
  engine.rank(images, labels, [0], cands=cands.subset(np.arange(min(chunk, len(cands)))))
  t0 = time.perf_counter()  # the warm-up call above compiled the chunk program
  engine.rank(images, labels, [0])
  engine_s = time.perf_counter() - t0
  engine_rate = len(engine_set) * images_per_class / engine_s

  sub = cands.subset(np.arange(min(naive_candidates, len(cands))))
  dfm.rank_naive(apply_fn, variables, images, 0, sub.subset([0]))  # compile
  t0 = time.perf_counter()
  dfm.rank_naive(apply_fn, variables, images, 0, sub)
  naive_rate = len(sub) * images_per_class / (time.perf_counter() - t0)

  # Plain inference of the same model on unmasked images, batch = the engine's chunk.
  batch = max(1, min(chunk * images_per_class, 16384))
  batch = parallel.round_up(batch, mesh)
  x = jax.device_put(np.resize(images, (batch,) + images.shape[1:]), parallel.batch_sharding(mesh))
  v = parallel.replicate(mesh, variables)
  fwd = jax.jit(apply_fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))
  plain_rate = batch / _time(lambda: fwd(v, x), 3)

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
      "official_unique_masks": len(official),
      "official_loop_masks": official_loop,
  }


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
