"""HFSS: deterministic, resumable, conjugate-symmetric; the all-classes program equals the
per-class DFM scores; a planted frequency is found; bad parameters are refused."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import artifacts, errors, parallel, plotting
from freqjax.evaluation import shortcut
from freqjax.spectral import candidates, dfm, hfss, masks
from tests.conftest import tiny_resnet

SMALL = {"patch_sizes": (4, 2, 1), "num_masks": 12, "num_best": 3, "chunk_size": 4}


_tiny = tiny_resnet


def _data(n, size, seed=1):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, size, size, 3)).astype(np.float32), np.arange(n) % 3


@pytest.fixture(scope="module")
def tiny16():
  return _tiny(16)


def test_search_is_deterministic_and_masks_are_symmetric(tiny16):
  apply_fn, variables = tiny16
  images, labels = _data(12, 16)
  mesh = parallel.make_mesh(4)
  a, meta = hfss.search(apply_fn, variables, mesh, images, labels, 3, SMALL)
  b, _ = hfss.search(apply_fn, variables, mesh, images, labels, 3, SMALL)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert a["subsets"].shape == (3, 3, 16, 16) and a["subsets"].dtype == bool
  assert a["scores"].shape == (3, 16, 16) and a["tpr"].shape == a["fpr"].shape == (3, 3)
  assert all(masks.is_conjugate_symmetric(m) for m in a["subsets"].reshape(-1, 16, 16))
  np.testing.assert_array_equal(a["dfm"], a["subsets"][:, 0])
  assert np.all(np.diff(a["subset_loss"], axis=1) >= 0)  # best first
  assert list(a["stage_num_masks"]) == [12, 12, 4]
  np.testing.assert_array_equal(a["forwards_per_stage"], 12 * a["stage_num_distinct"])
  distinct = len(np.unique(a["subsets"].reshape(9, -1), axis=0))
  assert a["forwards_evaluation"] == 12 * (distinct + 1)  # + the unfiltered pass
  assert a["forwards"] == a["forwards_per_stage"].sum() + a["forwards_evaluation"]
  assert meta["grids"] == [4, 8, 16] and meta["params"]["seed"] == 42
  # TPR/FPR as the shortcut test measures them with the DFMs.
  ref = shortcut.run(apply_fn, variables, mesh, images, labels, a["dfm"], complement=False)
  for k in ("tpr", "fpr"):
    np.testing.assert_allclose(a[k][:, 0], ref[k], err_msg=k)
    np.testing.assert_allclose(a[f"{k}_unfiltered"], ref[f"{k}_unfiltered"], err_msg=k)
  params = dict(SMALL, seed=7, tpr_subsets=1)
  c, _ = hfss.search(apply_fn, variables, mesh, images, labels, 3, params)
  assert not np.array_equal(c["subsets"], a["subsets"])
  assert np.isfinite(c["tpr"][:, 0]).all() and np.isnan(c["tpr"][:, 1:]).all()


def test_stage_masks_stay_inside_their_parents():
  p = hfss.resolve({"num_masks": 30}, 32)
  prev = None
  for t, patch in enumerate(p["patch_sizes"]):
    m = hfss.stage_masks(32, patch, p, t, prev)
    assert all(masks.is_conjugate_symmetric(x) for x in m)
    if prev is not None:
      inside = [(x & ~prev.reshape(-1, 32, 32)).sum(axis=(1, 2)).min() == 0 for x in m]
      assert all(inside)
    prev = m[:6].reshape(2, 3, 32, 32)
  # The first stage keeps about P of the spectrum (HFSS's A masks: 6 of 8 half-grid cells).
  first = hfss.stage_masks(32, 8, p, 0, None)
  assert 0.5 < first.mean() < 0.9


def test_interrupted_search_resumes_with_identical_results(tiny16, tmp_path, monkeypatch):
  apply_fn, variables = tiny16
  images, labels = _data(12, 16)
  mesh = parallel.make_mesh(4)
  params = dict(SMALL, batch_size=8)  # two groups of images
  want, _ = hfss.search(apply_fn, variables, mesh, images, labels, 3, params)
  store_dir = str(tmp_path / "hfss")
  saves = []
  real_save = dfm.ChunkStore.save

  def dying_save(self, c, i, scores):
    if len(saves) == 5:  # during stage 2
      raise KeyboardInterrupt("killed")
    saves.append((self.dir, c, i))
    real_save(self, c, i, scores)

  monkeypatch.setattr(dfm.ChunkStore, "save", dying_save)
  with pytest.raises(KeyboardInterrupt):
    hfss.search(apply_fn, variables, mesh, images, labels, 3, params, store_dir=store_dir)
  monkeypatch.setattr(dfm.ChunkStore, "save", real_save)
  # Debris a kill can leave: a truncated chunk is recomputed.
  open(os.path.join(store_dir, "stage0", "class0001_chunk000000.npy"), "wb").write(b"\x93NUMPY")
  computed = []
  monkeypatch.setattr(
      dfm.ChunkStore, "save", lambda self, c, i, s: (computed.append(c), real_save(self, c, i, s))
  )
  got, _ = hfss.search(apply_fn, variables, mesh, images, labels, 3, params, store_dir=store_dir)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  total = sum(len(os.listdir(os.path.join(store_dir, d))) - 1 for d in os.listdir(store_dir))
  assert len(computed) == total - 4  # 4 of the 5 saved chunks were reused


def test_all_classes_program_equals_per_class_removal_scores(tiny16):
  apply_fn, variables = tiny16
  images, labels = _data(9, 16)
  cs = candidates.paired(16, 1).subset(np.arange(0, 120, 10))
  mesh = parallel.make_mesh(4)
  per_class = dfm.Engine(apply_fn, variables, mesh, cs, chunk_size=4, progress=False)
  want = per_class.rank(images, labels, [0, 1, 2])  # (C, K)
  spec = jax.jit(lambda x: jnp.fft.fftshift(jnp.fft.fft2(x, axes=(1, 2)), axes=(1, 2)))(images)
  group = dfm.Group(0, len(images), lambda: (spec, jnp.asarray(labels, jnp.int32)))
  rect_prog = dfm.all_classes_program(apply_fn, 3, 16, 1)
  rects = dfm.Engine(apply_fn, variables, mesh, cs, chunk_size=4, program=rect_prog)
  got = rects.evaluate([group], images.shape[1:])[0]  # (K, C)
  np.testing.assert_allclose(got.T, want, rtol=2e-5, atol=2e-5)
  keep = 1 - cs.removal_masks().astype(np.float32)  # the same candidates as keep masks
  mask_prog = dfm.all_classes_program(apply_fn, 3)
  engine = dfm.Engine(apply_fn, variables, mesh, None, chunk_size=4, program=mask_prog)
  got_masks = engine.evaluate([group], images.shape[1:], payload=keep)[0]
  np.testing.assert_allclose(got_masks.T, want, rtol=2e-5, atol=2e-5)
  assert want.std() > 0


def _linear(size, freqs):
  """A linear model whose logit k reads the image's cosine grating at freqs[k] (centred)."""
  w = []
  for u, v in freqs:
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    w.append(np.cos(2 * np.pi * (u * i + v * j) / size))
  w = np.repeat(np.stack(w)[..., None], 3, axis=-1).astype(np.float32)  # (K, S, S, 3)

  def apply_fn(variables, x):
    return jnp.einsum("nhwc,khwc->nk", x, variables["w"]) / size

  return apply_fn, {"w": jnp.asarray(w)}


def test_planted_frequencies_are_in_the_best_subsets(tmp_path):
  size, freqs = 16, [(1, 2), (-5, 3), (3, -6)]
  apply_fn, variables = _linear(size, freqs)
  rng = np.random.default_rng(0)
  labels = np.arange(30) % 3
  i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  gratings = [np.cos(2 * np.pi * (u * i + v * j) / size)[..., None] for u, v in freqs]
  # Class c's images: its grating (logit 2.4), the others' weaker (1.2), and noise; the best
  # subset for c keeps c's frequency and removes the others.
  images = 0.3 * rng.normal(size=(30, size, size, 3))
  for n, c in enumerate(labels):
    images[n] += sum((0.1 if k == c else 0.05) * g for k, g in enumerate(gratings))
  params = {"patch_sizes": (4, 2, 1), "num_masks": 300, "num_best": 3}
  got, meta = hfss.search(apply_fn, variables, parallel.make_mesh(4), images, labels, 3, params)
  h = size // 2
  for c, (u, v) in enumerate(freqs):
    best = got["dfm"][c]
    assert best[h + u, h + v] and best[h - u, h - v], c
    others = [f for k, f in enumerate(freqs) if k != c]
    assert not any(best[h + a, h + b] for a, b in others), c
  assert np.all(got["tpr"][:, 0] == 1.0)
  # The score maps rank the planted cells first.
  for c, (u, v) in enumerate(freqs):
    assert got["scores"][c, h + u, h + v] == got["scores"][c].max()
  # The artifact kind round-trips, and the figure draws.
  path = artifacts.save(str(tmp_path / "hfss.npz"), "hfss", got, meta)
  back = artifacts.load(path, "hfss")
  np.testing.assert_array_equal(back["subsets"], got["subsets"])
  assert back.meta["params"]["patch_sizes"] == [4, 2, 1]
  planted = np.zeros((3, size, size), bool)
  for c, (u, v) in enumerate(freqs):
    planted[c, h + u, h + v] = True
  fig = plotting.hfss_subsets(
      got["subsets"],
      ["a", "b", "c"],
      str(tmp_path / "hfss.png"),
      got["tpr"],
      got["fpr"],
      planted=planted,
  )
  assert os.path.getsize(fig) > 0


@pytest.mark.parametrize(
    "params,match",
    [
        (
            {"patch_sizes": (4, 3)},
            r"hfss.patch_sizes\[1\] = 3 does not divide .* 1, 2, 4, 8, 16, 32",
        ),
        ({"num_masks": 0}, r"hfss.num_masks must be an integer >= 3"),
        ({"keep_fraction": 1.0}, r"hfss.keep_fraction must lie in \(0, 1\)"),
        ({"keep_fraction": 0.0}, r"hfss.keep_fraction must lie in \(0, 1\)"),
        ({"keep_fraction": 0.1, "patch_sizes": (16,)}, r"keeps no cell of stage 0's 2×2 grid"),
        ({"num_best": 0}, r"hfss.num_best must be an integer >= 1"),
        ({"num_best": 20, "num_masks": 30}, r"num_best = 20 exceeds the 10 masks"),
        ({"batch_size": -1}, r"hfss.batch_size must be an integer >= 1"),
        ({"masks": 3}, r"hfss.masks is not an HFSS parameter"),
        ({"tpr_subsets": 11}, r"hfss.tpr_subsets = 11 exceeds hfss.num_best = 10"),
    ],
)
def test_validate_rejects_bad_parameters(params, match):
  with pytest.raises(errors.ConfigError, match=match):
    hfss.validate(params, 32)


def test_validate_accepts_the_defaults_at_every_hfss_size():
  for size in (16, 32, 64, 96, 128, 224):
    hfss.validate({}, size)
  assert hfss.resolve({}, 32)["patch_sizes"] == (8, 4, 2, 1)
  assert hfss.resolve({}, 224)["patch_sizes"] == (56, 28, 14, 8, 4, 2)
  with pytest.raises(errors.ConfigError, match="even image size"):
    hfss.validate({}, 31)
