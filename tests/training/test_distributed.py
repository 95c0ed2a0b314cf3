"""Training across processes (jax.distributed on 127.0.0.1) and launcher-level errors."""

import socket
import subprocess
import sys

import chex

from tests.conftest import REPO, tiny_synthetic_config
from tests.training.helpers import cli_args, params_of, subprocess_env


def test_two_processes_equal_one_process(tmp_path):
  c = tiny_synthetic_config(tmp_path / "data", **{"train.max_steps": 3, "train.epochs": 1})
  single = tmp_path / "single"
  base = [sys.executable, str(REPO / "launch/train.py")]
  out = subprocess.run(
      base + cli_args(c, single), env=subprocess_env(2), capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-3000:]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  multi = tmp_path / "multi"
  procs = [
      subprocess.Popen(
          base
          + cli_args(c, multi)
          + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
          env=subprocess_env(1),
          stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  errs = [p.communicate(timeout=600)[1] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errs)
  got, step = params_of(multi)
  want, step1 = params_of(single)
  assert step == step1 == 3
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  assert "process 1 of 2" in errs[1].lower() or "Process 1 of 2" in errs[1]


def test_misspelt_config_key_lists_valid_keys(tmp_path):
  out = subprocess.run(
      [
          sys.executable,
          str(REPO / "launch/train.py"),
          f"--config={REPO}/configs/synthetic.py:syn1",
          f"--workdir={tmp_path}",
          "--config.train.batchsize=32",
      ],
      capture_output=True,
      text=True,
      timeout=120,
      env=subprocess_env(1),
  )
  assert out.returncode != 0
  assert "Unknown config key 'train.batchsize'" in out.stderr
  assert "batch_size" in out.stderr and "eval_batch_size" in out.stderr
