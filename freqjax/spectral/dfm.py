"""DFM ranking engine: every candidate's score, many candidates at once.

Score of candidate k for class c: the summed cross-entropy of class c's test images (label c)
after removing the candidate's frequencies (see `candidates`). The official code's loss over
whole test batches, with non-class images contributing a constant, ranks identically; unlike
it, only class c's images are forwarded (it forwards the whole test set for every class).
`all_classes_program` instead scores every class from one forward pass of the whole test set
per candidate (the official variant, and HFSS's class-wise losses, `freqjax.spectral.hfss`).

The engine computes each class's centred spectra once, then evaluates a chunk of candidates
at once: masks for the chunk, inverse FFTs of (candidates × class images), one forward pass of
all of them, summed CE per candidate (vectorised over the candidate axis, as vmap would).
Chunks are sized from a per-device memory budget and sharded over every device of the mesh
(candidates split, images and weights replicated: no collectives). Finished chunks are saved
atomically under a `store` directory; a killed run resumes where it stopped and, since the
chunking is recorded in the store's manifest, ends with identical scores.

`rank_naive` is the one-candidate-at-a-time reference loop the engine must equal.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from freqjax import artifacts, parallel
from freqjax.spectral import candidates as cand_lib, fft, masks


def _class_loss(apply_fn, variables, spectrum, labels, keep_mask):
  x = fft.filter_spectrum(spectrum, keep_mask)
  logits = apply_fn(variables, x).astype(jnp.float32)
  return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _check_images(images, cands):
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"Expected square NHWC images, got shape {images.shape}.")
  if images.shape[1] != cands.size:
    raise ValueError(
        f"The candidate masks are {cands.size}×{cands.size} but the images are "
        f"{images.shape[1]}×{images.shape[2]}; build candidates for the image "
        "size."
    )


def rank_naive(
    apply_fn: Callable, variables, images: np.ndarray, label: int, cands: cand_lib.CandidateSet
) -> np.ndarray:
  """Reference: one candidate at a time (mask in NumPy, filter, forward, summed CE)."""
  _check_images(images, cands)
  f = jax.jit(lambda v, x, y, m: _class_loss(apply_fn, v, fft.centred_spectrum(x), y, m))
  labels = np.full(len(images), label, np.int32)
  out = np.empty(len(cands), np.float32)
  for k in range(len(cands)):
    keep = 1.0 - cands.removal_masks([k])[0].astype(np.float32)
    out[k] = float(f(variables, images, labels, keep))
  return out


class ChunkStore:
  """Finished chunks of a ranking, saved atomically: <dir>/class<c>_chunk<i>.npy."""

  def __init__(self, directory: str, fingerprint: dict):
    self.dir = directory
    self.fingerprint = fingerprint
    self.manifest_path = os.path.join(directory, "manifest.json")

  def open(self, chunk_size: int) -> int:
    """Returns the chunk size to use: the recorded one when resuming a matching run."""
    os.makedirs(self.dir, exist_ok=True)
    if os.path.exists(self.manifest_path):
      with open(self.manifest_path) as f:
        manifest = json.load(f)
      if manifest.get("fingerprint") == self.fingerprint:
        n = len(glob.glob(os.path.join(self.dir, "class*_chunk*.npy")))
        logging.info("Resuming DFM ranking from %s (%d chunks done).", self.dir, n)
        return int(manifest["chunk_size"])
      logging.warning(
          "Partial DFM results in %s belong to another run (model, checkpoint, "
          "data or candidates differ); discarding them.",
          self.dir,
      )
      for p in glob.glob(os.path.join(self.dir, "class*_chunk*.npy")):
        os.remove(p)
    if parallel.is_main_process():
      artifacts.write_json(
          self.manifest_path, {"fingerprint": self.fingerprint, "chunk_size": chunk_size}
      )
    return chunk_size

  def recorded_chunk(self) -> int | None:
    """The chunk size of matching partial results, if there are any."""
    try:
      with open(self.manifest_path) as f:
        manifest = json.load(f)
    except (OSError, ValueError):
      return None
    return int(manifest["chunk_size"]) if manifest.get("fingerprint") == self.fingerprint else None

  def path(self, c: int, i: int) -> str:
    return os.path.join(self.dir, f"class{c:04d}_chunk{i:06d}.npy")

  def load(self, c: int, i: int, n: int) -> np.ndarray | None:
    p = self.path(c, i)
    if not os.path.exists(p):
      return None
    try:
      a = np.load(p, allow_pickle=False)
    except Exception:  # pylint: disable=broad-except
      return None
    return a if a.ndim >= 1 and a.shape[0] == n else None

  def save(self, c: int, i: int, scores: np.ndarray) -> None:
    if parallel.is_main_process():
      artifacts.save_npy(self.path(c, i), scores)

  def discard(self) -> None:
    """Deletes the partial results once the final artifact holds them."""
    if parallel.is_main_process():
      shutil.rmtree(self.dir, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Program:
  """What the engine evaluates for a chunk of candidates on one group of images.

  `fn(variables, rects (K, 5), group) -> (K,)` or `(K, m...)` float32: one value (or m) per
  candidate, summed over the group's images; with a payload (`Engine.evaluate`), `fn` gets
  the payload's (K, ...) rows in place of the rectangles. `group` is a pytree of arrays, the
  same for every chunk of a group; `abstract(n, image_shape)` gives its shapes for n images
  (for the memory estimate). The DFM ranking's program is `removal_program` (one class's
  images), `all_classes_program` scores every class at once; the Fourier heat map
  (`freqjax.spectral.heatmap`) adds a basis image instead.
  """

  fn: Callable
  abstract: Callable
  desc: str = "DFM ranking"


def removal_program(apply_fn: Callable, size: int, patch: int, per_image: bool = False) -> Program:
  """The DFM score: summed CE of a class's images with each candidate's frequencies removed
  (with `per_image`, each image's CE: (K, N), e.g. for a ranking's split-half agreement).
  Group: (centred spectra (N, S, S, C) complex64, labels (N,) int32)."""

  def fn(variables, rects, group):
    # The same computation as vmap over candidates of `_class_loss`, written with the
    # candidate axis broadcast and folded into the batch: one forward pass of K·N images,
    # which XLA's CPU convolutions run faster than the vmapped form (measured).
    spectrum, labels = group
    keep = cand_lib.keep_masks(rects, size, patch)  # (K, S, S)
    x = fft.filter_spectrum(spectrum[None], keep[:, None])  # (K, N, S, S, C)
    k, n = x.shape[:2]
    logits = apply_fn(variables, x.reshape((k * n,) + x.shape[2:])).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.tile(labels, k))
    return ce.reshape(k, n) if per_image else ce.reshape(k, n).sum(axis=1)

  def abstract(n, image_shape):
    return (
        jax.ShapeDtypeStruct((n,) + tuple(image_shape), jnp.complex64),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )

  return Program(fn, abstract)


def all_classes_program(
    apply_fn: Callable, num_classes: int, size: int | None = None, patch: int = 1
) -> Program:
  """Every class's score from one forward pass: per candidate, the summed CE of each class's
  images in the group, (K, num_classes). Group: (centred spectra (N, S, S, C) complex64,
  labels (N,) int32 in [0, num_classes)) — the whole test set, or a batch of it.

  With `size` (and `patch`), the per-candidate arrays are rectangles (K, 5) whose frequencies
  are removed, as `removal_program`: column c is class c's DFM score, computed on the whole
  test set as the official code does. Without, they are keep masks (K, S, S), bool or float,
  applied as they are (HFSS, `freqjax.spectral.hfss`).
  """

  def fn(variables, items, group):
    spectrum, labels = group
    if size is None:
      keep = items.astype(jnp.float32)  # (K, S, S)
    else:
      keep = cand_lib.keep_masks(items, size, patch)
    x = fft.filter_spectrum(spectrum[None], keep[:, None])  # (K, N, S, S, C)
    k, n = x.shape[:2]
    logits = apply_fn(variables, x.reshape((k * n,) + x.shape[2:])).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.tile(labels, k))
    # Exact per-class sums (no matmul: TF32 on GPUs would round them).
    return jax.ops.segment_sum(ce.reshape(k, n).T, labels, num_segments=num_classes).T

  def abstract(n, image_shape):
    return (
        jax.ShapeDtypeStruct((n,) + tuple(image_shape), jnp.complex64),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )

  return Program(fn, abstract, desc="class-wise losses")


@dataclasses.dataclass
class Group:
  """A group of images the candidates are evaluated on (a class for the DFM ranking).
  `make()` builds the program's group arrays; it is called only if a chunk is missing."""

  key: int  # names the group's chunks in the store
  size: int  # number of images
  make: Callable
  name: str = ""


class Engine:
  """Evaluates a program for every candidate on groups of images: one compiled, sharded
  program per chunk of candidates (the DFM ranking by default).

  Candidates are a `CandidateSet`'s rectangles, or any per-candidate array (`payload` of
  `evaluate`, e.g. HFSS's keep masks (K, S, S)); with a payload and a `program`, `cands` may
  be None."""

  def __init__(
      self,
      apply_fn: Callable,
      variables,
      mesh,
      cands: cand_lib.CandidateSet | None,
      *,
      memory_budget_mb: float = 1024,
      chunk_size: int | None = None,
      progress: bool = True,
      program: Program | None = None,
      tune: bool = True,
  ):
    self.apply_fn, self.mesh, self.cands = apply_fn, mesh, cands
    self.tune = tune
    self.tune_fraction = 1 / 8  # of the work, at most spent on measuring chunk sizes
    self.tuning = None  # the last measured choice of chunk size (see `_tune`)
    self.variables = parallel.replicate(mesh, variables)
    self.budget = parallel.memory_budget(mesh, memory_budget_mb)
    self.fixed_chunk = chunk_size
    self.progress = progress and parallel.is_main_process()
    self.devices = int(mesh.devices.size)
    if program is None and cands is None:
      raise ValueError("An engine needs candidates or a program.")
    self.program = program or removal_program(apply_fn, cands.size, cands.patch)
    self.last_rate = None
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    self._chunk = jax.jit(self.program.fn, in_shardings=(repl, data, repl), out_shardings=data)
    self._spectrum = jax.jit(fft.centred_spectrum, out_shardings=repl)

  def chunk_size(self, num_images: int, image_shape, payload: np.ndarray | None = None) -> int:
    """Candidates per chunk: as many as the per-device memory budget allows."""
    if self.fixed_chunk:
      k = self.fixed_chunk
    else:
      per_cand = self._bytes_per_candidate(num_images, image_shape, payload)
      k = self.devices * max(1, int(self.budget // per_cand))
    return self._cap(k, len(self.cands) if payload is None else len(payload))

  def _cap(self, k: int, num_candidates: int) -> int:
    """Rounds up to a multiple of the device count; for fewer candidates than that, the next
    power of two at least their number (rounded up): searches that score many subsets of
    different sizes compile a few programs, not one per size."""
    k = parallel.round_up(k, self.mesh)
    if num_candidates >= k:
      return k
    return min(k, parallel.round_up(1 << max(0, num_candidates - 1).bit_length(), self.mesh))

  def _tune(self, group: Group, items: np.ndarray, largest: int, total_work: int) -> int:
    """The chunk size, by measurement: candidates per chunk from one per device, doubling up
    to what the memory budget allows, each timed once on the first group (compilation
    excluded); the fastest is kept. Stops when a size is markedly slower than the best, and
    spends at most `tune_fraction` (1/8) of the work. Results do not depend on the choice
    beyond float rounding; a store records it, so a resumed run uses the same chunks."""
    sizes = _tune_sizes(self.devices, largest)
    if len(sizes) < 2:
      return largest
    # Compiling and timing each size takes a while before the bar opens: say so.
    logging.info(
        "%s: timing chunks of %s candidates (compiling each) ...", self.program.desc, sizes
    )
    arrays = group.make()
    sharding = parallel.batch_sharding(self.mesh)
    rates, spent, best, best_rate = {}, 0, sizes[-1], 0.0
    for k in sizes:
      if rates and spent + k * group.size > total_work * self.tune_fraction:
        break
      rects = jax.device_put(np.resize(items, (k,) + items.shape[1:]), sharding)
      compiled = self._chunk.lower(self.variables, rects, arrays).compile()
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(self.variables, rects, arrays))
      rate = k * group.size / max(time.perf_counter() - t0, 1e-9)
      rates[k], spent = rate, spent + k * group.size
      if rate > best_rate:
        best, best_rate = k, rate
      elif rate < 0.8 * best_rate:
        break
    if len(rates) < 2:  # too little work to measure more than one size
      best = largest
    self.tuning = {
        "chunk": int(best),
        "rates_candidate_images_per_s": {str(k): float(v) for k, v in rates.items()},
        "tuning_candidate_images": int(spent),
        "largest_by_memory": int(largest),
    }
    logging.info("DFM engine: chunk of %d candidates, by measurement %s", best, rates)
    return best

  def _bytes_per_candidate(self, n, image_shape, payload=None) -> float:
    d = self.devices
    repl = parallel.replicated(self.mesh)
    group = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl),
        self.program.abstract(n, image_shape),
    )
    args = (
        self.variables,
        jax.ShapeDtypeStruct(
            (d,) + (payload.shape[1:] if payload is not None else (5,)),
            payload.dtype if payload is not None else jnp.int32,
            sharding=parallel.batch_sharding(self.mesh),
        ),
        group,
    )
    try:
      stats = self._chunk.lower(*args).compile().memory_analysis()
      temp = float(stats.temp_size_in_bytes)
      if temp > 0:
        return temp
    except Exception as e:  # pylint: disable=broad-except
      logging.info("No XLA memory analysis (%s); estimating the chunk size.", e)
    return float(n * np.prod(image_shape) * 4 * 64)  # ~64 activations the size of the input

  def rank(
      self,
      images: np.ndarray,
      labels: np.ndarray,
      class_indices,
      *,
      store: ChunkStore | None = None,
      class_names=None,
      cands: cand_lib.CandidateSet | None = None,
  ) -> np.ndarray:
    """Scores (len(class_indices), K): summed class CE with each candidate removed.

    `cands` (same size and patch) overrides the engine's candidates for this call.
    """
    cands = self.cands if cands is None else cands
    _check_images(images, cands)
    groups = self.class_groups(images, labels, class_indices, class_names)
    return self.evaluate(groups, images.shape[1:], store=store, cands=cands)

  def class_groups(self, images: np.ndarray, labels: np.ndarray, class_indices, class_names=None):
    """One group per class: its images' centred spectra, labelled with the class."""
    labels = np.asarray(labels)
    groups = []
    for c in class_indices:
      idx = np.nonzero(labels == c)[0]
      if idx.size == 0:
        raise ValueError(f"Class {c} has no images in the ranking split.")

      def make(idx=idx, c=c):
        spectrum = self._spectrum(jnp.asarray(images[idx], jnp.float32))
        return spectrum, parallel.replicate(self.mesh, np.full(idx.size, c, np.int32))

      name = class_names[c] if class_names is not None else c
      groups.append(Group(int(c), int(idx.size), make, f"class {name!r}"))
    return groups

  def evaluate(
      self,
      groups: list[Group],
      image_shape,
      *,
      store: ChunkStore | None = None,
      cands: cand_lib.CandidateSet | None = None,
      payload: np.ndarray | None = None,
  ) -> np.ndarray:
    """The program's values for every group and candidate: (G, K) or (G, K, m).

    Candidates: `cands`' (default the engine's) rectangles, or `payload` (K, ...), one array
    per candidate passed to the program as it is."""
    if payload is None:
      cands = self.cands if cands is None else cands
      if (cands.size, cands.patch) != (self.cands.size, self.cands.patch):
        raise ValueError("Candidates for one engine must share its image and patch size.")
      items = cands.rects
    else:
      cands, items = None, np.asarray(payload)
    k_total = len(items)
    largest = max(g.size for g in groups)
    chunk = self._cap(self.chunk_size(largest, image_shape, payload), k_total)
    total_work = sum(g.size for g in groups) * k_total
    recorded = store.recorded_chunk() if store is not None else None
    if recorded is None and self.tune and not self.fixed_chunk and jax.process_count() == 1:
      if self.tuning is None or self.tuning["largest_by_memory"] < chunk:
        chunk = self._tune(groups[0], items, chunk, total_work)
      else:  # measured once per engine (a search calls it for many subsets)
        chunk = self._cap(self.tuning["chunk"], k_total)
    if store is not None:
      chunk = store.open(chunk)
    n_chunks = -(-k_total // chunk)
    padded = np.concatenate([items, np.repeat(items[:1], n_chunks * chunk - k_total, 0)])
    bar = parallel.progress(
        total=total_work,
        unit="cand-img",
        unit_scale=True,
        disable=not self.progress,
        desc=f"{self.program.desc} ({k_total} candidates)",
    )
    out = None
    t0, done_work = time.time(), 0
    for gi, g in enumerate(groups):
      arrays = None
      for i in range(n_chunks):
        lo, hi = i * chunk, min((i + 1) * chunk, k_total)
        got = store.load(g.key, i, hi - lo) if store is not None else None
        if got is None:
          if arrays is None:
            arrays = g.make()
          rects = jax.device_put(
              padded[i * chunk : (i + 1) * chunk], parallel.batch_sharding(self.mesh)
          )
          got = parallel.to_host(self._chunk(self.variables, rects, arrays))[: hi - lo]
          done_work += (hi - lo) * g.size
          if store is not None:
            store.save(g.key, i, got)
        _check_finite(got, g.name or g.key, lo, cands, self.program.desc)
        if out is None:
          out = np.empty((len(groups), k_total) + got.shape[1:], np.float32)
        out[gi, lo:hi] = got
        bar.update((hi - lo) * g.size)
        if done_work:
          bar.set_postfix(
              rate=f"{done_work / max(time.time() - t0, 1e-9):.0f} cand-img/s", refresh=False
          )
    bar.close()
    self.last_rate = done_work / max(time.time() - t0, 1e-9) if done_work else None
    return out


def _tune_sizes(devices: int, largest: int) -> list[int]:
  sizes, k = [], devices
  while k < largest:
    sizes.append(k)
    k *= 2
  return sizes + [largest]


def _check_finite(values, group, offset, cands, desc="DFM ranking"):
  """Raises on a non-finite value; names the candidate's removed frequencies when `cands`
  (rectangles) is given, its index alone for a payload."""
  bad = np.nonzero(~np.all(np.isfinite(values.reshape(len(values), -1)), axis=1))[0]
  if bad.size:
    k = offset + int(bad[0])
    what = ""
    if cands is not None:
      cells = np.argwhere(cands.removal_masks([k])[0])
      half = cands.size // 2
      freqs = [(int(i) - half, int(j) - half) for i, j in cells[:4]]
      what = f" (frequencies {freqs}{'...' if len(cells) > 4 else ''})"
    raise FloatingPointError(
        f"{desc}: the value of candidate {k}{what} for {group} is {values[bad[0]]}: the model "
        "output is not finite for these images. Check the checkpoint and the input "
        "normalisation."
    )


def score_maps(cands: cand_lib.CandidateSet, scores: np.ndarray) -> np.ndarray:
  """(C, K) scores -> (C, S, S) maps, centred layout."""
  return np.stack([cands.score_map(s) for s in scores])


def dfms(score_map_stack: np.ndarray, thresholds) -> np.ndarray:
  """(C, S, S) score maps -> (T, C, S, S) bool DFMs, one per threshold."""
  return np.stack(
      [np.stack([masks.top_fraction(m, t) for m in score_map_stack]) for t in thresholds]
  )


# ------------------------------------------------------------------------ greedy (DFM-X) ----


def greedy_removal(
    apply_fn: Callable,
    variables,
    mesh,
    images: np.ndarray,
    label: int,
    cands: cand_lib.CandidateSet,
    order: np.ndarray,
    tolerance: int = 6,
    parallel_steps: int = 8,
    progress: bool = False,
) -> dict:
  """DFM-X's greedy variant for one class.

  Goes through the candidates in `order` (least important first), removing each in turn and
  keeping the removal while the class's correct count stays >= the previous count minus
  `tolerance`; the DFM is what could not be removed. `parallel_steps` removals are evaluated
  at once as the prefixes (removed ∪ first j of the next block): the first rejected prefix
  invalidates the ones after it, which are then recomputed — exactly the sequential rule.

  Returns {'dfm': (S,S) bool kept cells, 'removed': bool per candidate, 'counts': correct
  count after each accepted removal, 'evaluations': forward batches run}.
  """
  _check_images(images, cands)
  size, patch = cands.size, cands.patch
  d = int(mesh.devices.size)
  m = parallel.round_up(parallel_steps, mesh)
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)

  def correct_counts(variables, removed, rect_prefix, spectrum, labels):
    # rect_prefix (m, j_max) of candidate rects, masked by validity flags in column 5.
    def one(prefix):
      rem = removed | jnp.any(
          cand_lib.removal_masks(prefix[:, :5], size, patch) & (prefix[:, 5] > 0)[:, None, None],
          axis=0,
      )
      x = fft.filter_spectrum(spectrum, 1.0 - rem.astype(jnp.float32))
      pred = jnp.argmax(apply_fn(variables, x), -1)
      return jnp.sum(pred == labels), rem

    return jax.vmap(one)(rect_prefix)

  f = jax.jit(
      correct_counts, in_shardings=(repl, repl, data, repl, repl), out_shardings=(data, data)
  )
  variables = parallel.replicate(mesh, variables)
  spectrum = jax.jit(fft.centred_spectrum, out_shardings=repl)(jnp.asarray(images, jnp.float32))
  labels = parallel.replicate(mesh, np.full(len(images), label, np.int32))
  removed = np.zeros((size, size), bool)
  counts0, _ = f(variables, removed, np.zeros((d, 1, 6), np.int32), spectrum, labels)
  prev = int(parallel.to_host(counts0)[0])
  rect6 = np.concatenate([cands.rects, np.ones((len(cands), 1), np.int32)], axis=1)
  accepted = np.zeros(len(cands), bool)
  counts, evals, i = [prev], 1, 0
  order = np.asarray(order)
  bar = parallel.progress(total=len(order), disable=not progress, desc=f"greedy class {label}")
  while i < len(order):
    block = order[i : i + m]
    prefix = np.zeros((m, m, 6), np.int32)
    for j in range(len(block)):
      prefix[j, : j + 1] = rect6[block[: j + 1]]
    got, rems = f(variables, removed, prefix, spectrum, labels)
    got, rems = parallel.to_host(got), parallel.to_host(rems)
    evals += 1
    j = 0
    while j < len(block) and got[j] >= prev - tolerance:
      prev = int(got[j])
      accepted[block[j]] = True
      counts.append(prev)
      j += 1
    if j:
      removed = rems[j - 1]
    step = j + 1 if j < len(block) else j  # a rejected candidate stays in the DFM
    i += step
    bar.update(step)
  bar.close()
  return {"dfm": ~removed, "removed": accepted, "counts": np.array(counts), "evaluations": evals}
