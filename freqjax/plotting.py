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


def _binary_grid(rows: Mapping[str, np.ndarray], class_names: Sequence[str], planted=None):
  """The rows × classes layout of binary frequency maps (DFM grid, HFSS subsets): returns
  (fig, axes (rows, classes))."""
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
  return fig, axes


def dfm_grid(
    rows: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str,
    planted: np.ndarray | None = None,
    title: str = "Dominant frequency maps",
) -> str:
  """Models × classes grid of binary DFMs (as the paper's Figure 7); planted cells, when
  given (C,H,W), are outlined in red."""
  fig, _ = _binary_grid(rows, class_names, planted)
  fig.suptitle(title + (" (red: planted)" if planted is not None else ""))
  return _save(fig, path)


def hfss_subsets(
    subsets: np.ndarray,
    class_names: Sequence[str],
    path: str,
    tpr: np.ndarray | None = None,
    fpr: np.ndarray | None = None,
    max_subsets: int = 5,
    planted: np.ndarray | None = None,
    title: str = "HFSS frequency subsets",
) -> str:
  """Subsets × classes grid of HFSS's best keep masks (C, N, H, W), best first (at most
  `max_subsets` rows), each annotated with its class TPR/FPR (C, N) when given."""
  subsets = np.asarray(subsets)
  n = min(subsets.shape[1], max_subsets)
  rows = {f"best {j + 1}": subsets[:, j] for j in range(n)}
  fig, axes = _binary_grid(rows, class_names, planted)
  for j in range(n):
    for k in range(len(class_names)):
      kept = 100 * subsets[k, j].mean()
      label = f"keeps {kept:.0f}%"
      if tpr is not None and fpr is not None:
        label = f"TPR {tpr[k, j]:.2f} FPR {fpr[k, j]:.2f}\n" + label
      axes[j, k].set_xlabel(label, fontsize=7)
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
  """One confusion matrix (rows true, columns predicted) with counts; a last column beyond
  the classes is 'other' (a model's outputs outside them, `metrics.confusion(other=True)`)."""
  n, cols = len(class_names), conf.shape[1]
  fig, ax = plt.subplots(figsize=(1.0 + 0.6 * cols, 1.0 + 0.6 * n))
  ax.imshow(conf, cmap="Blues")
  for i in range(n):
    for j in range(cols):
      ax.text(
          j,
          i,
          str(int(conf[i, j])),
          ha="center",
          va="center",
          fontsize=7,
          color="white" if conf[i, j] > conf.max() / 2 else "black",
      )
  ax.set_xticks(range(cols), list(class_names) + ["other"] * (cols - n), rotation=90, fontsize=7)
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


def heatmap(
    error: np.ndarray,
    loss: np.ndarray,
    path: str,
    clean_error: float | None = None,
    title: str = "Fourier heat map",
) -> str:
  """Yin et al.'s figure: test error per added Fourier basis (centred, DC in the middle),
  and the mean cross-entropy beside it."""
  s = error.shape[-1]
  fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), gridspec_kw={"wspace": 0.45})
  # From the clean error up (Yin et al. start at 0, which hides all structure when the clean
  # error is far from 0).
  lo = min(float(error.min()), clean_error if clean_error is not None else 0.0)
  im = axes[0].imshow(
      error, cmap="jet", vmin=lo, vmax=max(float(error.max()), lo + 1e-6), extent=_extent(s)
  )
  fig.colorbar(im, ax=axes[0], shrink=0.8, label="test error")
  base = f" (clean {clean_error:.3f})" if clean_error is not None else ""
  axes[0].set_title("error" + base, fontsize=10)
  im = axes[1].imshow(loss, cmap="viridis", extent=_extent(s))
  fig.colorbar(im, ax=axes[1], shrink=0.8, label="mean cross-entropy")
  axes[1].set_title("loss", fontsize=10)
  for ax in axes:
    ax.set_xlabel("v")
    ax.set_ylabel("u")
  fig.suptitle(title)
  return _save(fig, path)


def sensitivity(
    maps: np.ndarray,
    radial: np.ndarray,
    class_names: Sequence[str],
    path: str,
    title: str = "Fourier sensitivity",
) -> str:
  """Per class, log10 of the mean |F(grad)|² map (one colour range for all classes), and the
  radial averages of every class in one last panel."""
  c, s = maps.shape[0], maps.shape[-1]
  rows, cols = _grid(c + 1)
  fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
  logs = np.log10(np.maximum(maps, np.finfo(np.float64).tiny))
  lo, hi = np.percentile(logs, 1), float(logs.max())
  im = None
  for i, ax in enumerate(axes.flat):
    if i < c:
      im = ax.imshow(logs[i], cmap="inferno", vmin=lo, vmax=hi, extent=_extent(s))
      ax.set_title(class_names[i], fontsize=10)
      ax.tick_params(labelsize=7)
    elif i == c:
      for k in range(c):
        ax.semilogy(np.arange(radial.shape[1]), np.maximum(radial[k], 1e-30), label=class_names[k])
      ax.set_xlabel("radius (cycles per image)")
      ax.set_title("radial average", fontsize=10)
      ax.legend(fontsize=6)
    else:
      ax.axis("off")
  fig.colorbar(im, ax=[a for a in axes.flat[:c]], shrink=0.8, label="log10 mean |F(∇x L)|²")
  fig.suptitle(title)
  return _save(fig, path)


def overview(
    rows: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str,
    heat: np.ndarray | None = None,
    title: str = "ADCS, DFMs and Fourier sensitivity side by side",
) -> str:
  """Rows (e.g. ADCS, DFM, log sensitivity; each (C, S, S)) × classes, each row on its own
  colour scale, and the Fourier heat map (class-independent) in an extra column."""
  names = list(rows)
  c = len(class_names)
  cols = c + (1 if heat is not None else 0)
  fig, axes = plt.subplots(len(names), cols, figsize=(2.0 * cols, 2.1 * len(names)), squeeze=False)
  for r, name in enumerate(names):
    maps = np.asarray(rows[name], np.float64)
    s = maps.shape[-1]
    lo, hi = float(np.nanmin(maps)), float(np.nanmax(maps))
    for k in range(c):
      ax = axes[r, k]
      ax.imshow(maps[k], cmap="gray" if name.startswith("DFM") else "jet", vmin=lo, vmax=hi,
                extent=_extent(s))  # fmt: skip
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(class_names[k], fontsize=8)
      if k == 0:
        ax.set_ylabel(name, fontsize=8)
    if heat is not None:
      ax = axes[r, c]
      if r == 0:
        ax.imshow(heat, cmap="jet", vmin=0, extent=_extent(heat.shape[-1]))
        ax.set_title("heat map (error)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
      else:
        ax.axis("off")
  fig.suptitle(title)
  return _save(fig, path)


def compare_runs(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    path: str,
    title: str = "Runs compared: shortcut test and heat map",
) -> str:
  """One row per run (e.g. before / after DFM-X): TPR and FPR per class on DFM-filtered
  images, and the run's heat map when it has one. `runs[label]` holds 'tpr', 'fpr' (C,),
  optionally 'heat' (S, S)."""
  labels = list(runs)
  with_heat = any("heat" in r for r in runs.values())
  cols = 2 + (1 if with_heat else 0)
  fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.4), squeeze=False)
  x = np.arange(len(class_names))
  w = 0.8 / max(len(labels), 1)
  for j, key in enumerate(("tpr", "fpr")):
    ax = axes[0, j]
    for i, lab in enumerate(labels):
      ax.bar(x + (i - (len(labels) - 1) / 2) * w, runs[lab][key], w, label=lab)
    ax.set_xticks(x, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"{key.upper()} on DFM-filtered images", fontsize=10)
    ax.legend(fontsize=7)
  if with_heat:
    heats = [r["heat"] for r in runs.values() if "heat" in r]
    hi = max(float(h.max()) for h in heats)
    sub = axes[0, 2]
    sub.axis("off")
    for i, (lab, r) in enumerate((k, v) for k, v in runs.items() if "heat" in v):
      a = sub.inset_axes([i / len(heats), 0.05, 1 / len(heats) - 0.02, 0.85])
      a.imshow(r["heat"], cmap="jet", vmin=0, vmax=hi, extent=_extent(r["heat"].shape[-1]))
      a.set_title(f"{lab}: heat map", fontsize=8)
      a.set_xticks([])
      a.set_yticks([])
  fig.suptitle(title)
  return _save(fig, path)
