"""Vision Transformers as timm's `VisionTransformer` (class token, learned position embeddings,
pre-norm blocks, token pooling), with timm's parameter names, so a timm checkpoint maps onto
them one to one:

    timm                               freqjax params
    cls_token (1, 1, D)                cls_token
    pos_embed (1, 1 + N, D)            pos_embed
    patch_embed.proj.{weight,bias}     patch_embed/proj/{kernel,bias}   (P×P conv, stride P)
    blocks.<i>.norm1                   blocks_<i>/norm1/{scale,bias}    (LayerNorm, eps 1e-6)
    blocks.<i>.attn.qkv, .attn.proj    blocks_<i>/attn/qkv, attn/proj   (Dense)
    blocks.<i>.norm2                   blocks_<i>/norm2
    blocks.<i>.mlp.fc1, .mlp.fc2       blocks_<i>/mlp/fc1, mlp/fc2      (GELU, exact erf)
    norm, head                         norm, head

Input NHWC float (normalised), any size divisible by the patch; the number of position
embeddings follows the input size at init (N = (H/P)·(W/P)), so a checkpoint is tied to the
size it was trained at. No BatchNorm statistics; no dropout (timm's default rates are 0).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from freqjax.models import layers

# name -> (embed dim, heads); depth 12 and MLP ratio 4 for all.
SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
PATCHES = (8, 16, 32)
DEPTH = 12
LN_EPS = 1e-6

_trunc02 = nn.initializers.truncated_normal(0.02)


def _dense(features: int, name: str, dtype) -> nn.Dense:
  return nn.Dense(
      features, dtype=dtype, kernel_init=_trunc02, bias_init=nn.initializers.zeros, name=name
  )


class Attention(nn.Module):
  dim: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, _ = x.shape
    head_dim = self.dim // self.num_heads
    qkv = _dense(3 * self.dim, "qkv", self.dtype)(x).reshape(b, n, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, heads, head_dim)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * head_dim**-0.5, k)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, self.dim)
    return _dense(self.dim, "proj", self.dtype)(out)


class Mlp(nn.Module):
  hidden: int
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.gelu(_dense(self.hidden, "fc1", self.dtype)(x), approximate=False)
    return _dense(self.dim, "fc2", self.dtype)(x)


class Block(nn.Module):
  dim: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    norm = lambda name: nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name=name)
    x = x + Attention(self.dim, self.num_heads, self.dtype, name="attn")(norm("norm1")(x))
    hidden = int(self.dim * self.mlp_ratio)
    return x + Mlp(hidden, self.dim, self.dtype, name="mlp")(norm("norm2")(x))


class PatchEmbed(nn.Module):
  dim: int
  patch: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
        self.dim,
        (self.patch, self.patch),
        strides=(self.patch, self.patch),
        padding="VALID",
        dtype=self.dtype,
        kernel_init=layers.torch_kernel_init,
        name="proj",
    )(x)
    return x.reshape(x.shape[0], -1, self.dim)  # row-major patches, as timm's flatten(2)


class ViT(nn.Module):
  num_classes: int
  patch: int = 16
  dim: int = 192
  num_heads: int = 3
  depth: int = DEPTH
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout, no batch statistics
    h, w = x.shape[1:3]
    if h % self.patch or w % self.patch:
      raise ValueError(
          f"ViT with {self.patch}×{self.patch} patches needs an input size divisible by "
          f"{self.patch}; got {h}×{w}."
      )
    x = PatchEmbed(self.dim, self.patch, self.dtype, name="patch_embed")(x.astype(self.dtype))
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)).astype(x.dtype), x], 1)
    pos = self.param("pos_embed", _trunc02, (1, x.shape[1], self.dim))
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      x = Block(self.dim, self.num_heads, self.mlp_ratio, self.dtype, name=f"blocks_{i}")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(x)
    return _dense(self.num_classes, "head", self.dtype)(x[:, 0])


def variants() -> dict[str, dict]:
  """{'vit_tiny_patch16_224': {'patch': 16, 'dim': 192, 'num_heads': 3}, ...} (timm's names)."""
  return {
      f"vit_{size}_patch{p}_224": {"patch": p, "dim": dim, "num_heads": heads}
      for size, (dim, heads) in SIZES.items()
      for p in PATCHES
  }


def create(
    num_classes: int,
    *,
    patch: int,
    dim: int,
    num_heads: int,
    width_multiplier: float = 1.0,
    dtype=jnp.float32,
) -> ViT:
  """A ViT whose embedding width is scaled by `width_multiplier` (rounded to a multiple of
  the head count, at least one channel per head); depth and heads stay timm's."""
  dim = max(num_heads, num_heads * int(round(dim * width_multiplier / num_heads)))
  return ViT(num_classes=num_classes, patch=patch, dim=dim, num_heads=num_heads, dtype=dtype)
