"""DFM-X augmentation: images are filtered by another class's DFM (DC kept) with probability p,
never by their own; off, the transform draws exactly as before; bad DFM files are named."""

import jax
import numpy as np
import pytest

from freqjax import artifacts, errors
from freqjax.data import augment
from tests.conftest import load_config

S, K = 32, 4


def _dfms(seed=0):
  """(K, S, S) conjugate-symmetric random DFMs (so a filtered image stays real)."""
  rng = np.random.default_rng(seed)
  m = rng.random((K, S, S)) < 0.1
  flip = np.roll(m[:, ::-1, ::-1], 1, axis=(1, 2))  # index i -> (S - i) % S
  return m | flip


def _config(tmp_path, p, dfms=None):
  c = load_config("configs/synthetic.py:syn1")
  c.augment.flip, c.augment.pad = False, 0
  c.augment.crop = "none"
  if dfms is not None:
    path = tmp_path / "dfms.pkl"
    artifacts.export_official_dfms(str(path), dfms)
    c.augment.dfmx.dfms, c.augment.dfmx.p = str(path), p
  return c


def _spectrum(x):
  return np.fft.fftshift(np.fft.fft2(x, axes=(0, 1)), axes=(0, 1))


def test_filtered_images_keep_only_another_class_dfm(tmp_path):
  dfms = _dfms()
  n = 256
  images = np.random.default_rng(1).integers(0, 256, (n, S, S, 3), dtype=np.uint8)
  labels = np.arange(n) % K
  key = jax.random.key(0)
  plain = np.asarray(augment.make_train_transform(_config(tmp_path, 0.0))(key, images, labels))
  out = np.asarray(
      jax.jit(augment.make_train_transform(_config(tmp_path, 1.0, dfms)))(key, images, labels)
  )
  filtered = 0
  for i in range(n):
    if np.allclose(out[i], plain[i], atol=1e-6):
      continue
    filtered += 1
    spec = np.abs(_spectrum(out[i]))
    keep = dfms.copy()
    keep[:, S // 2, S // 2] = True  # DC kept, as the authors' code does
    fits = [np.all(spec[~keep[m]] < 1e-3) for m in range(K)]
    owners = [m for m in range(K) if fits[m]]
    assert owners and labels[i] not in owners, i  # another class's DFM, never its own
    m = owners[0]
    want = np.real(np.fft.ifft2(np.fft.ifftshift(_spectrum(plain[i]) * keep[m][..., None],
                                                axes=(0, 1)), axes=(0, 1)))  # fmt: skip
    np.testing.assert_allclose(out[i], want, atol=1e-4)
  # p = 1: filtered whenever the drawn class is another one, i.e. (K-1)/K of the images.
  assert abs(filtered / n - (K - 1) / K) < 0.08


def test_off_the_transform_draws_exactly_as_without_it(tmp_path):
  images = np.random.default_rng(2).integers(0, 256, (8, S, S, 3), dtype=np.uint8)
  c = load_config("configs/synthetic.py:syn1")
  key = jax.random.key(5)
  a = np.asarray(augment.make_train_transform(c)(key, images))
  c.augment.dfmx.dfms, c.augment.dfmx.p = str(tmp_path / "unused.pkl"), 0.0  # p = 0: off
  b = np.asarray(augment.make_train_transform(c)(key, images, np.zeros(8, np.int32)))
  np.testing.assert_array_equal(a, b)


def test_dfms_of_another_class_count_or_size_are_named(tmp_path):
  with pytest.raises(errors.ArtifactShapeError, match=r"DFMs of 3 classes .* has 4"):
    augment.make_train_transform(_config(tmp_path, 0.3, _dfms()[:3]))
  small = np.zeros((K, 16, 16), bool)
  with pytest.raises(errors.ArtifactShapeError, match=r"16×16 DFMs .* images are 32×32"):
    augment.make_train_transform(_config(tmp_path, 0.3, small))
  c = _config(tmp_path, 0.3)
  c.augment.dfmx.dfms = str(tmp_path / "missing")
  with pytest.raises(errors.ConfigError, match=r"dfmx.dfms=.*missing.*no such file"):
    augment.make_train_transform(c)
