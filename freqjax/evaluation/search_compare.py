"""How well a fast DFM search agrees with the exhaustive ranking, per class.

- score mass: Σ over the method's DFM cells of the exhaustive score increase over the
  unfiltered loss (negative increases count 0), ÷ the same sum over the exhaustive DFM. It is
  1 when the method's DFM holds cells as important as the exhaustive DFM's, whatever their
  order among the many noise-level cells no approximation can (or needs to) reproduce;
- the IoU of the method's DFM with the exhaustive DFM (top 5 % and top 1 %);
- planted recall on synthetic data (the fraction of planted cells in the DFM);
- the shortcut test's TPR/FPR with the method's DFMs minus those with the exhaustive DFMs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import parallel
from freqjax.evaluation import shortcut
from freqjax.spectral import masks


def class_losses(apply_fn, variables, mesh, images, labels, num_classes, batch: int = 256):
  """(C,) summed cross-entropy of each class's unfiltered images (the scores' baseline)."""
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  f = jax.jit(
      lambda v, x: apply_fn(v, x).astype(jnp.float32), in_shardings=(repl, data), out_shardings=data
  )
  variables = parallel.replicate(mesh, variables)
  logits = parallel.map_batches(lambda x: f(variables, x), images, batch, mesh)
  ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  return np.array([ce[labels == c].sum() for c in range(num_classes)], np.float64)


def score_mass(reference: np.ndarray, base: np.ndarray, dfm: np.ndarray, ref_dfm: np.ndarray):
  """(C,) exhaustive score mass the DFMs `dfm` (C, S, S) capture, relative to `ref_dfm`."""
  gain = np.maximum(reference - base[:, None, None], 0.0)
  got = (gain * dfm).sum(axis=(1, 2))
  best = (gain * ref_dfm).sum(axis=(1, 2))
  return np.where(best > 0, got / np.maximum(best, 1e-30), 1.0)


def top(maps: np.ndarray, threshold: float) -> np.ndarray:
  return np.stack([masks.top_fraction(m, threshold) for m in maps])


def compare(
    reference: np.ndarray,
    key: np.ndarray,
    base: np.ndarray,
    *,
    planted: np.ndarray | None = None,
    thresholds=(0.05, 0.01),
) -> dict:
  """Per class: mass, IoU at each threshold (first = the DFM's), planted recall."""
  out = {}
  for t in thresholds:
    ref, got = top(reference, t), top(key, t)
    tag = f"{round(t * 100):d}"
    out[f"iou{tag}"] = masks.iou(got, ref)
    out[f"mass{tag}"] = score_mass(reference, base, got, ref)
    if planted is not None:
      out[f"planted_recall{tag}"] = (got & planted).sum((1, 2)) / planted.sum((1, 2))
  return out


def tpr_fpr(apply_fn, variables, mesh, images, labels, dfms, batch: int = 256):
  """Per class TPR, FPR on the test set filtered with each class's DFM."""
  r = shortcut.run(
      apply_fn, variables, mesh, images, labels, dfms, batch_size=batch, complement=False
  )
  return r["tpr"], r["fpr"]
