"""Fast DFM searches: screened with every candidate verified, and coarse-to-fine started at
the final patch size, equal the exhaustive ranking exactly; on a linear model the screen's
first-order scores are the exact changes; both resume after an interruption to identical
results; bad settings are refused before any forward pass."""

import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import config as config_lib, errors, parallel
from freqjax.spectral import candidates, dfm, fft, search
from tests.conftest import tiny_resnet

S = 16


def _tiny(num_classes=3, seed=0):
  return tiny_resnet(S, num_classes, seed)


def _data(n_per_class=4, classes=(0, 1), seed=1):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.asarray(classes), n_per_class)
  return rng.normal(size=(len(labels), S, S, 3)).astype(np.float32), labels


def _maker(apply_fn, variables, mesh):
  return lambda cs: dfm.Engine(apply_fn, variables, mesh, cs, chunk_size=16, progress=False)


def test_screened_with_every_candidate_verified_equals_exhaustive():
  apply_fn, variables = _tiny()
  images, labels = _data()
  mesh = parallel.make_mesh(4)
  engine = _maker(apply_fn, variables, mesh)(candidates.paired(S, 1))
  ref = search.exhaustive(engine, images, labels, [0, 1])
  got = search.screened(engine, images, labels, [0, 1], multiple=1e6, audit=1)
  assert got.exact.all()
  np.testing.assert_array_equal(got.candidate_scores, ref.candidate_scores)
  np.testing.assert_array_equal(got.arrays()["dfm_key"], ref.arrays()["scores"])


def test_coarse_to_fine_started_at_the_final_patch_equals_exhaustive():
  apply_fn, variables = _tiny()
  images, labels = _data()
  make = _maker(apply_fn, variables, parallel.make_mesh(4))
  ref = search.exhaustive(make(candidates.paired(S, 1)), images, labels, [0, 1])
  got = search.coarse_to_fine(make, images, labels, [0, 1], (1,))
  assert got.exact.all()
  np.testing.assert_array_equal(got.candidate_scores, ref.candidate_scores)
  np.testing.assert_array_equal(
      dfm.dfms(got.arrays()["dfm_key"], [0.05, 0.2]), dfm.dfms(ref.arrays()["scores"], [0.05, 0.2])
  )


def test_coarse_to_fine_refines_inside_the_best_patches_and_ranks_refined_cells_first():
  apply_fn, variables = _tiny()
  images, labels = _data()
  make = _maker(apply_fn, variables, parallel.make_mesh(4))
  got = search.coarse_to_fine(make, images, labels, [0, 1], (4, 2, 1), multiple=1.0)
  final = candidates.paired(S, 1)
  for c in range(2):
    counts = got.info["evaluated_per_class_and_level"][c]
    assert counts[0] == len(candidates.paired(S, 4)) and counts[-1] < len(final)
    exact = got.exact[c]
    # Exactly scored candidates rank above every other in the DFM's key.
    assert got.dfm_key[c][exact].min() > got.dfm_key[c][~exact].max()
    # Their scores are the exhaustive ones.
    ref = make(final).rank(images, labels, [c], cands=final.subset(np.nonzero(exact)[0]))[0]
    np.testing.assert_array_equal(got.candidate_scores[c][exact], ref)
    levels = got.extra["level_patch"][c]
    assert set(np.unique(levels)) <= {1, 2, 4} and (levels == 1).any()


def _linear(seed=0, k=3):
  w = np.random.default_rng(seed).normal(size=(S, S, 3, k)).astype(np.float32)
  return (lambda v, x: jnp.einsum("nhwc,hwck->nk", x, v["w"])), {"w": jnp.asarray(w)}


@pytest.mark.parametrize("mode", ["paired", "official"])
def test_first_order_scores_of_a_linear_model_are_the_exact_changes(mode):
  apply_fn, variables = _linear()
  images, labels = _data(n_per_class=5, classes=(2,))
  cs = candidates.make(S, 1, mode)
  grad = search.screen_gradients(
      apply_fn, variables, parallel.make_mesh(4), images, labels, "logit", batch=4
  )
  est = search.first_order_scores(cs, grad)

  def b(keep):  # the target: minus the summed true-class logit, in float64
    x = np.asarray(fft.filter_spectrum(fft.centred_spectrum(jnp.asarray(images)), keep))
    return -np.einsum("nhwc,hwc->", x.astype(np.float64), np.asarray(variables["w"])[..., 2])

  base = b(jnp.ones((S, S)))
  exact = np.array([b(jnp.asarray(1.0 - m)) - base for m in cs.removal_masks().astype(np.float32)])
  np.testing.assert_allclose(est, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())


def _interrupted(monkeypatch, after: int, run):
  """Runs `run()` with the chunk store dying after `after` saves, then again normally;
  returns the resumed result and how many chunks the resumed run computed."""
  real = dfm.ChunkStore.save
  saves = []

  def dying(self, c, i, scores):
    if len(saves) == after:
      raise KeyboardInterrupt("killed")
    saves.append(1)
    real(self, c, i, scores)

  monkeypatch.setattr(dfm.ChunkStore, "save", dying)
  with pytest.raises(KeyboardInterrupt):
    run()
  computed = []
  monkeypatch.setattr(
      dfm.ChunkStore, "save", lambda self, c, i, s: (computed.append(1), real(self, c, i, s))
  )
  return run(), len(computed)


@pytest.mark.parametrize("method", ["screened", "coarse_to_fine"])
def test_each_method_resumes_after_an_interruption_with_identical_results(
    tmp_path, monkeypatch, method
):
  apply_fn, variables = _tiny()
  images, labels = _data()
  make = _maker(apply_fn, variables, parallel.make_mesh(4))
  if method == "screened":
    engine = make(candidates.paired(S, 1))
    run = lambda root=None: search.screened(
        engine, images, labels, [0, 1], multiple=3.0, audit=5, store_root=root
    )
  else:
    run = lambda root=None: search.coarse_to_fine(
        make, images, labels, [0, 1], (4, 2, 1), multiple=1.5, store_root=root
    )
  full = run()
  resumed, computed = _interrupted(monkeypatch, 3, lambda: run(str(tmp_path / "store")))
  assert 0 < computed
  for name, value in full.arrays().items():
    np.testing.assert_array_equal(resumed.arrays()[name], value, err_msg=name)
  assert resumed.forwards == full.forwards


def _config(**analysis):
  c = config_lib.base_config()
  c.data.image_size = 32
  for k, v in analysis.items():
    node, field = c.analysis, k
    if "." in k:
      group, field = k.split(".")
      node = c.analysis[group]
    node[field] = v
  return c


@pytest.mark.parametrize(
    "settings,match",
    [
        (
            {"search": "fast"},
            r"search='fast'.*'exhaustive', 'auto', 'screened', 'coarse_to_fine', 'hfss'",
        ),
        ({"auto.tolerance": 0.0}, r"auto.tolerance=0.0 must be in \(0, 1\).*search=exhaustive"),
        ({"auto.tolerance": 1.0}, r"auto.tolerance=1.0 must be in \(0, 1\)"),
        ({"auto.tolerance": float("nan")}, r"auto.tolerance=nan must be in \(0, 1\)"),
        ({"auto.budget": 0.0}, r"auto.budget=0.0 must be in \(0, 1\]"),
        ({"auto.audit": 0}, r"auto.audit=0 must be a whole number >= 1"),
        ({"auto.block": -1.0}, r"auto.block=-1.0 must be positive"),
        ({"auto.z": 0.0}, r"auto.z=0.0 must be positive"),
        ({"auto.first_images": 1}, r"auto.first_images=1 must be a whole number >= 2"),
        ({"auto.lean": 1.5}, r"auto.lean=1.5 must be in \[0, 1\]"),
        ({"auto.dense": -0.1}, r"auto.dense=-0.1 must be in \[0, 1\]"),
        ({"screen.multiple": 0.0}, r"screen.multiple=0.0 must be positive"),
        ({"screen.audit": 0}, r"screen.audit=0 must be a positive whole number"),
        ({"screen.target": "loss"}, r"screen.target='loss'.*'ce', 'logit', 'margin'"),
        ({"coarse_to_fine.levels": (8, 3, 1)}, r"levels=\(8, 3, 1\).*valid sizes: 1, 2, 4, 8"),
        ({"coarse_to_fine.levels": (8, 4)}, r"ending at analysis.patch_size=1"),
        ({"coarse_to_fine.multiple": -1.0}, r"coarse_to_fine.multiple=-1.0 must be positive"),
    ],
)
def test_bad_search_settings_are_refused_with_the_fix(settings, match):
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.validate(_config(**settings))


def test_default_levels_end_at_the_patch_size():
  assert search.default_levels(32, 1) == (8, 4, 2, 1)
  assert search.default_levels(64, 4) == (8, 4)
  assert search.default_levels(28, 7) == (7,)
  config_lib.validate(_config())  # the defaults are valid


def test_linearised_screen_of_a_linear_model_is_the_exact_cross_entropy_change():
  apply_fn, variables = _linear()
  images, labels = _data(n_per_class=3, classes=(0, 1, 2))
  cs = candidates.paired(S, 1)
  mesh = parallel.make_mesh(4)
  est = np.zeros(len(cs))
  for c in range(3):
    idx = labels == c
    est_c = search.linearised_scores(apply_fn, variables, mesh, images[idx], labels[idx], cs, 4)
    est += est_c
  w = np.asarray(variables["w"], np.float64)
  spectra = fft.centred_spectrum(jnp.asarray(images))

  def ce(keep):  # summed cross-entropy in float64
    x = np.asarray(fft.filter_spectrum(spectra, keep), np.float64)
    z = np.einsum("nhwc,hwck->nk", x, w)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return (lse - z[np.arange(len(z)), labels]).sum()

  base = ce(jnp.ones((S, S)))
  exact = np.array([ce(jnp.asarray(1.0 - m)) - base for m in cs.removal_masks().astype(np.float32)])
  np.testing.assert_allclose(est, exact, rtol=2e-3, atol=2e-3 * np.abs(exact).max())
  # The plain first-order change of the cross-entropy is not exact (it misses the softmax's
  # curvature): the property the linearised screen adds.
  grad = sum(
      search.screen_gradients(
          apply_fn, variables, mesh, images[labels == c], labels[labels == c], "ce"
      )
      for c in range(3)
  )
  first = search.first_order_scores(cs, grad)
  assert np.abs(first - exact).max() > 10 * np.abs(est - exact).max()
