"""Training: the official optimiser and scheduler, device-count invariance,
kill-and-resume, corrupt checkpoints, logs, and the errors a user can make."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from freqjax.training import loop, state as state_lib
from tests.conftest import REPO, tiny_synthetic_config
from tests.training.helpers import cli_args, metrics_of, params_of, subprocess_env


def test_plateau_follows_torch_reduce_lr_on_plateau():
  p = state_lib.Plateau(lr=0.01, patience=2)
  lrs = [p.step(x) for x in (1.0, 0.99995, 0.99996, 0.99997, 0.5, 0.6, 0.6, 0.6)]
  # 0.99995 is not an improvement (threshold 1e-4 relative): bad epochs 1, 2, 3 > patience.
  np.testing.assert_allclose(lrs, [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.0001])
  q = state_lib.Plateau.from_dict(p.to_dict())
  assert q == p


def test_optimizer_is_torch_sgd_with_l2_added_to_the_gradient():
  c = tiny_synthetic_config("unused")
  tx = state_lib.make_optimizer(c.train)
  w = np.array([1.0, -2.0, 0.5], np.float32)
  opt = tx.init(w)
  buf, p = np.zeros(3), w.astype(np.float64)
  for g in (np.array([0.1, 0.2, -0.3]), np.array([-0.5, 0.0, 0.25])):
    upd, opt = tx.update(g.astype(np.float32), opt, w)
    w = w + np.asarray(upd)
    d = g + 1e-4 * p  # torch.optim.SGD: weight decay added to the gradient
    buf = 0.9 * buf + d
    p = p - 0.01 * (d + 0.9 * buf)  # Nesterov
  np.testing.assert_allclose(w, p, rtol=1e-6)


def test_same_first_steps_on_one_and_four_devices(tmp_path):
  """The whole loop on 1 and 4 devices: identical data, augmentation and first steps."""
  losses, params = [], []
  for n in (1, 4):
    c = tiny_synthetic_config(tmp_path / "data", **{"train.num_devices": n, "train.max_steps": 2})
    loop.train_and_evaluate(c, str(tmp_path / f"dev{n}"))
    losses.append([r["loss"] for r in metrics_of(tmp_path / f"dev{n}")])
    params.append(params_of(tmp_path / f"dev{n}")[0])
  assert len(losses[0]) == 2
  np.testing.assert_allclose(losses[0], losses[1], atol=1e-4)
  chex.assert_trees_all_close(params[0], params[1], atol=1e-4)


def test_each_step_is_the_same_computation_on_one_and_four_devices(tmp_path):
  """Step by step from the same state (so float-order differences cannot compound, which
  they do in BatchNorm nets after a few steps): loss, BN statistics and parameters agree."""
  from freqjax import models, parallel
  from freqjax.data import datasets

  c = tiny_synthetic_config(tmp_path / "data")
  x, y = datasets.prepare(c.data).arrays("train")
  model = models.from_config(c.model, 4)
  tx = state_lib.make_optimizer(c.train)
  meshes = {n: parallel.make_mesh(n) for n in (1, 4)}
  steps = {n: loop.make_train_step(model, c, m, tx) for n, m in meshes.items()}
  state = loop.init_state(c, model, meshes[1], tx)
  rng = jax.random.key(7)
  for i in range(5):
    batch = {
        "image": x[8 * i : 8 * i + 8],
        "label": y[8 * i : 8 * i + 8],
        "valid": np.ones(8, bool),
    }
    out = {}
    for n, mesh in meshes.items():
      # A copy: the step donates its input, and NumPy views of CPU buffers would alias it.
      st = jax.device_put(
          jax.tree_util.tree_map(lambda a: np.array(a, copy=True), state), parallel.replicated(mesh)
      )
      out[n] = steps[n](st, parallel.shard_batch(mesh, batch), rng)
    (s1, m1), (s4, m4) = out[1], out[4]
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-6)
    chex.assert_trees_all_close(
        (s1.params, s1.batch_stats), (s4.params, s4.batch_stats), rtol=1e-4, atol=1e-5
    )
    state = s1


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """An uninterrupted 3-epoch run on 4 devices, in this process."""
  tmp = tmp_path_factory.mktemp("reference")
  c = tiny_synthetic_config(tmp / "data", **{"train.epochs": 3})
  results = loop.train_and_evaluate(c, str(tmp / "run"))
  return c, tmp / "run", results


def test_logs_checkpoints_and_results(reference_run):
  c, workdir, results = reference_run
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert steps == [18, 36, 54]  # 144 train images / batch 8 = 18 steps per epoch
  assert results["done"] and results["steps"] == 54 and 0 <= results["test_accuracy"] <= 1
  assert json.loads((workdir / "train_results.json").read_text())["steps"] == 54
  train, val = metrics_of(workdir), metrics_of(workdir, "val")
  assert [r["step"] for r in train] == list(range(1, 55)) and len(val) == 3
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
  acc.Reload()
  assert {"train/loss", "val/loss", "val/accuracy", "test/accuracy"} <= set(acc.Tags()["scalars"])
  tb = [e.value for e in acc.Scalars("train/loss")]
  np.testing.assert_allclose(tb, [r["loss"] for r in train], rtol=1e-6)
  assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "resnet18"


def test_kill_and_resume_equals_uninterrupted(reference_run, tmp_path):
  c, ref_dir, _ = reference_run
  workdir = tmp_path / "killed"
  cmd = [sys.executable, str(REPO / "launch/train.py")] + cli_args(c, workdir)
  proc = subprocess.Popen(
      cmd, env=subprocess_env(4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  ck = workdir / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ck.is_dir() and any(s.isdigit() for s in os.listdir(ck)):
      time.sleep(0.3)  # into the second epoch
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
  done = sorted(int(s) for s in os.listdir(ck) if s.isdigit())
  assert done and done[-1] < 54  # really interrupted
  out = subprocess.run(cmd, env=subprocess_env(4), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Resumed from checkpoint" in out.stderr
  got, step = params_of(workdir)
  want, ref_step = params_of(ref_dir)
  assert step == ref_step == 54
  chex.assert_trees_all_equal(got, want)
  # The resumed logs equal the uninterrupted run's: no duplicated or missing steps.
  assert [r["step"] for r in metrics_of(workdir)] == list(range(1, 55))
  np.testing.assert_allclose(
      [r["loss"] for r in metrics_of(workdir)], [r["loss"] for r in metrics_of(ref_dir)], rtol=1e-6
  )


def test_corrupt_latest_checkpoint_is_skipped(reference_run, tmp_path, caplog):
  import shutil

  c, ref_dir, _ = reference_run
  workdir = tmp_path / "corrupt"
  shutil.copytree(ref_dir, workdir)
  for root, _, files in os.walk(workdir / "checkpoints" / "54" / "state"):
    for f in files:
      p = os.path.join(root, f)
      with open(p, "r+b") as fh:
        fh.truncate(max(0, os.path.getsize(p) // 3))
  with caplog.at_level("WARNING"):
    results = loop.train_and_evaluate(c, str(workdir))
  assert "Checkpoint 54" in caplog.text and "cannot be read" in caplog.text
  assert (workdir / "checkpoints_corrupt").is_dir()
  assert results["steps"] == 54  # retrained the last epoch from checkpoint 36
  got, _ = params_of(workdir)
  want, _ = params_of(ref_dir)
  chex.assert_trees_all_equal(got, want)


def test_batch_not_divisible_by_devices_names_the_fix(tmp_path):
  c = tiny_synthetic_config(tmp_path / "data", **{"train.batch_size": 6})
  with pytest.raises(ValueError, match=r"batch_size=6.*not divisible by the 4 devices.*e\.g\. 8"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))


def test_unknown_model_in_config_lists_known_models(tmp_path):
  c = tiny_synthetic_config(tmp_path / "data", **{"model.name": "resnet-18"})
  with pytest.raises(ValueError, match=r"Unknown model 'resnet-18'.*Known models:.*resnet18"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))
