"""Spectral primitives: identity, realness of conjugate-symmetric masks, Parseval, bands."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.spectral import candidates, fft, masks


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(6, 32, 32, 3)).astype(np.float32)


def test_centred_layout_puts_dc_in_the_middle(images):
  spec = np.asarray(fft.centred_spectrum(images))
  np.testing.assert_allclose(spec[:, 16, 16, :].real, images.sum(axis=(1, 2)), rtol=1e-4)
  # A pure cosine of frequency (u, v) = (3, -5) lights up (16+3, 16-5) and its partner.
  y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
  img = np.cos(2 * np.pi * (3 * y - 5 * x) / 32)[None, :, :, None]
  amp = np.abs(np.asarray(fft.centred_spectrum(img)))[0, :, :, 0]
  peaks = {tuple(p) for p in np.argwhere(amp > 1.0)}
  assert peaks == {(19, 11), (13, 21)}


def test_all_ones_mask_is_identity(images):
  out = np.asarray(fft.filter_images(images, np.ones((32, 32), np.float32)))
  np.testing.assert_allclose(out, images, atol=1e-5)


def test_parseval(images):
  spec = np.asarray(fft.centred_spectrum(images))
  energy_space = np.sum(images.astype(np.float64) ** 2, axis=(1, 2))
  energy_freq = np.sum(np.abs(spec.astype(np.complex128)) ** 2, axis=(1, 2)) / (32 * 32)
  np.testing.assert_allclose(energy_freq, energy_space, rtol=1e-5)


@pytest.mark.parametrize("size,patch", [(32, 1), (32, 2), (28, 7), (32, 4)])
def test_every_paired_candidate_keeps_images_real(images, size, patch):
  x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
  cs = candidates.paired(size, patch)
  removal = cs.removal_masks()
  assert all(masks.is_conjugate_symmetric(m) for m in removal)
  keep = 1.0 - removal.astype(np.float32)
  spec = fft.centred_spectrum(jnp.asarray(x))
  sample = keep[:: max(1, len(keep) // 40)]
  for m in sample:
    full = np.asarray(fft.from_centred_spectrum(spec * m[None, :, :, None]))
    assert np.abs(full.imag).max() < 1e-5 * np.abs(full.real).max()


def test_official_edge_candidates_are_not_real():
  """The official first-row/column masks zero one cell of a pair: a visible residue."""
  x = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype(np.float32)
  cs = candidates.official(32, 1)
  edge = [k for k, r in enumerate(cs.rects) if r[4] == 0 and (r[0], r[1]) == (0, 5)][0]
  keep = 1.0 - cs.removal_masks([edge])[0].astype(np.float32)
  full = np.asarray(fft.from_centred_spectrum(fft.centred_spectrum(x) * keep[None, :, :, None]))
  assert np.abs(full.imag).max() > 1e-3 * np.abs(full.real).max()


def test_band_masks_partition_the_plane():
  bands = ((0, 4), (4, 8), (8, 12), (12, math.inf))
  total = sum(masks.view_mask(f"keep_b{k}", 32, bands) for k in range(1, 5))
  np.testing.assert_array_equal(total, np.ones((32, 32)))
  np.testing.assert_array_equal(
      masks.view_mask("remove_b2", 32, bands), 1 - masks.view_mask("keep_b2", 32, bands)
  )
  two = masks.view_mask("remove_b1_b3", 32, bands)
  np.testing.assert_array_equal(
      two, masks.view_mask("keep_b2", 32, bands) + masks.view_mask("keep_b4", 32, bands)
  )
  r = masks.radial_distance(32)
  assert masks.view_mask("keep_b1", 32, bands)[16, 16] == 1  # DC is in B1
  assert np.all(masks.view_mask("keep_b3", 32, bands)[(r >= 8) & (r < 12)] == 1)
  for m in (masks.view_mask(f"keep_b{k}", 32, bands) for k in range(1, 5)):
    inner = m[1:, 1:]  # away from the Nyquist row and column, (i, j) pairs with (32-i, 32-j)
    np.testing.assert_array_equal(inner, inner[::-1, ::-1])
  with pytest.raises(ValueError, match="Unknown band view"):
    masks.view_mask("keep_all", 32, bands)


def test_top_fraction_follows_the_official_threshold_rule():
  scores = np.arange(100, dtype=np.float32).reshape(10, 10)
  dfm = masks.top_fraction(scores, 0.05)
  assert dfm.sum() == 5 and dfm.ravel()[-5:].all()
  tied = np.zeros((10, 10))
  tied[0, :3] = 2.0
  assert masks.top_fraction(tied, 0.01).sum() == 3  # ties at the threshold value are kept
  assert masks.boundary_ties(tied, 0.01) == (2.0, 2)  # 1 cell at 1 %, 2 more tie with it
  assert masks.boundary_ties(scores, 0.05) == (95.0, 0)
  # Fewer positive scores than the DFM's cells: every cell of score 0 ties at the boundary.
  few = np.zeros((10, 10))
  few[0, :3] = [3.0, 2.0, 1.0]
  assert masks.top_fraction(few, 0.05).sum() == 100 and masks.boundary_ties(few, 0.05) == (0.0, 95)
  with pytest.raises(ValueError, match=r"\(0, 1\]"):
    masks.top_fraction(scores, 1.5)
  with pytest.raises(ValueError, match=r"\(0, 1\]"):
    masks.top_fraction(scores, 0.0)
