"""freqjax.api.analyze on a classifier that is not a freqjax model: a JAX function that looks
only at the mean brightness (the DC frequency), so DC must top every class's DFM."""

import jax.numpy as jnp
import numpy as np

from freqjax import api


def test_a_dc_only_classifier_has_dc_as_its_dominant_frequency():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 8)
  images = rng.normal(scale=0.2, size=(16, 16, 16, 3)).astype(np.float32)
  images += np.where(labels == 0, -1.0, 1.0)[:, None, None, None]  # class = brightness sign

  def apply_fn(w, x):
    m = x.mean(axis=(1, 2, 3))
    return jnp.stack([-w * m, w * m], axis=1)

  out = api.analyze(apply_fn, jnp.float32(4.0), images, labels, thresholds=(0.01, 0.05))
  assert out["adcs"].shape == out["scores"].shape == (2, 16, 16)
  assert out["dfm"].shape == (2, 2, 16, 16)
  for c in range(2):
    assert np.unravel_index(np.argmax(out["scores"][c]), (16, 16)) == (8, 8)
    assert out["dfm"][0, c, 8, 8]
  np.testing.assert_array_equal(out["shortcut"]["tpr"], [1.0, 1.0])  # DC alone suffices
