"""Batched evaluation on the mesh.

`make_eval_step` compiles (variables, batch[, keep_mask]) -> {loss_sum, confusion}: the
evaluation transform, optional frequency filtering, the forward pass, and confusion-matrix
counts reduced over the global batch (padding rows of a partial batch count zero).
`evaluate` runs it over a `Loader`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import parallel
from freqjax.data import augment
from freqjax.evaluation import metrics
from freqjax.spectral import fft


def make_eval_step(model, config, mesh, *, filtered: bool = False):
  transform = augment.make_eval_transform(config)
  num_classes = int(config.data.num_classes)

  def step(variables, batch, keep_mask=None):
    x = transform(batch["image"])
    if filtered:
      x = fft.filter_images(x, keep_mask)
    logits = model.apply(variables, x, train=False).astype(jnp.float32)
    labels, w = batch["label"], batch["valid"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    conf = (
        jnp.zeros((num_classes, num_classes), jnp.int32)
        .at[labels, jnp.argmax(logits, -1)]
        .add(w.astype(jnp.int32))
    )
    return {"loss_sum": jnp.sum(jnp.where(w, ce, 0.0)), "confusion": conf}

  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  if filtered:
    return jax.jit(step, in_shardings=(repl, data, repl), out_shardings=repl)
  return jax.jit(lambda v, b: step(v, b), in_shardings=(repl, data), out_shardings=repl)


def evaluate(eval_step, variables, loader, mesh, keep_mask=None) -> dict:
  """Loss, accuracy and confusion matrix of a whole split."""
  loss, conf = 0.0, None
  extra = () if keep_mask is None else (keep_mask,)
  outs = [eval_step(variables, parallel.shard_batch(mesh, b), *extra) for b in loader.epoch(0)]
  for o in outs:
    loss += float(o["loss_sum"])
    c = np.asarray(o["confusion"], np.int64)
    conf = c if conf is None else conf + c
  n = int(conf.sum())
  return {
      "loss": loss / max(n, 1),
      "accuracy": metrics.accuracy(conf),
      "confusion": conf,
      "count": n,
  }
