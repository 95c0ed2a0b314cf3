"""Fourier sensitivity: on a linear model it equals the weights' spectrum (logit target) and
the closed-form gradient's spectrum (loss target); the radial average of a radial map."""

import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import parallel
from freqjax.spectral import sensitivity

S, C, K = 12, 3, 4


def _linear(seed=0):
  w = np.random.default_rng(seed).normal(size=(S, S, C, K)).astype(np.float32)
  apply_fn = lambda v, x: jnp.einsum("nhwc,hwck->nk", x, v["w"])
  return apply_fn, {"w": jnp.asarray(w)}, w


def _power(img):
  """Σ_channels |unitary FFT|², centred, in NumPy (float64)."""
  f = np.fft.fftshift(np.fft.fft2(img.astype(np.float64), axes=(0, 1), norm="ortho"), axes=(0, 1))
  return (np.abs(f) ** 2).sum(-1)


def _data(n=20, seed=1):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, S, S, C)).astype(np.float32), np.arange(n) % K


def test_logit_sensitivity_of_a_linear_model_is_the_weights_spectrum():
  apply_fn, v, w = _linear()
  x, y = _data()
  maps, counts = sensitivity.class_sensitivity(
      apply_fn, v, parallel.make_mesh(4), x, y, K, target="logit", batch_size=8
  )
  assert counts.tolist() == [5] * K
  for c in range(K):
    np.testing.assert_allclose(maps[c], _power(w[..., c]), rtol=1e-4, atol=1e-6)


def test_loss_sensitivity_of_a_linear_model_is_the_closed_form_gradient_spectrum():
  apply_fn, v, w = _linear()
  x, y = _data()
  maps, _ = sensitivity.class_sensitivity(
      apply_fn, v, parallel.make_mesh(4), x, y, K, target="loss", batch_size=6
  )
  logits = np.einsum("nhwc,hwck->nk", x.astype(np.float64), w)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  grads = np.einsum("nk,hwck->nhwc", p - np.eye(K)[y], w)  # dCE/dx = Σ_k (p_k - y_k) w_k
  for c in range(K):
    want = np.mean([_power(g) for g in grads[y == c]], axis=0)
    np.testing.assert_allclose(maps[c], want, rtol=2e-4, atol=1e-7)


def test_radial_average_of_a_radial_map_is_its_profile():
  u = np.arange(16) - 8
  r = np.rint(np.hypot(u[:, None], u[None, :]))
  profile = sensitivity.radial_average(np.stack([r**2, np.ones_like(r)]))
  np.testing.assert_allclose(profile[0], np.arange(profile.shape[1]) ** 2)
  np.testing.assert_allclose(profile[1], 1.0)


def test_power_spectra_rejects_an_unknown_target():
  apply_fn, v, _ = _linear()
  with pytest.raises(ValueError, match="target"):
    sensitivity.power_spectra(apply_fn, v, jnp.zeros((1, S, S, C)), jnp.zeros(1, int), "margin")
