"""Fourier sensitivity (Krishnamachari et al., TMLR 2023): the spectrum of the input gradient.

Per class c, the mean over its test images of |F(∇ₓ L)|², where F is the unitary 2-D FFT
(norm='ortho', so by Parseval a map sums to the mean squared gradient norm), taken per
channel of the model's (normalised) input and summed over channels, in the centred layout.
L is the image's cross-entropy (`target='loss'`, default) or its true-class logit
(`target='logit'`, which avoids the vanishing gradient of confidently classified images; on a
linear model it is exactly |F(w_c)|² of the class's weight image). `radial_average` gives
the map's mean over rings of equal integer radius |(u, v)| from DC.

Gradients are computed per batch, sharded over the mesh's devices (no collectives); the
per-class means are accumulated on the host in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import parallel

TARGETS = ("loss", "logit")


def _objective(apply_fn, variables, x, labels, target: str):
  logits = apply_fn(variables, x).astype(jnp.float32)
  if target == "loss":
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  return jnp.sum(jnp.take_along_axis(logits, labels[:, None], axis=1))


def power_spectra(apply_fn: Callable, variables, x, labels, target: str = "loss"):
  """(N, S, S) |F(∇ₓ L_i)|² per image, unitary FFT, summed over channels, centred."""
  if target not in TARGETS:
    raise ValueError(f"Unknown sensitivity target {target!r}; use one of {TARGETS}.")
  # Each image's objective depends on its own input only (eval mode), so the gradient of the
  # batch sum is every image's own gradient.
  g = jax.grad(lambda x: _objective(apply_fn, variables, x, labels, target))(x)
  spec = jnp.fft.fftshift(jnp.fft.fft2(g, axes=(1, 2), norm="ortho"), axes=(1, 2))
  return jnp.sum(jnp.abs(spec) ** 2, axis=-1)


def class_sensitivity(
    apply_fn: Callable,
    variables,
    mesh,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    target: str = "loss",
    batch_size: int = 256,
    memory_budget_mb: float = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """(C, S, S) float64 mean power spectrum of the input gradient per class, and counts (C,).

  `batch_size` images per backward pass, fewer where the pass's buffers would exceed
  `memory_budget_mb` per device (`parallel.memory_budget`: 0 = automatic, 1 GiB on a CPU);
  each image's gradient is its own, so the batch changes no result beyond float rounding."""
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  fn = jax.jit(
      lambda v, x, y: power_spectra(apply_fn, v, x, y, target),
      in_shardings=(repl, data, data),
      out_shardings=data,
  )
  variables = parallel.replicate(mesh, variables)
  images = np.asarray(images, np.float32)  # no copy of float32 images
  size = images.shape[1]

  def lower(b):
    x = jax.ShapeDtypeStruct((b,) + images.shape[1:], jnp.float32, sharding=data)
    return fn.lower(variables, x, jax.ShapeDtypeStruct((b,), jnp.int32, sharding=data))

  batch_size, compiled = parallel.fit_batch(
      lower,
      batch_size,
      len(images),
      mesh,
      parallel.memory_budget(mesh, memory_budget_mb),
      "Fourier sensitivity",
  )
  sums = np.zeros((num_classes, size, size), np.float64)
  counts = np.zeros(num_classes, np.int64)
  bar = parallel.progress(
      total=len(images), unit="img", desc="Fourier sensitivity", disable=not progress
  )
  for part, n in parallel.padded_batches(
      {"x": images, "y": labels.astype(np.int32)}, batch_size, mesh
  ):
    x = jax.device_put(part["x"], data)
    y = jax.device_put(part["y"], data)
    power = parallel.to_host(compiled(variables, x, y))[:n].astype(np.float64)
    np.add.at(sums, part["y"][:n], power)
    counts += np.bincount(part["y"][:n], minlength=num_classes)
    bar.update(n)
  bar.close()
  return sums / np.maximum(counts, 1)[:, None, None], counts


def radii(size: int) -> np.ndarray:
  """(S, S) int: each cell's distance from DC in the centred layout, rounded."""
  u = np.arange(size) - size // 2
  return np.rint(np.hypot(u[:, None], u[None, :])).astype(int)


def radial_average(maps: np.ndarray) -> np.ndarray:
  """(..., S, S) centred maps -> (..., R): mean over cells at integer radius r = 0..R-1
  (r = round(|(u, v)|), R = the largest radius + 1)."""
  s = maps.shape[-1]
  r = radii(s).ravel()
  counts = np.bincount(r)
  flat = maps.reshape(maps.shape[:-2] + (-1,))
  sums = np.stack(
      [np.bincount(r, weights=m, minlength=len(counts)) for m in flat.reshape(-1, s * s)]
  )
  return (sums / counts).reshape(maps.shape[:-2] + (len(counts),))
