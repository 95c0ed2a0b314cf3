"""launch/import_model.py's library: a workdir the analysis stages and the pipeline use as they
use a trained one (shown with a ViT trained here, exported in timm's naming and imported
back: the same DFM scores), the oracle check, and refusals that keep a user's work."""

import json
import os

import numpy as np
import pytest

from freqjax import artifacts, config as config_lib, errors, pipeline
from freqjax.interop import convert, importer, safetensors_io
from freqjax.stages import context
from tests.conftest import REPO, tiny_synthetic_config
from tests.training.helpers import last_line, launch

ORACLE = "official_resnet18_c10"


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
  """A narrow ViT at 32 px trained through the pipeline on tiny synthetic data."""
  tmp = tmp_path_factory.mktemp("vit")
  c = tiny_synthetic_config(
      tmp / "data",
      **{
          "model.name": "vit_tiny_patch8_224",
          "model.width_multiplier": 0.25,
          "train.lr": 0.003,
          "train.epochs": 1,
          "analysis.patch_size": 4,
          "analysis.batch_size": 40,
      },
  )
  summary = pipeline.run_pipeline(c, str(tmp / "trained"))
  return c, tmp, summary


def test_a_vit_trains_and_is_analysed_through_the_pipeline(vit_run):
  c, tmp, summary = vit_run
  assert len(summary["tpr"]) == 4 and all(0 <= v <= 1 for v in summary["tpr"])
  dfm = artifacts.load(str(tmp / "trained" / "analysis" / "dfm.npz"), "dfm")
  assert dfm["dfm"].shape == (4, 4, 32, 32) and dfm.meta["model"]["name"] == c.model.name


def test_an_exported_and_imported_model_gives_the_same_dfm_scores(vit_run):
  c, tmp, _ = vit_run
  ctx = context.load_context(c, str(tmp / "trained"))  # the analysed (best) checkpoint
  state = convert.to_state_dict(ctx.variables, c.model.name, "timm")
  path = safetensors_io.save(str(tmp / "vit.safetensors"), state)
  wd = tmp / "imported"
  out = importer.import_model(path, c.model.name, str(wd), config=c)
  assert out["written"] and out["naming"] == "timm" and out["image_size"] == 32
  again = importer.import_model(path, c.model.name, str(wd), config=c)
  assert not again["written"]  # the same import twice writes nothing
  stored = config_lib.from_dict(json.loads((wd / "config.json").read_text()))
  assert stored.model.width_multiplier == 0.25 and stored.data.class_names == c.data.class_names
  pipeline.run_pipeline(stored, str(wd))
  assert not (wd / "metrics.jsonl").exists()  # training was skipped
  ours = artifacts.load(str(wd / "analysis" / "scores.npz"), "scores")["scores"]
  theirs = artifacts.load(str(tmp / "trained" / "analysis" / "scores.npz"), "scores")["scores"]
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  assert "Imported from" in (wd / "report.md").read_text()


def test_import_refuses_a_workdir_that_holds_a_run(vit_run, shared_data):
  _, tmp, _ = vit_run
  trained = tmp / "trained"
  before = sorted(os.listdir(trained)), (trained / "config.json").read_text()
  ckpt = str(shared_data / "torch-checkpoints" / f"{ORACLE}.ckpt")
  with pytest.raises(errors.WorkdirError, match="already holds a run.*Nothing was written"):
    importer.import_model(ckpt, "resnet18", str(trained))
  assert (sorted(os.listdir(trained)), (trained / "config.json").read_text()) == before


def test_the_launcher_checks_against_the_oracle_and_prints_json_last(tmp_path, shared_data):
  folder = shared_data / "torch-checkpoints"
  args = [
      f"--from={folder / ORACLE}.ckpt",
      "--arch=resnet18",
      f"--workdir={tmp_path / 'wd'}",
      f"--check={folder / ORACLE}_io.npz",
      "--class_names=" + ",".join(f"c{i}" for i in range(10)),
  ]
  out = launch("import_model", args)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["max_rel_logit_error"] < 1e-4 and result["num_params"] == 11_173_962
  run = json.loads((tmp_path / "wd" / "run.json").read_text())
  assert run["class_names"][0] == "c0" and run["model.stem"] == "cifar"
  bad = launch("import_model", [*args[:1], "--arch=resnet34", f"--workdir={tmp_path / 'x'}"])
  assert bad.returncode == 2 and not (tmp_path / "x").exists()
  line = last_line(bad)
  assert line.startswith("Error: The checkpoint (official naming) does not fit --arch=resnet34")
  assert "layer1.2.conv1.weight" in line and "--arch=resnet18" in line
  assert "Traceback" not in bad.stderr


def test_analysis_launchers_read_the_imported_config(tmp_path):
  with pytest.raises(errors.ConfigError, match="Cannot read .*config.json"):
    _imported_config(str(tmp_path))


def _imported_config(workdir):
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("imported_cfg", REPO / "configs" / "imported.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(workdir)
