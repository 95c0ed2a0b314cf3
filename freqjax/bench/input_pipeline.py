"""Input pipeline throughput: images/s of the host pipeline alone."""

from __future__ import annotations

import time

import jax
import numpy as np

from freqjax import parallel


def input_throughput(config, batches: int = 50) -> dict:
  """Images/s of the host pipeline alone (read, batch, shard to devices)."""
  from freqjax.data import datasets, loader as loader_lib  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(config.train.num_devices)
  ds = datasets.prepare(config.data)
  src = ds.source("train")
  b = int(config.train.batch_size)
  ld = loader_lib.Loader(
      src,
      np.arange(len(src)),
      b,
      shuffle=True,
      seed=0,
      drop_remainder=True,
      rows=parallel.process_slice(b, mesh),
      prefetch=config.train.prefetch,
  )
  n, t0, epoch = 0, None, 0
  while n < batches:
    for batch in ld.epoch(epoch):
      arr = parallel.shard_batch(mesh, batch)
      if t0 is None:
        jax.block_until_ready(arr)
        t0 = time.perf_counter()  # the first batch warms up the reader
        continue
      n += 1
      if n >= batches:
        break
    epoch += 1
  jax.block_until_ready(arr)
  seconds = time.perf_counter() - t0
  return {
      "images_per_second": n * b / seconds,
      "batches": n,
      "global_batch": b,
      "source": type(src).__name__,
  }
