"""The synthetic generator: determinism, the spec's rules, and the planted ground truth."""

import math

import numpy as np
import pytest

from freqjax import config as config_lib
from freqjax.data import datasets, synthetic
from freqjax.spectral import adcs, masks

NORM_MEAN, NORM_STD = np.array(config_lib.SYNTHETIC_MEAN), np.array(config_lib.SYNTHETIC_STD)


def _params(band=1, seed=0, n=40):
  p = config_lib.synthetic_defaults()
  p.band, p.seed, p.train_per_class, p.test_per_class = band, seed, n, n
  return synthetic.params_dict(p)


def _split(p, split="test"):
  roles = synthetic.draw_roles(p)
  rows = list(synthetic.generate_split(p, roles, split))
  return roles, np.stack([r[1] for r in rows]), np.array([r[2] for r in rows])


def _amplitude(images):
  x = (images / 255.0 - NORM_MEAN) / NORM_STD
  return np.abs(np.fft.fftshift(np.fft.fft2(x, axes=(1, 2)), axes=(1, 2))).mean(-1)


def test_same_seed_is_byte_identical_and_seeds_differ():
  _, a, la = _split(_params(seed=3, n=10))
  _, b, lb = _split(_params(seed=3, n=10))
  _, c, _ = _split(_params(seed=4, n=10))
  assert a.dtype == np.uint8 and a.shape == (40, 32, 32, 3)
  assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)
  assert a.tobytes() != c.tobytes()


def test_prepared_tfds_dataset_is_byte_identical(tmp_path):
  cfg = config_lib.base_config().data
  cfg.synthetic.train_per_class, cfg.synthetic.test_per_class = 8, 4
  out = []
  for name in ("a", "b"):
    cfg.data_dir = str(tmp_path / name)
    ds = datasets.prepare(cfg)
    out.append((ds.arrays("train"), ds.arrays("test"), ds.metadata))
  (tr_a, te_a, meta_a), (tr_b, te_b, meta_b) = out
  assert tr_a[0].tobytes() == tr_b[0].tobytes() and np.array_equal(tr_a[1], tr_b[1])
  assert te_a[0].tobytes() == te_b[0].tobytes()
  assert tr_a[0].shape == (32, 32, 32, 3) and te_a[0].shape == (16, 32, 32, 3)
  assert meta_a["roles"] == meta_b["roles"] and meta_a["params"]["seed"] == 0
  assert sorted(meta_a["roles"]) == ["c3", "control", "distractor", "special"]


@pytest.mark.parametrize("band", [1, 2, 3, 4])
def test_roles_follow_the_specification(band):
  p = _params(band=band)
  roles = synthetic.draw_roles(p)
  bands = [(lo, math.inf if hi is None else hi) for lo, hi in p["bands"]]
  other = {1, 2, 3, 4} - {band}
  everything = []
  for f in roles["c3"]:
    assert f["band"] == band == synthetic.band_of(f["u"], f["v"], bands)
    everything.append(("c3", f))
  for role in ("control", "distractor"):
    assert sorted(f["band"] for f in roles[role]) == sorted(2 * list(other))
    everything += [(role, f) for f in roles[role]]
  for c, fs in roles["special"].items():
    assert len(fs) == 2 and len({f["band"] for f in fs}) == 2
    assert {f["band"] for f in fs} <= other
    everything += [(c, f) for f in fs]
  canon = [(abs(f["u"]), abs(f["v"])) for _, f in everything]
  assert len(set(canon)) == len(canon) == 24  # distinct under (u,v) ~ (±u, ±v)
  for i, (ri, fi) in enumerate(everything):
    u, v = fi["u"], fi["v"]
    assert (u, v) != (0, 0) and abs(u) < 16 and abs(v) < 16  # no DC, no Nyquist
    assert u > 0 or (u == 0 and v > 0)  # one representative per conjugate pair
    for rj, fj in everything[i + 1 :]:
      if ri == rj == "c3":
        continue
      d = max(abs(abs(u) - abs(fj["u"])), abs(abs(v) - abs(fj["v"])))
      assert d >= 2, (fi, fj)


def test_planted_masks_hold_both_cells_of_each_pair():
  roles = synthetic.draw_roles(_params())
  pm = synthetic.planted_masks(roles, 32)
  assert pm.shape == (4, 32, 32) and pm.dtype == bool
  assert pm.reshape(4, -1).sum(1).tolist() == [4, 4, 4, 12]
  for k in range(4):
    np.testing.assert_array_equal(pm[k], masks.conjugate(pm[k]))
  assert not (pm.any(0) & synthetic.role_mask(roles, "control", 32)).any()
  assert not (pm.any(0) & synthetic.role_mask(roles, "distractor", 32)).any()


@pytest.mark.parametrize("band", [1, 4])
def test_class_spectra_peak_at_planted_cells_and_adcs_marks_them(band):
  roles, images, labels = _split(_params(band=band, n=60))
  pm = synthetic.planted_masks(roles, 32)
  control = synthetic.role_mask(roles, "control", 32)
  amp = _amplitude(images)
  means = np.stack([amp[labels == k].mean(0) for k in range(4)])
  dc = np.zeros((32, 32), bool)
  dc[16, 16] = True
  for k in range(4):
    background = ~(pm[k] | control | dc)
    assert means[k][pm[k]].min() > means[k][background].max()
    for j in range(4):
      if j != k:
        assert means[k][pm[k]].min() > 3 * means[j][pm[k]].max()
  # Control cells are high for C0..C2 alike and not for C3.
  ctrl = np.array([means[k][control].mean() for k in range(4)])
  assert ctrl[:3].min() > 0.7 * ctrl[:3].max() and ctrl[3] < 0.3 * ctrl[:3].min()
  x = (images / 255.0 - NORM_MEAN) / NORM_STD
  sums, counts = adcs.class_amplitude_sums([{"image": x, "label": labels}], 4)
  a = adcs.adcs_from_sums(sums, counts)
  for k in range(4):
    assert (a[k][pm[k]] == 3).all()


@pytest.mark.parametrize("band", [1, 2, 3, 4])
def test_band_views_remove_or_keep_c3(band):
  p = _params(band=band, n=20)
  roles, images, labels = _split(p)
  pm = synthetic.planted_masks(roles, 32)[3]
  c3 = (images[labels == 3] / 255.0 - NORM_MEAN) / NORM_STD
  spec = np.fft.fftshift(np.fft.fft2(c3, axes=(1, 2)), axes=(1, 2))
  removed = spec * masks.view_mask(f"remove_b{band}", 32, p["bands"])[None, :, :, None]
  kept = spec * masks.view_mask(f"keep_b{band}", 32, p["bands"])[None, :, :, None]
  assert np.abs(removed[:, pm]).max() < 1e-9
  np.testing.assert_allclose(np.abs(kept[:, pm]), np.abs(spec[:, pm]))
  assert np.abs(spec[:, pm]).mean() > 20  # there was energy to remove
