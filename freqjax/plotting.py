"""The one plotting module (matplotlib, Agg backend): every freqjax figure comes from here.

All spectral maps are drawn in the centred layout with DC in the middle; axes are labelled
in frequency (cycles per image), u vertical and v horizontal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from freqjax import artifacts  # pylint: disable=wrong-import-position


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fmt = os.path.splitext(path)[1][1:] or "png"

  def write(f):
    fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight")

  artifacts._atomic_write(path, write)  # pylint: disable=protected-access
  plt.close(fig)
  return path


def _extent(size: int):
  h = size // 2
  return (-h - 0.5, size - h - 0.5, size - h - 0.5, -h - 0.5)


def _grid(n: int, max_cols: int = 5):
  cols = min(n, max_cols)
  rows = -(-n // cols)
  return rows, cols


def adcs(adcs_maps: np.ndarray, class_names: Sequence[str], path: str, title: str = "ADCS") -> str:
  """One panel per class; symmetric colour range ±(|C| - 1)."""
  c, s = adcs_maps.shape[0], adcs_maps.shape[-1]
  lim = max(c - 1, int(np.abs(adcs_maps).max()))
  rows, cols = _grid(c)
  fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
  im = None
  for i, ax in enumerate(axes.flat):
    if i >= c:
      ax.axis("off")
      continue
    im = ax.imshow(adcs_maps[i], cmap="jet", vmin=-lim, vmax=lim, extent=_extent(s))
    ax.set_title(class_names[i], fontsize=10)
    if i + cols >= c:  # nothing below: label the frequency axis
      ax.set_xlabel("v")
    else:
      ax.tick_params(labelbottom=False)
    if i % cols == 0:
      ax.set_ylabel("u")
    else:
      ax.tick_params(labelleft=False)
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="ADCS")
  fig.suptitle(title)
  return _save(fig, path)


def dfm_grid(
    rows: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str,
    planted: np.ndarray | None = None,
    title: str = "Dominant frequency maps",
) -> str:
  """Models × classes grid of binary DFMs (as the paper's Figure 7); planted cells, when
  given (C,H,W), are outlined in red."""
  names = list(rows)
  c = len(class_names)
  fig, axes = plt.subplots(len(names), c, figsize=(2.2 * c, 2.3 * len(names)), squeeze=False)
  for r, name in enumerate(names):
    maps = np.asarray(rows[name])
    s = maps.shape[-1]
    for k in range(c):
      ax = axes[r, k]
      ax.imshow(maps[k], cmap="gray", vmin=0, vmax=1, extent=_extent(s))
      if planted is not None:
        ij = np.argwhere(planted[k])
        ax.scatter(
            ij[:, 1] - s // 2,
            ij[:, 0] - s // 2,
            s=30,
            facecolors="none",
            edgecolors="red",
            linewidths=1.0,
        )
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(class_names[k], fontsize=9)
      if k == 0:
        ax.set_ylabel(name, fontsize=9)
  fig.suptitle(title + (" (red: planted)" if planted is not None else ""))
  return _save(fig, path)


def score_maps(
    maps: np.ndarray,
    class_names: Sequence[str],
    path: str,
    title: str = "Candidate scores (summed class cross-entropy)",
) -> str:
  c, s = maps.shape[0], maps.shape[-1]
  rows, cols = _grid(c)
  fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i >= c:
      ax.axis("off")
      continue
    im = ax.imshow(maps[i], cmap="viridis", extent=_extent(s))
    ax.set_title(class_names[i], fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.7)
  fig.suptitle(title)
  return _save(fig, path)


def confusion(conf: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> str:
  """One confusion matrix (rows true, columns predicted) with counts."""
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 1.0 + 0.6 * n))
  ax.imshow(conf, cmap="Blues")
  for i in range(n):
    for j in range(n):
      ax.text(
          j,
          i,
          str(int(conf[i, j])),
          ha="center",
          va="center",
          fontsize=7,
          color="white" if conf[i, j] > conf.max() / 2 else "black",
      )
  ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
  ax.set_yticks(range(n), class_names, fontsize=7)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title, fontsize=9)
  return _save(fig, path)


def confusion_grid(
    confs: np.ndarray,
    class_names: Sequence[str],
    path: str,
    title: str = "Confusion matrices on DFM_k-filtered test images",
) -> str:
  """(C, C, C): panel k is the confusion matrix with DFM_k applied."""
  c = len(class_names)
  rows, cols = _grid(c)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
  for k, ax in enumerate(axes.flat):
    if k >= c:
      ax.axis("off")
      continue
    ax.imshow(confs[k], cmap="Blues")
    ax.set_title(f"DFM of {class_names[k]}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.axvline(k, color="red", lw=0.6, alpha=0.6)
  fig.suptitle(title + " (rows true, columns predicted; red: column k)")
  return _save(fig, path)


def dynamics(
    dyn: Mapping,
    class_names: Sequence[str],
    path: str,
    threshold: float = 0.5,
    learned: np.ndarray | None = None,
) -> str:
  """TPR - FPR per class over training steps, one panel per band-limited view."""
  views = list(dyn["views"])
  rows, cols = _grid(len(views), 3)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
  for vi, ax in enumerate(axes.flat):
    if vi >= len(views):
      ax.axis("off")
      continue
    for ci, name in enumerate(class_names):
      (line,) = ax.plot(dyn["steps"], dyn["tpr"][:, vi, ci] - dyn["fpr"][:, vi, ci], label=name)
      ax.plot(dyn["steps"], dyn["tpr"][:, vi, ci], color=line.get_color(), ls=":", lw=0.8)
      if learned is not None and learned[vi, ci] >= 0:
        ax.axvline(learned[vi, ci], color=line.get_color(), ls=":", lw=0.8)
    ax.axhline(threshold, color="gray", ls="--", lw=0.8)
    ax.set_title(views[vi], fontsize=10)
    ax.set_xlabel("step")
    if vi % cols == 0:
      ax.set_ylabel("TPR - FPR (solid), TPR (dotted)")
    ax.set_ylim(-1.05, 1.05)
  axes.flat[0].legend(fontsize=7)
  fig.suptitle("Learning dynamics on band-limited test views (vertical lines: learned)", y=1.02)
  return _save(fig, path)


def tpr_fpr_bars(result: Mapping, class_names: Sequence[str], path: str, title: str = "") -> str:
  x = np.arange(len(class_names))
  fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(class_names), 3.2))
  ax.bar(x - 0.3, result["tpr_unfiltered"], 0.2, label="TPR unfiltered", color="#9ecae1")
  ax.bar(x - 0.1, result["tpr"], 0.2, label="TPR DFM-filtered", color="#08519c")
  ax.bar(x + 0.1, result["fpr_unfiltered"], 0.2, label="FPR unfiltered", color="#fcbba1")
  ax.bar(x + 0.3, result["fpr"], 0.2, label="FPR DFM-filtered", color="#a50f15")
  ax.set_xticks(x, class_names, rotation=45, ha="right", fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=7, ncol=2)
  ax.set_title(title or "Shortcut test")
  return _save(fig, path)
