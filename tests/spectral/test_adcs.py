"""ADCS: the official variant equals a NumPy transcription of the authors' computation
bit for bit; the paper's definition by default; streaming over sharded batches."""

import numpy as np
import pytest
from PIL import Image

from freqjax import config as config_lib, parallel
from freqjax.spectral import adcs


def _official_numpy(images_chw, labels, num_classes):
  """Evaluation/compute_ADCS.py, transcribed: per image, per channel numpy FFT (float64),
  zeros -> 12e-12, |.| summed per class; rgb2gray of the difference; >0 -> 1 else -1,
  summed over all classes j. NumPy 1.x (the authors') computed float32 input in float64;
  NumPy 2 keeps float32, so the transcription casts explicitly."""
  energy = {}
  size = images_chw.shape[-1]
  for x1, y in zip(images_chw, labels):
    y1 = np.zeros((size, size, 3), dtype=np.complex128)
    for j in range(3):
      y1[:, :, j] = np.fft.fftshift(np.fft.fft2(x1[j, :, :].astype(np.float64)))
    y1[y1 == 0] = 12e-12
    energy[int(y)] = energy.get(int(y), 0) + np.abs(y1)
  out = []
  for j in range(num_classes):
    olp = np.zeros((size, size))
    for i in range(num_classes):
      diff = energy[j] - energy[i]
      diff = 0.2989 * diff[:, :, 0] + 0.5870 * diff[:, :, 1] + 0.1140 * diff[:, :, 2]
      diff[diff > 0] = 1
      diff[diff <= 0] = -1
      olp += diff
    out.append(olp)
  return np.stack(out), energy


@pytest.fixture(scope="module")
def real_images(shared_data):
  """Normalised tiny-imagenet-10 val images (12 per class for 3 classes), as float32."""
  root = shared_data / "tiny-imagenet-10" / "val"
  folders = sorted(root.iterdir())[:3]
  imgs, labels = [], []
  for c, f in enumerate(folders):
    for p in sorted(f.iterdir())[:12]:
      imgs.append(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0)
      labels.append(c)
  x = (np.stack(imgs) - np.array(config_lib.IMAGENET10_MEAN)) / np.array(config_lib.IMAGENET10_STD)
  return x.astype(np.float32), np.array(labels)


def test_official_variant_is_bit_for_bit_the_authors_computation(real_images):
  x, y = real_images
  want, energy = _official_numpy(np.transpose(x, (0, 3, 1, 2)), y, 3)
  mesh = parallel.make_mesh(4)
  batches = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in range(0, 32, 8)]
  batches.append(
      {
          "image": np.concatenate([x[32:], np.zeros((4,) + x.shape[1:], np.float32)]),
          "label": np.concatenate([y[32:], np.zeros(4, int)]),
          "valid": np.array([True] * 4 + [False] * 4),
      }
  )
  sums, counts = adcs.class_amplitude_sums(batches, 3, mesh, "official")
  got = adcs.adcs_from_sums(sums, counts, "official")
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, want)  # bit for bit (integer maps)
  for c in range(3):
    np.testing.assert_allclose(sums[c], energy[c], rtol=1e-12)
  assert counts.tolist() == [12, 12, 12]
  assert set(np.unique(got)) <= {-3, -1, 1}  # includes j = c, whose difference is 0 -> -1


def test_paper_variant_is_the_sign_sum_over_other_classes(real_images):
  x, y = real_images
  sums, counts = adcs.class_amplitude_sums([{"image": x, "label": y}], 3)
  got = adcs.adcs_from_sums(sums, counts)
  amp = np.abs(np.fft.fftshift(np.fft.fft2(x.astype(np.float64), axes=(1, 2)), axes=(1, 2)))
  mean = np.stack([amp[y == c].mean(0) for c in range(3)])
  gray = 0.2989 * mean[..., 0] + 0.5870 * mean[..., 1] + 0.1140 * mean[..., 2]
  want = np.stack([sum(np.sign(gray[c] - gray[j]) for j in range(3) if j != c) for c in range(3)])
  assert np.mean(got == want) > 0.999  # float32 vs float64 may flip exact near-ties only
  assert got.min() >= -2 and got.max() <= 2
  np.testing.assert_array_equal(got.sum(0) % 2, np.zeros_like(got[0]))


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="Unknown ADCS variant"):
    adcs.adcs_from_sums(np.zeros((2, 4, 4, 3)), np.ones(2), "mine")
