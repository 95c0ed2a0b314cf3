"""What every benchmark shares: the printed table and JSON line, timing, FLOP counts, and the
plain-inference rate the DFM engine is measured against."""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from freqjax import parallel


def emit(title: str, rows: list[tuple[str, str]], figures: dict) -> None:
  """Prints `rows` as a table under `title`, then `figures` as one JSON line (the last)."""
  width = max(len(k) for k, _ in rows)
  print(title)
  print("-" * len(title))
  for k, v in rows:
    print(f"{k.ljust(width)}  {v}")
  print(json.dumps(figures, sort_keys=True))


def timed(fn, repeats: int) -> float:
  """Seconds per call of `fn`, after a warm-up call (compilation excluded)."""
  out = fn()
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats


def flops(compiled) -> float | None:
  """XLA's FLOP count of a compiled program (None where it has none)."""
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get("flops", 0.0)) or None
  except Exception:  # pylint: disable=broad-except
    return None


def plain_rate(apply_fn, variables, mesh, x: np.ndarray, repeats: int = 3) -> float:
  """Images/s of one forward pass of the batch x, sharded over the mesh (after a warm-up)."""
  x = jax.device_put(x, parallel.batch_sharding(mesh))
  v = parallel.replicate(mesh, variables)
  fwd = jax.jit(apply_fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))
  return len(x) / timed(lambda: fwd(v, x), repeats)
