"""The Fourier heat map: the engine's map equals a one-frequency-at-a-time NumPy loop, resumes
exactly, is flat for a model that ignores its input, and its basis images are Yin et al.'s."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import parallel
from freqjax.spectral import candidates, dfm, heatmap
from tests.spectral.test_dfm import _sample, _tiny

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n, size, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 1, size=(n, size, size, 3)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("size,patch", [(32, 1), (32, 4), (28, 7)])
def test_engine_heatmap_equals_naive_loop(size, patch):
  apply_fn, variables = _tiny(size)
  images, labels = _images(10, size)
  cs = candidates.paired(size, patch)
  sub = cs.subset(_sample(cs, 20))
  got = heatmap.heatmap(
      apply_fn, variables, parallel.make_mesh(4), images, labels, sub,
      eps=4.0, mean=MEAN, std=STD, seed=3, chunk_size=8,
  )  # fmt: skip
  loss, error = heatmap.heatmap_naive(
      apply_fn, variables, images, labels, sub, eps=4.0, mean=MEAN, std=STD, seed=3
  )
  np.testing.assert_allclose(got["candidate_loss"], loss, rtol=2e-4, atol=1e-5)
  # An error count may flip only where a logit margin is within float noise.
  assert np.abs(got["candidate_error"] - error).max() <= 1 / len(images) + 1e-6
  assert np.mean(got["candidate_error"] == error.astype(np.float32)) >= 0.9


def test_basis_images_are_unit_cosine_gratings():
  size = 16
  cs = candidates.paired(size, 1)
  u = np.asarray(heatmap.basis_images(jnp.asarray(cs.rects), size, 1))
  np.testing.assert_allclose(np.sqrt((u**2).sum(axis=(1, 2))), 1.0, rtol=1e-5)
  grid = np.arange(size)
  for k in [1, 7, 40, len(cs) - 1]:
    r, c = cs.rects[k, 0] - size // 2, cs.rects[k, 1] - size // 2  # centred frequency
    cosine = np.cos(2 * np.pi * (r * grid[:, None] + c * grid[None, :]) / size)
    cosine /= np.linalg.norm(cosine)
    np.testing.assert_allclose(u[k], cosine, atol=1e-5)


def test_a_model_that_ignores_its_input_has_a_flat_map():
  size = 16
  logits = jnp.array([2.0, -1.0, 0.5])
  apply_fn = lambda v, x: jnp.broadcast_to(logits, (x.shape[0], 3)) + 0.0 * v["w"]
  images, labels = _images(12, size)
  out = heatmap.heatmap(
      apply_fn, {"w": jnp.zeros(())}, parallel.make_mesh(4), images, labels,
      candidates.paired(size, 1), eps=4.0, mean=MEAN, std=STD,
  )  # fmt: skip
  assert np.ptp(out["error"]) == 0 and np.ptp(out["loss"]) < 1e-5
  assert out["error"][0, 0] == pytest.approx(float(out["clean_error"]))
  assert out["loss"][0, 0] == pytest.approx(float(out["clean_loss"]), rel=1e-5)
  assert float(out["clean_error"]) == pytest.approx(np.mean(labels != 0))


def test_heatmap_resumes_to_identical_values(tmp_path):
  size = 16
  apply_fn, variables = _tiny(size)
  images, labels = _images(8, size)
  cs = candidates.paired(size, 2)
  mesh = parallel.make_mesh(4)
  run = lambda store: heatmap.heatmap(
      apply_fn, variables, mesh, images, labels, cs, eps=2.0, mean=MEAN, std=STD,
      store=store, chunk_size=8,
  )  # fmt: skip
  full = run(None)
  store = dfm.ChunkStore(str(tmp_path / "partial"), {"fp": "x"})
  first = run(store)
  chunks = sorted(f for f in os.listdir(tmp_path / "partial") if f.startswith("class"))
  assert len(chunks) >= 3
  os.remove(tmp_path / "partial" / chunks[1])  # as if killed before this chunk was saved
  again = run(dfm.ChunkStore(str(tmp_path / "partial"), {"fp": "x"}))
  for k in ("candidate_loss", "candidate_error"):
    np.testing.assert_array_equal(first[k], full[k])
    np.testing.assert_array_equal(again[k], full[k])


def test_default_eps_follows_the_conventions():
  assert heatmap.default_eps(32) == 4.0 and heatmap.default_eps(224) == 15.7
  assert heatmap.default_eps(16) == 4.0 and 4.0 < heatmap.default_eps(64) < 15.7
