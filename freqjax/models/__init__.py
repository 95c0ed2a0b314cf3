"""Model zoo: one registry by name.

    model = models.create("resnet18", num_classes=10, width_multiplier=0.25)
    variables = models.init(model, rng, image_size=32)

Names: resnet18/34/50/101, vgg11/13/16/19, alexnet, and timm's ViTs
vit_{tiny,small,base}_patch{8,16,32}_224 (`freqjax.models.vit`). Every model is a Flax linen
module called as `model.apply(variables, x, train=...)` with x NHWC float32 (normalised
images) and returns logits (N, num_classes). Variables hold
'params' and, for the convolutional nets, 'batch_stats' (BatchNorm running statistics).
`fits(model, size)` / `smallest_image_size(model, size)`: whether its feature maps survive
its downsampling at that input size (a trace, nothing computed), else the smallest that does.
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


def fits(model, image_size: int, channels: int = 3) -> bool:
  """Whether `model` runs on image_size×image_size inputs: its initialisation, traced (nothing
  computed, no device touched), makes no empty array. A feature map that its downsampling
  shrinks to 0×0 (VGG's five max-pools below 32 px) is empty, and so is a layer whose fan-in
  it leaves at 0 (AlexNet's first linear layer, whose initialiser then divides by zero)."""
  x = jax.ShapeDtypeStruct((1, int(image_size), int(image_size), channels), jnp.float32)
  try:
    jaxpr = jax.make_jaxpr(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  except ZeroDivisionError:
    return False
  return not _makes_an_empty_array(jaxpr.jaxpr)


def _makes_an_empty_array(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if any(0 in getattr(v.aval, "shape", ()) for v in eqn.outvars):
      return True
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr (jit, custom_jvp, ...)
        if hasattr(inner, "eqns") and _makes_an_empty_array(inner):
          return True
  return False


def smallest_image_size(model, above: int, limit: int = 4096) -> int | None:
  """The smallest image size above `above` (at which `model` does not fit) where it fits, or
  None if none up to `limit`. Sizes above one that fits fit too (downsampling is monotone),
  so this is the smallest size the model takes; a few traces (doubling, then bisection)."""
  lo, hi = int(above), 2 * max(1, int(above))
  while not fits(model, hi):
    if hi >= limit:
      return None
    lo, hi = hi, min(2 * hi, limit)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if fits(model, mid) else (mid, hi)
  return hi
