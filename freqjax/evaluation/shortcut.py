"""The DFM shortcut test: classify the whole test set filtered with each class's DFM.

For each class k, every test image is filtered to keep only DFM_k's frequencies and
classified; TPR_k = (class-k images predicted k) / P_k and FPR_k = (non-k images predicted k)
/ N_k, with P_k, N_k the class counts (as the official Evaluation/verify_mask_imgn.py). The
same is reported on the unfiltered test set, and, as the official script's second part, with
DFM_k's frequencies removed instead (DC kept). A frequency shortcut for class k: TPR_k stays
high on DFM_k-filtered images although DFM_k keeps only a small fraction of the spectrum; a
high FPR_k shows the shortcut also pulls other classes to k. Works on any folder test set
of the same classes (OOD).

A model with more outputs than classes (a class map, freqjax/classmap.py: logit k is class
k's output) is tested twice: `tpr`, `fpr`, `confusion*` with the prediction over all its
outputs (one outside the classes is a miss, counted in a last confusion column, 'other'),
and `*_subset` with the prediction over the classes' outputs only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import errors, parallel
from freqjax.evaluation import metrics
from freqjax.spectral import fft


def make_predict(apply_fn, mesh, subset: int | None = None):
  """jit (variables, images (B,H,W,3) normalised, keep_mask (H,W)) -> predicted classes;
  with `subset` (B, 2): the argmax over all outputs and over the first `subset` only."""
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)

  def predict(variables, x, keep):
    logits = apply_fn(variables, fft.filter_images(x, keep))
    if subset is None:
      return jnp.argmax(logits, -1)
    return jnp.stack([jnp.argmax(logits, -1), jnp.argmax(logits[:, :subset], -1)], -1)

  return jax.jit(predict, in_shardings=(repl, data, repl), out_shardings=data)


def predictions(
    predict, variables, mesh, images: np.ndarray, keep: np.ndarray, batch_size: int, bar=None
) -> np.ndarray:
  return parallel.map_batches(
      lambda x: predict(variables, x, keep), images, batch_size, mesh, bar=bar
  )


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
    memory_budget_mb: float = 0,
    progress: bool = False,
    desc: str = "shortcut test",
) -> dict:
  """images: normalised (N,H,W,3); dfms: (C,H,W) bool keep-masks, centred layout.

  `batch_size` images per forward pass, fewer where the pass's buffers would exceed
  `memory_budget_mb` per device (`parallel.memory_budget`: 0 = automatic, 1 GiB on a CPU).
  `progress`: a bar over the (1 + C, or 1 + 2C with `complement`) passes of the test set."""
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
  x1 = jax.ShapeDtypeStruct((1,) + images.shape[1:], jnp.float32)
  mapped = int(jax.eval_shape(apply_fn, variables, x1).shape[-1]) > num_classes
  predict = make_predict(apply_fn, mesh, num_classes if mapped else None)
  views = [("", 0, True), ("_subset", 1, False)] if mapped else [("", None, False)]
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  dtype = jax.dtypes.canonicalize_dtype(images.dtype)
  keep_spec = jax.ShapeDtypeStruct(images.shape[1:3], jnp.float32, sharding=repl)
  batch_size, predict = parallel.fit_batch(
      lambda b: predict.lower(
          variables, jax.ShapeDtypeStruct((b,) + images.shape[1:], dtype, sharding=data), keep_spec
      ),
      batch_size,
      len(images),
      mesh,
      parallel.memory_budget(mesh, memory_budget_mb),
      desc,
  )
  passes = 1 + num_classes * (2 if complement else 1)
  bar = parallel.progress(
      total=passes * len(images), unit="img", desc=f"{desc} ({passes} passes)", disable=not progress
  )

  def confusions(keep) -> dict:
    """{suffix: confusion matrix} of the images filtered by `keep`, per prediction."""
    pred = predictions(predict, variables, mesh, images, keep, batch_size, bar)
    return {
        v: metrics.confusion(labels, pred if col is None else pred[:, col], num_classes, other)
        for v, col, other in views
    }

  full = np.ones(images.shape[1:3], np.float32)
  conf0 = confusions(full)
  pos = conf0[""].sum(axis=1).astype(np.float64)
  neg = conf0[""].sum() - pos
  out = {"keep_fraction": dfms.reshape(num_classes, -1).mean(1)}
  for v, conf in conf0.items():
    out[f"confusion_unfiltered{v}"] = conf
    out[f"tpr_unfiltered{v}"], out[f"fpr_unfiltered{v}"] = metrics.tpr_fpr(conf, pos, neg)
  modes = [("", lambda m: m.astype(np.float32))]
  if complement:
    half = np.array(images.shape[1:3]) // 2

    def removed(m):
      keep = (~m).astype(np.float32)
      keep[half[0], half[1]] = 1.0  # the official complement test keeps DC
      return keep

    modes.append(("_removed", removed))
  for suffix, make_mask in modes:
    per_dfm = [confusions(make_mask(dfms[k])) for k in range(num_classes)]
    for v in per_dfm[0]:
      confs = np.stack([c[v] for c in per_dfm])
      # Per DFM k, class k's TPR and FPR in the confusion matrix of DFM_k-filtered images.
      rates = [metrics.tpr_fpr(confs[k], pos, neg) for k in range(num_classes)]
      tpr = np.array([r[0][k] for k, r in enumerate(rates)])
      fpr = np.array([r[1][k] for k, r in enumerate(rates)])
      out[f"confusion{suffix}{v}"], out[f"tpr{suffix}{v}"], out[f"fpr{suffix}{v}"] = confs, tpr, fpr
  bar.close()
  return out


def subset_view(result: dict) -> dict | None:
  """A mapped model's results over the classes' outputs only, under the plain names (for
  `table`); None when the model has one output per class."""
  if "tpr_subset" not in result:
    return None
  view = {k[: -len("_subset")]: v for k, v in result.items() if k.endswith("_subset")}
  return dict(view, keep_fraction=result["keep_fraction"])


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
