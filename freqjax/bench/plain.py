"""Plain inference throughput: the ceiling the DFM engine is measured against."""

from __future__ import annotations

import os

import jax
import numpy as np

from freqjax import models, parallel
from freqjax.bench import common


def plain_throughput(
    model_name: str = "resnet18",
    width_multiplier: float = 1.0,
    image_size: int = 32,
    batch: int = 100,
    num_devices: int = 0,
    dtype: str = "float32",
    repeats: int = 5,
) -> dict:
  """Images/s of plain inference (random weights and images), the batch sharded over the
  devices: the ceiling the DFM engine is measured against, under the process's XLA flags."""
  mesh = parallel.make_mesh(num_devices)
  model = models.create(model_name, num_classes=10, width_multiplier=width_multiplier, dtype=dtype)
  variables = models.init(model, jax.random.key(0), image_size)
  b = parallel.round_up(batch, mesh)
  x = np.random.default_rng(0).normal(size=(b, image_size, image_size, 3)).astype(np.float32)
  rate = common.plain_rate(lambda v, x: model.apply(v, x, train=False), variables, mesh, x, repeats)
  return {
      "model": model_name,
      "width_multiplier": width_multiplier,
      "image_size": image_size,
      "batch": b,
      "devices": int(mesh.devices.size),
      "dtype": dtype,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "plain": rate,
  }
