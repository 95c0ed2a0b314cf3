"""The `auto` search: exact scores in the order of an upper bound, until the exhaustive DFM's
score mass it may have missed is bounded below `tolerance`.

Per class (gain g_k: the class's summed cross-entropy increase when candidate k is removed;
the exhaustive DFM: the candidates of highest gain covering `threshold` of the cells):

1. Screen (`reduced_linear_scores`), whatever the model's output count: one forward pass and
   m + 2 backward passes per image. The logits, reduced to the true class's, the m highest
   others' and the log-sum-exp of the rest, are changed to first order; the cross-entropy of
   the reduced logits is computed exactly. This gives ĝ_k and the unfiltered loss.
2. Removed energy E_k = Σ_images Σ_{frequencies of k} |X|², free from the class's spectra.
   Taylor's remainder of a removal grows with it: a photo's low frequencies are no small step.
3. Exact scores (`dfm.Engine`) for the screen's top `multiple` × the DFM's candidates and an
   audit: `audit` candidates drawn at random from each energy stratum (stratum h: energies
   within a factor 4^h..4^(h+1) below the largest; the last, `strata` - 1, holds the rest). A
   photo's few high-energy candidates fill the first strata, so they are all scored.
4. The bound. Taylor's remainder g_k - ĝ_k grows with the removed energy and, measured on
   Syn-1 (correlation 0.83 within a stratum), with the size of the first-order change |ĝ_k|.
   Per stratum h the envelope ρ_h·E + κ_h·|ĝ| (ρ, κ >= 0) lies above the remainder of every
   scored candidate, the smallest such over the never-scored ones (`envelope`); a
   never-scored candidate u gets the upper bound U_u = ĝ_u + ρ_h E_u + κ_h |ĝ_u|. With b the
   lowest gain in the DFM D of exact scores and w_k the cells a candidate's score is written
   to, the exhaustive DFM's mass (Σ w·max(g, 0)) exceeds D's by at most
   X = Σ_u w_u·max(0, U_u - b): each of its cells outside D is a never-scored candidate's (a
   scored one there has gain <= b) and replaces a cell of D of gain >= b. So the fraction of
   the exhaustive DFM's mass D misses is at most X / (mass(D) + X).
5. While that bound exceeds `tolerance`, the never-scored candidates of largest w(U - b)
   (`block` × the DFM's candidates at a time) are scored exactly and the bound recomputed. In
   the worst case every candidate is scored: the exhaustive ranking (`tolerance` 0 scores them
   all in one engine call, as the exhaustive ranking does, so its arrays equal it bit for bit;
   scored in rounds, exact scores agree with it to float rounding, ~1e-7 relative).
   `budget` caps the fraction of candidates scored; stopping there above the tolerance is
   logged and recorded (`bound_met` False) with the bound the DFM has.

6. The floor (`floor`, default on). On real photos a DFM partly reflects which test images
   were drawn. The exact scores come with each image's loss, so the ranking's own
   split-half agreement is estimated on the scored candidates (`split_half_floor`: the mass
   the DFM ranked on every other image misses). Once the bound is below that floor, the
   rounds stop (`stop` 'floor'): no method can agree with the exhaustive ranking better
   than the ranking agrees with itself. The bound is still reported as it is.

Confidence: the bound holds when no never-scored candidate's remainder lies above its
stratum's envelope. The audit is a uniform draw from the stratum's candidates outside the
screen's top, and the envelope is the optimum of a convex program over the scored
candidates' constraints in two variables, so by the scenario approach (Campi & Garatti,
2008; at most two constraints support the optimum) a never-scored candidate of the stratum
lies above it with probability at most 2/(n + 1), n its audited candidates (6: 29 %); the
other scored candidates only add constraints. It is a per-candidate statement, not a
simultaneous one: one outlier may escape, and then its excess over b is what the bound
misses. What was scored exactly (`candidate_exact`) is exact.

Every engine call's chunks and the screen are kept in the store; each round's candidates
follow from the rounds before, so a killed search resumes to identical arrays.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from freqjax import parallel
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib, fft
from freqjax.spectral.search import base

CONFIDENCE = (
    "per never-scored candidate, P(its first-order remainder lies above its energy stratum's "
    "envelope fitted to the scored ones) <= 2/(audit + 1), by the scenario approach over the "
    "stratum's random audit"
)

# ------------------------------------------------------------------------- the screen ----


def incidence(cands: cand_lib.CandidateSet) -> tuple[np.ndarray, np.ndarray]:
  """(candidate, flat cell) index pairs of every frequency each candidate removes: per-candidate
  sums of a (S, S) map are then one segment sum of about S² values, at any image size."""
  ks, cells = [], []
  step = max(1, 2**24 // cands.size**2)
  for lo in range(0, len(cands), step):
    m = cands.removal_masks(np.arange(lo, min(lo + step, len(cands))))
    k, cell = np.nonzero(m.reshape(len(m), -1))
    ks.append(k + lo)
    cells.append(cell)
  return np.concatenate(ks).astype(np.int32), np.concatenate(cells).astype(np.int32)


def screen_program(apply_fn, cands: cand_lib.CandidateSet, competitors: int = 2, pairs=None):
  """fn(variables, spectra (n, S, S, C), labels (n,)) -> (n, K + 1): per image and candidate
  the cross-entropy increase when it is removed, to first order in the reduced logits (the
  true one, the `competitors` highest others, the log-sum-exp of the rest), then the
  unfiltered cross-entropy. One forward and m + 2 backward passes per image,
  m = min(competitors, outputs - 1), for any number of outputs. `pairs`: `incidence(cands)`
  when the caller has it."""
  size, num = cands.size, len(cands)
  kidx, cidx = (jnp.asarray(a) for a in (pairs or incidence(cands)))

  def per_image(variables, spectrum, label):
    def z(s):
      return apply_fn(variables, fft.filter_spectrum(spectrum[None], s))[0].astype(jnp.float32)

    z0, vjp = jax.vjp(z, jnp.ones((size, size), jnp.float32))
    outs = z0.shape[0]
    m = min(competitors, outs - 1)
    others = jnp.where(jnp.arange(outs) == label, -jnp.inf, z0)
    top = jax.lax.top_k(others, m)[1]
    rows = [jax.nn.one_hot(label, outs)[None], jax.nn.one_hot(top, outs)]
    v0 = [z0[label][None], z0[top]]
    if outs > m + 1:  # the rest's log-sum-exp: its gradient is softmax(rest) · ∂z/∂s
      rest = others.at[top].set(-jnp.inf)
      rows.append(jax.nn.softmax(rest)[None])
      v0.append(jax.nn.logsumexp(rest)[None])
    cot, v0 = jnp.concatenate(rows), jnp.concatenate(v0)
    jac = jax.vmap(lambda t: vjp(t)[0])(cot).reshape(len(v0), -1)  # (m + 2, S·S)
    per_cand = jax.ops.segment_sum(jac[:, cidx].T, kidx, num_segments=num)  # (K, m + 2)
    ce = lambda v: jax.nn.logsumexp(v, -1) - v[..., 0]
    return jnp.concatenate([ce(v0[None] - per_cand) - ce(v0), ce(v0)[None]])

  return jax.vmap(per_image, in_axes=(None, 0, 0))


class Screen:
  """`screen_program` jitted once for a search; `screen(images, labels)` is its values summed
  over the images, (K + 1,) (split over the devices; each device's program is independent).
  `batch` images at a time, fewer where the backward passes' buffers would exceed
  `budget_bytes` per device (`parallel.fit_batch`), compiled once per batch size: a search
  over classes of one size compiles it once, not once per class."""

  def __init__(
      self,
      apply_fn,
      variables,
      mesh,
      cands,
      competitors: int = 2,
      batch: int = 64,
      budget_bytes: float | None = None,
      progress: bool = False,
      pairs=None,
  ):
    self.mesh, self.size, self.batch, self.progress = mesh, len(cands), batch, progress
    self.budget = parallel.memory_budget(mesh) if budget_bytes is None else budget_bytes
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    self._data = data
    self._f = jax.jit(
        screen_program(apply_fn, cands, competitors, pairs),
        in_shardings=(repl, data, data),
        out_shardings=data,
    )
    self._spec = jax.jit(fft.centred_spectrum)
    self.variables = parallel.replicate(mesh, variables)
    self._fitted = {}  # first batch tried -> (batch, compiled program)

  def _step(self, images):
    first = parallel.round_up(max(1, min(int(self.batch), len(images))), self.mesh)
    if first not in self._fitted:
      size, channels = images.shape[1], images.shape[-1]
      self._fitted[first] = parallel.fit_batch(
          lambda b: self._f.lower(
              self.variables,
              jax.ShapeDtypeStruct((b, size, size, channels), jnp.complex64, sharding=self._data),
              jax.ShapeDtypeStruct((b,), jnp.int32, sharding=self._data),
          ),
          self.batch,
          len(images),
          self.mesh,
          self.budget,
          "auto's screen",
      )
    return self._fitted[first]

  def __call__(self, images, labels) -> np.ndarray:
    batch, step = self._step(images)
    bar = parallel.progress(
        total=len(images), unit="img", desc="auto screen", disable=not self.progress
    )
    total = np.zeros(self.size + 1, np.float64)
    for part, n in parallel.padded_batches({"x": images, "y": labels}, batch, self.mesh):
      x, y = jnp.asarray(part["x"]), jnp.asarray(part["y"], jnp.int32)
      total += (
          parallel.to_host(step(self.variables, self._spec(x), y))[:n].astype(np.float64).sum(0)
      )
      bar.update(n)
    bar.close()
    return total.astype(np.float32)


def reduced_linear_scores(
    apply_fn,
    variables,
    mesh,
    images,
    labels,
    cands,
    competitors: int = 2,
    batch: int = 64,
    budget_bytes: float | None = None,
    progress: bool = False,
) -> np.ndarray:
  """(K + 1,): `screen_program`'s values summed over `images` (a `Screen` used once)."""
  screen = Screen(apply_fn, variables, mesh, cands, competitors, batch, budget_bytes, progress)
  return screen(images, labels)


def screen_passes(num_outputs: int, competitors: int) -> float:
  """Forward-equivalents per image of the screen (a backward pass counts as two forwards)."""
  m = min(competitors, num_outputs - 1)
  return 1.0 + 2.0 * (m + (2 if num_outputs > m + 1 else 1))


def removed_energy(images: np.ndarray, cands: cand_lib.CandidateSet, pairs=None) -> np.ndarray:
  """(K,) Σ over the images and channels of |X|² on each candidate's frequencies (`pairs`:
  `incidence(cands)` when the caller has it)."""
  power = np.zeros(images.shape[1] ** 2, np.float64)
  for lo in range(0, len(images), 256):
    x = np.asarray(images[lo : lo + 256], np.float32)
    spectrum = np.fft.fftshift(np.fft.fft2(x, axes=(1, 2)), axes=(1, 2))
    power += (np.abs(spectrum) ** 2).sum((0, 3)).reshape(-1)
  kidx, cidx = pairs or incidence(cands)
  return np.bincount(kidx, weights=power[cidx], minlength=len(cands))


def strata(energy: np.ndarray, count: int) -> np.ndarray:
  """(K,) the energy stratum of each candidate: h = floor(log4(E_max / E)), at most count - 1."""
  top = max(float(energy.max()), 1e-30)
  h = np.floor(np.log(top / np.maximum(energy, top * 1e-30)) / np.log(4.0))
  return np.minimum(h, count - 1).astype(np.int32)


# ------------------------------------------------------------------------ the search ----


@dataclasses.dataclass(frozen=True)
class _Job:
  engine: Any
  images: np.ndarray
  labels: np.ndarray
  tolerance: float
  multiple: float
  audit: int
  strata: int
  competitors: int
  block: float
  budget: float
  threshold: float
  seed: int
  batch: int
  store_root: str | None
  class_names: Any
  floor: bool = True
  per_image: Any = None  # the engine of per-image losses (the floor's)
  screen: Any = None  # the search's `Screen`, compiled once for every class
  pairs: Any = None  # incidence(cands), computed once


@dataclasses.dataclass
class _Class:
  scores: np.ndarray  # (K,) exact scores, the screen's estimates for the rest
  exact: np.ndarray
  key: np.ndarray
  screen: np.ndarray  # (K,) ĝ
  energy: np.ndarray  # (K,) E
  upper: np.ndarray  # (K,) U for never-scored candidates, the exact gain for the rest
  unfiltered: float  # the class's summed cross-entropy without removal (the gains' zero)
  bound: float  # the missed-mass bound
  floor: float  # the split-half floor estimated at the end (0 without the floor)
  rounds: int
  stop: str  # 'bound' | 'all scored' | 'budget'
  forwards: float


@dataclasses.dataclass
class _Bound:
  """The bound of one class's scores so far."""

  value: float
  boundary: float  # b: the DFM's lowest exact gain
  upper: np.ndarray  # (K,) U (never-scored), exact gain (scored)


def envelope(res, energy, size, energy_rest, size_rest) -> tuple[float, float]:
  """(ρ, κ) >= 0 with ρ·E + κ·|ĝ| >= the remainder of every scored candidate (res, energy,
  size = |ĝ|), the smallest such envelope summed over the never-scored ones (energy_rest,
  size_rest): a linear program in two variables, solved over a grid of κ (ρ then follows
  exactly, so every scored remainder lies under it whatever the grid)."""
  res = np.asarray(res, np.float64)
  if res.size == 0 or res.max() <= 0:
    return 0.0, 0.0
  kmax = float(np.max(np.where(size > 0, res / np.maximum(size, 1e-30), 0.0)))
  best = (math.inf, 0.0, 0.0)
  for k in np.concatenate([[0.0], np.geomspace(1e-4, max(kmax, 1e-4), 64)]):
    rho = max(0.0, float(np.max((res - k * size) / energy)))
    cost = rho * float(energy_rest.sum()) + k * float(size_rest.sum())
    if cost < best[0]:
      best = (cost, rho, float(k))
  return best[1], best[2]


def bound(cands, gain, exact, screen, energy, stratum, threshold) -> _Bound:
  """The missed-mass bound of the DFM of the exact gains `gain[exact]` (module docstring, 4)."""
  gain = np.asarray(gain, np.float64)
  w = base.cells_written(cands).astype(np.float64)
  scored = np.nonzero(exact)[0]
  ranked = scored[np.argsort(-gain[scored], kind="stable")]
  n_dfm = base.dfm_candidate_count(cands, ranked, threshold)
  dfm = ranked[:n_dfm]
  # Scored candidates too few to cover the DFM: any never-scored one may enter it (b = 0).
  covered = w[ranked].sum() >= int(threshold * cands.size**2)
  b = float(gain[dfm[-1]]) if covered else 0.0
  upper = np.where(exact, gain, 0.0).astype(np.float64)
  e = np.maximum(energy, max(float(energy.max()), 1e-30) * 1e-12)
  size = np.abs(screen)
  for h in np.unique(stratum[~exact]):
    done, rest = (stratum == h) & exact, (stratum == h) & ~exact
    rho, kappa = envelope((gain - screen)[done], e[done], size[done], e[rest], size[rest])
    upper[rest] = screen[rest] + rho * e[rest] + kappa * size[rest]
  excess = float(np.sum((w * np.maximum(0.0, upper - b))[~exact]))
  mass = float(np.sum(w[dfm] * np.maximum(gain[dfm], 0.0)))
  value = excess / (mass + excess) if excess > 0 else 0.0
  return _Bound(value, b, upper)


def auto(
    engine,
    images,
    labels,
    class_indices,
    *,
    tolerance: float = 0.05,
    multiple: float = 1.0,
    audit: int = 6,
    strata: int = 6,  # pylint: disable=redefined-outer-name
    competitors: int = 2,
    block: float = 0.25,
    budget: float = 1.0,
    floor: bool = True,
    threshold: float = 0.05,
    seed: int = 0,
    batch: int = 64,
    store_root: str | None = None,
    class_names=None,
) -> base.Result:
  """The auto search of each class of `class_indices` (see the module's docstring)."""
  t0 = time.time()
  per_image = None
  if floor and tolerance > 0:
    cands = engine.cands
    per_image = dfm_lib.Engine(
        engine.apply_fn,
        engine.variables,
        engine.mesh,
        cands,
        memory_budget_mb=engine.budget / 2**20,
        chunk_size=engine.fixed_chunk,
        progress=engine.progress,
        program=dfm_lib.removal_program(engine.apply_fn, cands.size, cands.patch, per_image=True),
    )
  job = _Job(
      engine,
      images,
      np.asarray(labels),
      tolerance,
      multiple,
      audit,
      strata,
      competitors,
      block,
      budget,
      threshold,
      seed,
      batch,
      store_root,
      class_names,
      floor and tolerance > 0,
      per_image,
  )
  pairs = incidence(engine.cands)
  screen = Screen(
      engine.apply_fn,
      engine.variables,
      engine.mesh,
      engine.cands,
      competitors,
      batch,
      engine.budget,
      engine.progress,
      pairs,
  )
  job = dataclasses.replace(job, screen=screen, pairs=pairs)
  outputs = int(jax.eval_shape(engine.apply_fn, engine.variables, images[:1]).shape[-1])
  per_class = [_search_class(job, c, outputs) for c in class_indices]
  return _result(job, per_class, outputs, time.time() - t0)


def _search_class(job: _Job, c, outputs: int) -> _Class:
  """Screen, first exact scores, then rounds by the bound until it meets the tolerance."""
  cands = job.engine.cands
  idx = np.nonzero(job.labels == c)[0]
  screen, base0 = _screen(job, c, idx)
  energy = removed_energy(job.images[idx], cands, job.pairs)
  stratum = strata(energy, job.strata)
  scores = np.full(len(cands), np.nan, np.float32)
  exact = np.zeros(len(cands), bool)
  # With the floor: each scored candidate's per-image losses (its score is their sum).
  losses = np.zeros((len(cands), idx.size), np.float32) if job.per_image is not None else None

  def score(index, name):
    index = np.sort(index)
    store = base.chunk_store(job.store_root, f"{name}_class{c:04d}", [index.tolist()])
    engine = job.engine if losses is None else job.per_image
    got = base.exact_scores(engine, job.images, job.labels, c, index, store, job.class_names)
    if losses is not None:
      losses[index] = got
      got = got.sum(1, dtype=np.float64)
    scores[index] = got
    exact[index] = True

  score(_first(job, c, screen, stratum), "auto0")
  n_dfm = base.dfm_candidate_count(cands, np.argsort(-screen, kind="stable"), job.threshold)
  step, cap = max(1, math.ceil(job.block * n_dfm)), max(1, math.ceil(job.budget * len(cands)))
  rounds = 0
  floor = 0.0
  while True:
    bd = bound(cands, scores - base0, exact, screen, energy, stratum, job.threshold)
    if losses is not None:
      floor = split_half_floor(cands, losses, exact, scores - base0, job.threshold)
    stop = _stop(job, bd.value, floor, exact, cap)
    if stop:
      break
    rest = np.nonzero(~exact)[0]
    priority = base.cells_written(cands)[rest] * (bd.upper[rest] - bd.boundary)
    rounds += 1
    score(
        rest[np.argsort(-priority, kind="stable")[: min(step, cap - exact.sum())]], f"auto{rounds}"
    )
  if stop == "budget":
    _warn_budget(job, c, bd.value, int(exact.sum()), len(cands))
  est = np.where(exact, scores, base0 + screen).astype(np.float32)
  forwards = (screen_passes(outputs, job.competitors) + exact.sum()) * float(idx.size)
  f32 = lambda a: a.astype(np.float32)
  key = base.ranking_key(est, exact, bd.upper)
  return _Class(
      est,
      exact,
      key,
      f32(screen),
      f32(energy),
      f32(bd.upper),
      base0,
      bd.value,
      floor,
      rounds,
      stop,
      forwards,
  )


def _screen(job: _Job, c, idx: np.ndarray) -> tuple[np.ndarray, float]:
  """Class c's screen (kept in the store): ĝ (K,) and the unfiltered summed cross-entropy."""
  got = base.saved(
      job.store_root,
      f"screen_class{c:04d}",
      lambda: job.screen(job.images[idx], np.full(idx.size, c, np.int32)),
      (len(job.engine.cands) + 1,),
  )
  return got[:-1].astype(np.float64), float(got[-1])


def _stop(job: _Job, value: float, floor: float, exact: np.ndarray, cap: int) -> str:
  """Why the rounds end now ('' while they go on)."""
  if exact.all():
    return "all scored"
  if job.tolerance > 0 and value <= job.tolerance:
    return "bound"
  if job.tolerance > 0 and value <= floor:
    return "floor"
  return "budget" if exact.sum() >= cap else ""


def split_half_floor(cands, losses, exact, gain, threshold) -> float:
  """The exhaustive ranking's own noise floor, estimated on the scored candidates: the mass
  (Σ w·max(g, 0)) that the DFM ranked on every other image (of the scored candidates) misses
  of the DFM ranked on all of them. A DFM the class's images do not resolve better than this
  cannot be asked to agree with the exhaustive ranking better either."""
  w = base.cells_written(cands).astype(np.float64)
  scored = np.nonzero(exact)[0]
  gain = np.asarray(gain, np.float64)[scored]
  half = losses[scored][:, ::2].sum(1, dtype=np.float64)

  def dfm_mass(key):
    ranked = np.argsort(-key, kind="stable")
    top = ranked[: base.dfm_candidate_count(cands, scored[ranked], threshold)]
    return float(np.sum(w[scored[top]] * np.maximum(gain[top], 0.0)))

  full = dfm_mass(gain)
  return 1.0 - dfm_mass(half) / full if full > 0 else 0.0


def _first(job: _Job, c, screen: np.ndarray, stratum: np.ndarray) -> np.ndarray:
  """The first exactly scored candidates: the screen's top `multiple` × the DFM's and, from
  each energy stratum, `audit` drawn at random from the rest (with tolerance 0: all)."""
  cands = job.engine.cands
  if job.tolerance == 0:  # every candidate, in one engine call: the exhaustive ranking's
    return np.arange(len(cands))
  order = np.argsort(-screen, kind="stable")
  n0 = base.dfm_candidate_count(cands, order, job.threshold)
  top = order[: min(len(order), math.ceil(job.multiple * n0))]
  rng = np.random.default_rng([job.seed, int(c)])
  chosen = [top]
  outside = np.ones(len(cands), bool)
  outside[top] = False
  for h in range(job.strata):
    pool = np.nonzero(outside & (stratum == h))[0]
    if pool.size:
      chosen.append(rng.choice(pool, size=min(job.audit, pool.size), replace=False))
  return np.unique(np.concatenate(chosen))


def _warn_budget(job: _Job, c, value: float, scored: int, total: int) -> None:
  name = job.class_names[c] if job.class_names is not None else c
  logging.warning(
      "auto search, class %r: the missed-mass bound is %.3f, above the tolerance %.3f, after "
      "scoring %d of %d candidates (analysis.auto.budget=%s); its DFM is kept with that bound. "
      "Raise analysis.auto.budget, or use analysis.search=exhaustive.",
      name,
      value,
      job.tolerance,
      scored,
      total,
      job.budget,
  )


def _result(job: _Job, per_class: list[_Class], outputs: int, seconds: float) -> base.Result:
  bounds = [r.bound for r in per_class]
  return base.Result(
      job.engine.cands,
      *base.stack(per_class),
      float(sum(r.forwards for r in per_class)),
      seconds,
      {
          "screen_scores": np.stack([r.screen for r in per_class]),
          "removed_energy": np.stack([r.energy for r in per_class]),
          "upper_bounds": np.stack([r.upper for r in per_class]),
          "missed_mass_bound": np.array(bounds, np.float32),
          "unfiltered_loss": np.array([r.unfiltered for r in per_class], np.float32),
      },
      {
          "tolerance": float(job.tolerance),
          "missed_mass_bound_per_class": bounds,
          "bound_met_per_class": [r.stop != "budget" for r in per_class],
          "split_half_floor_per_class": [r.floor for r in per_class],
          "stop_per_class": [r.stop for r in per_class],
          "scored_per_class": [int(r.exact.sum()) for r in per_class],
          "rounds_per_class": [r.rounds for r in per_class],
          "screen_forwards_per_image": screen_passes(outputs, job.competitors),
          "confidence": CONFIDENCE,
      },
  )


@base.register("auto")
def run(r: base.Request, overrides: dict) -> base.Result:
  """The auto search of `r` by config.analysis.auto (with `overrides`)."""
  a = r.config.analysis
  s = dict(a.auto.to_dict(), **overrides)
  return auto(
      r.engine(r.cands),
      r.images,
      r.labels,
      r.classes,
      tolerance=float(s["tolerance"]),
      multiple=float(s["multiple"]),
      audit=int(s["audit"]),
      strata=int(s["strata"]),
      competitors=int(s["competitors"]),
      block=float(s["block"]),
      budget=float(s["budget"]),
      floor=bool(s["floor"]),
      threshold=float(a.threshold),
      seed=int(r.config.seed),
      batch=max(8, int(a.batch_size) // 8),
      store_root=r.store_root,
      class_names=r.class_names,
  )
