"""Model zoo: one registry by name.

    model = models.create("resnet18", num_classes=10, width_multiplier=0.25)
    variables = models.init(model, rng, image_size=32)

Names: resnet18/34/50/101, vgg11/13/16/19, alexnet, and timm's ViTs
vit_{tiny,small,base}_patch{8,16,32}_224 (`freqjax.models.vit`). Every model is a Flax linen
module called as `model.apply(variables, x, train=...)` with x NHWC float32 (normalised
images) and returns logits (N, num_classes). Variables hold
'params' and, for the convolutional nets, 'batch_stats' (BatchNorm running statistics).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from freqjax.models.alexnet import AlexNet
from freqjax.models.resnet import BasicBlock, Bottleneck, ResNet
from freqjax.models.vgg import CONFIGS as _VGG_CONFIGS, VGG
from freqjax.models.vit import create as _vit, variants as _vit_variants

_REGISTRY: dict[str, Callable] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck),
    "resnet101": functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=Bottleneck),
    "alexnet": AlexNet,
    **{name: functools.partial(VGG, layout=layout) for name, layout in _VGG_CONFIGS.items()},
    **{name: functools.partial(_vit, **spec) for name, spec in _vit_variants().items()},
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def names() -> list[str]:
  return sorted(_REGISTRY)


def create(
    name: str,
    *,
    num_classes: int,
    width_multiplier: float = 1.0,
    stem: str = "cifar",
    dtype: str = "float32",
    dropout_rate: float = 0.5,
):
  """Builds a model by registry name; an unknown name lists the known ones."""
  if name not in _REGISTRY:
    raise ValueError(
        f"Unknown model {name!r}. Known models: {', '.join(names())}. "
        "Set --config.model.name to one of them."
    )
  if dtype not in DTYPES:
    raise ValueError(f"Unknown model dtype {dtype!r}; use one of {sorted(DTYPES)}.")
  kwargs = dict(num_classes=num_classes, width_multiplier=width_multiplier, dtype=DTYPES[dtype])
  if name.startswith("resnet"):
    kwargs["stem"] = stem
  if name == "alexnet":
    kwargs["dropout_rate"] = dropout_rate
  return _REGISTRY[name](**kwargs)


def from_config(model_config, num_classes: int):
  return create(
      model_config.name,
      num_classes=num_classes,
      width_multiplier=model_config.width_multiplier,
      stem=model_config.stem,
      dtype=model_config.dtype,
      dropout_rate=model_config.dropout_rate,
  )


def init(model, rng, image_size: int, channels: int = 3):
  """Initial variables for NHWC inputs of the given size (on the default device)."""
  x = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
  return jax.jit(functools.partial(model.init, train=False))(rng, x)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
