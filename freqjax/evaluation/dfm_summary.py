"""Reading DFM artifacts: the DFM at a threshold, overlap with planted frequencies, and the
readable per-class summary the DFM launcher prints."""

from __future__ import annotations

import numpy as np

from freqjax import artifacts, errors
from freqjax.spectral import masks


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


def read_dfms(source: str, threshold: float, num_classes: int, image_size: int, what: str):
  """(C, S, S) bool DFMs from another run: its workdir (analysis/dfm.npz), a dfm.npz, or the
  authors' pickle ({class: 0/1 map}, read safely). `what` names the setting, for errors;
  a class count or size that differs from this run's is an error naming both."""
  import os  # pylint: disable=g-import-not-at-top

  path = os.path.join(source, "analysis", "dfm.npz") if os.path.isdir(source) else source
  if not os.path.exists(path):
    raise errors.ConfigError(
        f"{what}={source!r}: no such file. Give a finished run's workdir, its "
        "analysis/dfm.npz, or the authors' DFM pickle (.pkl)."
    )
  if path.endswith(".pkl"):
    maps = artifacts.import_official_dfms(path)
  else:
    maps = dfm_at(artifacts.load(path, "dfm"), float(threshold))
  if maps.shape[0] != num_classes:
    raise errors.ArtifactShapeError(
        f"{what}: {path} holds DFMs of {maps.shape[0]} classes but this run's data has "
        f"{num_classes}; use DFMs of a run on the same classes."
    )
  if maps.shape[1:] != (image_size, image_size):
    raise errors.ArtifactShapeError(
        f"{what}: {path} holds {maps.shape[1]}×{maps.shape[2]} DFMs but this run's images are "
        f"{image_size}×{image_size}; use DFMs of a run at the same image size."
    )
  return maps.astype(bool)


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


def text(
    art: artifacts.Artifact,
    threshold: float,
    planted: np.ndarray | None,
    score_maps: np.ndarray | None = None,
) -> str:
  """Per class: DFM size, planted recall/precision and which planted frequencies it missed;
  with the (C, S, S) maps the DFMs were taken from, why a DFM holds more cells than the
  threshold's (ties at its boundary score)."""
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
    if score_maps is not None:
      value, extra = masks.boundary_ties(score_maps[k], threshold)
      # The boundary candidate's own cells (up to 2·patch² with its conjugate partner) share
      # its score: only ties beyond them say that other candidates tie with it.
      if extra >= 2 * int(art.meta.get("patch_size", 1)) ** 2:
        line += (
            f" ({int(threshold * s * s)} at {100 * threshold:g}% and {extra} more that tie "
            f"with the boundary score {value:.6g}: ties are kept, as in the official code)"
        )
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
