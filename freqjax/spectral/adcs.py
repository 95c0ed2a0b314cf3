"""ADCS: accumulative difference of class-wise average spectrum.

Streamed over a dataset: each batch's amplitude spectra |F(x)| (normalised images, per
channel, centred) are summed per class on the device (a one-hot matmul; sharded batches are
reduced over the mesh) and accumulated on the host in float64.

- variant 'paper' (default): E_c = mean over class c of |F|; reduced to one channel with the
  luminance weights (0.2989, 0.5870, 0.1140); ADCS_c = sum_{j != c} sign(E_c - E_j), in
  1-|C| .. |C|-1.
- variant 'official' (Evaluation/compute_ADCS.py): per-class sums (not means) of |F| in
  float64, exact spectral zeros replaced by 12e-12, the per-channel difference turned into
  one channel with the luminance weights, diff > 0 -> +1 and diff <= 0 -> -1, summed over all
  j including j = c (so its values are the paper's minus 1 where classes are balanced).
  Computed in float64 (jax.enable_x64) so that it equals a NumPy transcription.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import parallel
from freqjax.spectral import fft

LUMINANCE = (0.2989, 0.5870, 0.1140)


def _batch_sums(x, labels, valid, num_classes: int, official: bool):
  spectrum = fft.centred_spectrum(x)
  if official:
    spectrum = jnp.where(spectrum == 0, jnp.asarray(12e-12, spectrum.dtype), spectrum)
  amp = jnp.abs(spectrum)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=amp.dtype) * valid[:, None].astype(amp.dtype)
  return jnp.einsum("nc,nhwk->chwk", onehot, amp), onehot.sum(0)


def class_amplitude_sums(
    batches: Iterable[dict], num_classes: int, mesh=None, variant: str = "paper"
):
  """Sums of |F| per class over batches of {'image': normalised (B,H,W,3), 'label',
  optional 'valid'}; returns (sums (C,H,W,3) float64, counts (C,)). With a mesh, each batch
  (the same on every process) is sharded over its devices and reduced on them."""
  official = _check_variant(variant)
  sums = counts = None
  ctx = jax.enable_x64(True) if official else contextlib.nullcontext()
  with ctx:
    dtype = jnp.float64 if official else jnp.float32
    if mesh is None:
      fn = jax.jit(lambda x, y, v: _batch_sums(x.astype(dtype), y, v, num_classes, official))
    else:
      repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
      fn = jax.jit(
          lambda x, y, v: _batch_sums(x.astype(dtype), y, v, num_classes, official),
          in_shardings=(data, data, data),
          out_shardings=(repl, repl),
      )
    for b in batches:
      valid = b.get("valid", np.ones(len(b["label"]), bool))
      args = (np.asarray(b["image"]), np.asarray(b["label"], np.int32), np.asarray(valid))
      if mesh is not None:  # every process holds the whole batch: a global array
        args = jax.device_put(args, parallel.batch_sharding(mesh))
      s, n = fn(*args)
      s, n = np.asarray(s, np.float64), np.asarray(n, np.float64)
      sums = s if sums is None else sums + s
      counts = n if counts is None else counts + n
  return sums, counts


def gray(x: np.ndarray) -> np.ndarray:
  """Luminance-weighted channel reduction, (..., 3) -> (...), as the official rgb2gray."""
  return LUMINANCE[0] * x[..., 0] + LUMINANCE[1] * x[..., 1] + LUMINANCE[2] * x[..., 2]


def adcs_from_sums(sums: np.ndarray, counts: np.ndarray, variant: str = "paper") -> np.ndarray:
  """(C,H,W,3) class sums of |F| -> ADCS (C,H,W) int32."""
  official = _check_variant(variant)
  c = sums.shape[0]
  out = np.zeros(sums.shape[:3], np.int32)
  if official:
    for j in range(c):
      olp = np.zeros(sums.shape[1:3])
      for i in range(c):
        diff = gray(sums[j] - sums[i])
        olp += np.where(diff > 0, 1.0, -1.0)
      out[j] = olp.astype(np.int32)
    return out
  if np.any(counts == 0):
    raise ValueError(f"Every class needs images for ADCS; counts per class: {counts}.")
  mean_gray = gray(sums / counts[:, None, None, None])
  for j in range(c):
    out[j] = np.sum([np.sign(mean_gray[j] - mean_gray[i]) for i in range(c) if i != j], axis=0)
  return out


def _check_variant(variant: str) -> bool:
  if variant not in ("paper", "official"):
    raise ValueError(f"Unknown ADCS variant {variant!r}; use 'paper' or 'official'.")
  return variant == "official"
