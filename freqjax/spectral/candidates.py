"""Candidate sets for DFM ranking: which frequencies each candidate removes.

A candidate removes the union of two p×p "torus rectangles" of the centred spectrum, A and
(optionally) B, each given by its top-left index; a rectangle starting at (r, c) covers rows
r..r+p-1 and columns c..c+p-1 modulo the image size, so a patch may wrap around the edge.
From the candidates' scores, the score map gets one value per cell via `writes`: the
rectangles that receive each candidate's score, applied in order.

Two sets:
- 'paired' (freqjax's default): every cell (p = 1) or patch is removed together with its
  true conjugate partner, so the filtered image stays real, and every pair is scored once.
  For odd p the patches tile the spectrum centred on DC, so the partner of a patch is a
  patch; for even p no such tiling exists, and each patch of the official grid is removed
  together with its (shifted) partner cells and scored on its own cells.
- 'official': exactly the masks of the authors' code (Evaluation/test_rank.py): patch (r, c)
  for rows r < S/p and columns c <= S/(2p), plus the "mirror" patch at (S - p·r, S - p·c)
  only when r > 0 and c > 0 — so first-row/first-column candidates zero one cell of a
  conjugate pair, and for p > 1 the mirror is the partner patch shifted by p - 1. Scores are
  written patch then mirror, in the code's loop order (later writes win). Identical masks
  (the DC column's r and S - r) are evaluated once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class CandidateSet:
  size: int
  patch: int
  mode: str
  rects: np.ndarray  # (K, 5) int32: a_row, a_col, b_row, b_col, has_b
  writes: tuple  # ((candidate index, row, col), ...) rectangles receiving each score

  def __len__(self) -> int:
    return len(self.rects)

  def removal_masks(self, index: np.ndarray | None = None) -> np.ndarray:
    """(k, S, S) bool: True where candidate removes a frequency (NumPy, for references)."""
    rects = self.rects if index is None else self.rects[np.asarray(index)]
    return np.asarray(removal_masks(jnp.asarray(rects), self.size, self.patch))

  def score_map(self, scores: np.ndarray) -> np.ndarray:
    """Scores (K,) -> (S, S) map in the centred layout; cells no candidate covers get 0."""
    scores = np.asarray(scores)
    if scores.shape != (len(self),):
      raise ValueError(f"Expected {len(self)} scores, got shape {scores.shape}.")
    out = np.zeros((self.size, self.size), scores.dtype)
    idx = np.arange(self.size)
    for k, r, c in self.writes:
      rows = (idx - r) % self.size < self.patch
      cols = (idx - c) % self.size < self.patch
      out[np.ix_(rows, cols)] = scores[k]
    return out

  def written_masks(self) -> np.ndarray:
    """(K, S, S) bool: the cells each candidate's score is written to in the score map."""
    out = np.zeros((len(self), self.size, self.size), bool)
    idx = np.arange(self.size)
    for k, r, c in self.writes:
      out[k][np.ix_((idx - r) % self.size < self.patch, (idx - c) % self.size < self.patch)] = True
    return out

  def subset(self, index) -> CandidateSet:
    """The candidates at `index` (for tests and partial runs; no score-map writes)."""
    return dataclasses.replace(self, rects=self.rects[np.asarray(index)], writes=())

  def describe(self) -> dict:
    return {
        "size": self.size,
        "patch_size": self.patch,
        "mode": self.mode,
        "num_candidates": len(self),
    }


def removal_masks(rects, size: int, patch: int):
  """(K, 5) rectangles -> (K, S, S) bool removal masks (jit-friendly, JAX)."""
  idx = jnp.arange(size)

  def rect(r, c):
    rows = (idx - r[:, None]) % size < patch
    cols = (idx - c[:, None]) % size < patch
    return rows[:, :, None] & cols[:, None, :]

  a = rect(rects[:, 0], rects[:, 1])
  b = rect(rects[:, 2], rects[:, 3]) & (rects[:, 4] > 0)[:, None, None]
  return a | b


def keep_masks(rects, size: int, patch: int, dtype=jnp.float32):
  """1 - removal mask: the multiplicative masks applied to spectra."""
  return 1.0 - removal_masks(rects, size, patch).astype(dtype)


def _partner_start(start: int, size: int, patch: int) -> int:
  """Start of the rows/cols holding the partners of rows start..start+p-1 (mod size)."""
  return (size - start - patch + 1) % size


def _key(rects: Sequence[tuple[int, int]]) -> frozenset:
  return frozenset(rects)


def paired(size: int, patch: int = 1) -> CandidateSet:
  _check(size, patch)
  offset = (size // 2 - (patch - 1) // 2) % patch if patch % 2 else 0
  index: dict[frozenset, int] = {}
  rects, writes = [], []
  starts = [(offset + patch * k) % size for k in range(size // patch)]
  for r in starts:
    for c in starts:
      pr, pc = _partner_start(r, size, patch), _partner_start(c, size, patch)
      key = _key([(r, c), (pr, pc)])
      if key not in index:
        index[key] = len(rects)
        rects.append((r, c, pr, pc, 1))
      writes.append((index[key], r, c))
  return CandidateSet(size, patch, "paired", np.array(rects, np.int32), tuple(writes))


def official(size: int, patch: int = 1) -> CandidateSet:
  _check(size, patch)
  n = size // patch
  index: dict[frozenset, int] = {}
  rects, writes = [], []
  for r in range(n):
    for c in range(n // 2 + 1):
      a = (patch * r, patch * c)
      mirror = r > 0 and c > 0
      b = (size - patch * r, size - patch * c) if mirror else a
      key = _key([a, b])
      if key not in index:
        index[key] = len(rects)
        rects.append((a[0], a[1], b[0], b[1], int(mirror)))
      writes.append((index[key],) + a)
      if mirror:
        writes.append((index[key],) + b)
  return CandidateSet(size, patch, "official", np.array(rects, np.int32), tuple(writes))


def make(size: int, patch: int = 1, mode: str = "paired") -> CandidateSet:
  if mode == "paired":
    return paired(size, patch)
  if mode == "official":
    return official(size, patch)
  raise ValueError(f"Unknown candidate set {mode!r}; use 'paired' or 'official'.")


def _check(size: int, patch: int) -> None:
  if patch < 1 or size % patch:
    raise ValueError(
        f"Patch size {patch} does not divide the image size {size}; choose a "
        "divisor (config.analysis.patch_size)."
    )
  if size % 2:
    raise ValueError(f"Image size {size} is odd; the centred layout needs an even size.")
