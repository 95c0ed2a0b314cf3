"""The class map (freqjax/classmap.py): a model with more outputs than classes (ImageNet-1k's
1000, of which a dataset uses ten) is analysed with each class's output as its label.

A 1000-output model is built from a 10-output one: its ten mapped outputs are the small
model's final Dense columns, and the other 990 get a zero kernel and a bias of -1e4 (so
their softmax weight is exactly 0 in float32: exp(-1e4 - max) underflows) or a bias that
beats the classes' logits on some images (predictions outside the classes)."""

import json

import jax
import numpy as np
import pytest

from freqjax import classmap, config as config_lib, errors, models, parallel
from freqjax.evaluation import shortcut
from freqjax.interop import convert, importer, safetensors_io
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib
from freqjax.stages import context
from tests.conftest import REPO, load_config
from tests.training.helpers import last_line, launch

SIZE, PER_CLASS, WIDTH = 16, 4, 1 / 16


def tiny_in10():
  return load_config("configs/tiny_imagenet10.py")


def mapped_config(model_classes=(), num_outputs=1000):
  c = tiny_in10()
  c.data.image_size, c.data.storage_size = SIZE, SIZE
  c.model.num_outputs = num_outputs
  c.data.model_classes = tuple(model_classes)
  return c


@pytest.fixture(scope="module")
def small():
  """A 10-output width-4 ResNet-18 (random weights), test images and labels."""
  model = models.create("resnet18", num_classes=10, width_multiplier=WIDTH)
  variables = models.init(model, jax.random.key(0), SIZE)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(10 * PER_CLASS, SIZE, SIZE, 3)).astype(np.float32)
  labels = np.repeat(np.arange(10, dtype=np.int32), PER_CLASS)
  return model, variables, images, labels


def widened(small_model, variables, outputs, others_bias):
  """The 1000-output model whose outputs `outputs` are the small model's logits and whose
  other outputs have kernel 0 and bias `others_bias`."""
  big = models.create("resnet18", num_classes=1000, width_multiplier=WIDTH)
  params = jax.tree_util.tree_map(np.asarray, variables["params"])
  head = params["Dense_0"]["Dense_0"]  # the final layers.Dense (a wrapped nn.Dense)
  kernel = np.zeros((head["kernel"].shape[0], 1000), np.float32)
  bias = np.full(1000, others_bias, np.float32)
  kernel[:, list(outputs)], bias[list(outputs)] = head["kernel"], head["bias"]
  params = dict(params, Dense_0={"Dense_0": {"kernel": kernel, "bias": bias}})
  return big, dict(variables, params=params)


def ctx_of(config, model, variables, images, labels):
  """A Context as load_context builds it (output order from the config), without a workdir."""
  mesh = parallel.make_mesh(0)
  return context.Context(
      config,
      None,
      model,
      variables,
      {},
      mesh,
      None,
      images,
      labels,
      list(config.data.class_names),
      {},
      classmap.output_order(config),
  )


CHUNK = 16


def ranked(ctx):
  cands = cand_lib.make(SIZE, 4, "paired")
  # A fixed chunk: the engine's measured choice may differ between two engines, and with it
  # the float rounding (~1e-7); the bit-for-bit comparisons need the same chunks.
  engine = dfm_lib.Engine(
      ctx.apply_fn, ctx.variables, ctx.mesh, cands, chunk_size=CHUNK, progress=False
  )
  return engine.rank(ctx.images, ctx.labels, range(10))


def tiny_outputs():
  c = mapped_config()
  config_lib.validate(c)
  return c.data.model_classes


def test_tiny_imagenet10_folders_map_by_synset_to_imagenet_indices(shared_data):
  synsets = classmap.imagenet_synsets()
  assert len(synsets) == 1000 and synsets[0] == "n01440764"  # tench, ImageNet-1k's class 0
  # The config's folders (WNIDs) and the folders on disk (WNID_name) map alike.
  on_disk = sorted(p.name for p in (shared_data / "tiny-imagenet-10" / "train").iterdir())
  c = tiny_in10()
  by_wnid = {f: i for f, i in zip(c.data.class_folders, tiny_outputs())}
  for folder in on_disk:
    (index,) = classmap.by_synset([folder], [folder])
    assert synsets[index] == folder.split("_")[0] and by_wnid[folder.split("_")[0]] == index
  # Four true ImageNet-10 classes and six stand-ins, at torchvision's ImageNet-1k indices.
  assert dict(zip(c.data.class_names, tiny_outputs())) == {
      "bullet train": 466,
      "beach wagon": 436,
      "goose": 99,
      "tabby cat": 281,
      "ox": 345,
      "golden retriever": 207,
      "tailed frog": 32,
      "gazelle": 353,
      "lifeboat": 625,
      "moving van": 675,
  }


def test_the_identity_map_gives_todays_scores_bit_for_bit(small):
  model, variables, images, labels = small
  plain = lambda v, x: model.apply(v, x, train=False)
  cands = cand_lib.make(SIZE, 4, "paired")
  mesh = parallel.make_mesh(0)
  today = dfm_lib.Engine(plain, variables, mesh, cands, chunk_size=CHUNK, progress=False).rank(
      images, labels, range(10)
  )
  for outputs, given in ((0, ()), (10, tuple(range(10)))):  # default; the identity spelt out
    c = mapped_config(given, outputs)
    config_lib.validate(c)
    assert classmap.mapping(c) is None and classmap.output_order(c) is None
    np.testing.assert_array_equal(ranked(ctx_of(c, model, variables, images, labels)), today)


def test_a_1000_output_model_scores_as_its_10_used_outputs(small):
  model, variables, images, labels = small
  outputs = tiny_outputs()
  big, big_vars = widened(model, variables, outputs, -1e4)
  c = mapped_config(outputs)
  config_lib.validate(c)
  small_ctx = ctx_of(mapped_config((), 0), model, variables, images, labels)
  big_ctx = ctx_of(c, big, big_vars, images, labels)
  # Logit k of the mapped model is class k's output: the small model's logit k.
  np.testing.assert_allclose(
      np.asarray(big_ctx.apply_fn(big_vars, images))[:, :10],
      np.asarray(small_ctx.apply_fn(variables, images)),
      rtol=1e-6,
      atol=1e-6,
  )
  want, got = ranked(small_ctx), ranked(big_ctx)
  # The cross-entropy runs over all 1000 outputs; the 990 others carry softmax weight 0
  # (exp(-1e4 - max) is 0 in float32), so it is the 10-output model's up to the rounding of
  # the wider final matmul and the 1000-term sum: not bit for bit (on this machine about a
  # quarter of the scores differ, by at most ~1e-7 relative, one or two ulps).
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got.shape == want.shape == (10, len(cand_lib.make(SIZE, 4, "paired")))


def test_the_shortcut_test_counts_other_outputs_as_misses_and_restricts_to_the_classes(small):
  model, variables, images, labels = small
  outputs = tiny_outputs()
  c = mapped_config(outputs)
  config_lib.validate(c)
  rng = np.random.default_rng(1)
  dfms = rng.random((10, SIZE, SIZE)) < 0.3
  small_ctx = ctx_of(mapped_config((), 0), model, variables, images, labels)
  want = shortcut.run(small_ctx.apply_fn, variables, small_ctx.mesh, images, labels, dfms)
  logits = np.asarray(small_ctx.apply_fn(variables, images))
  # Other outputs' logit: a constant above some images' best class logit, below others'.
  beats = float(np.median(logits.max(1)))
  for bias in (-1e4, beats):
    big, big_vars = widened(model, variables, outputs, bias)
    big_ctx = ctx_of(c, big, big_vars, images, labels)
    got = shortcut.run(big_ctx.apply_fn, big_vars, big_ctx.mesh, images, labels, dfms)
    subset = shortcut.subset_view(got)
    assert set(subset) == set(want)
    for key in want:  # restricted to the classes' outputs: the 10-output model's test
      np.testing.assert_array_equal(subset[key], want[key], err_msg=key)
    # Over all outputs: one more confusion column, 'other', for predictions outside.
    conf = got["confusion_unfiltered"]
    assert conf.shape == (10, 11) and np.array_equal(conf.sum(1), np.bincount(labels))
    assert conf[:, 10].sum() == (np.sum(logits.max(1) < bias) if bias > 0 else 0)
    assert got["confusion"].shape == got["confusion_removed"].shape == (10, 10, 11)
    if bias < 0:  # no output outside the classes ever wins: both tests agree
      for key in ("tpr", "fpr", "tpr_unfiltered", "fpr_unfiltered", "tpr_removed"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    else:  # a miss to 'other' lowers TPR and can only lower FPR
      assert conf[:, 10].sum() > 0
      assert np.all(got["tpr_unfiltered"] <= subset["tpr_unfiltered"])
      assert np.all(got["fpr_unfiltered"] <= subset["fpr_unfiltered"])
      assert np.any(got["tpr_unfiltered"] < subset["tpr_unfiltered"]) or np.any(
          got["fpr_unfiltered"] < subset["fpr_unfiltered"]
      )
      assert np.all(got["tpr"] <= subset["tpr"]) and np.all(got["fpr"] <= subset["fpr"])


def _message(config) -> str:
  with pytest.raises(errors.ConfigError) as e:
    config_lib.validate(config)
  msg = str(e.value)
  assert "\n" not in msg
  return msg


def test_bad_maps_are_one_line_each():
  outputs = list(tiny_outputs())
  assert "output 1000, but the model's outputs are 0..999" in _message(
      mapped_config(outputs[:-1] + [1000])
  )
  msg = _message(mapped_config(outputs[:-1] + [outputs[0]]))
  assert "two classes, 'bullet train' and 'moving van', to output 466" in msg
  assert "lists 3 outputs for 10 classes" in _message(mapped_config(outputs[:3]))
  c = mapped_config()
  c.data.class_folders = ("n99999999_not_imagenet",) + c.data.class_folders[1:]
  msg = _message(c)
  assert "'bullet train'" in msg and "n99999999 is not one of ImageNet-1k's 1000" in msg
  c.data.class_folders = ("bullet_train",) + c.data.class_folders[1:]
  msg = _message(c)
  assert "Class 'bullet train' (folder 'bullet_train') is not named by an ImageNet synset" in msg
  assert "rename the folder to its ImageNet synset" in msg
  assert "--config.data.model_classes=" in msg
  assert "only an ImageNet-1k model" in _message(mapped_config((), 500))
  assert "fewer than the 10 classes" in _message(mapped_config((), 5))
  with pytest.raises(errors.ConfigError, match="Training builds a model of 10 outputs"):
    classmap.check_trainable(mapped_config(outputs))


def test_the_class_map_is_part_of_the_runs_identity():
  from freqjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  plain, mapped = mapped_config((), 0), mapped_config(tiny_outputs())
  a, b = workdir_lib.identity(plain, None), workdir_lib.identity(mapped, None)
  assert a["class_map"] == "identity"
  assert b["class_map"] == {"num_outputs": 1000, "model_classes": list(tiny_outputs())}
  assert [k for k, _, _ in workdir_lib.identity_diff(a, b)] == ["class_map"]
  old = {k: v for k, v in a.items() if k != "class_map"}  # a run.json from before the map
  assert workdir_lib.identity_diff(old, b) == []
  stored = config_lib.from_dict(json.loads(json.dumps(mapped.to_dict())))
  assert workdir_lib.identity(stored, None) == b


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
  """A narrow 1000-output ResNet-18 (ImageNet stem) in torchvision's naming."""
  model = models.create("resnet18", num_classes=1000, width_multiplier=WIDTH, stem="imagenet")
  x = jax.numpy.zeros((1, 64, 64, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))  # nothing is run
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  path = str(tmp_path_factory.mktemp("in1k") / "resnet18_in1k.safetensors")
  return safetensors_io.save(path, convert.to_state_dict(variables, "resnet18", "torchvision"))


def test_importing_a_1000_output_model_keeps_the_classes_and_maps_them(tmp_path, imagenet_file):
  c = tiny_in10()
  out = importer.import_model(imagenet_file, "resnet18", str(tmp_path / "wd"), config=c)
  assert out["written"] and out["num_classes"] == 1000 and out["classes"] == 10
  assert out["model_classes"] == list(tiny_outputs())
  stored = json.loads((tmp_path / "wd" / "config.json").read_text())
  assert stored["data"]["class_names"] == list(c.data.class_names)
  assert stored["data"]["class_folders"] == list(c.data.class_folders)
  assert stored["model"]["num_outputs"] == 1000
  run = json.loads((tmp_path / "wd" / "run.json").read_text())
  assert run["class_map"] == {"num_outputs": 1000, "model_classes": list(tiny_outputs())}


def test_the_import_launcher_refuses_a_bad_map_in_one_line(tmp_path, imagenet_file):
  args = [
      f"--from={imagenet_file}",
      "--arch=resnet18",
      f"--config={REPO}/configs/tiny_imagenet10.py",
  ]
  dup = "(466, 436, 99, 281, 345, 207, 32, 353, 625, 466)"
  out = launch(
      "import_model", [*args, f"--workdir={tmp_path / 'a'}", f"--config.data.model_classes={dup}"]
  )
  assert out.returncode == 2, out.stderr[-2000:]
  assert last_line(out) == (
      "Error: config.data.model_classes maps two classes, 'bullet train' and 'moving van', to "
      "output 466; each class needs an output of its own."
  )
  renamed = str(("bullet_train",) + tiny_in10().data.class_folders[1:])
  out = launch(
      "import_model",
      [*args, f"--workdir={tmp_path / 'b'}", f"--config.data.class_folders={renamed}"],
  )
  assert out.returncode == 2, out.stderr[-2000:]
  line = last_line(out)
  assert line.startswith("Error: Class 'bullet train' (folder 'bullet_train') is not named by")
  assert "rename the folder" in line and "--config.data.model_classes=" in line
  out = launch(
      "train",
      [
          f"--config={REPO}/configs/tiny_imagenet10.py",
          f"--workdir={tmp_path / 'c'}",
          "--config.model.num_outputs=1000",
      ],
  )
  assert out.returncode == 2, out.stderr[-2000:]
  assert last_line(out).startswith("Error: Training builds a model of 10 outputs, one per class")
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
  assert not (tmp_path / "c").exists()
