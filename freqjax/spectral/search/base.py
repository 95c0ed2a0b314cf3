"""The interface every DFM search method shares, and what more than one of them uses.

- `Result`: a method's output (per class a score for every final candidate, which of them
  were scored exactly, and the `dfm_key` whose top fraction is the DFM).
- `Request`: one search's inputs as `run` hands them to a method; `REGISTRY` maps a method's
  name to its entry `fn(request, overrides) -> Result` (each method module registers its own
  with `register`); `run` dispatches by `config.analysis.search`.
- `settings` (what a method's result depends on, for fingerprints; `VERSIONS`), `validate`
  (the config's search fields, before any forward pass) and the coarse-to-fine levels they
  both read.
- `ranking_key`, `exact_scores`, `chunk_store` and `settings_key`: the DFM ranking and the engine
  calls and store directories the methods score through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from freqjax import artifacts, errors, parallel
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib, hfss

METHODS = ("exhaustive", "auto", "screened", "coarse_to_fine", "hfss")
SCREEN_TARGETS = ("linear", "ce", "logit", "margin")
# Bumped when a method's algorithm changes, so its cached results are recomputed.
VERSIONS = {"auto": 7, "screened": 5, "coarse_to_fine": 4}


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


# ------------------------------------------------------------------------ registry ----


@dataclasses.dataclass
class Request:
  """One search's inputs: the model, the images of every class and where partial results
  are kept (`store_root`); `cands` is the final candidate set (the analysis patch size)."""

  config: Any
  apply_fn: Callable
  variables: Any
  mesh: Any
  images: np.ndarray
  labels: np.ndarray
  class_names: Any
  cands: cand_lib.CandidateSet
  store_root: str | None = None
  progress: bool = False

  @property
  def classes(self) -> range:
    return range(len(self.class_names))

  def engine(self, cands: cand_lib.CandidateSet) -> dfm_lib.Engine:
    """An exact-scoring engine for the candidate set `cands`."""
    return dfm_lib.Engine(
        self.apply_fn,
        self.variables,
        self.mesh,
        cands,
        memory_budget_mb=self.config.analysis.memory_budget_mb,
        progress=self.progress,
    )


REGISTRY: dict[str, Callable[[Request, dict], Result]] = {}


def register(name: str):
  """Decorator: `fn(request, overrides) -> Result` is the entry of method `name`."""

  def add(fn):
    REGISTRY[name] = fn
    return fn

  return add


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
  cands = cand_lib.make(int(config.data.image_size), int(a.patch_size), a.candidates)
  request = Request(
      config,
      apply_fn,
      variables,
      mesh,
      images,
      np.asarray(labels),
      class_names,
      cands,
      store_root=store_root,
      progress=progress,
  )
  if method not in REGISTRY:
    raise errors.ConfigError(f"config.analysis.search={method!r}; use one of {METHODS}.")
  return REGISTRY[method](request, dict(overrides or {}))


# ------------------------------------------------------------------------ settings ----


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


def settings(config, method: str | None = None) -> dict:
  """What a method's result depends on besides the model and data (for fingerprints)."""
  a = config.analysis
  method = method or a.search
  out = {"method": method}
  if method in VERSIONS:
    out["version"] = VERSIONS[method]
  if method == "auto":
    out.update(a.auto.to_dict(), threshold=float(a.threshold), seed=int(config.seed))
  elif method == "screened":
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


def settings_key(parts) -> str:
  """A short hash of JSON-able settings (names stores and cached results)."""
  return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fail(msg: str):
  raise errors.ConfigError(msg)


def validate(config) -> None:
  """One line naming the field and the fix, before any forward pass."""
  a = config.analysis
  if a.search not in METHODS:
    _fail(f"config.analysis.search={a.search!r} is not a search method; use one of {METHODS}.")
  _validate_auto(a.auto)
  _validate_screen(a.screen)
  hfss.validate(a.hfss, int(config.data.image_size), prefix="config.analysis.hfss")
  _validate_coarse_to_fine(config)


def _validate_auto(s) -> None:
  if not (math.isfinite(s.tolerance) and 0 < s.tolerance < 1):
    _fail(
        f"config.analysis.auto.tolerance={s.tolerance} must be in (0, 1): the fraction of the "
        "exhaustive DFM's score mass auto may miss (e.g. 0.05); for the exact ranking use "
        "--config.analysis.search=exhaustive."
    )
  if not (math.isfinite(s.budget) and 0 < s.budget <= 1):
    _fail(
        f"config.analysis.auto.budget={s.budget} must be in (0, 1]: the largest fraction of "
        "the exhaustive ranking's candidate-images auto scores (1: up to all of them)."
    )
  if not isinstance(s.floor, bool):
    _fail(f"config.analysis.auto.floor={s.floor!r} must be True or False.")
  if not (math.isfinite(s.z) and s.z > 0):
    _fail(f"config.analysis.auto.z={s.z} must be positive (standard errors, e.g. 2.0).")
  for name in ("multiple", "block"):
    v = s[name]
    if not (math.isfinite(v) and v > 0):
      _fail(f"config.analysis.auto.{name}={v} must be positive (e.g. 1.0 and 0.25).")
  for name, example in (("lean", 0.8), ("dense", 0.2)):
    v = s[name]
    if not (math.isfinite(v) and 0 <= v <= 1):
      _fail(f"config.analysis.auto.{name}={v} must be in [0, 1] (e.g. {example}).")
  for name, low in (("audit", 1), ("strata", 1), ("competitors", 1), ("first_images", 2)):
    v = s[name]
    if isinstance(v, bool) or int(v) != v or v < low:
      _fail(
          f"config.analysis.auto.{name}={v} must be a whole number >= {low} (e.g. audit 20, "
          "strata 6, competitors 2, first_images 8)."
      )


def _validate_screen(s) -> None:
  if s.target not in SCREEN_TARGETS:
    _fail(f"config.analysis.screen.target={s.target!r}; use one of {SCREEN_TARGETS}.")
  if not (math.isfinite(s.multiple) and s.multiple > 0):
    _fail(
        f"config.analysis.screen.multiple={s.multiple} must be positive (the candidates scored "
        "exactly, as a multiple of the DFM's; e.g. 1.5)."
    )
  if not (math.isfinite(s.extend) and s.extend >= 0):
    _fail(f"config.analysis.screen.extend={s.extend} must be >= 0 (0: no further blocks; 0.25).")
  if not (math.isfinite(s.max_multiple) and s.max_multiple >= s.multiple):
    _fail(
        f"config.analysis.screen.max_multiple={s.max_multiple} must be at least "
        f"screen.multiple={s.multiple} (the exactly scored candidates' cap, e.g. 3)."
    )
  if int(s.audit) != s.audit or s.audit < 1:
    _fail(f"config.analysis.screen.audit={s.audit} must be a positive whole number (e.g. 8).")
  if int(s.steps) != s.steps or s.steps < 1:
    _fail(f"config.analysis.screen.steps={s.steps} must be a positive whole number (1: gradient).")


def _validate_coarse_to_fine(config) -> None:
  size, patch = int(config.data.image_size), int(config.analysis.patch_size)
  c = config.analysis.coarse_to_fine
  if not (math.isfinite(c.multiple) and c.multiple > 0):
    _fail(f"config.analysis.coarse_to_fine.multiple={c.multiple} must be positive (e.g. 2).")
  levels = levels_of(config)
  ok = [d for d in divisors(size) if d % patch == 0]
  bad = [p for p in levels if p < 1 or size % p or p % patch]
  order_bad = any(
      levels[i] % levels[i + 1] or levels[i] <= levels[i + 1] for i in range(len(levels) - 1)
  )
  if not levels or bad or order_bad or levels[-1] != patch:
    _fail(
        f"config.analysis.coarse_to_fine.levels={levels} must be decreasing patch sizes, each "
        f"dividing the one before and the image size {size}, ending at analysis.patch_size="
        f"{patch}; valid sizes: {', '.join(map(str, ok))} (e.g. {default_levels(size, patch)})."
    )


# ---------------------------------------------------------------- shared scoring ----


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


def chunk_store(root: str | None, name: str, parts) -> dfm_lib.ChunkStore | None:
  """The chunk store `root`/`name` for the engine call described by `parts` (None: none)."""
  if root is None:
    return None
  return dfm_lib.ChunkStore(os.path.join(root, name), {"fingerprint": settings_key(parts)})


def exact_scores(engine, images, labels, c, index, store, class_names) -> np.ndarray:
  """Exact scores of class c for the candidates `index` of the engine's set."""
  if len(index) == 0:
    return np.zeros(0, np.float32)
  group = engine.class_groups(images, labels, [c], class_names)
  sub = engine.cands.subset(np.asarray(index))
  return engine.evaluate(group, images.shape[1:], store=store, cands=sub)[0]


def stack(per_class) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(scores, exact, dfm_key), each (C, K), from per-class records with those fields."""
  return tuple(np.stack([getattr(r, f) for r in per_class]) for f in ("scores", "exact", "key"))


def cells_written(cands: cand_lib.CandidateSet) -> np.ndarray:
  """(K,) how many score-map cells each candidate's score is written to."""
  n = np.zeros(len(cands), np.int64)
  for k, _, _ in cands.writes:
    n[k] += cands.patch**2
  return n


def dfm_candidate_count(cands: cand_lib.CandidateSet, order: np.ndarray, threshold: float) -> int:
  """How many candidates, taken in `order`, cover a DFM of `threshold` of the cells."""
  need = int(threshold * cands.size**2)
  covered = np.cumsum(cells_written(cands)[order])
  return int(min(len(order), np.searchsorted(covered, need) + 1))


def saved(root: str | None, name: str, compute, shape: tuple):
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
