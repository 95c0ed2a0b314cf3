"""DFM search methods: the exhaustive ranking and two that score far fewer candidates.

Every method returns per class a score for every candidate of the final candidate set (the
analysis patch size), the same `scores` map the exhaustive ranking gives, and a `dfm_key`
map whose top fraction is the method's DFM. Cells a method scored exactly always rank above
those it only estimated, so a DFM no larger than the exactly scored part comes from exact
scores alone.

- `exhaustive`: every candidate, exactly (the reference; `dfm.Engine.rank`).
- `screened`: a first-order screen of every candidate from one forward and backward pass per
  image, then exact scores (the engine) for the `multiple` × DFM-size candidates the screen
  ranks highest plus a random `audit` sample of the rest. With s the per-cell scale of the
  spectrum (s = 1: the image as it is), removing candidate k sets s = 0 on its cells, so to
  first order the change of a target B is −Σ_{cells of k} ∂B/∂s. The target is `ce` (the
  class's summed cross-entropy: the exact score's own quantity, but nearly flat for confidently
  classified images), `logit` (minus the true class's logit) or `margin` (minus the true
  logit's lead over the best other logit). With `steps` > 1 the gradient is averaged over s =
  (j + ½)/steps, j < steps (integrated gradients from the empty spectrum). The audit counts how
  many audited candidates score at least the DFM's lowest exact score; scaled to the
  never-scored rest, that estimates how many true DFM candidates the screen missed.
- `coarse_to_fine`: exact scores of every candidate at the coarsest patch size, then at each
  finer level only of the candidates overlapping the best patches of the level before (those
  covering `multiple` × the DFM's cells). A cell takes the score of the finest candidate
  scored on it; cells never refined keep their patch's score in `scores` and rank below every
  refined cell in `dfm_key`.

All exact scores come from `dfm.Engine` (sharded, chunked, resumable through the store
directory); the screen's gradients and each level's choice of candidates are saved there too,
so a run killed at any point resumes to identical results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import artifacts, errors, parallel
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib, fft, masks as masks_lib

METHODS = ("exhaustive", "screened", "coarse_to_fine", "hfss")
SCREEN_TARGETS = ("linear", "ce", "logit", "margin")
# Bumped when a method's algorithm changes, so its cached results are recomputed.
VERSIONS = {"screened": 5, "coarse_to_fine": 4}


@dataclasses.dataclass
class Result:
  """A search's output for C classes over the K candidates of `cands`."""

  cands: cand_lib.CandidateSet
  candidate_scores: np.ndarray  # (C, K): exact scores, estimates where `exact` is False
  exact: np.ndarray  # (C, K) bool
  dfm_key: np.ndarray  # (C, K): ranks candidates for the DFM (exact ones above the rest)
  forwards: float  # forward-equivalents (a backward pass counts as two forwards)
  seconds: float
  extra: dict  # method-specific arrays
  info: dict  # method-specific metadata
  hfss: tuple | None = None  # HFSS's own (arrays, meta): the 'hfss' artifact

  def arrays(self) -> dict:
    return {
        "scores": dfm_lib.score_maps(self.cands, self.candidate_scores),
        "dfm_key": dfm_lib.score_maps(self.cands, self.dfm_key),
        "candidate_scores": self.candidate_scores,
        "candidate_exact": self.exact,
        "candidate_rects": self.cands.rects,
        **self.extra,
    }


# ------------------------------------------------------------------------ validation ----


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def default_levels(size: int, patch: int) -> tuple[int, ...]:
  """Coarse-to-fine patch sizes: patch·2^j up to 8 (at most a quarter of the image)."""
  levels = [patch]
  while levels[-1] * 2 <= min(8, size // 4) and size % (levels[-1] * 2) == 0:
    levels.append(levels[-1] * 2)
  return tuple(reversed(levels))


def levels_of(config) -> tuple[int, ...]:
  lv = config.analysis.coarse_to_fine.levels
  size, patch = int(config.data.image_size), int(config.analysis.patch_size)
  return default_levels(size, patch) if lv is None else tuple(int(x) for x in lv)


def validate(config) -> None:
  """One line naming the field and the fix, before any forward pass."""
  a = config.analysis
  size, patch = int(config.data.image_size), int(a.patch_size)

  def fail(msg):
    raise errors.ConfigError(msg)

  if a.search not in METHODS:
    fail(f"config.analysis.search={a.search!r} is not a search method; use one of {METHODS}.")
  s = a.screen
  if s.target not in SCREEN_TARGETS:
    fail(f"config.analysis.screen.target={s.target!r}; use one of {SCREEN_TARGETS}.")
  if not (math.isfinite(s.multiple) and s.multiple > 0):
    fail(
        f"config.analysis.screen.multiple={s.multiple} must be positive (the candidates scored "
        "exactly, as a multiple of the DFM's; e.g. 1.5)."
    )
  if not (math.isfinite(s.extend) and s.extend >= 0):
    fail(f"config.analysis.screen.extend={s.extend} must be >= 0 (0: no further blocks; 0.25).")
  if not (math.isfinite(s.max_multiple) and s.max_multiple >= s.multiple):
    fail(
        f"config.analysis.screen.max_multiple={s.max_multiple} must be at least "
        f"screen.multiple={s.multiple} (the exactly scored candidates' cap, e.g. 3)."
    )
  if int(s.audit) != s.audit or s.audit < 1:
    fail(f"config.analysis.screen.audit={s.audit} must be a positive whole number (e.g. 8).")
  if int(s.steps) != s.steps or s.steps < 1:
    fail(f"config.analysis.screen.steps={s.steps} must be a positive whole number (1: gradient).")
  from freqjax.spectral import hfss  # pylint: disable=g-import-not-at-top

  hfss.validate(a.hfss, size, prefix="config.analysis.hfss")
  c = a.coarse_to_fine
  if not (math.isfinite(c.multiple) and c.multiple > 0):
    fail(f"config.analysis.coarse_to_fine.multiple={c.multiple} must be positive (e.g. 2).")
  levels = levels_of(config)
  ok = [d for d in divisors(size) if d % patch == 0]
  bad = [p for p in levels if p < 1 or size % p or p % patch]
  order_bad = any(
      levels[i] % levels[i + 1] or levels[i] <= levels[i + 1] for i in range(len(levels) - 1)
  )
  if not levels or bad or order_bad or levels[-1] != patch:
    fail(
        f"config.analysis.coarse_to_fine.levels={levels} must be decreasing patch sizes, each "
        f"dividing the one before and the image size {size}, ending at analysis.patch_size="
        f"{patch}; valid sizes: {', '.join(map(str, ok))} (e.g. {default_levels(size, patch)})."
    )


# --------------------------------------------------------------------------- helpers ----


def _cells_written(cands: cand_lib.CandidateSet) -> np.ndarray:
  """(K,) how many score-map cells each candidate's score is written to."""
  n = np.zeros(len(cands), np.int64)
  for k, _, _ in cands.writes:
    n[k] += cands.patch**2
  return n


def dfm_candidate_count(cands: cand_lib.CandidateSet, order: np.ndarray, threshold: float) -> int:
  """How many candidates, taken in `order`, cover a DFM of `threshold` of the cells."""
  need = int(threshold * cands.size**2)
  covered = np.cumsum(_cells_written(cands)[order])
  return int(min(len(order), np.searchsorted(covered, need) + 1))


def settings_key(parts) -> str:
  """A short hash of JSON-able settings (names stores and cached results)."""
  return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _store(root: str | None, name: str, parts) -> dfm_lib.ChunkStore | None:
  if root is None:
    return None
  return dfm_lib.ChunkStore(os.path.join(root, name), {"fingerprint": settings_key(parts)})


def _saved(root: str | None, name: str, compute, shape: tuple):
  """An array of `shape` computed once and kept in the store (a resumed search reuses it)."""
  if root is None:
    return compute()
  path = os.path.join(root, name + ".npy")
  if os.path.exists(path):
    try:
      a = np.load(path, allow_pickle=False)
      if a.shape == tuple(shape):
        return a
    except Exception:  # pylint: disable=broad-except
      pass
  value = np.asarray(compute())
  if parallel.is_main_process():
    os.makedirs(root, exist_ok=True)
    artifacts.save_npy(path, value)
  return value


def ranking_key(scores, exact, secondary) -> np.ndarray:
  """The DFM's ranking: exact scores as they are, every other candidate below the lowest of
  them, in the order of `secondary` (higher first)."""
  key = np.asarray(scores, np.float32).copy()
  rest = ~exact
  if not rest.any():
    return key
  lowest = float(key[exact].min()) if exact.any() else 0.0
  span = max(float(key[exact].max()) - lowest, 1.0) if exact.any() else 1.0
  rank = np.argsort(np.argsort(-np.asarray(secondary)[rest], kind="stable"), kind="stable")
  key[rest] = lowest - span * (1.0 + rank / rest.sum())
  return key


def _exact(engine, images, labels, c, index, store, class_names) -> np.ndarray:
  """Exact scores of class c for the candidates `index` of the engine's set."""
  if len(index) == 0:
    return np.zeros(0, np.float32)
  group = engine.class_groups(images, labels, [c], class_names)
  sub = engine.cands.subset(np.asarray(index))
  return engine.evaluate(group, images.shape[1:], store=store, cands=sub)[0]


# ---------------------------------------------------------------------- exhaustive ----


def exhaustive(engine, images, labels, class_indices, *, store=None, class_names=None) -> Result:
  t0 = time.time()
  raw = engine.rank(images, labels, class_indices, store=store, class_names=class_names)
  counts = np.array([np.sum(labels == c) for c in class_indices])
  return Result(
      engine.cands,
      raw,
      np.ones_like(raw, bool),
      raw,
      float(counts.sum() * len(engine.cands)),
      time.time() - t0,
      {},
      {"rate_candidate_images_per_s": engine.last_rate, "engine_tuning": engine.tuning},
  )


# ------------------------------------------------------------------------ screened ----


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


def _screen_first_order(engine, images, idx, c, cands, target, steps, batch, store_root):
  grad = _saved(
      store_root,
      f"screen_class{c:04d}",
      lambda: screen_gradients(
          engine.apply_fn,
          engine.variables,
          engine.mesh,
          images[idx],
          np.full(idx.size, c, np.int32),
          target,
          steps,
          batch,
      ),
      (cands.size, cands.size),
  )
  return first_order_scores(cands, grad)


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
) -> Result:
  t0 = time.time()
  cands = engine.cands
  k_total = len(cands)
  scores, exact, keys = [], [], []
  screens, verified_n, audit_hits, audit_n, missed = [], [], [], [], []
  forwards = 0.0
  num_logits = int(jax.eval_shape(engine.apply_fn, engine.variables, images[:1]).shape[-1])
  for c in class_indices:
    idx = np.nonzero(labels == c)[0]
    if target == "linear":
      est = _saved(
          store_root,
          f"screen_class{c:04d}",
          lambda idx=idx, c=c: linearised_scores(
              engine.apply_fn,
              engine.variables,
              engine.mesh,
              images[idx],
              np.full(idx.size, c, np.int32),
              cands,
              max(8, batch // num_logits),  # num_logits images' backward passes at once
          ),
          (k_total,),
      )
      forwards += (1.0 + 2.0 * num_logits) * idx.size  # a forward, a backward per logit
    else:
      est = _screen_first_order(engine, images, idx, c, cands, target, steps, batch, store_root)
      forwards += 3.0 * steps * idx.size  # forward + backward (two forwards) per step
    # The gradient targets' first-order estimates are taken by magnitude: removing a whole
    # frequency is no small step, and they misjudge the sign of large effects (measured on
    # Syn-1: two of C2's top-7 exhaustive candidates had the most negative CE estimates).
    # The linearised screen already includes the softmax's nonlinearity: by its sign.
    rank_by = est if target == "linear" else np.abs(est)
    order = np.argsort(-rank_by, kind="stable")
    n0 = dfm_candidate_count(cands, order, threshold)
    s = np.full(k_total, np.nan, np.float32)

    def score(index, name, c=c, s=s):
      index = np.sort(index)
      got = _exact(
          engine,
          images,
          labels,
          c,
          index,
          _store(store_root, f"{name}_class{c:04d}", [index.tolist()]),
          class_names,
      )
      s[index] = got
      return got

    pos = min(k_total, math.ceil(multiple * n0))
    rng = np.random.default_rng([seed, int(c)])
    if extend <= 0:  # the audit is known now: one engine call with the best
      aud = np.sort(rng.choice(order[pos:], size=min(int(audit), k_total - pos), replace=False))
      score(np.concatenate([order[:pos], aud]), "exact")
    else:
      score(order[:pos], "exact")
    # Further blocks in the screen's order while each brings a candidate into the DFM.
    block, cap, rounds = max(1, math.ceil(extend * n0)), math.ceil(max_multiple * n0), 0
    while extend > 0 and pos < min(k_total, cap):
      scored = np.nonzero(~np.isnan(s))[0]
      ranked = scored[np.argsort(-s[scored], kind="stable")]
      cutoff = s[ranked[min(dfm_candidate_count(cands, ranked, threshold), ranked.size) - 1]]
      blk = order[pos : min(pos + block, cap, k_total)]
      got_blk = score(blk, f"extend{rounds}")
      pos, rounds = pos + blk.size, rounds + 1
      if not np.any(got_blk > cutoff):
        break
    top = np.sort(order[:pos])
    rest = np.sort(order[pos:])
    if extend > 0:
      aud = np.sort(rng.choice(rest, size=min(int(audit), rest.size), replace=False))
      if aud.size:
        score(aud, "audit")
    chosen = np.concatenate([top, aud])
    got = s[chosen]
    forwards += float(chosen.size * idx.size)
    is_exact = np.zeros(k_total, bool)
    is_exact[chosen] = True
    # The rest: the screen's estimate, calibrated on the exactly scored candidates by least
    # squares, and kept below every exact score (the DFM comes from exact scores).
    a, b = np.polyfit(est[chosen], got, 1) if chosen.size > 1 else (0.0, float(got.mean()))
    lowest = float(got.min())
    unscored = ~is_exact
    s[unscored] = np.minimum(a * est[unscored] + b, lowest)
    key = ranking_key(s, is_exact, rank_by)
    # Audit: audited candidates at or above the DFM's lowest exact score, scaled to the rest.
    n_dfm = dfm_candidate_count(cands, np.argsort(-key, kind="stable"), threshold)
    cutoff = np.sort(got)[::-1][min(n_dfm, got.size) - 1]
    hits = int(np.sum(s[aud] > cutoff))
    never = rest.size - aud.size
    scores.append(s)
    exact.append(is_exact)
    keys.append(key)
    screens.append(est)
    verified_n.append(int(top.size))
    audit_hits.append(hits)
    audit_n.append(int(aud.size))
    missed.append(hits / max(aud.size, 1) * never)
  return Result(
      cands,
      np.stack(scores),
      np.stack(exact),
      np.stack(keys),
      forwards,
      time.time() - t0,
      {
          "screen_scores": np.stack(screens),
          "audit_hits": np.array(audit_hits),
          "estimated_missed": np.array(missed, np.float32),
      },
      {
          "target": target,
          "multiple": float(multiple),
          "steps": int(steps),
          "threshold": float(threshold),
          "extend": float(extend),
          "max_multiple": float(max_multiple),
          "verified_per_class": verified_n,
          "audit_per_class": audit_n,
          "audit_hits_per_class": audit_hits,
          # Expected number of candidates of the true DFM (at `threshold`) that were never
          # scored exactly: audit hit rate × never-scored candidates.
          "estimated_missed_per_class": [float(x) for x in missed],
      },
  )


# ------------------------------------------------------------------ coarse to fine ----


def coarse_to_fine(
    make_engine,
    images,
    labels,
    class_indices,
    levels,
    *,
    multiple: float = 2.0,
    threshold: float = 0.05,
    store_root: str | None = None,
    class_names=None,
) -> Result:
  """`make_engine(cands)` builds an engine for one level's candidate set (patch sizes
  `levels`, coarse to fine; the last is the final candidate set)."""
  t0 = time.time()
  size = images.shape[1]
  need = multiple * threshold * size**2
  engines = [make_engine(cand_lib.paired(size, p)) for p in levels]
  final = engines[-1].cands
  scores, exact, keys, level_maps, evaluated = [], [], [], [], []
  forwards = 0.0
  for c in class_indices:
    n_img = int(np.sum(labels == c))
    cell_score = np.zeros((size, size), np.float32)
    cell_level = np.full((size, size), -1, np.int32)
    region = np.ones((size, size), bool)  # where the next level's candidates may be
    counts = []
    for li, (p, engine) in enumerate(zip(levels, engines)):
      cs = engine.cands
      own = cs.written_masks()
      index = np.nonzero((own & region).reshape(len(cs), -1).any(1))[0]
      got = _exact(
          engine,
          images,
          labels,
          c,
          index,
          _store(store_root, f"p{p}_class{c:04d}", [p, index.tolist()]),
          class_names,
      )
      forwards += float(index.size * n_img)
      counts.append(int(index.size))
      # Each scored candidate's score goes to the cells it writes (as the score map; a
      # paired set writes every cell once).
      for k, v in zip(index, got):
        cell_score[own[k]], cell_level[own[k]] = v, li
      if li == len(levels) - 1:
        break
      # The best candidates of this level are refined at the next, until they and their
      # conjugate partners cover `multiple` × the DFM's cells. A candidate whose cells are
      # mostly partners of those already chosen adds nothing (its removal is the same up to
      # the grid's offset) and is skipped; the final paired candidates score both cells.
      order = index[np.argsort(-got, kind="stable")]
      region = np.zeros((size, size), bool)
      covered = np.zeros((size, size), bool)
      for k in order:
        if (own[k] & covered).sum() * 2 > own[k].sum():
          continue
        region |= own[k]
        covered |= own[k] | masks_lib.conjugate(own[k])
        if covered.sum() >= need:
          break
    # Final candidates: exact where scored at the last level, else their cells' score.
    fin = np.full(len(final), np.nan, np.float32)
    fin[index] = got
    is_exact = ~np.isnan(fin)
    fmasks = final.removal_masks()
    for k in np.nonzero(~is_exact)[0]:
      fin[k] = cell_score[fmasks[k]].max()
    lvl = np.array([cell_level[fmasks[k]].max() for k in range(len(final))])
    # DFM key: exact scores first, then the finest level reached, then the patch's score.
    secondary = np.empty(len(final), np.float64)
    secondary[np.lexsort((fin, lvl))] = np.arange(len(final))
    key = ranking_key(fin, is_exact, secondary)
    scores.append(fin)
    exact.append(is_exact)
    keys.append(key)
    level_maps.append(np.where(cell_level >= 0, np.asarray(levels)[cell_level], 0))
    evaluated.append(counts)
  return Result(
      final,
      np.stack(scores),
      np.stack(exact),
      np.stack(keys),
      forwards,
      time.time() - t0,
      {"level_patch": np.stack(level_maps).astype(np.int32)},
      {
          "levels": [int(p) for p in levels],
          "multiple": float(multiple),
          "threshold": float(threshold),
          "evaluated_per_class_and_level": evaluated,
      },
  )


# -------------------------------------------------------------------------- dispatch ----


def settings(config, method: str | None = None) -> dict:
  """What a method's result depends on besides the model and data (for fingerprints)."""
  a = config.analysis
  method = method or a.search
  out = {"method": method}
  if method in VERSIONS:
    out["version"] = VERSIONS[method]
  if method == "screened":
    out.update(a.screen.to_dict(), threshold=float(a.threshold), seed=int(config.seed))
  elif method == "hfss":
    out.update(a.hfss.to_dict())
  elif method == "coarse_to_fine":
    out.update(
        levels=list(levels_of(config)),
        multiple=float(a.coarse_to_fine.multiple),
        threshold=float(a.threshold),
    )
  return out


def run(
    config,
    apply_fn,
    variables,
    mesh,
    images: np.ndarray,
    labels: np.ndarray,
    class_names,
    *,
    method: str | None = None,
    store_root: str | None = None,
    progress: bool = False,
    overrides: dict | None = None,
) -> Result:
  """Runs `method` (default config.analysis.search) for every class; `overrides` replace
  the method's settings (e.g. {'target': 'ce'} for the screen). Partial results are kept
  under `store_root` (the exhaustive ranking's chunks directly in it)."""
  a = config.analysis
  method = method or a.search
  size = int(config.data.image_size)
  cands = cand_lib.make(size, int(a.patch_size), a.candidates)
  classes = range(len(class_names))
  labels = np.asarray(labels)

  def make_engine(cs):
    return dfm_lib.Engine(
        apply_fn,
        variables,
        mesh,
        cs,
        memory_budget_mb=a.memory_budget_mb,
        progress=progress,
    )

  o = dict(overrides or {})
  if method == "exhaustive":
    store = None
    if store_root is not None:
      store = dfm_lib.ChunkStore(store_root, {"fingerprint": os.path.basename(store_root)})
    return exhaustive(
        make_engine(cands), images, labels, classes, store=store, class_names=class_names
    )
  if method == "screened":
    s = dict(a.screen.to_dict(), **o)
    return screened(
        make_engine(cands),
        images,
        labels,
        classes,
        target=s["target"],
        multiple=float(s["multiple"]),
        audit=int(s["audit"]),
        steps=int(s["steps"]),
        extend=float(s["extend"]),
        max_multiple=float(s["max_multiple"]),
        threshold=float(a.threshold),
        seed=int(config.seed),
        batch=int(a.batch_size),
        store_root=store_root,
        class_names=class_names,
    )
  if method == "coarse_to_fine":
    if a.candidates != "paired":
      raise errors.ConfigError(
          "config.analysis.search='coarse_to_fine' refines paired candidates; use "
          "--config.analysis.candidates=paired."
      )
    c = dict(a.coarse_to_fine.to_dict(), **o)
    levels = tuple(c["levels"]) if c.get("levels") else levels_of(config)
    return coarse_to_fine(
        make_engine,
        images,
        labels,
        classes,
        levels,
        multiple=float(c["multiple"]),
        threshold=float(a.threshold),
        store_root=store_root,
        class_names=class_names,
    )
  if method == "hfss":
    from freqjax.spectral import hfss  # pylint: disable=g-import-not-at-top

    t0 = time.time()
    params = dict(a.hfss.to_dict(), **o)
    arrays, meta = hfss.search(
        apply_fn,
        variables,
        mesh,
        images,
        labels,
        len(class_names),
        params,
        store_dir=store_root,
        progress=progress,
    )
    # Per candidate: the mean of HFSS's score map over its cells (no removal is scored).
    m = cands.removal_masks().reshape(len(cands), -1).astype(np.float32)
    per = (arrays["scores"].reshape(len(class_names), -1) @ m.T / m.sum(1)).astype(np.float32)
    return Result(
        cands,
        per,
        np.zeros(per.shape, bool),
        per,
        float(arrays["forwards"]),
        time.time() - t0,
        {},
        {"hfss_grids": meta.get("grids")},
        hfss=(arrays, meta),
    )
  raise errors.ConfigError(f"config.analysis.search={method!r}; use one of {METHODS}.")
