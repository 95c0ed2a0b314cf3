"""The `auto` search: exact scores, raced over the class's images, in the order of a bound on
what they may change, until the exhaustive DFM's score mass it may have missed is bounded
below `tolerance`.

Per class (gain g_k: the class's summed cross-entropy increase when candidate k is removed,
d_ki its terms per image; the exhaustive DFM: the candidates of highest gain covering
`threshold` of the cells):

1. Screen (`screen_program`), whatever the model's output count: one forward pass and m + 2
   backward passes per image. The logits, reduced to the true class's, the m highest
   others' and the log-sum-exp of the rest, are changed to first order; the cross-entropy of
   the reduced logits is computed exactly. This gives per image s_ki ≈ d_ki and the
   unfiltered loss; ĝ_k = Σ_i s_ki.
2. Removed energy E_k = Σ_images Σ_{frequencies of k} |X|², free from the class's spectra,
   and energy strata (stratum h: energies a factor 4^h..4^(h+1) below the largest).
   Taylor's remainder of a removal grows with it: a photo's low frequencies are no small step.
3. Races over images (`design`). The class's images are drawn at random with replacement,
   image i with probability p_i: a share `lean` (0.8) in proportion to the screen's size on
   it, Σ_k |s_ki| (the images a removal moves most: unconfident ones, where first order
   fails most), the rest uniform. A candidate is scored exactly on the images of the first
   `first_images` (8) draws, then of 16, 32, ... while those are at most half the images,
   then on all N, each step only if the bound needs it. From its level's D draws the gain is
   estimated with the screen as a control variate, est = ĝ + (1/D)·Σ_j (d - s)_j / p_j (Hansen
   & Hurwitz), with standard error sd_j((d - s)/p) / √D; its interval is est ± t·se (t:
   Student's quantile for D - 1 degrees of freedom at the normal quantile `z`, 3.0). A class
   of fewer than 4 × `first_images` images is not raced: a candidate scored is scored on all.
   First raced: the screen's top `multiple` × the DFM's candidates, every candidate of the
   highest-energy strata holding at most `dense` (0.2) of the candidates, and an audit of
   `audit` (20) per other stratum drawn at random.
4. The bound. Each candidate gets an upper bound U and a lower bound L of its gain: exact
   where scored on all images; est ± t·se where raced; for the never-scored U = ĝ + ρE +
   κ|ĝ| by the smallest envelope over their stratum lying above every raced candidate's
   estimated remainder est - ĝ (`envelope`), and L = -inf. The DFM D is taken from the raced
   candidates by estimate. For any b >= 0 the exhaustive DFM's mass (Σ w·max(g, 0), w the
   cells a candidate's score is written to) exceeds D's by at most
   X(b) = Σ_{k∉D} w·max(0, U_k - b) + Σ_{j∈D} w·max(0, b - L_j)
   (each of its cells outside D takes the place of one of D), so the fraction of its mass D
   misses is at most X / (Σ_D w·max(L, 0) + X), at the b minimising X (`bound`). The
   never-scored are held to min(b, D's lowest estimate): their envelope is the weakest
   part.
5. Rounds: while the bound exceeds `tolerance`, the candidates with the largest share of X
   per image their next step costs are scored further (`block` (0.05) × the DFM's
   candidates × N images a round). In the worst case every candidate is scored on every image: the
   exhaustive ranking (`tolerance` 0 scores them all in one engine call, as the exhaustive
   ranking does, so its arrays equal it bit for bit). `budget` caps the fraction of the
   exhaustive ranking's candidate-images scored; stopping there above the tolerance is
   logged and recorded (`bound_met` False) with the bound the DFM has.
6. The floor (`floor`, default on). On real photos a DFM partly reflects which test images
   were drawn. The per-image losses give the ranking's own split-half disagreement: over
   32 random halvings of the images, the mass that the DFM ranked on one half misses of the
   one ranked on all (`split_half_floor`; a raced candidate's half is scaled to the spread
   over all images its draws estimate). Once the bound is below its median, the rounds stop
   (`stop` 'floor'): no method can agree with the exhaustive ranking better than the ranking
   agrees with itself.

Confidence: per raced candidate, the interval covers its gain with probability about
Φ(z) one-sided (99.9 % at 3.0) when the remainders' spread over its draws stands for the
rest (a sample of nearly identical remainders, e.g. images whose loss and gradient are both
~0, is given the screen's own spread over all images instead). On photos the per-image
remainders are heavy-tailed (a low frequency's removal moves one unconfident image by 0.6
and most by ~0), so the t interval covers less than it claims: measured on
tiny-imagenet-10's 500 val images, the exhaustive top 200 per class fell above the upper
bound at 7 % of levels at z = 2 (nominal 2.3 %) and 2 % at z = 3. Weighting the draws
toward large-screen images and racing the high-energy strata whole (where first order
fails) are what keep the bound above the mass missed there. Per never-scored candidate, its
remainder lies above its stratum's envelope with probability at most 2/(n + 1), n the
stratum's audited candidates (the scenario approach, Campi & Garatti 2008: the envelope is
a convex program in two variables). Both are per-candidate statements, not simultaneous;
the bound is a sum over candidates, so one that escapes adds only its excess. What was
scored on every image (`candidate_exact`) is exact.

Every engine call's chunks and the screen are kept in the store; each round's candidates
and images follow from the rounds before, so a killed search resumes to identical arrays.
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

# A raced sample whose remainders spread less than 1 % (in standard deviation) of the
# screen's own spread over all the class's images is taken as uninformative (`estimates`).
MIN_SPREAD = 1e-4
FLOOR_QUANTILE = 0.5  # the floor: this quantile of the random halvings' missed mass
CONFIDENCE = (
    "per raced candidate at about Phi(z) one-sided (Student's t interval of its gain from the "
    "images it was scored on; less on heavy-tailed photos, see the module docstring), per "
    "never-scored candidate at >= 1 - 2/(n + 1), n its energy stratum's audited candidates "
    "(scenario approach); per candidate, not simultaneous"
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
  """`screen_program` jitted once for a search; `screen(images, labels)` is its values per
  image, (n, K + 1) (split over the devices; each device's program is independent).
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
    """(len(images), K + 1) float32: per image the screen's values (`screen_program`)."""
    batch, step = self._step(images)
    bar = parallel.progress(
        total=len(images), unit="img", desc="auto screen", disable=not self.progress
    )
    out = []
    for part, n in parallel.padded_batches({"x": images, "y": labels}, batch, self.mesh):
      x, y = jnp.asarray(part["x"]), jnp.asarray(part["y"], jnp.int32)
      out.append(parallel.to_host(step(self.variables, self._spec(x), y))[:n])
      bar.update(n)
    bar.close()
    return np.concatenate(out).astype(np.float32)


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
  return screen(images, labels).astype(np.float64).sum(0).astype(np.float32)


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
  first_images: int = 8
  z: float = 3.0
  lean: float = 0.8
  dense: float = 0.2
  per_image: Any = None  # the engine of per-image losses (the races')
  screen: Any = None  # the search's `Screen`, compiled once for every class
  pairs: Any = None  # incidence(cands), computed once


@dataclasses.dataclass
class _Class:
  scores: np.ndarray  # (K,) exact scores, estimates for the rest
  exact: np.ndarray  # (K,) scored on every image
  key: np.ndarray
  screen: np.ndarray  # (K,) ĝ (summed over the images)
  energy: np.ndarray  # (K,) E
  upper: np.ndarray  # (K,) the upper bound U of each gain (the gain itself where exact)
  images: np.ndarray  # (K,) images each candidate was scored on
  unfiltered: float  # the class's summed cross-entropy without removal (the gains' zero)
  bound: float  # the missed-mass bound
  floor: float  # the split-half floor estimated at the end (0 without the floor)
  rounds: int
  stop: str  # 'bound' | 'floor' | 'all scored' | 'budget'
  forwards: float


@dataclasses.dataclass(frozen=True)
class Design:
  """Which of a class's images a race scores, in what order, and what each one weighs.

  Images are drawn with replacement, image i with probability p_i (Hansen & Hurwitz's
  sampling with probabilities proportional to size): a share `lean` of p follows the
  screen's per-image size Σ_k |s_ki|, the rest is uniform, so the images whose losses a
  removal moves most (hard, unconfident ones) are drawn first and no image weighs more than
  1/(N·p_i) <= 1/(1 - lean) of a uniform draw. A level's candidates are scored on every image
  its draws name: a prefix of `order` (images in the order they were first drawn)."""

  order: np.ndarray  # (N,) the class's images (columns of s) in the order first drawn
  levels: np.ndarray  # (L,) images scored at each level (a prefix of order), the last N
  draws: tuple  # per level but the last: its draws, as positions in `order`
  prob: np.ndarray  # (N,) each position's draw probability

  def partial(self, n: np.ndarray):
    """(rows of n at the level, the level's draws) for every level but the last, where any
    row of n (images scored) is at it."""
    for images, draws in zip(self.levels[:-1], self.draws):
      rows = np.nonzero(n == images)[0]
      if rows.size:
        yield rows, draws


def design(s: np.ndarray, first: int, lean: float, rng) -> Design:
  """The race's design for screen values s (K, N): `first` draws, doubling while the images
  drawn are at most half of N, then all N images. A class of fewer than 4 × `first` images
  is not raced (every candidate scored is scored on all of them): a few images say little
  of the rest, and racing would save little."""
  num = s.shape[1]
  if 4 * first > num:
    return Design(np.arange(num), np.asarray([num], np.int64), (), np.full(num, 1.0 / num))
  size = np.abs(s).sum(0)
  size = size / size.sum() if size.sum() > 0 else np.full(num, 1.0 / num)
  prob = (1.0 - lean) / num + lean * size
  prob = prob / prob.sum()
  seq = rng.choice(num, size=64 * num, p=prob)
  _, first_at = np.unique(seq, return_index=True)
  drawn = seq[np.sort(first_at)]
  order = np.concatenate([drawn, np.setdiff1d(np.arange(num), drawn)])
  position = np.argsort(order)
  levels, counts = [], []
  count = max(1, first)
  while count <= seq.size:
    unique = np.unique(seq[:count]).size
    if unique > num // 2:
      break
    if levels and levels[-1] == unique:  # more draws, no more images: keep them
      counts[-1] = count
    else:
      levels.append(unique)
      counts.append(count)
    count *= 2
  draws = tuple(position[seq[:c]] for c in counts)
  return Design(order, np.asarray(levels + [num], np.int64), draws, prob[order])


def t_quantile(z: float, dof: np.ndarray) -> np.ndarray:
  """Student's t quantile at the normal quantile z's probability, for `dof` degrees of freedom
  (Cornish-Fisher expansion; within ~1 % of the exact value for dof >= 3 at z = 2): a
  confidence interval from a few images' sample deviation is this much wider than z."""
  v = np.maximum(np.asarray(dof, np.float64), 1.0)
  z3, z5, z7 = z**3, z**5, z**7
  return (
      z
      + (z3 + z) / (4 * v)
      + (5 * z5 + 16 * z3 + 3 * z) / (96 * v**2)
      + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v**3)
  )


def estimates(d, n, s, dsg: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(gain estimate, its standard error, degrees of freedom) per candidate, from d and s in
  `dsg.order`: the screen's sum plus the Hansen-Hurwitz estimate of the remainder d - s over
  all N images from the draws of the candidate's level (the screen is the control variate);
  exact where n = N, the screen alone where n = 0."""
  num = s.shape[1]
  screen = s.sum(1)
  est, se, dof = screen.copy(), np.zeros(len(s)), np.zeros(len(s))
  full = n >= num
  est[full] = d[full].sum(1)
  for k, draws in dsg.partial(n):
    y = (d[np.ix_(k, draws)] - s[np.ix_(k, draws)]) / dsg.prob[draws]
    var = y.var(1, ddof=1)
    # A few images may all be ones the removal leaves alone (a confident image's loss and
    # gradient both ~0) while it matters on others: a sample of (nearly) identical
    # remainders takes the screen's own spread over all the images instead (MIN_SPREAD).
    screen_var = np.maximum((s[k] ** 2 / dsg.prob).sum(1) - screen[k] ** 2, 0.0)
    var = np.where(var > MIN_SPREAD * screen_var, var, screen_var)
    est[k] = screen[k] + y.mean(1)
    se[k] = np.sqrt(var / draws.size)
    dof[k] = draws.size - 1
  return est, se, dof


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


@dataclasses.dataclass
class Bound:
  """The missed-mass bound of one class's evaluations so far (module docstring, 4)."""

  value: float
  boundary: float  # b: the threshold the bound is taken at
  dfm: np.ndarray  # the DFM's candidates (evaluated ones, by estimate)
  est: np.ndarray  # (K,) gain estimates
  upper: np.ndarray  # (K,) U
  lower: np.ndarray  # (K,) L (-inf where never scored)
  contribution: np.ndarray  # (K,) each candidate's share of X at b


def _best_threshold(upper, w_out, lower, w_in) -> tuple[float, float]:
  """min over b >= 0 of Σ w_out·max(0, U - b) + Σ w_in·max(0, b - L): (b, value). Convex and
  piecewise linear in b, so its minimum lies at 0 or a breakpoint."""
  pts = np.unique(np.concatenate([[0.0], np.maximum(upper, 0.0), np.maximum(lower, 0.0)]))
  o = np.argsort(upper)
  u, wu = upper[o], w_out[o]
  tail_w = np.append(np.cumsum(wu[::-1])[::-1], 0.0)
  tail_wu = np.append(np.cumsum((wu * u)[::-1])[::-1], 0.0)
  j = np.searchsorted(u, pts, side="right")
  o = np.argsort(lower)
  low, wl = lower[o], w_in[o]
  head_w = np.concatenate([[0.0], np.cumsum(wl)])
  head_wl = np.concatenate([[0.0], np.cumsum(wl * low)])
  i = np.searchsorted(low, pts, side="left")
  f = (tail_wu[j] - pts * tail_w[j]) + (pts * head_w[i] - head_wl[i])
  a = int(np.argmin(f))
  return float(pts[a]), max(0.0, float(f[a]))


def bound(cands, d, n, s, energy, stratum, threshold, z, dsg: Design) -> Bound:
  """The missed-mass bound of the DFM of the evaluated candidates' estimates.

  Per candidate an upper bound U and a lower bound L of its gain: the gain itself where
  scored on every image; est ± t·se where scored on some; for the never-scored U = ĝ + ρE +
  κ|ĝ| by their stratum's envelope (fitted to the raced ones' estimated remainders), L =
  -inf. For the DFM D (evaluated candidates, by estimate) and any b >= 0 the exhaustive
  DFM's mass exceeds D's by at most X(b) = Σ_{k∉D} w·max(0, U - b) + Σ_{j∈D} w·max(0, b - L):
  a cell of the exhaustive DFM outside D takes the place of one of D, and gains more than D's
  only by what the first sum counts above b and the second below it. So the fraction missed
  is at most X / (Σ_D w·max(L, 0) + X), at the b that minimises X."""
  w = base.cells_written(cands).astype(np.float64)
  est, se, dof = estimates(d, n, s, dsg)
  half_width = t_quantile(z, dof) * se
  upper, lower = est + half_width, est - half_width
  seen = n > 0
  screen = s.sum(1)
  e = np.maximum(energy, max(float(energy.max()), 1e-30) * 1e-12)
  size = np.abs(screen)
  for h in np.unique(stratum[~seen]):
    done, rest = (stratum == h) & seen, (stratum == h) & ~seen
    rho, kappa = envelope((est - screen)[done], e[done], size[done], e[rest], size[rest])
    upper[rest] = screen[rest] + rho * e[rest] + kappa * size[rest]
  lower[~seen] = -np.inf
  evaluated = np.nonzero(seen)[0]
  ranked = evaluated[np.argsort(-est[evaluated], kind="stable")]
  dfm = ranked[: base.dfm_candidate_count(cands, ranked, threshold)]
  inside = np.zeros(len(w), bool)
  inside[dfm] = True
  if w[ranked].sum() >= int(threshold * cands.size**2):
    b, _ = _best_threshold(upper[~inside], w[~inside], lower[inside], w[inside])
    # The never-scored are held to the DFM's lowest estimate where that is below b: their
    # envelope is the bound's weakest part (see CONFIDENCE). Any b' <= b keeps X an upper
    # bound (each term only grows).
    b_never = min(b, max(0.0, float(est[dfm].min())))
  else:  # too few evaluated to cover the DFM: any other candidate may enter it
    b = b_never = 0.0
  mass = float(np.sum(w[dfm] * np.maximum(lower[dfm], 0.0)))
  at = np.where(seen, b, b_never)
  contribution = np.where(inside, w * np.maximum(0.0, b - lower), w * np.maximum(0.0, upper - at))
  x = float(contribution.sum())
  value = x / (mass + x) if x > 0 else 0.0
  return Bound(value, b, dfm, est, upper, lower, contribution)


def split_half_floor(cands, d, n, est, threshold, splits, dsg: Design) -> float:
  """The exhaustive ranking's own noise floor, estimated from the per-image losses: the mean
  over random halvings of the class's images of the mass (Σ w·max(g, 0), g the estimates)
  that the DFM ranked on one half misses of the DFM ranked on all. A half's ranking is that
  of g + Σ_i ε_i d_i (ε = ±1 by half); where a candidate was scored on part of the images,
  the sum over them is scaled to the spread over all (Σ_i d_i², estimated from its draws);
  the same halving for every candidate keeps their correlation. A DFM the class's images do not
  resolve better than this cannot be asked to agree with the exhaustive ranking better."""
  w = base.cells_written(cands).astype(np.float64)
  seen = np.nonzero(n > 0)[0]
  if seen.size == 0:
    return 0.0
  num = d.shape[1]
  dd = np.where(np.arange(num)[None, :] < n[seen, None], d[seen], 0.0)
  square = (dd**2).sum(1)
  total = square.copy()  # Σ_i d_i² over all N images: exact, or from the draws
  for k, draws in dsg.partial(n[seen]):
    total[k] = (dd[np.ix_(k, draws)] ** 2 / dsg.prob[draws]).mean(1)
  noise = (splits @ dd.T) * np.sqrt(total / np.maximum(square, 1e-300))[None, :]
  g, ws = est[seen], w[seen]

  def mass(key):
    ranked = np.argsort(-key, kind="stable")
    top = ranked[: base.dfm_candidate_count(cands, seen[ranked], threshold)]
    return float(np.sum(ws[top] * np.maximum(g[top], 0.0)))

  full = mass(g)
  if full <= 0:
    return 0.0
  return float(np.quantile([1.0 - mass(g + e) / full for e in noise], FLOOR_QUANTILE))


def auto(
    engine,
    images,
    labels,
    class_indices,
    *,
    tolerance: float = 0.05,
    multiple: float = 1.0,
    audit: int = 20,
    strata: int = 6,  # pylint: disable=redefined-outer-name
    competitors: int = 2,
    block: float = 0.05,
    budget: float = 1.0,
    floor: bool = True,
    first_images: int = 8,
    z: float = 3.0,
    lean: float = 0.8,
    dense: float = 0.2,
    threshold: float = 0.05,
    seed: int = 0,
    batch: int = 64,
    store_root: str | None = None,
    class_names=None,
) -> base.Result:
  """The auto search of each class of `class_indices` (see the module's docstring)."""
  t0 = time.time()
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
  pairs = incidence(cands)
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
      floor,
      first_images,
      z,
      lean,
      dense,
      per_image,
      Screen(
          engine.apply_fn,
          engine.variables,
          engine.mesh,
          cands,
          competitors,
          batch,
          engine.budget,
          engine.progress,
          pairs,
      ),
      pairs,
  )
  outputs = int(jax.eval_shape(engine.apply_fn, engine.variables, images[:1]).shape[-1])
  per_class = [_search_class(job, c, outputs) for c in class_indices]
  return _result(job, per_class, outputs, time.time() - t0)


def _search_class(job: _Job, c, outputs: int) -> _Class:
  """Screen, first evaluations, then rounds by the bound until it meets the tolerance."""
  cands = job.engine.cands
  rng = np.random.default_rng([job.seed, int(c)])
  # The class's images in a seeded random order (the columns `design` draws from).
  idx = np.nonzero(job.labels == c)[0]
  idx = idx[np.random.default_rng([job.seed, int(c), 1]).permutation(idx.size)]
  if job.tolerance == 0:
    return _exhaustive_class(job, c, idx, outputs)
  s, l0 = _screen(job, c, idx)
  energy = removed_energy(job.images[idx], cands, job.pairs)

  def score(index, images, name):
    return _score(job, c, idx[images], index, name) - l0[None, images]

  r = race(cands, s, energy, score, job, rng)
  if r.stop == "budget":
    _warn_budget(job, c, r.bound.value, int(r.n.sum()), len(cands) * idx.size)
  seen, exact = r.n > 0, r.n >= idx.size
  base0 = float(l0.sum())
  est = (base0 + r.bound.est).astype(np.float32)
  f32 = lambda a: a.astype(np.float32)
  return _Class(
      est,
      exact,
      base.ranking_key(est, seen, r.bound.upper),
      f32(s.sum(1)),
      f32(energy),
      f32(r.bound.upper),
      r.n,
      base0,
      r.bound.value,
      r.floor,
      r.rounds,
      r.stop,
      screen_passes(outputs, job.competitors) * idx.size + float(r.n.sum()),
  )


@dataclasses.dataclass
class Race:
  """One class's race: images scored per candidate (`n`), the bound, why it stopped."""

  n: np.ndarray
  bound: Bound
  floor: float
  rounds: int
  stop: str
  design: Design


def race(cands, s, energy, score, settings, rng) -> Race:
  """One class's race over its N images: s (K, N) the screen per image; `score(index, images,
  name)` the exact loss increases (len(index), len(images)) of candidates `index` on the
  images (columns of s) `images`; `settings` has the `_Job`'s fields (tolerance, multiple,
  audit, strata, block, budget, floor, first_images, lean, z, threshold)."""
  k_all, num = s.shape
  stratum = strata(energy, settings.strata)
  dsg = design(s, settings.first_images, settings.lean, rng)
  s = s[:, dsg.order]
  levels = dsg.levels
  d = np.zeros((k_all, num), np.float64)  # per-image loss increases, on each one's prefix
  n = np.zeros(k_all, np.int64)
  rounds = 0

  def advance(index):
    """Scores each of `index` on the images of its next level (one call per level)."""
    now = n[index].copy()
    for lo in np.unique(now):
      group = np.sort(index[now == lo])
      hi = int(levels[np.searchsorted(levels, lo, side="right")])
      d[group, lo:hi] = score(group, dsg.order[lo:hi], f"auto{rounds}_{lo}-{hi}")
      n[group] = hi

  advance(_first(cands, s.sum(1), stratum, settings, rng))
  splits = _splits(num, 32, rng) if settings.floor else None
  n_dfm = base.dfm_candidate_count(cands, np.argsort(-s.sum(1), kind="stable"), settings.threshold)
  quota = max(1.0, settings.block * n_dfm * num)
  cap = max(1.0, settings.budget * k_all * num)
  floor = 0.0
  while True:
    bd = bound(cands, d, n, s, energy, stratum, settings.threshold, settings.z, dsg)
    if settings.floor:
      floor = split_half_floor(cands, d, n, bd.est, settings.threshold, splits, dsg)
    stop = _stop(settings, bd.value, floor, n, num, cap)
    if stop:
      return Race(n, bd, floor, rounds, stop, dsg)
    rounds += 1
    advance(_next(bd, n, levels, quota, cap - n.sum()))


def _next(bd: Bound, n, levels, quota: float, left: float) -> np.ndarray:
  """The candidates to score further this round: largest share of the bound per image it
  costs, until `quota` images (at most `left`)."""
  full = n >= levels[-1]
  cost = levels[np.minimum(np.searchsorted(levels, n, side="right"), len(levels) - 1)] - n
  cost = np.maximum(cost, 1).astype(np.float64)
  priority = np.where(full, 0.0, bd.contribution / cost)
  pick = np.nonzero(priority > 0)[0]
  if pick.size == 0:  # only exact ones hold the bound up: widen by upper bound
    pick = np.nonzero(~full)[0]
    priority = np.where(full, -np.inf, bd.upper - bd.boundary)
  pick = pick[np.argsort(-priority[pick], kind="stable")]
  total = np.cumsum(cost[pick])
  take = max(1, int(np.searchsorted(total, min(quota, left))) + 1)
  return pick[:take]


def _splits(num: int, count: int, rng) -> np.ndarray:
  """(count, num) ±1: random halvings of the class's images (the floor's)."""
  out = np.ones((count, num))
  for row in out:
    row[rng.permutation(num)[: num // 2]] = -1.0
  return out


def _score(job: _Job, c, images_idx, index, name) -> np.ndarray:
  """Per-image cross-entropies (len(index), len(images_idx)) of class c's images `images_idx`
  with each candidate of `index` removed (kept in the store)."""
  store = base.chunk_store(
      job.store_root, f"{name}_class{c:04d}", [index.tolist(), images_idx.tolist()]
  )
  labels = np.full(images_idx.size, c, np.int32)
  got = base.exact_scores(
      job.per_image, job.images[images_idx], labels, c, index, store, job.class_names
  )
  return got.astype(np.float64)


def _exhaustive_class(job: _Job, c, idx, outputs: int) -> _Class:
  """Tolerance 0: every candidate on every image in one engine call (the exhaustive ranking's
  program and order, so its arrays equal it bit for bit)."""
  k_all = len(job.engine.cands)
  store = base.chunk_store(job.store_root, f"auto0_class{c:04d}", ["all"])
  scores = base.exact_scores(
      job.engine, job.images, job.labels, c, np.arange(k_all), store, job.class_names
  )
  zero = np.zeros(k_all, np.float32)
  return _Class(
      scores,
      np.ones(k_all, bool),
      scores.copy(),
      zero,
      zero,
      scores.copy(),
      np.full(k_all, idx.size),
      0.0,
      0.0,
      0.0,
      0,
      "all scored",
      float(k_all * idx.size),
  )


def _screen(job: _Job, c, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Class c's screen on its images `idx` (kept in the store): per image ĝ (K, N) and the
  unfiltered cross-entropy (N,)."""
  got = base.saved(
      job.store_root,
      f"screen_class{c:04d}",
      lambda: job.screen(job.images[idx], np.full(idx.size, c, np.int32)),
      (idx.size, len(job.engine.cands) + 1),
  )
  got = np.asarray(got, np.float64)
  return got[:, :-1].T, got[:, -1]


def _stop(settings, value: float, floor: float, n, num: int, cap: float) -> str:
  """Why the rounds end now ('' while they go on)."""
  if (n >= num).all():
    return "all scored"
  if value <= settings.tolerance:
    return "bound"
  if settings.floor and value <= floor:
    return "floor"
  return "budget" if n.sum() >= cap else ""


def _first(cands, screen: np.ndarray, stratum: np.ndarray, settings, rng) -> np.ndarray:
  """The first candidates raced: the screen's top `multiple` × the DFM's, every candidate of
  the highest-energy strata that together hold at most `dense` of the candidates (where
  first order fails on photos: a few images' exact losses cost little beside a missed
  shortcut), and `audit` drawn at random from each other stratum."""
  order = np.argsort(-screen, kind="stable")
  n0 = base.dfm_candidate_count(cands, order, settings.threshold)
  top = order[: min(len(order), math.ceil(settings.multiple * n0))]
  chosen = [top]
  outside = np.ones(len(cands), bool)
  outside[top] = False
  counts = np.cumsum(np.bincount(stratum, minlength=settings.strata))
  for h in range(settings.strata):
    pool = np.nonzero(outside & (stratum == h))[0]
    if counts[h] <= settings.dense * len(cands):
      chosen.append(pool)
    elif pool.size:
      chosen.append(rng.choice(pool, size=min(settings.audit, pool.size), replace=False))
  return np.unique(np.concatenate(chosen))


def _warn_budget(job: _Job, c, value: float, scored: int, total: int) -> None:
  name = job.class_names[c] if job.class_names is not None else c
  logging.warning(
      "auto search, class %r: the missed-mass bound is %.3f, above the tolerance %.3f, after "
      "%d of %d candidate-images (analysis.auto.budget=%s); its DFM is kept with that bound. "
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
          "images_scored": np.stack([r.images for r in per_class]).astype(np.int32),
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
          "raced_per_class": [int((r.images > 0).sum()) for r in per_class],
          "forwards_per_class": [r.forwards for r in per_class],
          "images_per_class": [int(r.images.max()) for r in per_class],
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
      first_images=int(s["first_images"]),
      z=float(s["z"]),
      lean=float(s["lean"]),
      dense=float(s["dense"]),
      threshold=float(a.threshold),
      seed=int(r.config.seed),
      batch=max(8, int(a.batch_size) // 8),
      store_root=r.store_root,
      class_names=r.class_names,
  )
