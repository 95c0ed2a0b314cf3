"""Helpers shared by the training tests: reading checkpoints and logs, launcher arguments."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from tests.conftest import REPO


def params_of(workdir, step=None):
  ck = os.path.join(workdir, "checkpoints")
  step = step or max(int(s) for s in os.listdir(ck) if s.isdigit())
  path = os.path.join(ck, str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path).item_metadata.tree  # restore as NumPy, whatever the topology
  args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return ckptr.restore(path, restore_args=args)["params"], step


def metrics_of(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def cli_args(c, workdir):
  """Command-line overrides that turn the launcher's syn1 config into `c`."""
  keys = [
      "data.data_dir",
      "data.synthetic.train_per_class",
      "data.synthetic.test_per_class",
      "model.width_multiplier",
      "train.batch_size",
      "train.eval_batch_size",
      "train.epochs",
      "train.log_every_steps",
      "train.progress",
      "train.prefetch",
      "dynamics.every_steps",
      "train.max_steps",
  ]
  out = [f"--config={REPO}/configs/synthetic.py:syn1", f"--workdir={workdir}"]
  for k in keys:
    node = c
    for p in k.split("."):
      node = node[p]
    out.append(f"--config.{k}={node}")
  return out


def subprocess_env(devices):
  """The test process's environment with `devices` host devices; its other XLA flags (the
  instruction set of `make test`'s second pass, see tests/conftest.py) are kept."""
  env = dict(os.environ)
  kept = [
      f
      for f in env.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env["XLA_FLAGS"] = " ".join(kept + [f"--xla_force_host_platform_device_count={devices}"])
  env["PYTHONPATH"] = str(REPO)
  return env


def launch(launcher, args, devices=1, timeout=600, **env):
  """Runs launch/<launcher>.py with `args` in a subprocess; returns the CompletedProcess."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  return subprocess.run(
      [sys.executable, str(REPO / "launch" / f"{launcher}.py"), *args],
      env=dict(subprocess_env(devices), **env),
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def last_line(out) -> str:
  """The last line a launcher wrote to stderr (where its error goes)."""
  return out.stderr.strip().splitlines()[-1]
