"""HFSS as a search method: `freqjax.spectral.hfss.search` (the hierarchical search, its own
module), its score map averaged per candidate. No removal is scored exactly, so every
candidate's score is an estimate; HFSS's own arrays travel in `Result.hfss`."""

from __future__ import annotations

import time

import numpy as np

from freqjax.spectral import hfss
from freqjax.spectral.search import base


@base.register("hfss")
def run(r: base.Request, overrides: dict) -> base.Result:
  """HFSS on `r` by config.analysis.hfss (with `overrides`)."""
  t0 = time.time()
  num_classes = len(r.class_names)
  params = dict(r.config.analysis.hfss.to_dict(), **overrides)
  arrays, meta = hfss.search(
      r.apply_fn,
      r.variables,
      r.mesh,
      r.images,
      r.labels,
      num_classes,
      params,
      store_dir=r.store_root,
      progress=r.progress,
  )
  # Per candidate: the mean of HFSS's score map over its cells (no removal is scored).
  m = r.cands.removal_masks().reshape(len(r.cands), -1).astype(np.float32)
  per = (arrays["scores"].reshape(num_classes, -1) @ m.T / m.sum(1)).astype(np.float32)
  return base.Result(
      r.cands,
      per,
      np.zeros(per.shape, bool),
      per,
      float(arrays["forwards"]),
      time.time() - t0,
      {},
      {"hfss_grids": meta.get("grids")},
      hfss=(arrays, meta),
  )
