"""The exhaustive ranking: every candidate scored exactly (`dfm.Engine.rank`), the reference
the other methods are measured against."""

from __future__ import annotations

import os
import time

import numpy as np

from freqjax.spectral import dfm as dfm_lib
from freqjax.spectral.search import base


def exhaustive(
    engine, images, labels, class_indices, *, store=None, class_names=None
) -> base.Result:
  """Every candidate of the engine's set scored exactly for each class of `class_indices`."""
  t0 = time.time()
  raw = engine.rank(images, labels, class_indices, store=store, class_names=class_names)
  counts = np.array([np.sum(labels == c) for c in class_indices])
  return base.Result(
      engine.cands,
      raw,
      np.ones_like(raw, bool),
      raw,
      float(counts.sum() * len(engine.cands)),
      time.time() - t0,
      {},
      {"rate_candidate_images_per_s": engine.last_rate, "engine_tuning": engine.tuning},
  )


@base.register("exhaustive")
def run(r: base.Request, overrides: dict) -> base.Result:
  """The exhaustive ranking of `r` (its chunks directly in the store root)."""
  del overrides  # the exhaustive ranking has no settings
  store = None
  if r.store_root is not None:
    store = dfm_lib.ChunkStore(r.store_root, {"fingerprint": os.path.basename(r.store_root)})
  return exhaustive(
      r.engine(r.cands), r.images, r.labels, r.classes, store=store, class_names=r.class_names
  )
