"""ResNet-18/34/50/101 as in the official code (kuangliu-style CIFAR ResNet).

CIFAR form (default): 3×3 stride-1 stem conv, BN, ReLU, no max-pool, at any input size.
ImageNet form (`stem='imagenet'`): 7×7 stride-2 stem conv and a 3×3 stride-2 max-pool.
Input NHWC float; output logits (N, num_classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from freqjax.models import layers


class BasicBlock(nn.Module):
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    out = layers.conv3x3(self.planes, stride=self.stride, dtype=self.dtype)(x)
    out = nn.relu(layers.batch_norm(train, self.dtype)(out))
    out = layers.conv3x3(self.planes, dtype=self.dtype)(out)
    out = layers.batch_norm(train, self.dtype)(out)
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = layers.Conv(self.planes, kernel=1, stride=self.stride, padding=0, dtype=self.dtype)(x)
      x = layers.batch_norm(train, self.dtype)(x)
    return nn.relu(out + x)


class Bottleneck(nn.Module):
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    out_planes = self.planes * self.expansion
    out = layers.Conv(self.planes, kernel=1, padding=0, dtype=self.dtype)(x)
    out = nn.relu(layers.batch_norm(train, self.dtype)(out))
    out = layers.conv3x3(self.planes, stride=self.stride, dtype=self.dtype)(out)
    out = nn.relu(layers.batch_norm(train, self.dtype)(out))
    out = layers.Conv(out_planes, kernel=1, padding=0, dtype=self.dtype)(out)
    out = layers.batch_norm(train, self.dtype)(out)
    if self.stride != 1 or x.shape[-1] != out_planes:
      x = layers.Conv(out_planes, kernel=1, stride=self.stride, padding=0, dtype=self.dtype)(x)
      x = layers.batch_norm(train, self.dtype)(x)
    return nn.relu(out + x)


class ResNet(nn.Module):
  stage_sizes: Sequence[int]
  block: type
  num_classes: int
  width_multiplier: float = 1.0
  stem: str = "cifar"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    base = layers.width(64, self.width_multiplier)
    if self.stem == "cifar":
      x = layers.conv3x3(base, dtype=self.dtype)(x)
      x = nn.relu(layers.batch_norm(train, self.dtype)(x))
    elif self.stem == "imagenet":
      x = layers.Conv(base, kernel=7, stride=2, padding=3, dtype=self.dtype)(x)
      x = nn.relu(layers.batch_norm(train, self.dtype)(x))
      x = layers.max_pool(x, 3, 2, padding=1)
    else:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; use 'cifar' or 'imagenet'.")
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = self.block(base * 2**i, stride=stride, dtype=self.dtype)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return layers.Dense(self.num_classes, dtype=self.dtype)(x)
