"""PyTorch state dicts -> freqjax models: the PyTorch-computed logits of real checkpoints
(oracles), exact round trips for every naming, and errors that name what does not fit."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import errors, models
from freqjax.interop import convert, importer, safetensors_io
from tests.interop import torch_zip

ORACLES = [
    ("official_resnet18_c10.ckpt", "resnet18", "official", "cifar"),
    ("torchvision_resnet18_c10.pth", "resnet18", "torchvision", "imagenet"),
    ("timm_vit_tiny_patch16_224_c10.safetensors", "vit_tiny_patch16_224", "timm", "cifar"),
]


@pytest.fixture(scope="module")
def official(shared_data):
  return convert.read(str(shared_data / "torch-checkpoints" / ORACLES[0][0]))


@pytest.mark.parametrize("name,arch,naming,stem", ORACLES, ids=lambda v: str(v)[:12])
def test_converted_models_reproduce_pytorchs_logits(shared_data, name, arch, naming, stem):
  folder = shared_data / "torch-checkpoints"
  ck = convert.read(str(folder / name))
  assert convert.detect_naming(ck.tensors) == naming
  spec = convert.spec(ck.tensors, arch)
  assert (spec.num_classes, spec.width_multiplier, spec.stem) == (10, 1.0, stem)
  io = np.load(folder / (name.rsplit(".", 1)[0] + "_io.npz"))
  x = io["x_nchw"].transpose(0, 2, 3, 1)
  model = models.create(arch, num_classes=10, stem=spec.stem)
  variables = convert.to_variables(ck.tensors, model, arch, naming, x.shape[1])
  logits = np.asarray(model.apply(variables, jnp.asarray(x), train=False))
  assert importer.max_rel_logit_error(logits, io["logits"]) < 1e-4
  assert (logits.argmax(1) == io["logits"].argmax(1)).all()


def test_lightning_checkpoint_is_read_with_its_prefix_and_aliases(official):
  assert official.format == "lightning" and official.prefix == "backbone_model."
  assert official.hyper_parameters["image_size"] == 32  # the module object is not kept
  t = official.tensors  # features.<i> alias conv1, bn1, layer1..4: the same tensors
  np.testing.assert_array_equal(t["features.0.weight"], t["conv1.weight"])
  np.testing.assert_array_equal(t["features.6.1.bn2.running_var"], t["layer4.1.bn2.running_var"])


def _randomised(model, size, seed=0):
  """Variables of `model` with every leaf random (BN statistics too, variances positive),
  so that a swapped or dropped tensor changes the result."""
  x = jnp.zeros((1, size, size, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(seed), x, train=False))
  leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    r = rng.normal(size=leaf.shape).astype(np.float32) * 0.2
    out.append(jnp.asarray(np.abs(r) + 0.5 if str(path[-1]) == "['var']" else r))
  return jax.tree_util.tree_unflatten(tree, out)


ROUND_TRIPS = [
    ("resnet18", "official", 1 / 8, "cifar", "ckpt"),
    ("resnet50", "torchvision", 1 / 16, "imagenet", "pth"),
    ("vgg16", "official", 1 / 16, "cifar", "ckpt"),
    ("alexnet", "official", 1 / 16, "cifar", "pth"),
    ("vit_tiny_patch8_224", "timm", 1 / 4, "cifar", "safetensors"),
]


@pytest.mark.parametrize("arch,naming,width,stem,fmt", ROUND_TRIPS, ids=lambda v: str(v))
def test_round_trip_through_a_file_is_exact(tmp_path, arch, naming, width, stem, fmt):
  model = models.create(arch, num_classes=7, width_multiplier=width, stem=stem)
  v = _randomised(model, 32)
  state = convert.to_state_dict(v, arch, naming)
  path = str(tmp_path / f"m.{fmt}")
  if fmt == "safetensors":
    safetensors_io.save(path, state)
  elif fmt == "ckpt":  # Lightning's layout: a prefix and bookkeeping tensors
    sd = collections.OrderedDict((f"backbone_model.{k}", a) for k, a in state.items())
    for k in state:
      if k.endswith("running_var"):
        sd[f"backbone_model.{k[:-11]}num_batches_tracked"] = np.zeros((), np.int64)
    torch_zip.save(path, {"state_dict": sd, "pytorch-lightning_version": "1.9.5", "epoch": 3})
  else:
    torch_zip.save(path, collections.OrderedDict(state))
  ck = convert.read(path)
  assert convert.detect_naming(ck.tensors) == naming
  spec = convert.spec(ck.tensors, arch)
  assert (spec.num_classes, spec.width_multiplier, spec.stem) == (7, width, stem)
  back = convert.to_variables(ck.tensors, model, arch, naming, 32)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, v)


def test_alexnet_first_linear_layer_reads_pytorchs_channel_major_flatten():
  rng = np.random.default_rng(0)
  feat_nchw = rng.normal(size=(2, 16, 2, 2)).astype(np.float32)
  w = rng.normal(size=(5, 64)).astype(np.float32)  # torch Linear(16·2·2, 5), no bias
  torch_out = feat_nchw.reshape(2, -1) @ w.T  # x.view(N, C*H*W) as the official forward
  kernel = convert._to_flax(w, "linear_chw", 16)
  flax_out = feat_nchw.transpose(0, 2, 3, 1).reshape(2, -1) @ kernel  # freqjax's NHWC flatten
  np.testing.assert_allclose(flax_out, torch_out, rtol=1e-5)


def test_wrong_architecture_lists_missing_names_and_suggests_the_right_one(official):
  with pytest.raises(errors.CheckpointError) as e:
    convert.spec(official.tensors, "resnet34")
  msg = str(e.value)
  assert "missing parameter(s) [layer1.2.conv1.weight" in msg and "--arch=resnet18" in msg
  tensors = dict(official.tensors, **{"extra.weight": np.ones(3, np.float32)})
  del tensors["layer3.1.bn2.running_mean"]
  expected = r"1 missing parameter\(s\) \[layer3\.1\.bn2\.running_mean\]; 1 unexpected \[extra"
  with pytest.raises(errors.CheckpointError, match=expected):
    convert.spec(tensors, "resnet18")


def test_a_layer_of_another_shape_names_the_layer_and_both_shapes(official):
  tensors = dict(official.tensors)
  tensors["layer2.0.conv1.weight"] = np.zeros((128, 64, 5, 5), np.float32)
  model = models.create("resnet18", num_classes=10)
  with pytest.raises(
      errors.CheckpointError,
      match=r"layer2\.0\.conv1\.weight has shape \(128, 64, 5, 5\).*needs \(128, 64, 3, 3\)",
  ):
    convert.to_variables(tensors, model, "resnet18", "official", 32)


def test_vit_at_another_size_is_an_error_or_resampled_on_request(shared_data):
  name = ORACLES[2][0]
  tensors = convert.read(str(shared_data / "torch-checkpoints" / name)).tensors
  model = models.create("vit_tiny_patch16_224", num_classes=10)
  with pytest.raises(errors.CheckpointError, match=r"224 px \(checkpoint\) vs 32 px"):
    convert.to_variables(tensors, model, "vit_tiny_patch16_224", "timm", 32)
  with pytest.warns(UserWarning, match="Resampling"):
    v = convert.to_variables(
        tensors, model, "vit_tiny_patch16_224", "timm", 32, interpolate_pos_embed=True
    )
  pos = np.asarray(v["params"]["pos_embed"])
  assert pos.shape == (1, 5, 192)
  np.testing.assert_array_equal(pos[:, 0], tensors["pos_embed"][:, 0])  # class token kept


def test_unknown_naming_is_an_error():
  with pytest.raises(errors.CheckpointError, match="match none of the known namings"):
    convert.detect_naming({"encoder.weight": np.ones(1)})
