"""Random-kill survival: the main job killed with SIGKILL at 8 seeded moments (dataset
preparation, training, the DFM ranking, the shortcut test and the stages after it), rerun
after each kill and then once more to completion, ends with exactly the results of an
uninterrupted run of the same config: the same trained parameters, DFM scores, DFMs and
TPR/FPR, bit for bit (both runs on this machine, with the same programs)."""

import dataclasses
import glob
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np

from freqjax import artifacts, workdir as workdir_lib
from freqjax.training import loop
from tests.conftest import REPO, tiny_synthetic_config

SEED = int(os.environ.get("FREQJAX_KILL_SEED", "17"))  # other moments: FREQJAX_KILL_SEED=<n>
DEVICES = 2  # host devices of both runs: the same sharded programs in every launch
# A seconds-long run: 2 epochs of 18 steps; 64 paired 4×4-patch candidates, ranked 2 per
# chunk (a 1 MB memory budget allows no more), so the ranking writes 4 × 32 chunks.
OVERRIDES = {
    "analysis.patch_size": 4,
    "analysis.memory_budget_mb": 1,
    "analysis.batch_size": 40,
}
# The pipeline's stages in order; "report" is summary.json and report.md after the figures.
STAGES = (
    "prepare",
    "train",
    "restore",
    "adcs",
    "dfm",
    "shortcut",
    "sensitivity",
    "dynamics",
    "figures",
    "report",
)
LATER = ("shortcut", "sensitivity", "dynamics", "figures", "report")
_STAGE_DONE = re.compile(r"pipeline\.py:\d+\] stage (\w+): ")


def _config(data_dir):
  return tiny_synthetic_config(data_dir, **OVERRIDES)


def _command(c, workdir):
  """launch/pipeline.py with the config of `c` as flags (the values tests change)."""
  s, t = c.data.synthetic, c.train
  flags = {
      "data.data_dir": c.data.data_dir,
      "data.synthetic.train_per_class": s.train_per_class,
      "data.synthetic.test_per_class": s.test_per_class,
      "model.width_multiplier": c.model.width_multiplier,
      "train.batch_size": t.batch_size,
      "train.eval_batch_size": t.eval_batch_size,
      "train.epochs": t.epochs,
      "train.log_every_steps": t.log_every_steps,
      "train.progress": t.progress,
      "train.prefetch": t.prefetch,
      "dynamics.every_steps": c.dynamics.every_steps,
      **OVERRIDES,
  }
  return [
      sys.executable,
      "-u",
      str(REPO / "launch" / "pipeline.py"),
      f"--config={REPO}/configs/synthetic.py:syn1",
      f"--workdir={workdir}",
  ] + [f"--config.{k}={v}" for k, v in flags.items()]


def _env():
  flags = [
      f
      for f in os.environ.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count")
  ]
  return dict(
      os.environ,
      PYTHONPATH=str(REPO),
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={DEVICES}"]),
  )


@dataclasses.dataclass
class Moment:
  """When to kill a launch: `amount` after the first moment `trigger` holds, in `stage`.

  trigger: 'line:<text>' (a line of the launch's output containing it; amount in seconds),
  'step' (metrics.jsonl holds a training step >= amount; then a seeded delay of `delay` s),
  'chunks' (the DFM ranking's store holds >= amount chunks; then `delay` s), 'figures' (the
  figures stage has written `amount` figures; then `delay` s)."""

  stage: str
  trigger: str
  amount: float
  delay: float = 0.0
  # What happened (filled in by the launch):
  killed_in: str = ""
  detail: str = ""

  def describe(self) -> str:
    what = {"step": "training step", "chunks": "DFM chunks", "figures": "figures written"}.get(
        self.trigger
    )
    if what:
      planned = f"{what} >= {int(self.amount)}, then {self.delay:.3f} s"
    else:
      planned = f"{self.amount:.3f} s after {self.trigger[5:]!r}"
    return f"{self.stage}: {planned} -> killed in {self.killed_in} ({self.detail})"


def _moments(rng, steps_per_epoch: int, epochs: int, chunks: int) -> list[Moment]:
  """8 seeded moments spread over the stages (each later than the one before in the run)."""
  total = steps_per_epoch * epochs
  s1 = int(rng.integers(2, steps_per_epoch))  # epoch 1: no checkpoint yet
  s2 = int(rng.integers(steps_per_epoch + 1, total - 3))  # epoch 2: resumes from epoch 1's
  c1 = int(rng.integers(2, chunks // 2))  # in the first half of the ranking, then the second
  c2 = int(rng.integers(chunks // 2 + 2, chunks - 2))
  d = lambda hi: float(rng.uniform(0.0, hi))
  return [
      Moment("prepare", "line:Preparing dataset", d(0.15)),
      Moment("train", "step", s1, d(0.1)),
      Moment("train", "step", s2, d(0.1)),
      Moment("dfm", "chunks", c1, d(0.05)),
      Moment("dfm", "chunks", c2, d(0.05)),
      Moment("shortcut", "line:stage dfm: ", d(0.3)),
      Moment("sensitivity", "line:stage shortcut: ", d(0.5)),
      Moment("figures", "figures", int(rng.integers(1, 4)), d(0.05)),  # of the stage's 6
  ]


def _train_steps(workdir) -> list[int]:
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      lines = f.read().splitlines()
  except OSError:
    return []
  out = []
  for line in lines:
    try:
      r = json.loads(line)
    except ValueError:
      continue
    if r.get("split") == "train":
      out.append(int(r["step"]))
  return out


def _figures(workdir) -> dict:
  return {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(workdir, "figures", "*.png"))}


def _chunks(workdir) -> int:
  return len(glob.glob(os.path.join(workdir, "analysis", "dfm_partial", "*", "class*_chunk*.npy")))


class Launch:
  """One launch of the pipeline, its output read line by line on a thread."""

  def __init__(self, cmd, env, log_path):
    self.log = open(log_path, "a")  # pylint: disable=consider-using-with
    self.lines: list[str] = []
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    self._q = queue.Queue()
    self._t = threading.Thread(target=self._read, daemon=True)
    self._t.start()

  def _read(self):
    for line in self.proc.stdout:
      self._q.put(line)
    self._q.put(None)

  def poll_lines(self) -> list[str]:
    new = []
    while True:
      try:
        line = self._q.get_nowait()
      except queue.Empty:
        break
      if line is None:
        continue
      new.append(line)
    self.lines += new
    self.log.writelines(new)
    return new

  def stage(self) -> str:
    """The stage the launch is in, by the last 'stage X: ...' line it printed."""
    done = [m.group(1) for m in map(_STAGE_DONE.search, self.lines) if m]
    if not done:
      return "prepare"
    return STAGES[STAGES.index(done[-1]) + 1] if done[-1] in STAGES[:-1] else f"after {done[-1]}"

  def finish(self, timeout=300) -> int:
    rc = self.proc.wait(timeout=timeout)
    self._t.join(timeout=30)
    self.poll_lines()
    self.log.close()
    return rc


def _kill_at(moment: Moment, cmd, env, workdir, log_path, timeout=240) -> tuple[int, list]:
  """Launches, kills at `moment` (filling in where it landed); returns (returncode, lines)."""
  launch = Launch(cmd, env, log_path)
  t0, fire_at, figures_before = time.monotonic(), None, None
  try:
    while True:
      new = launch.poll_lines()
      if launch.proc.poll() is not None:
        launch.finish()
        raise AssertionError(
            f"the launch ended (rc {launch.proc.returncode}) before the kill at "
            f"{moment.describe()}; its output ends:\n{''.join(launch.lines[-30:])}"
        )
      now = time.monotonic()
      if fire_at is None:
        if moment.trigger.startswith("line:"):
          if any(moment.trigger[5:] in line for line in new):
            fire_at = now + moment.amount
        elif moment.trigger == "step":
          if max(_train_steps(workdir), default=0) >= moment.amount:
            fire_at = now + moment.delay
        elif moment.trigger == "chunks":
          if _chunks(workdir) >= moment.amount:
            fire_at = now + moment.delay
        elif figures_before is None:
          if any("stage dynamics: " in line for line in new):  # the figures stage begins
            figures_before = _figures(workdir)
        else:
          written = [p for p, t in _figures(workdir).items() if figures_before.get(p) != t]
          if len(written) >= moment.amount:
            fire_at = now + moment.delay
      if fire_at is not None and now >= fire_at:
        break
      assert now - t0 < timeout, f"no kill within {timeout} s at {moment.describe()}"
      time.sleep(0.005)
    launch.poll_lines()
    moment.killed_in = launch.stage()
    os.killpg(launch.proc.pid, signal.SIGKILL)
    rc = launch.finish()
    steps = _train_steps(workdir)
    moment.detail = (
        f"{time.monotonic() - t0:.1f} s after launch, last train step "
        f"{max(steps, default=0)}, {_chunks(workdir)} DFM chunks stored"
    )
    for path in glob.glob(os.path.join(workdir, "analysis", "dfm_partial", "*", "manifest.json")):
      with open(path) as f:
        moment.detail += f", {json.load(f)['chunk_size']} candidates a chunk"
    return rc, launch.lines
  finally:
    if launch.proc.poll() is None:
      os.killpg(launch.proc.pid, signal.SIGKILL)
      launch.finish()


def _run_to_end(cmd, env, log_path, what):
  launch = Launch(cmd, env, log_path)
  while launch.proc.poll() is None:
    launch.poll_lines()
    time.sleep(0.02)
  rc = launch.finish()
  assert rc == 0, f"{what} failed (rc {rc}):\n{''.join(launch.lines[-40:])}"
  assert any("Report: " in line for line in launch.lines), what
  return launch.lines


def _arrays(path, kind):
  art = artifacts.load(str(path), kind)
  return {k: np.asarray(v) for k, v in art.arrays.items()}


def _leaves(tree) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(x)) for p, x in flat}


def test_random_kills_end_with_the_uninterrupted_results(tmp_path):
  env = _env()
  ref_cfg, kill_cfg = _config(tmp_path / "data_ref"), _config(tmp_path / "data_killed")
  ref, killed = tmp_path / "uninterrupted", tmp_path / "killed"
  # The uninterrupted run first (it also fills the compilation cache the relaunches use).
  t0 = time.monotonic()
  _run_to_end(_command(ref_cfg, ref), env, tmp_path / "uninterrupted.log", "the uninterrupted run")
  ref_seconds = time.monotonic() - t0
  ref_steps = _train_steps(ref)
  steps_per_epoch = ref_steps[-1] // kill_cfg.train.epochs
  n_chunks = 4 * 32  # 4 classes × 64 candidates / 2 per chunk

  rng = np.random.default_rng(SEED)
  moments = _moments(rng, steps_per_epoch, kill_cfg.train.epochs, n_chunks)
  cmd = _command(kill_cfg, killed)
  log = tmp_path / "killed.log"
  for i, m in enumerate(moments):
    # A later moment must lie beyond what the launches before it already did.
    if m.trigger == "step":
      m.amount = max(m.amount, max(_train_steps(killed), default=0) + 1)
    if m.trigger == "chunks":
      m.amount = max(m.amount, _chunks(killed) + 1)
    rc, lines = _kill_at(m, cmd, env, killed, log)
    print(f"kill {i + 1}: {m.describe()}", flush=True)
    assert rc == -signal.SIGKILL, (i, m.describe(), rc, "".join(lines[-30:]))
    # Killed before the run was complete: no summary or report yet.
    assert not (killed / "summary.json").exists(), (i, m.describe())
    assert not (killed / "report.md").exists(), (i, m.describe())
    assert not any("Report: " in line for line in lines), (i, m.describe())
    if m.trigger == "chunks":  # chunks of a fixed size (none measured): 4 × 32 of them
      (path,) = glob.glob(str(killed / "analysis" / "dfm_partial" / "*" / "manifest.json"))
      assert json.loads(open(path).read())["chunk_size"] == 2, m.describe()
  report = "\n".join(f"kill {i + 1}: {m.describe()}" for i, m in enumerate(moments))
  landed = [m.killed_in for m in moments]
  assert landed.count("train") >= 2, report
  assert landed.count("dfm") >= 2, report
  assert sum(s in LATER for s in landed) >= 2, report

  t1 = time.monotonic()
  final = _run_to_end(cmd, env, log, "the run after the kills")
  final_seconds = time.monotonic() - t1
  print(
      f"uninterrupted run {ref_seconds:.1f} s; the last run after the kills {final_seconds:.1f} s "
      f"(it trained: {any('loop.py' in line and 'epoch' in line for line in final)})",
      flush=True,
  )

  # Nothing partial is left behind, and nothing holds the workdir.
  assert not (killed / "analysis" / "dfm_partial").exists(), report
  assert not (killed / "checkpoints_corrupt").exists(), report
  stray = [p for p in os.listdir(killed / "checkpoints") if not p.isdigit()]
  assert not stray, (stray, report)
  with workdir_lib.Workdir(str(killed)).lock():
    pass
  # A kill inside an atomic write may leave its temporary file (never read, never blocking).
  temps = glob.glob(str(killed / "**" / ".*.tmp"), recursive=True)
  print(f"temporary files left by the kills: {[os.path.relpath(t, killed) for t in temps]}")
  assert sorted(os.listdir(ref / "figures")) == sorted(os.listdir(killed / "figures")), report

  # The same artifacts, bit for bit.
  names = sorted(os.path.basename(p) for p in glob.glob(str(ref / "analysis" / "*.npz")))
  assert {"scores.npz", "dfm.npz", "shortcut.npz"} <= set(names)
  assert names == sorted(
      os.path.basename(p) for p in glob.glob(str(killed / "analysis" / "*.npz"))
  ), report
  for name in names:
    kind = name[: -len(".npz")]
    want, got = _arrays(ref / "analysis" / name, kind), _arrays(killed / "analysis" / name, kind)
    assert sorted(want) == sorted(got), (name, report)
    for key in want:
      assert np.array_equal(want[key], got[key], equal_nan=True), (name, key, report)
  sc_ref = _arrays(ref / "analysis" / "shortcut.npz", "shortcut")
  sc = _arrays(killed / "analysis" / "shortcut.npz", "shortcut")
  assert np.array_equal(sc["tpr"], sc_ref["tpr"]) and np.array_equal(sc["fpr"], sc_ref["fpr"])
  # The same training: parameters and statistics of the best and the last checkpoint, and the
  # same logged metrics (the killed launches' extra lines were dropped on resume).
  assert sorted(os.listdir(ref / "checkpoints")) == sorted(os.listdir(killed / "checkpoints"))
  for which in ("best", "latest"):
    _, v_ref, info_ref, *_ = loop.restore_model(ref_cfg, str(ref), which)
    _, v, info, *_ = loop.restore_model(kill_cfg, str(killed), which)
    assert info["checkpoint_step"] == info_ref["checkpoint_step"], (which, report)
    want, got = _leaves(v_ref), _leaves(v)
    assert sorted(want) == sorted(got)
    for key in want:
      assert np.array_equal(want[key], got[key]), (which, key, report)
  with open(ref / "metrics.jsonl") as f_ref, open(killed / "metrics.jsonl") as f:
    assert f.read() == f_ref.read(), report
  tr_ref = json.loads((ref / "train_results.json").read_text())
  tr = json.loads((killed / "train_results.json").read_text())
  for key in ("test_accuracy", "test_loss", "test_confusion", "steps", "best_checkpoint"):
    assert tr[key] == tr_ref[key], (key, report)
  print(f"verdict: identical after {len(moments)} kills", flush=True)
