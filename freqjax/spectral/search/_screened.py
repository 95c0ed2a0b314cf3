"""The screened search: a cheap screen of every candidate, exact scores for the best.

A first-order screen of every candidate from one forward and backward pass per image, then
exact scores (the engine) for the `multiple` × DFM-size candidates the screen ranks highest
plus a random `audit` sample of the rest. With s the per-cell scale of the spectrum (s = 1:
the image as it is), removing candidate k sets s = 0 on its cells, so to first order the
change of a target B is −Σ_{cells of k} ∂B/∂s. The target is `linear` (the cross-entropy of
the logits changed to first order: `linearised_scores`), `ce` (the class's summed
cross-entropy: the exact score's own quantity, but nearly flat for confidently classified
images), `logit` (minus the true class's logit) or `margin` (minus the true logit's lead over
the best other logit). With `steps` > 1 the gradient is averaged over s = (j + ½)/steps,
j < steps (integrated gradients from the empty spectrum). With `extend` > 0 further blocks of
the screen's order are scored while each brings a candidate into the DFM (up to
`max_multiple` × the DFM's size). The audit counts how many audited candidates score at least
the DFM's lowest exact score; scaled to the never-scored rest, that estimates how many true
DFM candidates the screen missed. The screen's result per class is saved in the store, so a
resumed search reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import parallel
from freqjax.spectral import candidates as cand_lib, fft
from freqjax.spectral.search import base

# ------------------------------------------------------------------------- screens ----


def target_values(logits, labels, target: str):
  """Per image, the quantity whose increase the screen estimates (higher = worse)."""
  logits = logits.astype(jnp.float32)
  if target == "ce":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  true = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  if target == "logit":
    return -true
  other = jnp.max(jnp.where(jax.nn.one_hot(labels, logits.shape[-1]) > 0, -jnp.inf, logits), -1)
  return other - true


def screen_gradients(
    apply_fn, variables, mesh, images, labels, target: str, steps: int = 1, batch: int = 256
) -> np.ndarray:
  """∂B/∂s per cell (S, S), summed over the images: s scales the centred spectrum per cell
  (one mask for every channel, as the DFMs'), B = `target_values`. Images are split over the
  devices; each device's program is independent (per-image gradients, summed on the host)."""
  size = images.shape[1]
  ts = [1.0] if steps == 1 else [(j + 0.5) / steps for j in range(steps)]

  def per_image(variables, spectrum, label, t):
    def b(s):
      x = fft.filter_spectrum(spectrum[None], s)
      return target_values(apply_fn(variables, x), label[None], target)[0]

    return jax.grad(b)(jnp.full((size, size), t, jnp.float32))

  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  f = jax.jit(
      jax.vmap(per_image, in_axes=(None, 0, 0, None)),
      in_shardings=(repl, data, data, repl),
      out_shardings=data,
  )
  spec = jax.jit(fft.centred_spectrum)
  variables = parallel.replicate(mesh, variables)
  total = np.zeros((size, size), np.float64)
  for t in ts:
    for part, n in parallel.padded_batches({"x": images, "y": labels}, batch, mesh):
      g = parallel.to_host(f(variables, spec(jnp.asarray(part["x"])), jnp.asarray(part["y"]), t))
      total += g[:n].astype(np.float64).sum(0)
  return (total / len(ts)).astype(np.float32)


def linearised_scores(
    apply_fn, variables, mesh, images, labels, cands: cand_lib.CandidateSet, batch: int = 256
) -> np.ndarray:
  """(K,) the summed cross-entropy increase when each candidate is removed, with the logits
  changed to first order: z → z − Σ_{cells of k} ∂z/∂s, then the exact cross-entropy of the
  changed logits. The softmax's saturation, which makes the cross-entropy's own gradient
  vanish for confidently classified images, is computed exactly; only the network is
  linearised. One forward and one backward pass per class and image."""
  size = images.shape[1]
  masks = jnp.asarray(cands.removal_masks().reshape(len(cands), -1), jnp.float32)

  def per_image(variables, m, spectrum, label):
    def z(s):
      return apply_fn(variables, fft.filter_spectrum(spectrum[None], s))[0].astype(jnp.float32)

    ones = jnp.ones((size, size), jnp.float32)
    z0 = z(ones)
    jac = jax.jacrev(z)(ones).reshape(z0.shape[0], -1)  # (C, S·S)
    zk = z0[None] - m @ jac.T  # (K, C): logits with each candidate removed, to first order
    ce = lambda v: jax.nn.logsumexp(v, -1) - v[..., label]
    return ce(zk) - ce(z0)

  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  f = jax.jit(
      jax.vmap(per_image, in_axes=(None, None, 0, 0)),
      in_shardings=(repl, repl, data, data),
      out_shardings=data,
  )
  spec = jax.jit(fft.centred_spectrum)
  variables = parallel.replicate(mesh, variables)
  masks = parallel.replicate(mesh, masks)
  total = np.zeros(len(cands), np.float64)
  for part, n in parallel.padded_batches({"x": images, "y": labels}, batch, mesh):
    x, y = jnp.asarray(part["x"]), jnp.asarray(part["y"])
    total += parallel.to_host(f(variables, masks, spec(x), y))[:n].astype(np.float64).sum(0)
  return total.astype(np.float32)


def first_order_scores(cands: cand_lib.CandidateSet, grad: np.ndarray) -> np.ndarray:
  """(K,) estimated increase of B when each candidate is removed: −Σ over its cells of ∂B/∂s."""
  masks = cands.removal_masks().reshape(len(cands), -1).astype(np.float32)
  return -(masks @ grad.reshape(-1).astype(np.float32))


# ------------------------------------------------------------------------ the search ----


@dataclasses.dataclass(frozen=True)
class _Job:
  """One screened search's inputs and settings, shared by its steps."""

  engine: Any
  images: np.ndarray
  labels: np.ndarray
  target: str
  multiple: float
  audit: int
  steps: int
  extend: float
  max_multiple: float
  threshold: float
  seed: int
  batch: int
  store_root: str | None
  class_names: Any


@dataclasses.dataclass
class _Class:
  """One class's screened search."""

  scores: np.ndarray  # (K,) exact scores, calibrated estimates for the rest
  exact: np.ndarray  # (K,) bool
  key: np.ndarray  # (K,) the DFM ranking
  screen: np.ndarray  # (K,) the screen's estimates
  verified: int  # candidates scored exactly in the screen's order
  audited: int
  audit_hits: int
  missed: float  # estimated true DFM candidates never scored exactly
  forwards: float


def screened(
    engine,
    images,
    labels,
    class_indices,
    *,
    target: str = "linear",
    multiple: float = 1.25,
    audit: int = 8,
    steps: int = 1,
    extend: float = 0.0,
    max_multiple: float = 3.0,
    threshold: float = 0.05,
    seed: int = 0,
    batch: int = 256,
    store_root: str | None = None,
    class_names=None,
) -> base.Result:
  """The screened search of each class of `class_indices` (see the module's docstring)."""
  t0 = time.time()
  job = _Job(
      engine,
      images,
      labels,
      target,
      multiple,
      audit,
      steps,
      extend,
      max_multiple,
      threshold,
      seed,
      batch,
      store_root,
      class_names,
  )
  num_logits = int(jax.eval_shape(engine.apply_fn, engine.variables, images[:1]).shape[-1])
  per_class = [_search_class(job, c, num_logits) for c in class_indices]
  return _result(job, per_class, time.time() - t0)


def _search_class(job: _Job, c, num_logits: int) -> _Class:
  """Screen, exact scores of the best and of the audit, estimates for the rest."""
  cands = job.engine.cands
  idx = np.nonzero(job.labels == c)[0]
  est, forwards = _screen(job, c, idx, num_logits)
  # The gradient targets' first-order estimates are taken by magnitude: removing a whole
  # frequency is no small step, and they misjudge the sign of large effects (measured on
  # Syn-1: two of C2's top-7 exhaustive candidates had the most negative CE estimates).
  # The linearised screen already includes the softmax's nonlinearity: by its sign.
  rank_by = est if job.target == "linear" else np.abs(est)
  order = np.argsort(-rank_by, kind="stable")
  s = np.full(len(cands), np.nan, np.float32)
  pos, aud = _verify(job, c, order, s)
  never = len(cands) - pos - aud.size
  chosen = np.concatenate([np.sort(order[:pos]), aud])
  is_exact = np.zeros(len(cands), bool)
  is_exact[chosen] = True
  # The rest: the screen's estimate, calibrated on the exactly scored candidates by least
  # squares, and kept below every exact score (the DFM comes from exact scores).
  got = s[chosen]
  a, b = np.polyfit(est[chosen], got, 1) if chosen.size > 1 else (0.0, float(got.mean()))
  s[~is_exact] = np.minimum(a * est[~is_exact] + b, float(got.min()))
  key = base.ranking_key(s, is_exact, rank_by)
  # Audit: audited candidates at or above the DFM's lowest exact score, scaled to the rest.
  n_dfm = base.dfm_candidate_count(cands, np.argsort(-key, kind="stable"), job.threshold)
  cutoff = np.sort(got)[::-1][min(n_dfm, got.size) - 1]
  hits = int(np.sum(s[aud] > cutoff))
  missed = hits / max(aud.size, 1) * never
  forwards += float(chosen.size * idx.size)
  return _Class(s, is_exact, key, est, int(pos), int(aud.size), hits, missed, forwards)


def _screen(job: _Job, c, idx: np.ndarray, num_logits: int) -> tuple[np.ndarray, float]:
  """Class c's screen estimates (kept in the store) and their forward-equivalents."""
  e, labels = job.engine, np.full(idx.size, c, np.int32)
  name, k_total, size = f"screen_class{c:04d}", len(e.cands), e.cands.size
  if job.target == "linear":
    batch = max(8, job.batch // num_logits)  # num_logits images' backward passes at once
    est = base.saved(
        job.store_root,
        name,
        lambda: linearised_scores(
            e.apply_fn, e.variables, e.mesh, job.images[idx], labels, e.cands, batch
        ),
        (k_total,),
    )
    return est, (1.0 + 2.0 * num_logits) * idx.size  # a forward, a backward per logit
  grad = base.saved(
      job.store_root,
      name,
      lambda: screen_gradients(
          e.apply_fn, e.variables, e.mesh, job.images[idx], labels, job.target, job.steps, job.batch
      ),
      (size, size),
  )
  # forward + backward (two forwards) per step
  return first_order_scores(e.cands, grad), 3.0 * job.steps * idx.size


def _score(job: _Job, c, s: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
  """Exact scores of class c for the candidates `index`, also written into `s`."""
  index = np.sort(index)
  store = base.chunk_store(job.store_root, f"{name}_class{c:04d}", [index.tolist()])
  got = base.exact_scores(job.engine, job.images, job.labels, c, index, store, job.class_names)
  s[index] = got
  return got


def _verify(job: _Job, c, order: np.ndarray, s: np.ndarray) -> tuple[int, np.ndarray]:
  """Scores exactly the first candidates of the screen's `order` (`multiple` × the DFM's,
  then further blocks with `extend`) and the audit sample of the rest, into `s`; returns how
  many of `order` were scored and the audit's (sorted) candidates."""
  k_total = len(job.engine.cands)
  n0 = base.dfm_candidate_count(job.engine.cands, order, job.threshold)
  pos = min(k_total, math.ceil(job.multiple * n0))
  rng = np.random.default_rng([job.seed, int(c)])
  score = functools.partial(_score, job, c, s)
  if job.extend <= 0:  # the audit is known now: one engine call with the best
    size = min(int(job.audit), k_total - pos)
    aud = np.sort(rng.choice(order[pos:], size=size, replace=False))
    score(np.concatenate([order[:pos], aud]), "exact")
    return pos, aud
  score(order[:pos], "exact")
  pos = _extend(job, order, s, pos, n0, score)
  rest = np.sort(order[pos:])
  aud = np.sort(rng.choice(rest, size=min(int(job.audit), rest.size), replace=False))
  if aud.size:
    score(aud, "audit")
  return pos, aud


def _extend(job: _Job, order: np.ndarray, s: np.ndarray, pos: int, n0: int, score) -> int:
  """Further blocks in the screen's order while each brings a candidate into the DFM;
  returns how many of `order` are scored then."""
  cands = job.engine.cands
  k_total = len(cands)
  block, cap, rounds = max(1, math.ceil(job.extend * n0)), math.ceil(job.max_multiple * n0), 0
  while pos < min(k_total, cap):
    scored = np.nonzero(~np.isnan(s))[0]
    ranked = scored[np.argsort(-s[scored], kind="stable")]
    cutoff = s[ranked[min(base.dfm_candidate_count(cands, ranked, job.threshold), ranked.size) - 1]]
    blk = order[pos : min(pos + block, cap, k_total)]
    got_blk = score(blk, f"extend{rounds}")
    pos, rounds = pos + blk.size, rounds + 1
    if not np.any(got_blk > cutoff):
      break
  return pos


def _result(job: _Job, per_class: list[_Class], seconds: float) -> base.Result:
  audit_hits = [r.audit_hits for r in per_class]
  missed = [r.missed for r in per_class]
  forwards = 0.0
  for r in per_class:
    forwards += r.forwards
  return base.Result(
      job.engine.cands,
      *base.stack(per_class),
      forwards,
      seconds,
      {
          "screen_scores": np.stack([r.screen for r in per_class]),
          "audit_hits": np.array(audit_hits),
          "estimated_missed": np.array(missed, np.float32),
      },
      {
          "target": job.target,
          "multiple": float(job.multiple),
          "steps": int(job.steps),
          "threshold": float(job.threshold),
          "extend": float(job.extend),
          "max_multiple": float(job.max_multiple),
          "verified_per_class": [r.verified for r in per_class],
          "audit_per_class": [r.audited for r in per_class],
          "audit_hits_per_class": audit_hits,
          # Expected number of candidates of the true DFM (at `threshold`) that were never
          # scored exactly: audit hit rate × never-scored candidates.
          "estimated_missed_per_class": [float(x) for x in missed],
      },
  )


@base.register("screened")
def run(r: base.Request, overrides: dict) -> base.Result:
  """The screened search of `r` by config.analysis.screen (with `overrides`)."""
  a = r.config.analysis
  s = dict(a.screen.to_dict(), **overrides)
  return screened(
      r.engine(r.cands),
      r.images,
      r.labels,
      r.classes,
      target=s["target"],
      multiple=float(s["multiple"]),
      audit=int(s["audit"]),
      steps=int(s["steps"]),
      extend=float(s["extend"]),
      max_multiple=float(s["max_multiple"]),
      threshold=float(a.threshold),
      seed=int(r.config.seed),
      batch=int(a.batch_size),
      store_root=r.store_root,
      class_names=r.class_names,
  )
