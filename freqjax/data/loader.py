"""Host input pipeline: seeded shuffling, per-process sharding, background prefetch.

Batches are global: epoch e of a training loader visits a permutation of its indices drawn
from (seed, e), cut into global batches of `global_batch`; each process reads only its own
contiguous rows of every global batch (`rows`), so two processes together feed exactly the
batches one process would. Images stay uint8 on the host; augmentation and normalisation
run on the accelerator (`freqjax.data.augment`).

Batch dict: 'image' uint8 (local_b, H, W, 3), 'label' int32 (local_b,), 'valid' bool
(local_b,) (False for the padding rows of a last, partial evaluation batch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from freqjax import errors


class Loader:

  def __init__(
      self,
      source,
      indices: np.ndarray,
      global_batch: int,
      *,
      shuffle: bool,
      seed: int = 0,
      drop_remainder: bool,
      rows: slice | None = None,
      prefetch: int = 2,
  ):
    self.source = source
    self.indices = np.asarray(indices)
    self.global_batch = int(global_batch)
    self.shuffle, self.seed, self.drop_remainder = shuffle, seed, drop_remainder
    self.rows = rows or slice(0, self.global_batch)
    self.prefetch = prefetch
    if drop_remainder and len(self.indices) < self.global_batch:
      raise errors.DatasetError(
          f"The split has {len(self.indices)} examples, fewer than one global batch of "
          f"{self.global_batch}; lower config.train.batch_size (or add images)."
      )

  def __len__(self) -> int:
    n = len(self.indices)
    return n // self.global_batch if self.drop_remainder else -(-n // self.global_batch)

  def order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return self.indices
    return self.indices[
        np.random.default_rng([self.seed, epoch, 0x10AD]).permutation(len(self.indices))
    ]

  def _batch(self, order: np.ndarray, b: int) -> dict:
    idx = order[b * self.global_batch : (b + 1) * self.global_batch]
    valid = np.ones(self.global_batch, bool)
    if len(idx) < self.global_batch:  # pad the last evaluation batch
      valid[len(idx) :] = False
      idx = np.concatenate([idx, np.full(self.global_batch - len(idx), idx[0])])
    idx, valid = idx[self.rows], valid[self.rows]
    images, labels = self.source.get(idx)
    return {"image": images, "label": labels, "valid": valid}

  def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[dict]:
    """Batches of one epoch, starting at `start_batch` (for mid-epoch resumption)."""
    order = self.order(epoch)
    batches = range(start_batch, len(self))
    if self.prefetch <= 0:
      for b in batches:
        yield self._batch(order, b)
      return
    yield from _prefetch((self._batch(order, b) for b in batches), self.prefetch)


_END = object()


def _prefetch(iterator, size: int):
  """Runs `iterator` in a background thread, `size` items ahead."""
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def work():
    try:
      for item in iterator:
        if stop.is_set():
          return
        q.put(item)
      q.put(_END)
    except BaseException as e:  # hand the error to the consumer
      q.put(e)

  t = threading.Thread(target=work, daemon=True)
  t.start()
  try:
    while True:
      item = q.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
