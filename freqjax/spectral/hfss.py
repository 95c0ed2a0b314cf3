"""HFSS: the hierarchical frequency-shortcut search (Wang, Veldhuis, Strisciuglio, CVPR 2025,
"Do ImageNet-trained models learn shortcuts? The impact of frequency shortcuts on
generalization"; code github.com/nis-research/hfss, reimplemented here, not copied).

What the authors' code computes (files of hfss/ in their repository):

- Stages (`LSI.get_candidates`, table `patches`): stage s samples keep masks on a g_s × g_s
  grid of the centred spectrum, each grid cell S/g_s × S/g_s frequencies. Grids per image
  size: 32 px 4, 8, 16, 32; 64 px 4, 8, 16, 32, 64; 128 px 4 ... 128; 224 px 4, 8, 16, 28,
  56, 112 (the finest 224 px stage has 2 × 2 cells). One run of `search.py --stage stageK
  --mask_path <stage K-1 pickle>` per stage.
- Candidates of a stage (`LSI.get_candidates`): ⌊N_B/3⌋ draws; each draws a class c and a
  rank m < 10 (`np.random.randint`), then three masks: (A) a fraction P of the cells of the
  upper half of the g × g grid (`transforms_search_space.gen_freqs_list`: rows < g/2, or
  <= g/2 for odd g, every column; `sample_frequency`: ⌊P·cells⌋ distinct cells uniformly),
  upsampled with `np.kron`; (B) the same on a (g+1) × (g+1) grid shifted by half a cell
  (kron, then half a cell cropped on each side), so one cell row is centred on DC; (C) the
  union of an A and a B mask drawn with P/2 each. From stage 2 on, each of the three is
  multiplied by the class-c rank-m best mask of the previous stage (confinement). Where a
  cell is one frequency (g = S) only A is drawn, so that stage has ⌊N_B/3⌋ masks, the
  others 3·⌊N_B/3⌋. "Conjugate symmetry": the lower half is overwritten with the upper
  half mirrored as (r, q) -> (S-1-r, S-1-q), a point reflection of the grid that is one
  frequency off the true partner ((S-r) % S, (S-q) % S); the real part of the inverse FFT
  (`transforms_search_space.filter`) then makes the images real.
- Score (`utils.validate_classwise`, `LSI.search_subpolicies`): every mask is applied to
  every image of the search set (filtering after normalisation, `White_Mask`), one forward
  pass per image and mask, and every class's loss is taken from that same pass: class c's
  loss is the batch-mean CE with the logits of the other classes' images zeroed and their
  targets set to 0 (a constant log(#classes) each), summed over batches — the summed CE of
  class c's images plus a constant, for equal batches. The search set is a stratified 5%
  of the ImageNet training set (`utils.split_dataset`, ts = 0.05, seed 42).
- Selection (`LSI.get_topn_subpolicies_classwise`): per class, the N = 10 masks with the
  lowest class loss, best first; they are the stage's output (`{class: [10 masks]}`, pickled
  by `utils.find_SI`) and the next stage's confinement parents. The final stage's masks are
  the DFMs; evaluation uses each class's best (`eval_in2cs.py`: `masks[c][0]`) and reports
  class TPR (accuracy on class images filtered with the class's DFM).
- Defaults (`utils.parse_args`): N_B = 500, P = 0.8, N = 10 (`LFSI`), seed 42, 224 px.

Here (freqjax):
- `DEFAULTS`: the same N_B (`num_masks`), P (`keep_fraction`), N (`num_best`) and seed; the
  stages are given as cell sizes in frequencies, `patch_sizes`, () for HFSS's own table at
  32, 64, 128 and 224 px (cells (8, 4, 2, 1) at 32 px, (16, 8, 4, 2, 1) at 64 px,
  (56, 28, 14, 8, 4, 2) at 224 px) and, for other sizes, S/4 halved down to 1 (divisors of S).
- Masks are sampled as above from a NumPy generator seeded by (seed, stage), so a search is
  a deterministic function of (model, images, parameters). Exact conjugate symmetry: the
  HFSS mask is kept on the half-plane H (rows above DC, and the DC row up to DC) and the
  rest is set to the true partners of H, keep = A ∪ conj(A) with A = mask ∩ H ∩ parent: real
  filtered images without taking a real part, and every mask stays inside its parent.
- Identical masks (frequent on the coarse first grid) are evaluated once, and a class's N
  best are N distinct masks (HFSS may select one mask several times); if a stage has fewer
  distinct masks than N, the list is filled up by repeating them from the best.
- Scoring runs on the DFM engine (`dfm.Engine`, `dfm.all_classes_program`): the masks are
  the per-candidate payload, the search set is split into groups of `batch_size` images,
  every class's summed CE comes from one forward pass per image and mask; chunks are
  sharded over the mesh and saved under `store_dir/stage<k>`, so an interrupted search
  resumes with identical results. Each class's best final subsets are then evaluated
  (`counts_program`, same engine, `store_dir/evaluation`): TPR and FPR of class c with only
  the subset's frequencies kept, on the whole search set (as `freqjax.evaluation.shortcut`,
  whose `run` on the `dfm` gives the same `tpr`, `fpr` (tested); it keeps O(C) counts per
  mask where the shortcut test keeps a C × C confusion).
- `scores` (C, S, S): per class, the fraction of its N best masks that keep a cell, averaged
  over the stages (1: kept by every best mask of every stage); top-fraction DFMs can be
  taken from it with `masks.top_fraction` (coarse stages break ties among cells the final
  masks keep equally often).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import errors, parallel
from freqjax.spectral import dfm as dfm_lib, fft, masks as masks_lib

VERSION = 1

DEFAULTS = {
    "patch_sizes": (),  # cell side per stage, in frequencies; () = HFSS's table (see above)
    "num_masks": 500,  # N_B: masks drawn per stage (in triples A, B, C)
    "keep_fraction": 0.8,  # P: fraction of the half-grid's cells a mask keeps
    "num_best": 10,  # N: best masks kept per class and stage (the output subsets)
    "seed": 42,
    "batch_size": 1000,  # images per group (the engine forwards chunk × group images at once)
    "memory_budget_mb": 0,  # per-device budget for a chunk; 0 = automatic
    "chunk_size": 0,  # masks per chunk; 0 = from the memory budget
    "tpr_subsets": 0,  # best subsets per class whose TPR/FPR is measured; 0 = all num_best
}

# HFSS's grids (LSI.get_candidates), as cell sizes: image size -> cell side per stage.
HFSS_PATCH_SIZES = {
    32: (8, 4, 2, 1),
    64: (16, 8, 4, 2, 1),
    128: (32, 16, 8, 4, 2, 1),
    224: (56, 28, 14, 8, 4, 2),
}


def default_patch_sizes(image_size: int) -> tuple[int, ...]:
  """HFSS's stages for 32, 64, 128 and 224 px; else S/4 (or the largest divisor of S below
  it), each next the largest divisor of S at most half the previous, down to 1."""
  s = int(image_size)
  if s in HFSS_PATCH_SIZES:
    return HFSS_PATCH_SIZES[s]
  divisors = [d for d in range(1, s + 1) if s % d == 0]
  out = [max(d for d in divisors if d <= max(1, s // 4))]
  while out[-1] > 1:
    out.append(max(d for d in divisors if d <= out[-1] // 2))
  return tuple(out)


def resolve(params: Mapping | None, image_size: int) -> dict:
  """DEFAULTS updated with `params` (a dict or ConfigDict), patch sizes resolved."""
  p = dict(DEFAULTS)
  if params is not None:
    p.update(params.to_dict() if hasattr(params, "to_dict") else dict(params))
  p["patch_sizes"] = tuple(int(x) for x in (p["patch_sizes"] or ()))
  if not p["patch_sizes"]:
    p["patch_sizes"] = default_patch_sizes(image_size)
  return p


def _half_rows(g: int) -> int:
  """Rows of a g × g grid HFSS samples: the upper half (with the middle row for odd g)."""
  return g // 2 if g % 2 == 0 else g // 2 + 1


def _masks_per_stage(p: dict) -> list[int]:
  n = p["num_masks"] // 3
  return [n if patch == 1 else 3 * n for patch in p["patch_sizes"]]


def validate(params: Mapping | None, image_size: int, prefix: str = "hfss") -> None:
  """Raises ConfigError (one line: the field, and the fix) for out-of-range parameters."""
  raw = dict(params.to_dict() if hasattr(params, "to_dict") else (params or {}))
  unknown = sorted(set(raw) - set(DEFAULTS))
  if unknown:
    raise errors.ConfigError(
        f"{prefix}.{unknown[0]} is not an HFSS parameter; valid: {', '.join(DEFAULTS)}."
    )
  s = int(image_size)
  if s < 2 or s % 2:
    raise errors.ConfigError(
        f"HFSS needs an even image size (the centred layout), got {s}; resize the images."
    )
  p = resolve(raw, s)
  divisors = [d for d in range(1, s + 1) if s % d == 0]

  def integer(name, lo, what):
    v = p[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise errors.ConfigError(f"{prefix}.{name} must be an integer >= {lo} ({what}), got {v!r}.")

  for i, patch in enumerate(p["patch_sizes"]):
    if patch < 1 or s % patch:
      raise errors.ConfigError(
          f"{prefix}.patch_sizes[{i}] = {patch} does not divide the image size {s}; valid "
          f"cell sizes: {', '.join(map(str, divisors))}."
      )
  integer("num_masks", 3, "masks are drawn in triples")
  kf = p["keep_fraction"]
  if isinstance(kf, bool) or not isinstance(kf, (int, float)) or not 0.0 < kf < 1.0:
    raise errors.ConfigError(f"{prefix}.keep_fraction must lie in (0, 1) (HFSS: 0.8), got {kf!r}.")
  for i, patch in enumerate(p["patch_sizes"]):
    g = s // patch
    if int(_half_rows(g) * g * kf) < 1:
      raise errors.ConfigError(
          f"{prefix}.keep_fraction = {kf} keeps no cell of stage {i}'s {g}×{g} grid "
          f"(patch_sizes[{i}] = {patch}); raise it or use smaller cells."
      )
  integer("num_best", 1, "HFSS: 10")
  fewest = min(_masks_per_stage(p))
  if p["num_best"] > fewest:
    raise errors.ConfigError(
        f"{prefix}.num_best = {p['num_best']} exceeds the {fewest} masks of a stage; lower it "
        f"or raise {prefix}.num_masks to at least {3 * p['num_best']}."
    )
  integer("seed", 0, "any seed")
  integer("batch_size", 1, "images per group")
  integer("chunk_size", 0, "0 = automatic")
  integer("tpr_subsets", 0, "0 = every subset")
  if p["tpr_subsets"] > p["num_best"]:
    raise errors.ConfigError(
        f"{prefix}.tpr_subsets = {p['tpr_subsets']} exceeds {prefix}.num_best = "
        f"{p['num_best']}; use at most num_best (0 = all)."
    )
  mb = p["memory_budget_mb"]
  if isinstance(mb, bool) or not isinstance(mb, (int, float)) or mb < 0:
    raise errors.ConfigError(f"{prefix}.memory_budget_mb must be >= 0 (0 = automatic), got {mb!r}.")


# ------------------------------------------------------------------------- masks ----


def half_plane(size: int) -> np.ndarray:
  """H: rows above DC, and the DC row up to and including DC (centred layout)."""
  h = np.zeros((size, size), bool)
  h[: size // 2] = True
  h[size // 2, : size // 2 + 1] = True
  return h


def symmetrise(mask: np.ndarray, parent: np.ndarray | None = None) -> np.ndarray:
  """Exactly conjugate-symmetric keep masks (..., S, S) from HFSS masks: the mask on H (within
  `parent`), completed by the true conjugate partners."""
  a = np.asarray(mask, bool) & half_plane(mask.shape[-1])
  if parent is not None:
    a &= parent
  return a | masks_lib.conjugate(a)


def _grid_pattern(rng, g: int, fraction: float) -> np.ndarray:
  """HFSS's sample_frequency: ⌊fraction · cells⌋ distinct cells of the grid's upper rows."""
  n = _half_rows(g) * g
  grid = np.zeros(g * g, bool)
  grid[rng.choice(n, size=int(n * fraction), replace=False)] = True
  return grid.reshape(g, g)


def _upsample(grid: np.ndarray, size: int, patch: int, shift: int) -> np.ndarray:
  """Pixel (r, q) takes grid cell ((r + shift) // patch, (q + shift) // patch)."""
  idx = (np.arange(size) + shift) // patch
  return grid[np.ix_(idx, idx)]


def _hfss_mirror(m: np.ndarray) -> np.ndarray:
  """HFSS's 'symmetry': rows >= S/2 replaced by the upper half reflected (S-1-r, S-1-q)."""
  s = m.shape[-1]
  out = m.copy()
  out[s // 2 :] = m[: s // 2][::-1, ::-1]
  return out


def _draw(rng, size: int, patch: int, fraction: float, kind: str) -> np.ndarray:
  g = size // patch
  if kind == "A":
    m = _upsample(_grid_pattern(rng, g, fraction), size, patch, 0)
  elif kind == "B":
    m = _upsample(_grid_pattern(rng, g + 1, fraction), size, patch, patch // 2)
  else:
    m = _draw(rng, size, patch, fraction / 2, "A") | _draw(rng, size, patch, fraction / 2, "B")
  return _hfss_mirror(m)


def stage_masks(
    size: int, patch: int, p: dict, stage: int, parents: np.ndarray | None
) -> np.ndarray:
  """(K, S, S) bool keep masks of a stage. `parents` (C, N, S, S): the previous stage's best
  masks per class (None at the first stage: no confinement)."""
  rng = np.random.default_rng([int(p["seed"]), int(stage)])
  kinds = ("A",) if patch == 1 else ("A", "B", "C")
  out = []
  for _ in range(p["num_masks"] // 3):
    parent = None
    if parents is not None:
      parent = parents[rng.integers(parents.shape[0]), rng.integers(parents.shape[1])]
    for kind in kinds:
      out.append(symmetrise(_draw(rng, size, patch, p["keep_fraction"], kind), parent))
  return np.stack(out)


# ---------------------------------------------------------------------- programs ----


def counts_program(apply_fn: Callable, num_classes: int) -> dfm_lib.Program:
  """Per keep mask (K, S, S): counts (K, 2, C) over the group's images filtered with the
  mask: [images of class c predicted c, images predicted c] — each class's TP and TP + FP.
  Group: (centred spectra, labels), as `dfm.all_classes_program`."""

  def fn(variables, keep, group):
    spectrum, labels = group
    x = fft.filter_spectrum(spectrum[None], keep.astype(jnp.float32)[:, None])
    k, n = x.shape[:2]
    pred = jnp.argmax(apply_fn(variables, x.reshape((k * n,) + x.shape[2:])), -1).reshape(k, n)
    hit = jax.nn.one_hot(pred, num_classes, dtype=jnp.float32)  # (K, N, C)
    tp = jnp.sum(hit * (pred == labels[None])[..., None], axis=1)
    return jnp.stack([tp, jnp.sum(hit, axis=1)], axis=1)

  return dfm_lib.Program(fn, dfm_lib.all_classes_program(apply_fn, 1).abstract, "HFSS TPR/FPR")


# ------------------------------------------------------------------------ search ----


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:24]


def _unique(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Distinct masks in order of first appearance, and each mask's index among them."""
  keys = [m.tobytes() for m in np.packbits(stack.reshape(len(stack), -1), axis=1)]
  first: dict[bytes, int] = {}
  inverse = np.array([first.setdefault(k, len(first)) for k in keys])
  order = np.zeros(len(first), int)
  for i in range(len(keys) - 1, -1, -1):
    order[inverse[i]] = i
  return stack[order], inverse


def _best(losses: np.ndarray, n: int) -> np.ndarray:
  """(K, C) losses of distinct masks -> (C, n) indices, lowest first (stable; repeated from
  the best when fewer than n)."""
  order = np.argsort(losses, axis=0, kind="stable").T  # (C, K)
  reps = -(-n // order.shape[1])
  return np.tile(order, (1, reps))[:, :n]


def search(
    apply_fn: Callable,
    variables,
    mesh,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    params: Mapping | None = None,
    *,
    store_dir: str | None = None,
    progress: bool = False,
    fingerprint: Mapping | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
  """HFSS on normalised images (N, S, S, 3) float32 with labels (N,) in [0, num_classes).

  `store_dir`: where each stage's finished chunks are saved (resumes with identical
  results); `fingerprint`: the caller's identity of the run (model, checkpoint), recorded
  with them besides hashes of the weights, images and masks. Returns (arrays, meta); arrays:
    subsets (C, N, S, S) bool     each class's N best keep masks of the last stage, best first
    dfm (C, S, S) bool            subsets[:, 0], HFSS's DFM
    subset_loss (C, N) float32    class c's summed CE with only the subset's frequencies kept
    tpr, fpr (C, N) float32       class c's TPR / FPR on the images filtered with the subset
                                  (NaN beyond the first `tpr_subsets`)
    keep_fraction (C, N) float32  fraction of the spectrum a subset keeps
    tpr_unfiltered, fpr_unfiltered (C,) float32
    scores (C, S, S) float32      fraction of the class's best masks keeping a cell, averaged
                                  over the stages
    stage_best_loss (T, C, N) float32  the best masks' losses at each of the T stages
    stage_num_masks, stage_num_distinct (T,) int64  masks drawn / evaluated per stage
    forwards_per_stage (T,) int64, forwards_evaluation () int64 (the TPR/FPR passes),
    forwards () int64             all forward passes (one per image and mask)
  meta: method, version, params (resolved), image_size, layout, num_classes, num_images,
  grids (cells per side per stage), reference.
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels).astype(np.int32)
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"Expected square NHWC images, got shape {images.shape}.")
  if len(labels) != len(images) or labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
        f"Expected {len(images)} labels in [0, {num_classes}), got {len(labels)} in "
        f"[{labels.min()}, {labels.max()}]."
    )
  size, n_img = images.shape[1], len(images)
  validate(params, size)
  p = resolve(params, size)

  def engine(program):
    return dfm_lib.Engine(
        apply_fn,
        variables,
        mesh,
        None,
        memory_budget_mb=p["memory_budget_mb"],
        chunk_size=p["chunk_size"] or None,
        progress=progress,
        program=program,
    )

  program = dfm_lib.all_classes_program(apply_fn, num_classes)
  search_engine = engine(dfm_lib.Program(program.fn, program.abstract, "HFSS masks"))
  spectrum_fn = jax.jit(fft.centred_spectrum, out_shardings=parallel.replicated(mesh))
  groups = []
  for gi, lo in enumerate(range(0, n_img, p["batch_size"])):
    hi = min(lo + p["batch_size"], n_img)

    def make(lo=lo, hi=hi):
      return spectrum_fn(jnp.asarray(images[lo:hi])), parallel.replicate(mesh, labels[lo:hi])

    groups.append(dfm_lib.Group(gi, hi - lo, make, f"images {lo}-{hi - 1}"))
  identity = {
      "hfss": VERSION,
      "data": _digest(images, labels),
      "model": _digest(*[np.asarray(x) for x in jax.tree_util.tree_leaves(variables)]),
      "batch_size": p["batch_size"],
      "num_classes": int(num_classes),
      "caller": dict(fingerprint or {}),
  }

  def store(name, payload):
    if store_dir is None:
      return None
    fp = dict(identity, part=name, candidates=_digest(payload))
    return dfm_lib.ChunkStore(os.path.join(store_dir, name), fp)

  parents, scores = None, np.zeros((num_classes, size, size), np.float64)
  stage_loss, drawn, distinct = [], [], []
  for t, patch in enumerate(p["patch_sizes"]):
    cand = stage_masks(size, patch, p, t, parents)
    uniq, _ = _unique(cand)
    values = search_engine.evaluate(
        groups, images.shape[1:], store=store(f"stage{t}", uniq), payload=uniq
    )
    losses = values.astype(np.float64).sum(axis=0)  # (K, C)
    best = _best(losses, p["num_best"])  # (C, N)
    parents = uniq[best]  # (C, N, S, S)
    scores += parents.mean(axis=1)
    stage_loss.append(np.take_along_axis(losses.T, best, axis=1))
    drawn.append(len(cand))
    distinct.append(len(uniq))

  # TPR/FPR of every class's final subsets (each distinct mask once) and of the full spectrum.
  n_tpr = p["tpr_subsets"] or p["num_best"]
  final, inverse = _unique(parents[:, :n_tpr].reshape((-1, size, size)))
  payload = np.concatenate([np.ones((1, size, size), bool), final])
  counts = engine(counts_program(apply_fn, num_classes)).evaluate(
      groups, images.shape[1:], store=store("evaluation", payload), payload=payload
  )
  counts = counts.astype(np.float64).sum(axis=0)  # (1 + U, 2, C)
  pos = np.bincount(labels, minlength=num_classes).astype(np.float64)
  neg = n_img - pos

  idx = 1 + inverse.reshape(num_classes, -1)  # (C, n_tpr) rows of `counts`
  cls = np.arange(num_classes)[:, None]
  tpr, fpr = np.full(parents.shape[:2], np.nan), np.full(parents.shape[:2], np.nan)
  with np.errstate(divide="ignore", invalid="ignore"):  # as metrics.tpr_fpr: TP/P_k, FP/N_k
    tpr0, fpr0 = counts[0, 0] / pos, (counts[0, 1] - counts[0, 0]) / neg
    tpr[:, :n_tpr] = counts[idx, 0, cls] / pos[:, None]
    fpr[:, :n_tpr] = (counts[idx, 1, cls] - counts[idx, 0, cls]) / neg[:, None]

  per_stage = np.array(distinct, np.int64) * n_img
  f_eval = np.int64(len(payload) * n_img)
  arrays = {
      "subsets": parents,
      "dfm": parents[:, 0],
      "subset_loss": stage_loss[-1].astype(np.float32),
      "tpr": tpr.astype(np.float32),
      "fpr": fpr.astype(np.float32),
      "keep_fraction": parents.reshape(parents.shape[:2] + (-1,)).mean(-1).astype(np.float32),
      "tpr_unfiltered": tpr0.astype(np.float32),
      "fpr_unfiltered": fpr0.astype(np.float32),
      "scores": (scores / len(p["patch_sizes"])).astype(np.float32),
      "stage_best_loss": np.stack(stage_loss).astype(np.float32),
      "stage_num_masks": np.array(drawn, np.int64),
      "stage_num_distinct": np.array(distinct, np.int64),
      "forwards_per_stage": per_stage,
      "forwards_evaluation": f_eval,
      "forwards": np.int64(per_stage.sum() + f_eval),
  }
  meta = {
      "method": "hfss",
      "version": VERSION,
      "params": p,
      "image_size": size,
      "layout": "centred",
      "num_classes": int(num_classes),
      "num_images": n_img,
      "grids": [size // q for q in p["patch_sizes"]],
      "reference": "github.com/nis-research/hfss (Wang et al., CVPR 2025)",
  }
  return arrays, meta
