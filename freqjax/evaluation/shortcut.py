"""The DFM shortcut test: classify the whole test set filtered with each class's DFM.

For each class k, every test image is filtered to keep only DFM_k's frequencies and
classified; TPR_k = (class-k images predicted k) / P_k and FPR_k = (non-k images predicted k)
/ N_k, with P_k, N_k the class counts (as the official Evaluation/verify_mask_imgn.py). The
same is reported on the unfiltered test set, and, as the official script's second part, with
DFM_k's frequencies removed instead (DC kept). A frequency shortcut for class k: TPR_k stays
high on DFM_k-filtered images although DFM_k keeps only a small fraction of the spectrum; a
high FPR_k shows the shortcut also pulls other classes to k. Works on any folder test set
of the same classes (OOD).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import errors, parallel
from freqjax.evaluation import metrics
from freqjax.spectral import fft


def make_predict(apply_fn, mesh):
  """jit (variables, images (B,H,W,3) normalised, keep_mask (H,W)) -> predicted classes."""
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)

  def predict(variables, x, keep):
    return jnp.argmax(apply_fn(variables, fft.filter_images(x, keep)), -1)

  return jax.jit(predict, in_shardings=(repl, data, repl), out_shardings=data)


def predictions(
    predict, variables, mesh, images: np.ndarray, keep: np.ndarray, batch_size: int
) -> np.ndarray:
  return parallel.map_batches(lambda x: predict(variables, x, keep), images, batch_size, mesh)


def run(
    apply_fn,
    variables,
    mesh,
    images: np.ndarray,
    labels: np.ndarray,
    dfms: np.ndarray,
    *,
    batch_size: int = 256,
    complement: bool = True,
) -> dict:
  """images: normalised (N,H,W,3); dfms: (C,H,W) bool keep-masks, centred layout."""
  dfms = np.asarray(dfms)
  num_classes = dfms.shape[0]
  if dfms.shape[1:] != images.shape[1:3]:
    raise errors.ArtifactShapeError(
        f"The DFMs are {dfms.shape[1]}×{dfms.shape[2]} but the images are "
        f"{images.shape[1]}×{images.shape[2]}; compute DFMs at the image size "
        "(or prepare the test set at the DFMs' size)."
    )
  labels = np.asarray(labels)
  if labels.max() >= num_classes:
    raise ValueError(f"Labels go up to {labels.max()} but there are {num_classes} DFMs.")
  variables = parallel.replicate(mesh, variables)
  predict = make_predict(apply_fn, mesh)
  full = np.ones(images.shape[1:3], np.float32)
  conf0 = metrics.confusion(
      labels, predictions(predict, variables, mesh, images, full, batch_size), num_classes
  )
  pos = conf0.sum(axis=1).astype(np.float64)
  neg = conf0.sum() - pos
  out = {"confusion_unfiltered": conf0, "keep_fraction": dfms.reshape(num_classes, -1).mean(1)}
  out["tpr_unfiltered"], out["fpr_unfiltered"] = metrics.tpr_fpr(conf0, pos, neg)
  modes = [("", lambda m: m.astype(np.float32))]
  if complement:
    half = np.array(images.shape[1:3]) // 2

    def removed(m):
      keep = (~m).astype(np.float32)
      keep[half[0], half[1]] = 1.0  # the official complement test keeps DC
      return keep

    modes.append(("_removed", removed))
  for suffix, make_mask in modes:
    confs = np.stack(
        [
            metrics.confusion(
                labels,
                predictions(predict, variables, mesh, images, make_mask(dfms[k]), batch_size),
                num_classes,
            )
            for k in range(num_classes)
        ]
    )
    # Per DFM k, class k's TPR and FPR in the confusion matrix of DFM_k-filtered images.
    rates = [metrics.tpr_fpr(confs[k], pos, neg) for k in range(num_classes)]
    tpr = np.array([r[0][k] for k, r in enumerate(rates)])
    fpr = np.array([r[1][k] for k, r in enumerate(rates)])
    out[f"confusion{suffix}"], out[f"tpr{suffix}"], out[f"fpr{suffix}"] = confs, tpr, fpr
  return out


def table(result: dict, class_names) -> str:
  """A readable per-class TPR/FPR table (Markdown)."""
  has_c = "tpr_removed" in result
  head = "| class | DFM keeps | TPR | FPR | TPR unfiltered | FPR unfiltered |"
  head += " TPR DFM removed | FPR DFM removed |" if has_c else ""
  rows = [head, "|" + "---|" * (head.count("|") - 1)]
  for k, name in enumerate(class_names):
    r = (
        f"| {name} | {100 * result['keep_fraction'][k]:.1f}% | {result['tpr'][k]:.3f} | "
        f"{result['fpr'][k]:.3f} | {result['tpr_unfiltered'][k]:.3f} | "
        f"{result['fpr_unfiltered'][k]:.3f} |"
    )
    if has_c:
      r += f" {result['tpr_removed'][k]:.3f} | {result['fpr_removed'][k]:.3f} |"
    rows.append(r)
  return "\n".join(rows)
