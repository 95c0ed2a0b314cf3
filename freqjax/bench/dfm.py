"""DFM engine throughput: candidate-images/s of the engine, of the naive loop and of plain
inference, and the official loop's work for the same DFMs."""

from __future__ import annotations

import time

import jax
import numpy as np

from freqjax import models, parallel
from freqjax.bench import common


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
    stem: str = "cifar",
) -> dict:
  """Candidate-images/s of the DFM engine, of the naive loop, and of plain inference.
  `chunk_candidates` fixes the engine's chunk (0: the engine's own choice)."""
  from freqjax.spectral import candidates, dfm  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(num_devices)
  model = models.create(
      model_name,
      num_classes=num_classes,
      width_multiplier=width_multiplier,
      dtype=dtype,
      stem=stem,
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
  timing = _engine_timing(engine, images, labels)
  engine_rate = len(engine_set) * images_per_class / timing.pop("engine_seconds")

  naive_rate = _naive_rate(apply_fn, variables, images, cands, naive_candidates)

  # Plain inference of the same model on unmasked images, batch = the engine's chunk.
  batch = parallel.round_up(max(1, min(timing["chunk_candidates"] * images_per_class, 16384)), mesh)
  plain_rate = common.plain_rate(
      apply_fn, variables, mesh, np.resize(images, (batch,) + images.shape[1:])
  )
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
      **timing,
      "engine": engine_rate,
      "naive": naive_rate,
      "plain": plain_rate,
      "engine_vs_plain": engine_rate / plain_rate,
      "engine_vs_naive": engine_rate / naive_rate,
      **_official_figures(image_size, patch_size, num_classes, images_per_class, len(cands)),
  }


def _engine_timing(engine, images, labels) -> dict:
  """The engine's chunk (by measurement unless fixed), warm-up and timed seconds of one
  class's ranking."""
  engine.tune_fraction = 1.0  # measuring chunk sizes may cost as much as the timed run
  t0 = time.perf_counter()
  engine.rank(images, labels, [0])  # warm-up: the chunk size by measurement, compilation
  warmup_s = time.perf_counter() - t0
  tuning = engine.tuning
  chunk = tuning["chunk"] if tuning else engine.chunk_size(len(images), images.shape[1:])
  engine.fixed_chunk = chunk
  t0 = time.perf_counter()
  engine.rank(images, labels, [0])
  return {
      "chunk_candidates": chunk,
      "chunk_by_measurement": bool(tuning),
      "chunk_rates": tuning["rates_candidate_images_per_s"] if tuning else None,
      "warmup_seconds": warmup_s,
      "engine_seconds": time.perf_counter() - t0,
  }


def _naive_rate(apply_fn, variables, images, cands, n: int) -> float:
  """Candidate-images/s of the naive loop (one masked forward pass at a time) over the first
  `n` candidates, after a compiling call."""
  from freqjax.spectral import dfm  # pylint: disable=g-import-not-at-top

  sub = cands.subset(np.arange(min(n, len(cands))))
  dfm.rank_naive(apply_fn, variables, images, 0, sub.subset([0]))  # compile
  t0 = time.perf_counter()
  dfm.rank_naive(apply_fn, variables, images, 0, sub)
  return len(sub) * len(images) / (time.perf_counter() - t0)


def _official_figures(image_size, patch_size, num_classes, images_per_class, n_cands) -> dict:
  """The official loop's forward passes for one full DFM computation (all classes), against
  freqjax's."""
  from freqjax.spectral import candidates  # pylint: disable=g-import-not-at-top

  official = candidates.official(image_size, patch_size)
  official_loop = (image_size // patch_size) * (image_size // patch_size // 2 + 1)
  sorted_labels = np.repeat(np.arange(num_classes), images_per_class)
  shuffled = np.random.default_rng(0).permutation(sorted_labels)
  ours = n_cands * images_per_class * num_classes
  return {
      # The official loop forwards every test batch (of 100) that holds any image of the
      # class being ranked, for each of its loop's masks: with a class-sorted ImageFolder few
      # batches are wasted, with a shuffled test set nearly all of them.
      "official_forwards_sorted_test_set": official_loop * official_forward_count(sorted_labels),
      "official_forwards_shuffled_test_set": official_loop * official_forward_count(shuffled),
      "freqjax_forwards": ours,
      # The engine's rate counted in the official loop's work: the same DFMs, at this rate,
      # would replace that many of its forward passes per second (class-sorted / shuffled
      # test set). Only a ratio of work: the official loop's own speed is not measured here.
      "official_work_ratio_sorted": official_loop * official_forward_count(sorted_labels) / ours,
      "official_work_ratio_shuffled": official_loop * official_forward_count(shuffled) / ours,
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
