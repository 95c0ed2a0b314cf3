"""Frequency masks in the centred layout (H, W), index (H/2, W/2) = DC.

A mask is 1 where a frequency is kept and 0 where it is removed. Conjugate partners:
the cell at index (i, j) holds frequency (i - H/2, j - W/2); its partner (-u, -v) sits at
((H - i) % H, (W - j) % W). A mask equal to its `conjugate` keeps images real.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np


def radial_distance(height: int, width: int | None = None) -> np.ndarray:
  """sqrt((i - H/2)^2 + (j - W/2)^2): the radius of every cell's frequency."""
  width = height if width is None else width
  i = np.arange(height)[:, None] - height / 2
  j = np.arange(width)[None, :] - width / 2
  return np.sqrt(i**2 + j**2)


def band_mask(size: int, lo: float, hi: float) -> np.ndarray:
  """1 on the band lo <= radius < hi (as the official `mask_radial`), else 0."""
  r = radial_distance(size)
  return ((r >= lo) & (r < hi)).astype(np.float32)


def view_mask(view: str, size: int, bands: Sequence[Sequence[float]]) -> np.ndarray:
  """Mask of a band-limited view of a test set.

  Views: 'full'; 'keep_bK' (only band K); 'remove_bK' (all but band K); 'remove_bJ_bK'
  (all but bands J and K, the paper's band-stop test). Bands are 1-based into `bands`,
  each [lo, hi) in cycles per image.
  """
  bands = [(float(lo), math.inf if hi is None else float(hi)) for lo, hi in bands]
  if view == "full":
    return np.ones((size, size), np.float32)
  m = re.fullmatch(r"(keep|remove)((?:_b\d+)+)", view)
  if not m:
    raise ValueError(
        f"Unknown band view {view!r}; use 'full', 'keep_b1', 'remove_b2' or " "'remove_b1_b3'."
    )
  ks = [int(k) for k in re.findall(r"\d+", m.group(2))]
  for k in ks:
    if not 1 <= k <= len(bands):
      raise ValueError(f"View {view!r} names band {k}; bands are 1..{len(bands)}.")
  inside = np.zeros((size, size), bool)
  for k in ks:
    inside |= band_mask(size, *bands[k - 1]).astype(bool)
  if m.group(1) == "keep":
    if len(ks) != 1:
      raise ValueError(f"View {view!r}: 'keep' takes one band.")
    return inside.astype(np.float32)
  return (~inside).astype(np.float32)


def conjugate(mask: np.ndarray) -> np.ndarray:
  """The mask of the conjugate partners: out[i, j] = mask[(H - i) % H, (W - j) % W]."""
  h, w = mask.shape[-2:]
  return mask[..., (-np.arange(h)) % h, :][..., :, (-np.arange(w)) % w]


def is_conjugate_symmetric(mask: np.ndarray) -> bool:
  return bool(np.array_equal(mask, conjugate(mask)))


def top_fraction(score_map: np.ndarray, threshold: float) -> np.ndarray:
  """DFM at threshold t: the top t of all H·W cells by score, ties included (>=).

  As the official code: n = int(t·H·W), value = n-th largest score, DFM = score >= value.
  """
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"DFM threshold must lie in (0, 1], got {threshold}.")
  flat = np.sort(np.asarray(score_map).ravel())
  n = int(threshold * flat.size)
  if n < 1:
    raise ValueError(
        f"Threshold {threshold} keeps no cell of a {score_map.shape} map; "
        f"use at least {1 / flat.size:.2g}."
    )
  return np.asarray(score_map) >= flat[-n]


def boundary_ties(score_map: np.ndarray, threshold: float) -> tuple[float, int]:
  """(the DFM's boundary score, how many cells `top_fraction` keeps beyond int(t·H·W)): every
  extra cell ties with the boundary score (e.g. frequencies whose removal leaves the loss
  bit for bit unchanged, score 0, when fewer than t·H·W cells score above 0)."""
  flat = np.sort(np.asarray(score_map).ravel())
  n = int(threshold * flat.size)
  return float(flat[-n]), int(top_fraction(score_map, threshold).sum()) - n


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of boolean maps along the last two axes (e.g. per class)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  inter = (a & b).sum(axis=(-2, -1))
  union = (a | b).sum(axis=(-2, -1))
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
