"""The analysis of any JAX classifier, without a workdir (for notebooks and other libraries):

    result = freqjax.api.analyze(apply_fn, variables, images, labels)
    result["adcs"], result["scores"], result["dfm"], result["shortcut"]["tpr"]

`apply_fn(variables, x)` maps normalised NHWC float images to logits (N, C), e.g.
`lambda v, x: model.apply(v, x, train=False)` for Flax or any jax-traceable function. The same
engines as the pipeline's stages compute ADCS (`spectral.adcs`), the DFM ranking
(`spectral.dfm.Engine`), the DFMs at each threshold and the DFM-filtered shortcut test
(`evaluation.shortcut`); nothing is written to disk.
"""

from __future__ import annotations

import numpy as np

from freqjax import errors, parallel
from freqjax.evaluation import shortcut as shortcut_lib
from freqjax.spectral import adcs as adcs_lib, candidates as cand_lib, dfm as dfm_lib


def analyze(
    apply_fn,
    variables,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    patch_size: int = 1,
    candidates: str = "paired",
    thresholds=(0.01, 0.05, 0.1, 0.2),
    threshold: float = 0.05,
    adcs_variant: str = "paper",
    batch_size: int = 256,
    num_devices: int = 0,
    progress: bool = False,
) -> dict:
  """ADCS, DFM score maps, DFMs and the shortcut test of a classifier on (images, labels).

  images: normalised (N, S, S, 3) float32; labels: (N,) ints in [0, num_classes). Returns
  {'adcs': (C,S,S), 'scores': (C,S,S), 'dfm': (T,C,S,S) bool, 'thresholds': [...],
  'shortcut': {...tpr, fpr, ... of the DFM at `threshold`}}, all maps centred (DC at S/2).
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  if images.ndim != 4 or images.shape[1] != images.shape[2] or len(images) != len(labels):
    raise errors.ConfigError(
        f"images must be (N, S, S, C) with one label each; got {images.shape} and "
        f"{labels.shape} labels."
    )
  thresholds = [float(t) for t in thresholds]
  if not any(abs(t - threshold) < 1e-9 for t in thresholds):
    raise errors.ConfigError(f"threshold {threshold} is not in thresholds {thresholds}.")
  num_classes = int(num_classes or labels.max() + 1)
  mesh = parallel.make_mesh(num_devices)
  batches = (
      b for b, _ in parallel.padded_batches({"image": images, "label": labels}, batch_size, mesh)
  )
  sums, counts = adcs_lib.class_amplitude_sums(batches, num_classes, mesh, adcs_variant)
  cands = cand_lib.make(images.shape[1], int(patch_size), candidates)
  engine = dfm_lib.Engine(apply_fn, variables, mesh, cands, progress=progress)
  raw = engine.rank(images, labels, range(num_classes))
  scores = dfm_lib.score_maps(cands, raw)
  dfm = dfm_lib.dfms(scores, thresholds)
  chosen = dfm[[abs(t - threshold) < 1e-9 for t in thresholds].index(True)]
  return {
      "adcs": adcs_lib.adcs_from_sums(sums, counts, adcs_variant),
      "scores": scores,
      "dfm": dfm,
      "thresholds": thresholds,
      "shortcut": shortcut_lib.run(
          apply_fn, variables, mesh, images, labels, chosen, batch_size=batch_size
      ),
  }
