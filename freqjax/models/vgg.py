"""VGG-11/13/16/19 with BatchNorm, as in the official code: each 3×3 conv (with bias) is
followed by BN and ReLU, 'M' is a 2×2 max-pool; then global average pooling and one linear
layer. At 32 px the feature map is 1×1 before pooling, as in the original."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from freqjax.models import layers

# fmt: off
CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
              "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512,
              512, 512, 512, "M"),
}
# fmt: on


class VGG(nn.Module):
  layout: Sequence[Any]
  num_classes: int
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for item in self.layout:
      if item == "M":
        x = layers.max_pool(x, 2)
      else:
        x = layers.conv3x3(
            layers.width(item, self.width_multiplier), use_bias=True, dtype=self.dtype
        )(x)
        x = nn.relu(layers.batch_norm(train, self.dtype)(x))
    x = jnp.mean(x, axis=(1, 2))
    return layers.Dense(self.num_classes, dtype=self.dtype)(x)
