"""Layers with PyTorch's default initialisation and padding conventions.

The official models are PyTorch modules; to train like them, convolutions and linear layers
here use PyTorch's default init (kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weights and biases), explicit symmetric padding (PyTorch's `padding=k`,
which differs from XLA's 'SAME' for strided convolutions), and BatchNorm with PyTorch's
momentum 0.1 (Flax momentum 0.9) and epsilon 1e-5. All tensors are NHWC.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Conv2d/Linear weights.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
  bound = 1.0 / jnp.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Conv(nn.Module):
  """k×k convolution with PyTorch's padding (p on every side) and init."""

  features: int
  kernel: int = 3
  stride: int = 1
  padding: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1] * self.kernel * self.kernel
    return nn.Conv(
        self.features,
        (self.kernel, self.kernel),
        strides=(self.stride, self.stride),
        padding=((self.padding, self.padding), (self.padding, self.padding)),
        use_bias=self.use_bias,
        dtype=self.dtype,
        kernel_init=torch_kernel_init,
        bias_init=_torch_bias_init(fan_in),
    )(x)


class Dense(nn.Module):
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(
        self.features,
        use_bias=self.use_bias,
        dtype=self.dtype,
        kernel_init=torch_kernel_init,
        bias_init=_torch_bias_init(x.shape[-1]),
    )(x)


def batch_norm(train: bool, dtype=jnp.float32, name: str | None = None):
  """BatchNorm as torch.nn.BatchNorm2d: momentum 0.1, eps 1e-5; batch statistics over the
  whole (global) batch when the batch is sharded over devices under jax.jit."""
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
      name=name,
      use_fast_variance=False,
  )  # two-pass variance, as PyTorch: no E[x²]-E[x]² cancellation


def max_pool(x, window: int, stride: int | None = None, padding: int = 0):
  stride = window if stride is None else stride
  return nn.max_pool(
      x,
      (window, window),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
  )


def width(channels: int, multiplier: float) -> int:
  """Channel count scaled by the width multiplier (at least 1)."""
  return max(1, int(round(channels * multiplier)))


conv3x3 = functools.partial(Conv, kernel=3, padding=1)
