"""Bad input to any launcher: one line `Error: ...` that says what to do, exit code 2, no
traceback, and nothing left behind (a workdir the launch created is gone again). Each case
is a real launcher run, as a user would type it."""

import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, tiny_synthetic_config
from tests.training.helpers import cli_args, last_line, launch

SYN1 = f"--config={REPO}/configs/synthetic.py:syn1"
SMALL = [
    "--config.data.synthetic.train_per_class=10",
    "--config.data.synthetic.test_per_class=4",
    "--config.model.width_multiplier=0.0625",
]

# (launcher, arguments after the config, a fragment of the one line). $T is the test's tmp
# dir; every case gets --workdir=$T/run unless it names its own.
CASES = [
    ("pipeline", ["--config.train.epochs=abc"], "--config.train.epochs=abc: invalid literal"),
    ("pipeline", ["--config.train.epoch=3"], "Unknown config key 'train.epoch'"),
    ("pipeline", ["--config=/nonexistent.py"], "Config file /nonexistent.py does not exist"),
    ("pipeline", ["--workdir=$T/afile"], "is a file, not a directory"),
    ("pipeline", ["--workdir=/sys/freqjax_test_run"], "Cannot write or read /sys/freqjax_test_run"),
    ("pipeline", ["--config.train.num_devices=64"], "num_devices=64 but only 1 devices"),
    (
        "pipeline",
        [*SMALL, "--config.train.batch_size=64"],
        "The split has 36 examples, fewer than one global batch of 64",
    ),
    (
        "pipeline",
        ["--config.model.name=vgg11", "--config.data.image_size=8"],
        "too small for vgg11",
    ),
    (
        "pipeline",
        ["--config.data.num_classes=1", "--config.data.class_names=('C0',)"],
        "at least two classes",
    ),
    ("pipeline", ["--config.model.name=resnet19"], "Unknown model 'resnet19'"),
    ("pipeline", ["--config.model.stem=big"], "config.model.stem='big'"),
    ("pipeline", ["--config.model.dtype=float8"], "Unknown model dtype 'float8'"),
    ("pipeline", ["--config.analysis.search=fast"], "is not a search method"),
    ("pipeline", ["--config.analysis.data=other"], "config.analysis.data='other'"),
    ("pipeline", ["--config.analysis.candidates=odd"], "config.analysis.candidates='odd'"),
    ("pipeline", ["--config.analysis.checkpoint=bestest"], "config.analysis.checkpoint="),
    (
        "pipeline",
        ["--config.model.name=vit_tiny_patch16_224", "--config.data.image_size=40"],
        "not a multiple of vit_tiny_patch16_224's 16×16 patches",
    ),
    ("pipeline", ["--config.train.lr=nan"], "config.train.lr=nan must be a positive"),
    ("pipeline", ["--config.train.momentum=1.5"], "momentum=1.5 must lie in [0, 1)"),
    ("pipeline", ["--config.train.epochs=0"], "config.train.epochs=0 must be a positive"),
    ("pipeline", ["--config.data.val_fraction=1.0"], "val_fraction=1.0 must lie in [0, 1)"),
    ("pipeline", ["--config.data.image_size=0"], "image_size=0 must be a positive"),
    ("pipeline", ["--config.data.kind=csv"], "config.data.kind must be"),
    ("pipeline", ["--config.analysis.patch_size=3"], "patch_size=3 must be a divisor"),
    (
        "pipeline",
        ["--config.analysis.search=screened", "--config.analysis.screen.multiple=0"],
        "screen.multiple=0.0 must be positive",
    ),
    (
        "pipeline",
        ["--config.analysis.search=auto", "--config.analysis.auto.tolerance=1.5"],
        "auto.tolerance=1.5 must be in (0, 1)",
    ),
    ("pipeline", ["--workdir=$T/badjson", *SMALL], "run.json is not readable JSON"),
    ("adcs", ["--config.analysis.adcs=bogus"], "config.analysis.adcs='bogus'"),
    ("heatmap", ["--config.analysis.heatmap.eps=-1"], "heatmap.eps=-1.0 must be a positive"),
    ("dfm", SMALL, "No checkpoint in"),
    ("shortcut_test", SMALL, "No checkpoint in"),
    (
        "import_model",
        ["--from=$T/nonexistent.pth", "--arch=resnet18"],
        "nonexistent.pth does not exist",
    ),
    ("pipeline", ["--config="], "before a value for --config was specified"),
    ("train", ["--config=", "--config.data.data_dir=/tmp"], "before a value for --config"),
    ("pipeline", ["--workdir="], "--workdir is required"),
]


@pytest.mark.parametrize("launcher,args,fragment", CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_bad_input_is_one_line_with_exit_code_2_and_leaves_nothing(
    launcher, args, fragment, tmp_path
):
  (tmp_path / "afile").write_text("not a directory")
  (tmp_path / "badjson").mkdir()
  (tmp_path / "badjson" / "run.json").write_text("{")
  args = [a.replace("$T", str(tmp_path)) for a in args]
  full = [f"--config.data.data_dir={tmp_path / 'data'}"] if launcher != "import_model" else []
  if launcher != "import_model" and not any(a.startswith("--config=") for a in args):
    full.insert(0, SYN1)
  if not any(a.startswith("--workdir=") for a in args):
    full.append(f"--workdir={tmp_path / 'run'}")
  out = launch(launcher, [*full, *args])
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr[-3000:]
  assert lines[-1].startswith("Error: ") and fragment in lines[-1], lines[-1]
  assert sum(line.startswith("Error:") for line in lines) == 1
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()  # no workdir, .lock or empty checkpoints/ left
  assert sorted(os.listdir(tmp_path / "badjson")) == ["run.json"]


def test_a_one_class_folder_is_refused_naming_its_folders(tmp_path):
  for split in ("train", "test"):
    d = tmp_path / "one" / split / "cat"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "0.png")
  out = launch(
      "pipeline",
      [
          f"--config={REPO}/configs/folder.py:root={tmp_path / 'one'}",
          f"--workdir={tmp_path / 'run'}",
          f"--config.data.data_dir={tmp_path / 'data'}",
      ],
  )
  assert out.returncode == 2, out.stderr[-3000:]
  assert "at least two classes" in last_line(out) and "cat" in last_line(out)
  assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory anyway")
def test_a_read_only_workdir_is_one_line(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  out = launch("pipeline", [SYN1, f"--workdir={ro / 'run'}"])
  assert out.returncode == 2 and "permission denied" in last_line(out), out.stderr[-3000:]


def test_a_failed_first_run_leaves_nothing_that_blocks_the_corrected_launch(tmp_path):
  """The first launch fails after claiming the workdir (its train split is smaller than one
  batch); the corrected launch, with another dataset, is not refused as a conflict."""
  c = tiny_synthetic_config(tmp_path / "data", **{"train.max_steps": 1, "train.epochs": 1})
  workdir = tmp_path / "run"
  workdir.mkdir()  # made by the user: it stays, as the launch found it
  bad = cli_args(c, workdir) + ["--config.data.synthetic.train_per_class=10"]
  out = launch("train", bad + ["--config.train.batch_size=64"])
  assert out.returncode == 2 and "fewer than one global batch" in last_line(out), out.stderr
  assert os.listdir(workdir) == []  # no run.json, config.json, .lock or checkpoints/
  out = launch("train", cli_args(c, workdir))
  assert out.returncode == 0, out.stderr[-3000:]
  assert (workdir / "run.json").exists() and (workdir / "train_results.json").exists()
