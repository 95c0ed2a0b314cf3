"""The small AlexNet of the official code, for 32×32 input.

Five 3×3 convs without bias (96-256-384-384-256, the first with stride 2), each followed by
ReLU then BN; 2×2 max-pools after the 1st, 2nd and 5th; classifier dropout(0.5) - linear
1024→4096 - ReLU - dropout - linear 4096→4096 - ReLU - linear →classes, all without bias.
The flattened feature is 256·2·2 = 1024 at 32 px (other sizes give another width)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from freqjax.models import layers


class AlexNet(nn.Module):
  num_classes: int
  width_multiplier: float = 1.0
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = lambda c: layers.width(c, self.width_multiplier)
    for i, channels in enumerate((96, 256, 384, 384, 256)):
      x = layers.conv3x3(w(channels), stride=2 if i == 0 else 1, dtype=self.dtype)(x)
      x = layers.batch_norm(train, self.dtype)(nn.relu(x))
      if i in (0, 1, 4):
        x = layers.max_pool(x, 2)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(layers.Dense(w(4096), use_bias=False, dtype=self.dtype)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(layers.Dense(w(4096), use_bias=False, dtype=self.dtype)(x))
    return layers.Dense(self.num_classes, use_bias=False, dtype=self.dtype)(x)
