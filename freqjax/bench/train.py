"""Training throughput: images/s of the real training step."""

from __future__ import annotations

import jax
import numpy as np

from freqjax import models, parallel
from freqjax.bench import common


def train_throughput(config, steps: int = 10) -> dict:
  """Images/s of the real training step (augmentation included) on random uint8 data."""
  from freqjax.training import loop, state as state_lib  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(config.train.num_devices)
  b = int(config.train.batch_size)
  parallel.check_batch_size(b, mesh)
  size = int(config.data.storage_size or config.data.image_size)
  model = models.from_config(config.model, int(config.data.num_classes))
  tx = state_lib.make_optimizer(config.train)
  state = loop.init_state(config, model, mesh, tx)
  step = loop.make_train_step(model, config, mesh, tx)
  rng = np.random.default_rng(0)
  local = parallel.local_batch_size(b, mesh)
  batch = parallel.shard_batch(
      mesh,
      {
          "image": rng.integers(0, 256, (local, size, size, 3), dtype=np.uint8),
          "label": rng.integers(0, int(config.data.num_classes), local).astype(np.int32),
          "valid": np.ones(local, bool),
      },
  )
  key = jax.random.key(0)
  compiled = step.lower(state, batch, key).compile()
  flops = common.flops(compiled)
  holder = {"state": state}

  def one():
    holder["state"], m = step(holder["state"], batch, key)
    return m["loss"]

  seconds = common.timed(one, steps)
  out = {
      "model": config.model.name,
      "width_multiplier": float(config.model.width_multiplier),
      "image_size": int(config.data.image_size),
      "global_batch": b,
      "devices": int(mesh.devices.size),
      "platform": jax.devices()[0].platform,
      "dtype": config.model.dtype,
      "step_seconds": seconds,
      "images_per_second": b / seconds,
  }
  if flops:
    # XLA's cost analysis of the partitioned program counts one device's share.
    out["flops_per_step"] = flops * int(mesh.devices.size)
    out["achieved_tflops"] = out["flops_per_step"] / seconds / 1e12
  return out
