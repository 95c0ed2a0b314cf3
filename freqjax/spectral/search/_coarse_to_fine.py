"""The coarse-to-fine search: exact scores of every candidate at the coarsest patch size,
then at each finer level only of the candidates overlapping the best patches of the level
before (those covering `multiple` × the DFM's cells). A cell takes the score of the finest
candidate scored on it; cells never refined keep their patch's score in `scores` and rank
below every refined cell in `dfm_key`. Each level's choice of candidates names its store, so
a resumed search scores the same ones."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from freqjax import errors
from freqjax.spectral import candidates as cand_lib, masks as masks_lib
from freqjax.spectral.search import base


@dataclasses.dataclass
class _Class:
  """One class's coarse-to-fine search."""

  scores: np.ndarray  # (K,) over the final candidates
  exact: np.ndarray  # (K,) bool: scored at the last level
  key: np.ndarray  # (K,) the DFM ranking
  level_patch: np.ndarray  # (S, S) the patch size each cell's score comes from (0: none)
  evaluated: list  # candidates scored per level
  forwards: float


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
) -> base.Result:
  """`make_engine(cands)` builds an engine for one level's candidate set (patch sizes
  `levels`, coarse to fine; the last is the final candidate set)."""
  t0 = time.time()
  size = images.shape[1]
  need = multiple * threshold * size**2
  engines = [make_engine(cand_lib.paired(size, p)) for p in levels]
  per_class = [
      _search_class(engines, levels, images, labels, c, need, store_root, class_names)
      for c in class_indices
  ]
  forwards = 0.0
  for r in per_class:
    forwards += r.forwards
  return base.Result(
      engines[-1].cands,
      *base.stack(per_class),
      forwards,
      time.time() - t0,
      {"level_patch": np.stack([r.level_patch for r in per_class]).astype(np.int32)},
      {
          "levels": [int(p) for p in levels],
          "multiple": float(multiple),
          "threshold": float(threshold),
          "evaluated_per_class_and_level": [r.evaluated for r in per_class],
      },
  )


def _search_class(engines, levels, images, labels, c, need, store_root, class_names) -> _Class:
  """Class c's levels, coarse to fine, each scoring the candidates in the region the level
  before chose; then the final candidates' scores and DFM key."""
  size = images.shape[1]
  n_img = int(np.sum(labels == c))
  cell_score = np.zeros((size, size), np.float32)
  cell_level = np.full((size, size), -1, np.int32)
  region = np.ones((size, size), bool)  # where the next level's candidates may be
  counts, forwards = [], 0.0
  for li, (p, engine) in enumerate(zip(levels, engines)):
    own = engine.cands.written_masks()
    index = np.nonzero((own & region).reshape(len(engine.cands), -1).any(1))[0]
    store = base.chunk_store(store_root, f"p{p}_class{c:04d}", [p, index.tolist()])
    got = base.exact_scores(engine, images, labels, c, index, store, class_names)
    forwards += float(index.size * n_img)
    counts.append(int(index.size))
    # Each scored candidate's score goes to the cells it writes (as the score map; a
    # paired set writes every cell once).
    for k, v in zip(index, got):
      cell_score[own[k]], cell_level[own[k]] = v, li
    if li < len(levels) - 1:
      region = _refined(own, index, got, need)
  fin, is_exact, key = _final(engines[-1].cands, index, got, cell_score, cell_level)
  level_patch = np.where(cell_level >= 0, np.asarray(levels)[cell_level], 0)
  return _Class(fin, is_exact, key, level_patch, counts, forwards)


def _refined(own: np.ndarray, index: np.ndarray, got: np.ndarray, need: float) -> np.ndarray:
  """(S, S) where the next level scores: the cells of this level's best candidates (scores
  `got` of candidates `index`, cells `own`) until they and their conjugate partners cover
  `need` cells. A candidate whose cells are mostly partners of those already chosen adds
  nothing (its removal is the same up to the grid's offset) and is skipped; the final paired
  candidates score both cells."""
  order = index[np.argsort(-got, kind="stable")]
  region = np.zeros(own.shape[1:], bool)
  covered = np.zeros(own.shape[1:], bool)
  for k in order:
    if (own[k] & covered).sum() * 2 > own[k].sum():
      continue
    region |= own[k]
    covered |= own[k] | masks_lib.conjugate(own[k])
    if covered.sum() >= need:
      break
  return region


def _final(final: cand_lib.CandidateSet, index, got, cell_score, cell_level):
  """The final candidates' scores (exact where scored at the last level, else their cells'
  score), which are exact, and the DFM key: exact scores first, then the finest level
  reached, then the patch's score."""
  fin = np.full(len(final), np.nan, np.float32)
  fin[index] = got
  is_exact = ~np.isnan(fin)
  fmasks = final.removal_masks()
  for k in np.nonzero(~is_exact)[0]:
    fin[k] = cell_score[fmasks[k]].max()
  lvl = np.array([cell_level[fmasks[k]].max() for k in range(len(final))])
  secondary = np.empty(len(final), np.float64)
  secondary[np.lexsort((fin, lvl))] = np.arange(len(final))
  return fin, is_exact, base.ranking_key(fin, is_exact, secondary)


@base.register("coarse_to_fine")
def run(r: base.Request, overrides: dict) -> base.Result:
  """The coarse-to-fine search of `r` by config.analysis.coarse_to_fine (with `overrides`)."""
  a = r.config.analysis
  if a.candidates != "paired":
    raise errors.ConfigError(
        "config.analysis.search='coarse_to_fine' refines paired candidates; use "
        "--config.analysis.candidates=paired."
    )
  c = dict(a.coarse_to_fine.to_dict(), **overrides)
  levels = tuple(c["levels"]) if c.get("levels") else base.levels_of(r.config)
  return coarse_to_fine(
      r.engine,
      r.images,
      r.labels,
      r.classes,
      levels,
      multiple=float(c["multiple"]),
      threshold=float(a.threshold),
      store_root=r.store_root,
      class_names=r.class_names,
  )
