"""The one place that knows about devices: mesh, shardings, multi-host set-up.

freqjax uses a single 1-D mesh with axis 'data' over every device it runs on. Batches are
sharded along their leading axis, parameters and optimiser state are replicated; `jax.jit`
inserts the gradient all-reduce and computes BatchNorm statistics over the global batch.
Each process feeds only its own share of every global batch (`shard_batch`).
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from freqjax import errors

AXIS = "data"


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 1, process_id: int = 0
) -> None:
  """Joins a multi-host run (`jax.distributed`); a no-op for a single process."""
  if num_processes <= 1:
    return
  if not coordinator_address:
    raise ValueError(
        "--num_processes > 1 needs --coordinator_address=HOST:PORT " "(the address of process 0)."
    )
  jax.distributed.initialize(
      coordinator_address, num_processes=num_processes, process_id=process_id
  )
  logging.info(
      "Process %d of %d; %d local / %d global devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D 'data' mesh over the first `num_devices` devices (0 = all, over all hosts)."""
  devices = jax.devices()
  if num_devices:
    if jax.process_count() > 1 and num_devices != len(devices):
      raise errors.ConfigError(
          "config.train.num_devices must be 0 (all devices) in multi-host runs."
      )
    if num_devices > len(devices):
      raise errors.ConfigError(
          f"config.train.num_devices={num_devices} but only {len(devices)} "
          "devices are visible; use 0 for all of them."
      )
    devices = devices[:num_devices]
  return Mesh(np.array(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def round_up(n: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh's device count that is >= n."""
  d = int(mesh.devices.size)
  return -(-int(n) // d) * d


def padded_batches(arrays: dict, batch_size: int, mesh: Mesh):
  """Yields (batch, n): equal-size batches of `arrays` (a dict of same-length NumPy arrays),
  each padded with zero rows to a multiple of the device count, with a bool 'valid' entry
  (False on padding) and n, the number of real rows. The one helper for "pad a batch to the
  devices, run, drop the padding"; `map_batches` runs a function over it."""
  n_total = len(next(iter(arrays.values())))
  b = round_up(max(1, min(int(batch_size), n_total)), mesh)
  for lo in range(0, n_total, b):
    part = {k: np.asarray(v[lo : lo + b]) for k, v in arrays.items()}
    n = len(next(iter(part.values())))
    if n < b:
      part = {
          k: np.concatenate([v, np.zeros((b - n,) + v.shape[1:], v.dtype)]) for k, v in part.items()
      }
    part["valid"] = np.arange(b) < n
    yield part, n


def map_batches(fn, x: np.ndarray, batch_size: int, mesh: Mesh, bar=None) -> np.ndarray:
  """fn(sharded batch) for every batch of x (single process: x is the whole array), padding
  the last one; returns the concatenated host results without the padding rows. `bar` (a
  `progress` bar) advances by each batch's real rows."""
  out = []
  for part, n in padded_batches({"x": x}, batch_size, mesh):
    out.append(to_host(fn(jax.device_put(part["x"], batch_sharding(mesh))))[:n])
    if bar is not None:
      bar.update(n)
  return np.concatenate(out)


def memory_budget(mesh: Mesh, budget_mb: float = 0) -> float:
  """Bytes per device that one compiled program's temporary buffers may take: `budget_mb`
  MiB where it is > 0; else a quarter of a device's memory where JAX reports it (GPUs), and
  1 GiB where it does not (CPUs), as for the DFM engine's chunks
  (config.analysis.memory_budget_mb)."""
  if budget_mb and float(budget_mb) > 0:
    return float(budget_mb) * 2**20
  try:
    return 0.25 * float(mesh.devices.flat[0].memory_stats()["bytes_limit"])
  except Exception:  # pylint: disable=broad-except
    return float(2**30)


def _temp_bytes(compiled) -> float | None:
  try:
    temp = float(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None
  return temp if temp > 0 else None


def fit_batch(lower, batch_size: int, num_items: int, mesh: Mesh, budget_bytes: float, what=""):
  """(global batch, compiled program) for a batched program run over `num_items` items.

  The batch is the one `padded_batches` uses for `batch_size` (at most `num_items`, rounded
  up to the device count), made smaller only where XLA's memory analysis of the compiled
  program says its temporary buffers exceed `budget_bytes` per device (down to one item per
  device; they grow with the batch: a backward pass at 224 px keeps every layer's
  activations). `lower(b)` lowers the program for a global batch of b (`jax.jit(f).lower`
  with `jax.ShapeDtypeStruct`s); the compiled program returned is run for every batch, so
  it is compiled once."""
  d = int(mesh.devices.size)
  first = b = round_up(max(1, min(int(batch_size), int(num_items))), mesh)
  compiled = lower(b).compile()
  temp = _temp_bytes(compiled)
  for _ in range(4):  # temp grows about linearly with the batch: one step usually fits
    if temp is None or temp <= budget_bytes or b == d:
      break
    per_device = b // d
    b = d * max(1, min(per_device - 1, int(per_device * budget_bytes / temp)))
    compiled = lower(b).compile()
    temp = _temp_bytes(compiled)
  if b != first:
    logging.info(
        "%s: batch of %d instead of %d, so that its %.0f MiB of temporary buffers per device "
        "fit the memory budget of %.0f MiB (config.analysis.memory_budget_mb).",
        what or "batched program",
        b,
        first,
        (temp or 0) / 2**20,
        budget_bytes / 2**20,
    )
  return b, compiled


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "config.train.batch_size"):
  n = mesh.devices.size
  if global_batch % n:
    up = round_up(global_batch, mesh)
    raise errors.ConfigError(
        f"{what}={global_batch} (the global batch) is not divisible by the {n} devices in "
        f"use. Set {what} to a multiple of {n} (e.g. {up}) or choose the device count with "
        "config.train.num_devices."
    )


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """This process's share of a global batch."""
  check_batch_size(global_batch, mesh)
  n_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  return global_batch * n_local // mesh.devices.size


def process_slice(global_batch: int, mesh: Mesh) -> slice:
  """Which rows of a global batch this process feeds (contiguous, in device order)."""
  local = local_batch_size(global_batch, mesh)
  procs = [d.process_index for d in mesh.devices.flat]
  first = procs.index(jax.process_index())
  start = first * global_batch // mesh.devices.size
  return slice(start, start + local)


def shard_batch(mesh: Mesh, batch):
  """Host-local NumPy batch (this process's rows) -> global arrays sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def replicate(mesh: Mesh, tree):
  return jax.device_put(tree, replicated(mesh))


def to_host(x) -> np.ndarray:
  """Fetches a (possibly sharded, possibly multi-host) array as one NumPy array."""
  if jax.process_count() == 1 or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def is_main_process() -> bool:
  return jax.process_index() == 0


def sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def progress(**kwargs):
  """A tqdm progress bar on process 0 (refreshing every 30 s when stderr is not a terminal,
  so logs stay readable)."""
  import sys  # pylint: disable=g-import-not-at-top

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  kwargs.setdefault("dynamic_ncols", True)
  kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 30.0)
  kwargs["disable"] = kwargs.get("disable", False) or not is_main_process()
  return tqdm(**kwargs)
