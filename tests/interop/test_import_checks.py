"""The importer never accepts a model it cannot reproduce: a ViT whose shape is not the
--arch's is refused naming both (its head count is not in its weights, so it is never
rescaled unless the config asks), and a --check above its tolerance exits 2 leaving no run."""

import json

import jax
import numpy as np
import pytest

from freqjax import config as config_lib, errors, models
from freqjax.interop import convert, importer, safetensors_io
from tests.training.helpers import last_line, launch

VIT = "timm_vit_tiny_patch16_224_c10"


@pytest.fixture(scope="module")
def vit_files(shared_data):
  folder = shared_data / "torch-checkpoints"
  return str(folder / f"{VIT}.safetensors"), str(folder / f"{VIT}_io.npz")


def _refusal(out) -> str:
  """The one line a refused launch prints (exit code 2, no traceback)."""
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and not out.stdout.strip()
  line = last_line(out)
  assert line.startswith("Error: ") and out.stderr.count("Error: ") == 1
  return line


def test_a_vit_tiny_file_is_refused_as_vit_base_naming_both(tmp_path, vit_files):
  source, io = vit_files
  wd = tmp_path / "wd"
  out = launch(
      "import_model",
      [f"--from={source}", "--arch=vit_base_patch16_224", f"--workdir={wd}", f"--check={io}"],
  )
  line = _refusal(out)
  assert "width 192, depth 12" in line and "(vit_tiny_patch16_224)" in line
  assert "--arch=vit_base_patch16_224 is width 768" in line
  assert line.endswith("Use --arch=vit_tiny_patch16_224.")
  assert not wd.exists()


def test_the_right_arch_reproduces_pytorch_and_a_tolerance_exceeded_leaves_no_run(
    tmp_path, vit_files
):
  source, io = vit_files
  args = [f"--from={source}", "--arch=vit_tiny_patch16_224", f"--check={io}"]
  out = launch("import_model", [*args, f"--workdir={tmp_path / 'good'}"])
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["max_rel_logit_error"] < 1e-5 and result["check_tolerance"] == 1e-4
  assert result["vit"]["num_heads"] == 3 and result["width_multiplier"] == 1.0
  assert (tmp_path / "good" / "checkpoints").is_dir()

  strict = launch("import_model", [*args, f"--workdir={tmp_path / 'x'}", "--check_tolerance=0"])
  line = _refusal(strict)
  assert f"max relative error of {result['max_rel_logit_error']:.3g}" in line
  assert "above --check_tolerance=0" in line and "the model was not reproduced" in line
  assert not (tmp_path / "x").exists()


def test_vit_base_heads_on_vit_tiny_weights_fail_the_check_and_write_nothing(tmp_path, vit_files):
  """Asked for explicitly (the config names vit_base at width ×0.25), the import is built,
  but 12 heads over ViT-Ti's weights (3 heads) do not give PyTorch's logits."""
  source, io = vit_files
  c = config_lib.base_config()
  c.model.name, c.model.width_multiplier = "vit_base_patch16_224", 0.25
  with pytest.raises(errors.CheckpointError, match="not reproduced") as e:
    importer.import_model(
        source,
        c.model.name,
        str(tmp_path / "wd"),
        config=c,
        check=io,
        class_names=[str(i) for i in range(10)],  # the file's 10 outputs (base_config has 4)
    )
  error = float(str(e.value).split("max relative error of ")[1].split(" ")[0])
  assert error > 1e-2  # not a rounding difference: another model
  assert not (tmp_path / "wd").exists()


def test_a_check_against_other_logits_fails_at_the_default_tolerance(tmp_path, vit_files):
  source, io = vit_files
  with np.load(io) as z:
    x, logits = z["x_nchw"], z["logits"]
  for name, ref in (("off", logits * 1.01), ("nan", np.where(logits > 0, np.nan, logits))):
    np.savez(tmp_path / f"{name}.npz", x_nchw=x, logits=ref)
    wd = tmp_path / f"wd_{name}"
    with pytest.raises(errors.CheckpointError, match="above --check_tolerance=0.0001"):
      importer.import_model(
          source, "vit_tiny_patch16_224", str(wd), check=str(tmp_path / f"{name}.npz")
      )
    assert not wd.exists()


@pytest.fixture(scope="module")
def narrow_vit(tmp_path_factory):
  """A freqjax ViT-Ti/8 at width ×0.25 (48 channels, 3 heads) exported in timm's naming."""
  arch = "vit_tiny_patch8_224"
  model = models.create(arch, num_classes=4, width_multiplier=0.25)
  x = jax.numpy.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  path = str(tmp_path_factory.mktemp("narrow") / "vit.safetensors")
  return arch, safetensors_io.save(path, convert.to_state_dict(variables, arch, "timm"))


def test_a_narrow_vit_is_imported_only_at_the_width_its_config_asks(tmp_path, narrow_vit):
  arch, path = narrow_vit
  with pytest.raises(errors.CheckpointError) as e:
    importer.import_model(path, arch, str(tmp_path / "a"))
  msg = str(e.value)
  assert "width 48" in msg and f"--arch={arch} is width 192" in msg
  assert f"--config.model.name={arch} --config.model.width_multiplier=0.25" in msg
  c = config_lib.base_config()
  c.model.name, c.model.width_multiplier, c.data.image_size = arch, 0.5, 32
  with pytest.raises(errors.CheckpointError, match="width_multiplier 0.5 does not give it"):
    importer.import_model(path, arch, str(tmp_path / "b"), config=c)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
  c.model.width_multiplier = 0.25
  out = importer.import_model(path, arch, str(tmp_path / "c"), config=c)
  assert out["written"] and out["width_multiplier"] == 0.25 and out["vit"]["num_heads"] == 3


def test_a_vit_of_another_depth_or_patch_names_both_shapes(vit_files):
  tensors = convert.read(vit_files[0]).tensors
  shallow = {
      k: v
      for k, v in tensors.items()
      if not k.startswith(tuple(f"blocks.{i}." for i in range(6, 12)))
  }
  with pytest.raises(errors.CheckpointError) as e:
    convert.spec(shallow, "vit_tiny_patch16_224")
  msg = str(e.value)
  assert "width 192, depth 6" in msg and "--arch=vit_tiny_patch16_224 is depth 12" in msg
  assert "none reproduces it" in msg
  with pytest.raises(
      errors.CheckpointError, match=r"is patch 32\. Use --arch=vit_tiny_patch16_224\.$"
  ):
    convert.spec(tensors, "vit_tiny_patch32_224")
