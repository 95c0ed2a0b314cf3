"""The `auto` search: with tolerance 0 it is the exhaustive ranking bit for bit; on a model
whose first-order screen is badly wrong for low frequencies, its bound catches them and it
scores them exactly; its bound is never below the mass it actually missed; a killed search
resumes to identical arrays; and its screen costs O(1) passes per image for 1000 outputs."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import config as config_lib, parallel
from freqjax.evaluation import search_compare
from freqjax.spectral import candidates, dfm, fft, search
from freqjax.spectral.search import _auto
from tests.conftest import tiny_resnet
from tests.spectral.test_search import _interrupted

S = 16


def _engine(apply_fn, variables, cands=None):
  cands = cands or candidates.paired(S, 1)
  return dfm.Engine(
      apply_fn, variables, parallel.make_mesh(2), cands, chunk_size=16, progress=False
  )


def _noise(n_per_class=4, classes=(0, 1), seed=1):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.asarray(classes), n_per_class)
  return rng.normal(size=(len(labels), S, S, 3)).astype(np.float32), labels


def _missed(ref_scores, result, base, threshold=0.05) -> np.ndarray:
  """(C,) the exhaustive DFM's score mass the result's DFM misses (1 - mass5)."""
  cands = result.cands
  ref = dfm.score_maps(cands, ref_scores)
  c = search_compare.compare(ref, result.arrays()["dfm_key"], base, thresholds=(threshold,))
  return 1.0 - c[f"mass{round(threshold * 100)}"]


def test_auto_with_tolerance_zero_equals_exhaustive_bit_for_bit():
  apply_fn, variables = tiny_resnet(S, 3, 0)
  images, labels = _noise()
  engine = _engine(apply_fn, variables)
  ref = search.exhaustive(engine, images, labels, [0, 1])
  got = search.auto(engine, images, labels, [0, 1], tolerance=0.0)
  assert got.exact.all()
  np.testing.assert_array_equal(got.candidate_scores, ref.candidate_scores)
  np.testing.assert_array_equal(got.arrays()["dfm_key"], ref.arrays()["scores"])
  assert got.info["missed_mass_bound_per_class"] == [0.0, 0.0]


# A model whose class-0 logit falls with the squared deviation of the power at six low
# frequency pairs from its (planted, fixed) value: at every test image the gradient there is
# ~0, so any first-order screen says their removal changes little, while removing one drops
# the logit by 2γ. Ten mid frequencies (planted at a tenth of the power) raise the logit in
# proportion to their power: first order sees them, and ranks them above the low ones.
LOW = [(0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0)]  # (dy, dx) from DC
MID = [(0, 4), (4, 0), (3, 3), (3, -3), (1, 4), (4, 1), (4, -1), (-1, 4), (2, 4), (4, 2)]
F0 = (1, 1)
AMPLITUDE = {"low": 0.5, "mid": 0.15}


def _planted_images(n=6, seed=3):
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
  x = 0.05 * rng.normal(size=(n, S, S, 1))
  for group, freqs in (("low", LOW), ("mid", MID)):
    for dy, dx in freqs:
      phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 1))
      wave = np.cos(2 * np.pi * (dy * yy + dx * xx)[None, :, :, None] / S + phase)
      x = x + AMPLITUDE[group] * wave
  return np.repeat(x, 3, axis=3).astype(np.float32)


def _cells(freqs):
  c = S // 2
  cells = [(c + dy, c + dx) for dy, dx in freqs] + [(c - dy, c - dx) for dy, dx in freqs]
  return tuple(jnp.asarray([p[i] for p in cells]) for i in (0, 1))


def _power(spec, cells, amplitude):
  """|X|² at `cells`, ÷ a planted cell's (~1 at every test image)."""
  return jnp.abs(spec[:, cells[0], cells[1]]) ** 2 / (amplitude * S * S / 2 * 3) ** 2


def _quadratic_model(gamma_low: float):
  low, mid = _cells(LOW), _cells(MID)
  gamma = np.array(
      [max(20.0, 2 * gamma_low) if d == F0 else gamma_low for d in LOW] * 2, np.float32
  )

  def apply_fn(v, x):
    spec = fft.centred_spectrum(x).sum(-1)  # (N, S, S), the channels' spectra summed
    q_low, q_mid = _power(spec, low, AMPLITUDE["low"]), _power(spec, mid, AMPLITUDE["mid"])
    z0 = 6.0 - jnp.sum(v["gamma"] * (q_low - 1.0) ** 2, -1) + 3.0 * jnp.sum(q_mid - 1.0, -1)
    return jnp.stack([z0, jnp.zeros_like(z0), jnp.zeros_like(z0)], -1)

  return apply_fn, {"gamma": jnp.asarray(gamma)}


def _index_of(cands, dy, dx):
  c = S // 2
  removed = cands.removal_masks()[:, c + dy, c + dx]
  return int(np.nonzero(removed)[0][0])


@pytest.mark.parametrize(
    "gamma_low,audit",
    [
        # F0 alone is badly misjudged: the highest-energy stratum (the six low pairs) is no
        # larger than the audit, so all of it is scored.
        (1.5, 6),
        # Every low pair is misjudged, and the audit scores two of the six: their remainders
        # raise the stratum's bound above the DFM's boundary, and the bound scores the rest.
        (20.0, 2),
    ],
)
def test_auto_catches_low_frequencies_first_order_misjudges_and_its_bound_holds(gamma_low, audit):
  apply_fn, variables = _quadratic_model(gamma_low)
  images = _planted_images()
  labels = np.zeros(len(images), np.int32)
  engine = _engine(apply_fn, variables)
  cands = engine.cands
  ref = search.exhaustive(engine, images, labels, [0])
  base = search_compare.class_losses(apply_fn, variables, engine.mesh, images, labels, 1)
  f0 = _index_of(cands, *F0)
  low = [_index_of(cands, *d) for d in LOW]
  mid = [_index_of(cands, *d) for d in MID]
  assert int(np.argmax(ref.candidate_scores[0])) == f0
  screen = search.reduced_linear_scores(apply_fn, variables, engine.mesh, images, labels, cands)[
      :-1
  ]
  gains = ref.candidate_scores[0] - base[0]
  assert (np.abs(screen[low]) < 0.02 * gains[low]).all()  # first order: < 2 % of each
  assert screen[mid].min() > screen[low].max()  # and it ranks the mid ones first
  # The screened search (the screen's top + a random audit) misses F0; auto scores it.
  screened = search.screened(engine, images, labels, [0], audit=audit)
  assert not screened.exact[0][f0]
  assert _missed(ref.candidate_scores, screened, base)[0] > 0.5
  got = search.auto(engine, images, labels, [0], audit=audit, tolerance=0.05)
  assert got.exact[0][low].all()
  assert not got.exact[0].all()  # and it stopped before scoring everything
  key = got.arrays()["dfm_key"][0]
  assert key[S // 2 + F0[0], S // 2 + F0[1]] == key.max()
  missed = _missed(ref.candidate_scores, got, base)
  bound = np.array(got.info["missed_mass_bound_per_class"])
  assert (bound >= missed - 1e-6).all() and (bound <= 0.05).all()


def test_the_bound_is_at_least_the_missed_mass_on_a_network():
  apply_fn, variables = tiny_resnet(S, 3, 0)
  images, labels = _noise(6, (0, 1, 2))
  engine = _engine(apply_fn, variables)
  ref = search.exhaustive(engine, images, labels, [0, 1, 2])
  base = search_compare.class_losses(apply_fn, variables, engine.mesh, images, labels, 3)
  for tol in (0.02, 0.1, 0.3):
    got = search.auto(engine, images, labels, [0, 1, 2], tolerance=tol)
    bound = np.array(got.info["missed_mass_bound_per_class"])
    floor = np.array(got.info["split_half_floor_per_class"])
    stops = got.info["stop_per_class"]
    # Stopped at the tolerance, or at the ranking's own split-half floor (noise images).
    assert all(s in ("bound", "floor", "all scored") for s in stops)
    assert (bound <= np.maximum(tol, floor) + 1e-12).all()
    assert (bound >= _missed(ref.candidate_scores, got, base) - 1e-6).all(), tol
  strict = search.auto(engine, images, labels, [0, 1, 2], tolerance=0.02, floor=False)
  assert (np.array(strict.info["missed_mass_bound_per_class"]) <= 0.02).all()
  assert (
      np.array(strict.info["missed_mass_bound_per_class"])
      >= _missed(ref.candidate_scores, strict, base) - 1e-6
  ).all()


def test_a_budget_below_the_bound_stops_there_and_says_so(caplog):
  apply_fn, variables = tiny_resnet(S, 3, 0)
  images, labels = _noise(6, (0, 1, 2))
  engine = _engine(apply_fn, variables)
  got = search.auto(engine, images, labels, [0, 1, 2], tolerance=1e-9, budget=0.25, floor=False)
  k = len(engine.cands)
  info = got.info
  assert "budget" in info["stop_per_class"]
  for stop, met, bound, n in zip(
      info["stop_per_class"],
      info["bound_met_per_class"],
      info["missed_mass_bound_per_class"],
      info["scored_per_class"],
  ):
    assert met == (stop != "budget") and (bound > 1e-9) == (stop == "budget")
    assert n <= int(np.ceil(0.25 * k)) or stop != "budget"
  assert "above the tolerance" in caplog.text and "analysis.auto.budget" in caplog.text


def test_auto_resumes_after_an_interruption_with_identical_results(tmp_path, monkeypatch):
  apply_fn, variables = tiny_resnet(S, 3, 0)
  images, labels = _noise(16)  # enough images per class to race over them
  engine = _engine(apply_fn, variables)
  run = lambda root=None: search.auto(
      engine, images, labels, [0, 1], tolerance=0.02, audit=3, first_images=4, store_root=root
  )
  full = run()
  assert max(full.info["rounds_per_class"]) >= 1  # the kill lands among the rounds
  n = full.extra["images_scored"]
  assert ((n > 0) & (n < 16)).any()  # some candidates raced on part of the images
  resumed, computed = _interrupted(monkeypatch, 3, lambda: run(str(tmp_path / "store")))
  assert 0 < computed
  for name, value in full.arrays().items():
    np.testing.assert_array_equal(resumed.arrays()[name], value, err_msg=name)
  assert resumed.forwards == full.forwards and resumed.info == full.info


def test_auto_races_over_images_and_counts_what_it_scored():
  """With 16 images per class a candidate is scored on the images of 4 draws, then of 8 (at
  most half the images), then on all 16, only as far as the bound needs; the forwards are the
  screen's plus the images scored; the bound is at least the mass it missed against the
  exhaustive ranking."""
  apply_fn, variables = tiny_resnet(S, 3, 0)
  images, labels = _noise(16, (0, 1, 2))
  engine = _engine(apply_fn, variables)
  ref = search.exhaustive(engine, images, labels, [0, 1, 2])
  base = search_compare.class_losses(apply_fn, variables, engine.mesh, images, labels, 3)
  got = search.auto(engine, images, labels, [0, 1, 2], tolerance=0.05, first_images=4)
  n = got.extra["images_scored"]
  part = n[(n > 0) & (n < 16)]
  assert part.size and part.max() <= 8
  assert all(len(np.unique(row)) <= 4 for row in n)  # per class: none, 2 levels, all
  np.testing.assert_array_equal(got.exact, n == 16)
  per_image = got.info["screen_forwards_per_image"]
  assert got.info["forwards_per_class"] == [per_image * 16 + float(k) for k in n.sum(1)]
  bound = np.array(got.info["missed_mass_bound_per_class"])
  assert (bound >= _missed(ref.candidate_scores, got, base) - 1e-6).all()
  # Scored on every image, a candidate's score is its exhaustive one (to float rounding).
  np.testing.assert_allclose(
      got.candidate_scores[got.exact], ref.candidate_scores[got.exact], rtol=1e-5
  )


def _synthetic_race(seed, num=64):
  """A class of `num` images and 130 candidates with known per-image loss increases: eight
  carry the class (gains 1..8), the rest little; each image's increase is noisy, and the
  screen is off by a remainder that grows with the gain."""
  rng = np.random.default_rng(seed)
  cands = candidates.paired(S, 1)
  k = len(cands)
  gain = np.abs(rng.normal(0, 0.05, k))
  gain[rng.choice(k, 8, replace=False)] = np.arange(1, 9)
  d = gain[:, None] / num * (1 + rng.normal(0, 0.5, (k, num)))
  s = d * (1 + rng.normal(0, 0.3, (k, 1))) + rng.normal(0, 0.002, (k, num))
  energy = rng.uniform(0.5, 1.5, k) * (1 + gain)
  return cands, d, s, energy


@pytest.mark.parametrize("seed", range(10))
def test_a_race_scores_few_images_and_its_bound_holds(seed):
  """The race itself (`_auto.race`, with the engine replaced by a table of per-image loss
  increases): it scores far fewer candidate-images than the exhaustive ranking, stops within
  the tolerance, and its bound is at least the mass it missed."""
  cands, d, s, energy = _synthetic_race(seed)
  settings = _race_settings()
  calls = []

  def score(index, images, name):
    calls.append((len(index), len(images)))
    return d[index][:, images]

  r = _auto.race(cands, s, energy, score, settings, np.random.default_rng(seed))
  assert r.stop == "bound" and r.bound.value <= 0.05
  assert sum(k * m for k, m in calls) == r.n.sum() < 0.25 * d.size
  assert r.bound.value >= _race_missed(cands, d, r) - 1e-9


def _race_settings():
  """`race`'s settings at the config's auto defaults, the floor off (the tables' images have
  no split-half noise worth stopping at)."""
  auto = dict(config_lib.base_config().analysis.auto.to_dict(), floor=False)
  return types.SimpleNamespace(threshold=0.05, **auto)


def _top(cands, key):
  order = np.argsort(-key, kind="stable")
  return order[: search.dfm_candidate_count(cands, order, 0.05)]


def _race_missed(cands, d, r):
  """The exhaustive DFM's score mass that a race's DFM misses (d: per-image gains)."""
  gain = d.sum(1)
  w = search.base.cells_written(cands)
  mass = lambda idx: float(np.sum(w[idx] * np.maximum(gain[idx], 0)))
  key = search.ranking_key(r.bound.est, r.n > 0, r.bound.upper)
  return 1 - mass(_top(cands, key)) / mass(_top(cands, gain))


def test_estimates_are_exact_on_every_image_and_t_widens_few():
  cands, d, s, _ = _synthetic_race(0, num=8)
  dsg = _auto.Design(np.arange(8), np.array([4, 8]), (np.array([0, 1, 2, 3]),), np.full(8, 1 / 8))
  n = np.array([8] * 5 + [4] * (len(cands) - 5))
  est, se, dof = _auto.estimates(d, n, s, dsg)
  np.testing.assert_allclose(est[:5], d[:5].sum(1), rtol=1e-12)
  assert (se[:5] == 0).all() and (se[5:] > 0).all() and (dof[5:] == 3).all()
  # Student's t quantile at z = 2 (p = 0.97725): 3 dof 3.31, 7 dof 2.45, 30 dof 2.09.
  np.testing.assert_allclose(_auto.t_quantile(2.0, [3, 7, 30]), [3.31, 2.45, 2.09], atol=0.04)


def test_the_design_draws_large_screen_images_first_and_its_estimates_are_unbiased():
  """The race's images: levels are prefixes of the order images were first drawn in (the
  last, all of them); with `lean` the images where the screen moves most are likelier; and
  the Hansen-Hurwitz estimate from a level's draws averages to the true gain over designs."""
  cands, d, s, _ = _synthetic_race(1, num=40)
  s[:, :4] *= 20  # four images the removals move most
  d[:, :4] *= 20
  flat = _auto.design(s, 4, 0.0, np.random.default_rng(0))
  np.testing.assert_allclose(flat.prob, 1 / 40)
  dsg = _auto.design(s, 4, 0.8, np.random.default_rng(0))
  assert dsg.levels[-1] == 40 and (np.diff(dsg.levels) > 0).all() and dsg.levels[-2] <= 20
  for images, draws in zip(dsg.levels[:-1], dsg.draws):
    assert draws.max() < images and len(np.unique(draws)) == images
  assert np.sort(dsg.prob)[-4:].min() > 3 * np.median(dsg.prob)
  assert set(dsg.order[:4]) & {0, 1, 2, 3}
  k = np.arange(len(cands))
  means, ses = [], []
  for seed in range(400):
    g = _auto.design(s, 4, 0.8, np.random.default_rng(seed))
    n = np.full(len(cands), g.levels[0])
    est, se, _ = _auto.estimates(d[:, g.order], n, s[:, g.order], g)
    means.append(est)
    ses.append(se)
  err = (np.mean(means, 0) - d.sum(1)) / (np.mean(ses, 0) / np.sqrt(400))
  assert np.abs(err[k]).max() < 5.0  # unbiased to within 5 standard errors of the mean


@pytest.mark.parametrize("seed", range(5))
def test_a_race_catches_a_removal_first_order_gets_wrong_on_two_images(seed):
  """Tiny-imagenet-10's gazelle: a mid-frequency removal that first order says lowers the
  loss raises it among the most, all on two unconfident images the screen moves most; a
  race on uniform draws over a few images misses it. Racing the high-energy strata whole and
  drawing large-screen images first find it, and the bound stays above what was missed."""
  cands, d, s, energy = _synthetic_race(seed, num=50)
  rng = np.random.default_rng(seed)
  hard = rng.choice(50, 2, replace=False)
  s[:, hard] *= 20  # the unconfident images: every removal moves them most
  d[:, hard] *= 20
  # A photo's energies: most candidates far below the largest, a fifth within 4^4 of it.
  energy = 4.0 ** -(5.9 * rng.uniform(0, 1, len(cands)) ** 0.25)
  k = int(rng.integers(len(cands)))  # the planted removal
  energy[k] = 4.0**-2.5
  s[k] = -3.0 / 50
  d[k] = 0.0
  d[k, hard] = 6.0
  settings = _race_settings()
  r = _auto.race(cands, s, energy, lambda i, im, _: d[i][:, im], settings, rng)
  assert k in _top(cands, d.sum(1))
  assert k in _top(cands, search.ranking_key(r.bound.est, r.n > 0, r.bound.upper))
  assert r.bound.value >= _race_missed(cands, d, r) - 1e-9


def _dense(outputs, seed=0):
  rng = np.random.default_rng(seed)
  v = {
      "w1": jnp.asarray(rng.normal(size=(S * S * 3, 64)).astype(np.float32) * 0.05),
      "w2": jnp.asarray(rng.normal(size=(64, outputs)).astype(np.float32) * 0.1),
  }
  return (lambda v, x: jnp.tanh(x.reshape(x.shape[0], -1) @ v["w1"]) @ v["w2"]), v


def _flops(fn, *args) -> float:
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


@pytest.mark.parametrize("outputs", [10, 1000])
def test_the_screen_of_a_1000_output_model_costs_o1_passes_per_image(outputs):
  """Counted in XLA's flops: the screen of one image against one forward pass of it, for a
  model whose head dominates its cost as the output count grows."""
  apply_fn, v = _dense(outputs)
  images = np.random.default_rng(0).normal(size=(1, S, S, 3)).astype(np.float32)
  cands = candidates.paired(S, 1)
  forward = _flops(lambda v, x: apply_fn(v, x), v, images)
  spectrum = fft.centred_spectrum(jnp.asarray(images))
  program = _auto.screen_program(apply_fn, cands, competitors=2)
  screen = _flops(program, v, spectrum, jnp.zeros(1, jnp.int32))
  passes = screen / forward
  # One forward and four backward passes (≈ 2 forwards each), plus the per-candidate sums.
  assert passes <= 2 * _auto.screen_passes(outputs, 2), passes
  assert _auto.screen_passes(outputs, 2) == 9.0  # what the search counts for it
