"""A user's work is never destroyed and a broken run is never reported as done: a conflicting
launch, a diverging run, a second launch on a busy workdir, a checkpoint of another model."""

import hashlib
import json
import math
import os
import shutil
import subprocess

import chex
import pytest

from freqjax import errors, workdir as workdir_lib
from freqjax.training import checkpoint, loop
from tests.conftest import REPO, tiny_synthetic_config
from tests.training.helpers import cli_args, last_line, launch, metrics_of, params_of


def _tree_digest(root) -> dict:
  """{relative path: sha1} of every file under root (what 'unchanged' means)."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 2-epoch resnet18 run, made by the launcher (4 devices)."""
  tmp = tmp_path_factory.mktemp("safety")
  c = tiny_synthetic_config(tmp / "data")
  workdir = tmp / "resnet18"
  out = launch("train", cli_args(c, workdir), devices=4)
  assert out.returncode == 0, out.stderr[-3000:]
  return c, workdir


def test_a_conflicting_launch_writes_nothing_and_names_the_way_out(trained, tmp_path):
  c, workdir = trained
  before = _tree_digest(workdir)
  out = launch("train", cli_args(c, workdir) + ["--config.model.name=vgg11"], devices=4)
  assert out.returncode == 2, out.stderr[-3000:]
  last = last_line(out)
  assert last.startswith("Error: Workdir"), last
  assert "model.name: 'resnet18' in the workdir, 'vgg11' now" in last
  assert "new --workdir" in last and "--move_aside" in last
  assert "Traceback" not in out.stderr
  after = _tree_digest(workdir)
  after.pop(".lock", None)
  before.pop(".lock", None)
  assert after == before  # checkpoints, config.json, metrics.jsonl, train_results.json
  assert not (workdir.parent / "checkpoints_corrupt").exists()
  assert not (workdir / "checkpoints_corrupt").exists()


def test_move_aside_keeps_the_old_run(trained, tmp_path):
  c, workdir = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  before = _tree_digest(copy)
  other = c.copy_and_resolve_references()
  other.seed = 5
  with pytest.raises(errors.WorkdirError, match=r"seed: 0 in the workdir, 5 now"):
    loop.train_and_evaluate(other, str(copy))
  other.train.max_steps = 2
  loop.train_and_evaluate(other, str(copy), move_aside=True)
  (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.moved-")]
  after = _tree_digest(moved)
  after.pop(".lock", None)
  before.pop(".lock", None)
  assert after == before
  assert json.loads((copy / "run.json").read_text())["seed"] == 5
  assert [r["step"] for r in metrics_of(copy)] == [1, 2]


def test_a_run_trained_before_run_json_is_still_recognised(trained, tmp_path):
  c, workdir = trained
  copy = tmp_path / "legacy"
  shutil.copytree(workdir, copy)
  os.remove(copy / "run.json")
  other = c.copy_and_resolve_references()
  other.model.width_multiplier = 0.25
  with pytest.raises(errors.WorkdirError, match=r"model.width_multiplier: 0.0625"):
    loop.train_and_evaluate(other, str(copy))


def test_a_checkpoint_of_another_shape_is_an_error_not_corruption(trained, tmp_path):
  c, workdir = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  other = c.copy_and_resolve_references()
  other.model.width_multiplier = 0.125
  import jax

  from freqjax import models, parallel
  from freqjax.training import state as state_lib

  model = models.from_config(other.model, 4)
  tx = state_lib.make_optimizer(other.train)
  abstract = jax.eval_shape(lambda k: state_lib.create(model, tx, k, 32), jax.random.key(0))
  ckpts = checkpoint.Checkpoints(str(copy / "checkpoints"))
  with pytest.raises(errors.CheckpointError, match=r"holds another model.*differ in shape"):
    ckpts.restore_latest(checkpoint.abstract(abstract, parallel.replicated(parallel.make_mesh())))
  ckpts.close()
  assert sorted(os.listdir(copy / "checkpoints")) == sorted(os.listdir(workdir / "checkpoints"))
  assert not (copy / "checkpoints_corrupt").exists()


def test_a_full_disk_ends_with_one_line_and_the_run_resumes_bit_identical(trained, tmp_path):
  """A real full disk (a 1 MiB tmpfs; skipped where none can be mounted) during training, then
  the same command on a disk with room: the parameters equal the uninterrupted run's."""
  c, ref = trained
  mount = tmp_path / "disk"
  mount.mkdir()
  ok = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
  )
  if ok.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({ok.stderr.strip()})")
  try:
    out = launch("train", cli_args(c, mount / "run"), devices=4)
    assert out.returncode == 2, out.stderr[-3000:]
    # Where the disk fills up depends on timing (a checkpoint, the log, TensorBoard's events).
    assert last_line(out).startswith("Error: No space left on the device"), last_line(out)
    shutil.copytree(mount / "run", tmp_path / "run")
  finally:
    subprocess.run(["umount", str(mount)], check=False)
  resumed = launch("train", cli_args(c, tmp_path / "run"), devices=4)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  got, step = params_of(tmp_path / "run")
  want, ref_step = params_of(ref)
  assert step == ref_step
  chex.assert_trees_all_equal(got, want)


def test_a_second_launch_on_a_busy_workdir_fails_at_once(trained):
  c, workdir = trained
  with workdir_lib.locked(workdir):
    out = launch("train", cli_args(c, workdir))
  assert out.returncode == 2, out.stderr[-3000:]
  last = last_line(out)
  assert f"is in use by another launch (PID {os.getpid()} on host" in last, last
  # Within one process the lock is re-entrant (the pipeline's stages each take it).
  with workdir_lib.locked(workdir), workdir_lib.locked(workdir):
    pass


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path):
  c = tiny_synthetic_config(tmp_path / "data", **{"train.lr": 1e6, "train.log_every_steps": 3})
  with pytest.raises(
      errors.TrainingDivergedError,
      match=r"training loss is nan at step (\d+) \(epoch 0\).*config.train.lr=1e" r"\+06",
  ) as e:
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  step = int(e.value.args[0].split("at step ")[1].split(" ")[0])
  losses = [r["loss"] for r in metrics_of(tmp_path / "run")]
  assert all(math.isfinite(x) for x in losses) and len(losses) < step  # nothing after it logged
  ck = tmp_path / "run" / "checkpoints"
  assert not ck.exists() or not [s for s in os.listdir(ck) if s.isdigit()]
  assert not (tmp_path / "run" / "train_results.json").exists()


def test_best_checkpoint_ignores_non_finite_validation_losses(tmp_path):
  import jax.numpy as jnp

  ckpts = checkpoint.Checkpoints(str(tmp_path / "ck"))
  state = {"w": jnp.zeros(2)}
  for step, loss in ((1, 0.5), (2, float("nan")), (3, 0.7)):
    ckpts.save(step, state, {"epoch": step}, loss)
  assert ckpts.best_step() == 1
  ckpts.close()


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.train.lr=-1", "config.train.lr=-1.0 must be a positive"),
        (
            "--config.analysis.patch_size=0",
            "patch_size=0 must be a divisor of the image size 32: " "one of 1, 2, 4, 8, 16, 32.",
        ),
        (
            "--config.analysis.thresholds=(0.01,0.1)",
            "threshold=0.05 (the DFM used by the shortcut test) is not in",
        ),
    ],
)
def test_config_errors_are_one_line_with_exit_code_2(override, message, tmp_path):
  args = [f"--config={REPO}/configs/synthetic.py:syn1", f"--workdir={tmp_path / 'run'}", override]
  out = launch("pipeline", args)
  assert out.returncode == 2, out.stderr[-3000:]
  assert last_line(out).startswith("Error: config.")
  assert message in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()  # rejected before any work started
  shown = launch("pipeline", args, FREQJAX_TRACEBACK="1")
  assert shown.returncode == 2 and "Traceback" in shown.stderr
  assert last_line(shown).startswith("Error: config.")


def test_no_nan_checkpoint_is_ever_saved_even_from_validation(tmp_path, monkeypatch):
  from freqjax.evaluation import inference

  real = inference.evaluate

  def nan_validation(*args, **kwargs):
    out = real(*args, **kwargs)
    return dict(out, loss=float("nan"))

  c = tiny_synthetic_config(tmp_path / "data", **{"train.epochs": 1})
  monkeypatch.setattr(inference, "evaluate", nan_validation)
  with pytest.raises(errors.TrainingDivergedError, match=r"validation loss is nan at step 18"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  ck = tmp_path / "run" / "checkpoints"
  assert not ck.exists() or not [s for s in os.listdir(ck) if s.isdigit()]
