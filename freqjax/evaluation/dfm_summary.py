"""Reading DFM artifacts: the DFM at a threshold, overlap with planted frequencies, and the
readable per-class summary the DFM launcher prints."""

from __future__ import annotations

import numpy as np

from freqjax import artifacts, errors


def dfm_at(art: artifacts.Artifact, threshold: float) -> np.ndarray:
  """(C, H, W) bool DFMs of a 'dfm' artifact at `threshold` (one of meta['thresholds'])."""
  ts = [float(t) for t in art.meta["thresholds"]]
  for i, t in enumerate(ts):
    if abs(t - threshold) < 1e-9:
      return art["dfm"][i]
  raise errors.ConfigError(
      f"Threshold {threshold} was not computed; the DFM artifact has {ts}. Add it to "
      "config.analysis.thresholds and rerun launch/dfm.py (the scores are reused)."
  )


def planted_overlap(dfm_maps: np.ndarray, planted: np.ndarray, scores: np.ndarray | None = None):
  """Per class: recall = |DFM ∩ planted| / |planted|, precision = |DFM ∩ planted| / |DFM|,
  and (with scores) how many of the top-|planted| cells by score are planted."""
  c = len(planted)
  inter = (dfm_maps & planted).reshape(c, -1).sum(1)
  planted_cells = planted.reshape(c, -1).sum(1)
  dfm_cells = dfm_maps.reshape(c, -1).sum(1)
  out = {
      "planted_recall": (inter / planted_cells).tolist(),
      "planted_precision": (inter / np.maximum(dfm_cells, 1)).tolist(),
      "planted_cells": planted_cells.tolist(),
      "dfm_cells": dfm_cells.tolist(),
  }
  if scores is not None:
    top = []
    for s, pl in zip(scores, planted):
      order = np.argsort(-s.ravel(), kind="stable")[: int(pl.sum())]
      top.append(int(pl.ravel()[order].sum()))
    out["top_planted_hits"] = top
  return out


def half_plane_freqs(mask: np.ndarray) -> list[tuple[int, int]]:
  """(u, v) of a centred mask's cells, one per conjugate pair (u > 0, or u = 0 and v >= 0)."""
  s = mask.shape[-1]
  uv = [(int(i) - s // 2, int(j) - s // 2) for i, j in np.argwhere(mask)]
  return sorted({(u, v) for u, v in uv if u > 0 or (u == 0 and v >= 0)})


def text(art: artifacts.Artifact, threshold: float, planted: np.ndarray | None) -> str:
  """Per class: DFM size, planted recall/precision and which planted frequencies it missed."""
  maps = dfm_at(art, threshold)
  names = art.meta["classes"]
  s = maps.shape[-1]
  lines = [
      f"DFMs at {100 * threshold:g}% ({art.meta['candidates']['mode']} candidates, "
      f"patch {art.meta['patch_size']}, {s}x{s}):"
  ]
  ov = planted_overlap(maps, planted) if planted is not None else None
  for k, name in enumerate(names):
    line = f"  {name}: {int(maps[k].sum())} cells"
    if ov is not None:
      line += (
          f"; planted {ov['planted_cells'][k]}, of them in DFM "
          f"{int(round(ov['planted_recall'][k] * ov['planted_cells'][k]))} "
          f"(recall {ov['planted_recall'][k]:.2f}, precision "
          f"{ov['planted_precision'][k]:.2f})"
      )
      line += "\n      planted (u, v): " + " ".join(
          f"({u},{v}){'' if maps[k][u + s // 2, v + s // 2] else ' missed'}"
          for u, v in half_plane_freqs(planted[k])
      )
    if s <= 64:
      line += "\n      DFM (u, v) with u >= 0: " + " ".join(
          f"({u},{v})" for u, v in half_plane_freqs(maps[k])
      )
    lines.append(line)
  return "\n".join(lines)
