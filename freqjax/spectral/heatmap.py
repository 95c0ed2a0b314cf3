"""The Fourier heat map (Yin et al., NeurIPS 2019, "A Fourier perspective on model robustness").

For every frequency (i, j) of the half-plane — every candidate of a 'paired' candidate set,
so one per conjugate pair, or one per patch — a Fourier basis image U of L2 norm 1 (per
channel, over H×W) is added to every test image, in pixel space [0, 1]:

    x' = clip(x + ε · r · U, 0, 1),   r ∈ {-1, +1} drawn per image and channel,

then normalised as the model expects; the heat map is the test error (and mean
cross-entropy) per frequency. U is the real image whose centred spectrum is 1 on the
candidate's cells (the frequency and its conjugate partner) and 0 elsewhere, scaled to unit
norm: a cosine grating at p = 1 (Yin et al.'s U_{i,j}), the sum of the patch's gratings for
p > 1. Signs come from a seed and are the same for every frequency, so a heat map is a
deterministic function of (model, test set, ε, seed).

It runs on the DFM ranking's engine (`freqjax.spectral.dfm.Engine`) with another program:
chunked, sharded over devices, resumable with identical results.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import parallel
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib, fft

# Yin et al.'s conventional ε: 4.0 on CIFAR-10 (32 px), 15.7 on ImageNet (224 px).
EPS_32, EPS_224 = 4.0, 15.7


def default_eps(image_size: int) -> float:
  """ε for an image size: the two conventions, log-log interpolated between them (6.51 at
  64 px) and held constant outside [32, 224]."""
  s = min(max(int(image_size), 32), 224)
  slope = math.log(EPS_224 / EPS_32) / math.log(224 / 32)
  return round(EPS_32 * (s / 32) ** slope, 2)


def basis_images(rects, size: int, patch: int):
  """(K, 5) candidate rectangles -> (K, S, S) real basis images of unit L2 norm."""
  spectrum = cand_lib.removal_masks(rects, size, patch).astype(jnp.complex64)
  u = jnp.real(fft.from_centred_spectrum(spectrum[..., None]))[..., 0]
  return u / jnp.sqrt(jnp.sum(u * u, axis=(-2, -1), keepdims=True))


def signs(num_images: int, channels: int, seed: int) -> np.ndarray:
  """The random ±1 per image and channel (float32 (N, C))."""
  rng = np.random.default_rng(seed)
  return (2.0 * rng.integers(0, 2, size=(num_images, channels)) - 1.0).astype(np.float32)


def perturb(images01, sign, basis, eps: float, mean, std):
  """Normalised perturbed images: (N,S,S,C) in [0,1], (N,C) signs, (K,S,S) bases ->
  (K, N, S, S, C)."""
  x = images01[None] + eps * sign[None, :, None, None, :] * basis[:, None, :, :, None]
  x = jnp.clip(x, 0.0, 1.0)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def program(apply_fn: Callable, size: int, patch: int, eps: float, mean, std) -> dfm_lib.Program:
  """Per candidate: [summed CE, number of errors] over the group's images.
  Group: (images in [0, 1] (N, S, S, C) float32, signs (N, C), labels (N,) int32)."""

  def fn(variables, rects, group):
    images01, sign, labels = group
    x = perturb(images01, sign, basis_images(rects, size, patch), eps, mean, std)
    k, n = x.shape[:2]
    logits = apply_fn(variables, x.reshape((k * n,) + x.shape[2:])).astype(jnp.float32)
    y = jnp.tile(labels, k)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).reshape(k, n)
    wrong = (jnp.argmax(logits, -1) != y).astype(jnp.float32).reshape(k, n)
    return jnp.stack([ce.sum(axis=1), wrong.sum(axis=1)], axis=-1)

  def abstract(n, image_shape):
    return (
        jax.ShapeDtypeStruct((n,) + tuple(image_shape), jnp.float32),
        jax.ShapeDtypeStruct((n, image_shape[-1]), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )

  return dfm_lib.Program(fn, abstract, desc="Fourier heat map")


def heatmap(
    apply_fn: Callable,
    variables,
    mesh,
    images01: np.ndarray,
    labels: np.ndarray,
    cands: cand_lib.CandidateSet,
    *,
    eps: float,
    mean,
    std,
    seed: int = 0,
    store: dfm_lib.ChunkStore | None = None,
    memory_budget_mb: float = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict:
  """The heat map of a model on images in [0, 1] (N, S, S, C) with their labels.

  Returns {'error', 'loss'} maps (S, S, centred: every cell a candidate covers gets its
  value), 'candidate_error', 'candidate_loss' (K,), 'clean_error', 'clean_loss', and the
  engine's rate."""
  if cands.mode != "paired":
    raise ValueError("The heat map needs a 'paired' candidate set (real basis images).")
  n = len(images01)
  engine = dfm_lib.Engine(
      apply_fn,
      variables,
      mesh,
      cands,
      memory_budget_mb=memory_budget_mb,
      chunk_size=chunk_size,
      progress=progress,
      program=program(apply_fn, cands.size, cands.patch, eps, mean, std),
  )
  sign = signs(n, images01.shape[-1], seed)

  def make():
    return parallel.replicate(mesh, (images01.astype(np.float32), sign, labels.astype(np.int32)))

  group = dfm_lib.Group(0, n, make, "the test set")
  values = engine.evaluate([group], images01.shape[1:], store=store)[0]  # (K, 2)
  loss, error = values[:, 0] / n, values[:, 1] / n
  clean = clean_metrics(apply_fn, variables, images01, labels, mean, std)
  return {
      "error": cands.score_map(error),
      "loss": cands.score_map(loss),
      "candidate_error": error,
      "candidate_loss": loss,
      "clean_error": np.float32(clean[1]),
      "clean_loss": np.float32(clean[0]),
      "rate": engine.last_rate,
  }


def clean_metrics(apply_fn, variables, images01, labels, mean, std, batch: int = 256):
  """(mean CE, error rate) of the unperturbed images."""
  f = jax.jit(lambda v, x, y: _sums(apply_fn(v, (x - jnp.asarray(mean)) / jnp.asarray(std)), y))
  ce = wrong = 0.0
  for i in range(0, len(images01), batch):
    a, b = f(variables, images01[i : i + batch], labels[i : i + batch])
    ce, wrong = ce + float(a), wrong + float(b)
  return ce / len(images01), wrong / len(images01)


def _sums(logits, labels):
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
  return ce, jnp.sum(jnp.argmax(logits, -1) != labels)


def heatmap_naive(apply_fn, variables, images01, labels, cands, *, eps, mean, std, seed=0):
  """Reference: one frequency at a time, in NumPy (basis by NumPy's FFT), one forward each.
  Returns (candidate_loss, candidate_error) (K,)."""
  n = len(images01)
  sign = signs(n, images01.shape[-1], seed)
  f = jax.jit(lambda v, x, y: _sums(apply_fn(v, x), y))
  loss, error = np.empty(len(cands)), np.empty(len(cands))
  for k in range(len(cands)):
    spec = cands.removal_masks([k])[0].astype(np.complex128)
    u = np.real(np.fft.ifft2(np.fft.ifftshift(spec)))
    u /= np.linalg.norm(u)
    x = np.clip(images01 + eps * sign[:, None, None, :] * u[None, :, :, None], 0, 1)
    x = ((x - np.asarray(mean)) / np.asarray(std)).astype(np.float32)
    a, b = f(variables, x, labels)
    loss[k], error[k] = float(a) / n, float(b) / n
  return loss, error
