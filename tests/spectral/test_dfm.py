"""The DFM engine equals the naive one-candidate-at-a-time loop; resumes exactly; greedy."""

import os

import jax
import numpy as np
import pytest

from freqjax import parallel
from freqjax.spectral import candidates, dfm
from tests.conftest import tiny_resnet

_tiny = tiny_resnet


def _sample(cs, n, seed=0):
  """n candidates including the edge cases (first row/column, DC column, self-pairs)."""
  rng = np.random.default_rng(seed)
  if n >= len(cs):
    return np.arange(len(cs))
  special = [
      k
      for k, r in enumerate(cs.rects)
      if r[0] == 0 or r[1] == 0 or r[1] == cs.size // 2 or r[4] == 0 or (r[0], r[1]) == (r[2], r[3])
  ][: n // 2]
  rest = rng.choice(len(cs), size=n - len(special), replace=False)
  return np.unique(np.concatenate([special, rest]).astype(int))


@pytest.mark.parametrize(
    "size,patch,mode",
    [
        (32, 1, "paired"),
        (32, 2, "paired"),
        (28, 7, "paired"),
        (32, 1, "official"),
        (224, 1, "paired"),
        (224, 2, "paired"),
        (224, 7, "paired"),
        (224, 7, "official"),
    ],
)
def test_engine_equals_naive_loop(size, patch, mode):
  apply_fn, variables = _tiny(size)
  n_img = 4 if size > 64 else 6
  images = np.random.default_rng(1).normal(size=(2 * n_img, size, size, 3)).astype(np.float32)
  labels = np.repeat([1, 2], n_img)
  cs = candidates.make(size, patch, mode)
  sub = cs.subset(_sample(cs, 12 if size > 64 else 24))
  mesh = parallel.make_mesh(4)
  engine = dfm.Engine(apply_fn, variables, mesh, sub, chunk_size=8, progress=False)
  got = engine.rank(images, labels, [1, 2])
  for row, c in enumerate([1, 2]):
    want = dfm.rank_naive(apply_fn, variables, images[labels == c], c, sub)
    np.testing.assert_allclose(got[row], want, rtol=2e-5, atol=2e-5)
  assert got.std() > 0  # candidates really differ: the comparison is not vacuous


def test_memory_budget_sets_the_chunk_size():
  apply_fn, variables = _tiny(32)
  cs = candidates.paired(32, 1)
  mesh = parallel.make_mesh(4)
  small = dfm.Engine(apply_fn, variables, mesh, cs, memory_budget_mb=1, progress=False)
  large = dfm.Engine(apply_fn, variables, mesh, cs, memory_budget_mb=512, progress=False)
  k_small, k_large = small.chunk_size(50, (32, 32, 3)), large.chunk_size(50, (32, 32, 3))
  assert k_small % 4 == 0 and k_large % 4 == 0
  assert 4 <= k_small < k_large <= 516


def test_interrupted_ranking_resumes_with_identical_scores(tmp_path):
  apply_fn, variables = _tiny(32)
  images = np.random.default_rng(2).normal(size=(10, 32, 32, 3)).astype(np.float32)
  labels = np.array([0] * 5 + [1] * 5)
  cs = candidates.paired(32, 1).subset(np.arange(40))
  mesh = parallel.make_mesh(4)
  make = lambda: dfm.Engine(apply_fn, variables, mesh, cs, chunk_size=8, progress=False)
  full = make().rank(images, labels, [0, 1])

  store_dir = str(tmp_path / "partial")
  store = dfm.ChunkStore(store_dir, {"run": "a"})
  saves = []
  real_save = store.save

  def dying_save(c, i, scores):
    if len(saves) == 6:
      raise KeyboardInterrupt("killed")
    saves.append((c, i))
    real_save(c, i, scores)

  store.save = dying_save
  with pytest.raises(KeyboardInterrupt):
    make().rank(images, labels, [0, 1], store=store)
  assert len(saves) == 6
  # Debris a kill can leave: a temporary file and a truncated chunk are never used as results.
  open(os.path.join(store_dir, ".class0001_chunk000004.npy.x.tmp"), "wb").write(b"junk")
  open(os.path.join(store_dir, "class0001_chunk000002.npy"), "wb").write(b"\x93NUMPY")

  resumed_store = dfm.ChunkStore(store_dir, {"run": "a"})
  computed = []
  real = resumed_store.save
  resumed_store.save = lambda c, i, s: (computed.append((c, i)), real(c, i, s))
  resumed = make().rank(images, labels, [0, 1], store=resumed_store)
  np.testing.assert_array_equal(resumed, full)
  assert set(computed) == {(1, 1), (1, 2), (1, 3), (1, 4)}  # chunks 0-4 of class 0 and
  # chunk 0 of class 1 were reused; the truncated chunk 2 was recomputed.

  other = dfm.ChunkStore(store_dir, {"run": "b"})  # another run's partials are discarded
  assert other.open(8) == 8 and not any(f.startswith("class") for f in os.listdir(store_dir))


def test_nan_score_names_class_and_candidate():
  apply_fn, variables = _tiny(32)
  bad = jax.tree_util.tree_map(lambda x: x * np.nan, variables)
  cs = candidates.paired(32, 1).subset(np.arange(8))
  engine = dfm.Engine(apply_fn, bad, parallel.make_mesh(4), cs, chunk_size=8, progress=False)
  images = np.zeros((2, 32, 32, 3), np.float32)
  with pytest.raises(
      FloatingPointError, match=r"candidate 0 \(frequencies .*for class 'C1' is nan"
  ):
    engine.rank(images, np.array([1, 1]), [1], class_names=["C0", "C1"])


def test_image_size_mismatch_states_both_sizes():
  apply_fn, variables = _tiny(32)
  engine = dfm.Engine(
      apply_fn, variables, parallel.make_mesh(4), candidates.paired(16, 1), progress=False
  )
  with pytest.raises(ValueError, match=r"16×16.*32×32"):
    engine.rank(np.zeros((2, 32, 32, 3), np.float32), np.array([0, 0]), [0])


def test_greedy_parallel_equals_sequential_rule():
  apply_fn, variables = _tiny(16, num_classes=3, seed=3)
  rng = np.random.default_rng(4)
  images = rng.normal(size=(12, 16, 16, 3)).astype(np.float32)
  cs = candidates.paired(16, 1)
  order = rng.permutation(len(cs))[:40]
  mesh = parallel.make_mesh(4)
  par = dfm.greedy_removal(
      apply_fn, variables, mesh, images, 1, cs, order, tolerance=1, parallel_steps=8
  )
  seq = dfm.greedy_removal(
      apply_fn, variables, mesh, images, 1, cs, order, tolerance=1, parallel_steps=1
  )
  np.testing.assert_array_equal(par["dfm"], seq["dfm"])
  np.testing.assert_array_equal(par["counts"], seq["counts"])
  # Plain NumPy/JAX transcription of the sequential rule.
  from freqjax.spectral import fft

  removed = np.zeros((16, 16), bool)
  count = lambda rem: int(
      (
          np.asarray(
              apply_fn(variables, fft.filter_images(images, (~rem).astype(np.float32)))
          ).argmax(-1)
          == 1
      ).sum()
  )
  prev = count(removed)
  for k in order:
    trial = removed | cs.removal_masks([k])[0]
    c = count(trial)
    if c >= prev - 1:
      removed, prev = trial, c
  np.testing.assert_array_equal(par["dfm"], ~removed)
  assert par["evaluations"] < seq["evaluations"]
  assert 0 < (~par["dfm"]).sum() < 16 * 16  # some removals accepted, some rejected


def test_chunk_size_by_measurement_is_recorded_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
  apply_fn, variables = _tiny(16)
  images = np.random.default_rng(3).normal(size=(8, 16, 16, 3)).astype(np.float32)
  labels = np.array([0] * 4 + [1] * 4)
  cs = candidates.paired(16, 1)
  mesh = parallel.make_mesh(4)
  fixed = dfm.Engine(apply_fn, variables, mesh, cs, chunk_size=8, progress=False)
  want = fixed.rank(images, labels, [0, 1])
  tuned = dfm.Engine(apply_fn, variables, mesh, cs, memory_budget_mb=64, progress=False)
  got = tuned.rank(images, labels, [0, 1])
  t = tuned.tuning
  assert t is not None and t["chunk"] in map(int, t["rates_candidate_images_per_s"])
  assert len(t["rates_candidate_images_per_s"]) >= 2 and t["chunk"] % 4 == 0
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)  # the choice changes no score

  # A run killed after two chunks resumes with the recorded chunk size, measuring nothing.
  store_dir = str(tmp_path / "partial")
  saves = []
  real = dfm.ChunkStore.save

  def dying(self, c, i, s):
    if len(saves) == 2:
      raise KeyboardInterrupt("killed")
    saves.append(1)
    real(self, c, i, s)

  monkeypatch.setattr(dfm.ChunkStore, "save", dying)
  first = dfm.Engine(apply_fn, variables, mesh, cs, memory_budget_mb=64, progress=False)
  with pytest.raises(KeyboardInterrupt):
    first.rank(images, labels, [0, 1], store=dfm.ChunkStore(store_dir, {"run": "t"}))
  monkeypatch.setattr(dfm.ChunkStore, "save", real)
  resumed = dfm.Engine(apply_fn, variables, mesh, cs, memory_budget_mb=64, progress=False)
  monkeypatch.setattr(resumed, "_tune", lambda *a: pytest.fail("measured again"))
  out = resumed.rank(images, labels, [0, 1], store=dfm.ChunkStore(store_dir, {"run": "t"}))
  assert dfm.ChunkStore(store_dir, {"run": "t"}).recorded_chunk() == first.tuning["chunk"]
  uninterrupted = dfm.Engine(
      apply_fn, variables, mesh, cs, chunk_size=first.tuning["chunk"], progress=False
  )
  np.testing.assert_array_equal(out, uninterrupted.rank(images, labels, [0, 1]))
