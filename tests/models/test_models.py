"""Model zoo: parameter counts equal the PyTorch originals; registry errors; options."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import models

# Trainable parameters of the official PyTorch models (BN scale and bias, no running stats).
ORIGINAL_COUNTS = {
    "resnet18": (11_173_962, 11_170_884),
    "resnet34": (21_282_122, 21_279_044),
    "resnet50": (23_520_842, 23_508_548),
    "resnet101": (42_512_970, 42_500_676),
    "vgg11": (9_231_114, 9_228_036),
    "vgg16": (14_728_266, 14_725_188),
    "alexnet": (24_335_584, 24_311_008),
}


def _count(name, num_classes, size=32, **kw):
  model = models.create(name, num_classes=num_classes, **kw)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  return models.count_params(shapes["params"])


@pytest.mark.parametrize("name", sorted(ORIGINAL_COUNTS))
def test_parameter_counts_equal_the_originals(name):
  ten, four = ORIGINAL_COUNTS[name]
  assert _count(name, 10) == ten
  assert _count(name, 4) == four


def test_counts_do_not_depend_on_input_size_for_the_cifar_resnet():
  assert _count("resnet18", 10, size=224) == 11_173_962
  assert _count("resnet18", 10, size=64, stem="imagenet") == 11_173_962 - 64 * 3 * 9 + 64 * 3 * 49


def test_width_multiplier_narrows_the_network():
  full, narrow = _count("resnet18", 10), _count("resnet18", 10, width_multiplier=0.25)
  assert narrow < full / 12


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet19'.*resnet18.*vgg16"):
    models.create("resnet19", num_classes=10)


@pytest.mark.parametrize(
    "name,size,kw",
    [
        ("resnet18", 32, {}),
        ("resnet50", 224, {}),
        ("resnet50", 64, {"stem": "imagenet"}),
        ("vgg16", 224, {}),
        ("alexnet", 32, {}),
    ],
)
def test_forward_shapes_in_both_modes(name, size, kw):
  model = models.create(name, num_classes=7, width_multiplier=0.125, **kw)
  x = jnp.ones((2, size, size, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert jax.eval_shape(lambda v: model.apply(v, x, train=False), v).shape == (2, 7)
  rngs = {"dropout": jax.random.key(1)}
  out, upd = jax.eval_shape(
      lambda v: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs), v
  )
  assert out.shape == (2, 7)
  treedef = jax.tree_util.tree_structure
  assert treedef(upd["batch_stats"]) == treedef(v["batch_stats"])


def test_bfloat16_compute_keeps_float32_params():
  model = models.create("resnet18", num_classes=4, width_multiplier=0.125, dtype="bfloat16")
  x = jnp.ones((1, 16, 16, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v["params"]))
  assert jax.eval_shape(lambda v: model.apply(v, x), v).dtype == jnp.bfloat16


def test_pytorch_default_init_scale():
  from freqjax.models import layers

  conv = layers.Conv(64, kernel=3, use_bias=True)
  v = conv.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]["Conv_0"]
  bound = 1 / np.sqrt(27)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3*3*3
  for p in (np.asarray(v["kernel"]), np.asarray(v["bias"])):
    assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound


def test_vit_base_patch8_has_timms_parameter_count():
  assert _count("vit_base_patch8_224", 10, size=224) == 85_815_562  # manifest.json
  assert _count("vit_base_patch8_224", 1000, size=224) == 86_576_872


def test_every_vit_variant_builds_at_32_px_and_a_patch_must_divide_the_size():
  from freqjax import config as config_lib, errors  # pylint: disable=g-import-not-at-top

  for name in models.names():
    if name.startswith("vit_"):
      assert _count(name, 4, size=32, width_multiplier=0.25) > 0
  c = config_lib.base_config()
  c.model.name, c.data.image_size = "vit_tiny_patch16_224", 40
  with pytest.raises(errors.ConfigError, match="not a multiple of.*16×16 patches; use e.g. 32"):
    config_lib.validate(c)


def _forward(name, sizes):
  """A real forward pass (random init, inference mode) at each size×size: its logits, or None
  where the model cannot even be built (AlexNet's first linear layer with no input features).
  One initialisation serves every size whose parameter shapes are the same (VGG's)."""
  model = models.create(name, num_classes=3, width_multiplier=1 / 16)
  variables, out = None, []
  for size in sizes:
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    try:
      shapes = jax.eval_shape(model.init, jax.random.key(1), x)
    except ZeroDivisionError:
      out.append(None)
      continue
    same = lambda a, b: a.shape == b.shape
    if variables is None or not all(jax.tree.leaves(jax.tree.map(same, shapes, variables))):
      variables = models.init(model, jax.random.key(1), size)
    out.append(np.asarray(jax.jit(model.apply)(variables, x)))
  return out


@pytest.mark.parametrize("name", ["vgg11", "alexnet"])
def test_a_model_too_small_for_the_image_is_refused_naming_the_size_it_takes(name):
  from freqjax import config as config_lib, errors  # pylint: disable=g-import-not-at-top

  c = config_lib.base_config()
  c.model.name, c.data.image_size = name, 8
  with pytest.raises(errors.ConfigError, match=rf"image_size=8 is too small for {name}:") as e:
    config_lib.validate(c)
  assert "\n" not in str(e.value) and "learning rate" not in str(e.value)
  smallest = int(re.search(r"it takes (\d+) px or more", str(e.value)).group(1))
  at_smallest, below = _forward(name, (smallest, smallest - 1))
  assert at_smallest.shape == (2, 3) and np.isfinite(at_smallest).all()
  assert below is None or not np.isfinite(below).all()  # 0×0 maps: the mean of nothing


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_resnets_take_small_images_with_either_stem(stem):
  """Padded strided convs and pools keep every map at least 1×1: no refusal at 4 px."""
  from freqjax import config as config_lib  # pylint: disable=g-import-not-at-top

  c = config_lib.base_config()
  c.model.stem, c.data.image_size = stem, 4
  config_lib.validate(c)
  assert config_lib.smallest_image_size(c.model, 4, 1) == 1
