"""The workdir's lock: a failed launch leaves the workdir as it found it, and the temporary
files of a killed launch's atomic writes are swept by the next launch (nothing else is)."""

import os

import pytest

from freqjax import artifacts, errors, workdir as workdir_lib
from tests.conftest import load_config


def _identity():
  return workdir_lib.identity(load_config("configs/synthetic.py:syn1"), None)


def test_a_launch_that_fails_leaves_a_new_workdir_as_it_found_it(tmp_path):
  wd = workdir_lib.Workdir(tmp_path / "new")
  with pytest.raises(errors.DatasetError), wd.lock():
    wd.claim(_identity())
    os.makedirs(wd.checkpoints)  # what Orbax makes before its first checkpoint
    artifacts.write_json(wd.config, {"a": 1})
    raise errors.DatasetError("the split is smaller than one batch")
  assert not (tmp_path / "new").exists()


def test_a_failed_launch_keeps_what_was_there_and_a_checkpointed_run(tmp_path):
  root = tmp_path / "run"
  (root / "mine").mkdir(parents=True)
  (root / "notes.txt").write_text("the user's")
  wd = workdir_lib.Workdir(root)
  with pytest.raises(RuntimeError), wd.lock():
    wd.claim(_identity())
    raise RuntimeError("a bug")
  assert sorted(os.listdir(root)) == ["mine", "notes.txt"]  # run.json and .lock gone
  with pytest.raises(RuntimeError), wd.lock():
    wd.claim(_identity())
    os.makedirs(os.path.join(wd.checkpoints, "18"))  # a checkpoint: work to keep
    artifacts.write_json(os.path.join(wd.checkpoints, "18", "host.json"), {"epoch": 1})
    raise RuntimeError("a bug after the first checkpoint")
  assert {"run.json", "checkpoints"} <= set(os.listdir(root))


def test_a_killed_write_s_temporary_file_is_swept_by_the_next_launch(tmp_path):
  wd = workdir_lib.Workdir(tmp_path / "run")
  os.makedirs(wd.figures)
  os.makedirs(os.path.join(wd.analysis, "dfm_partial", "abc"))
  left = [
      wd.figure(".sensitivity.png.8xcrnpcx.tmp"),
      os.path.join(wd.analysis, "dfm_partial", "abc", ".class0_chunk3.npy.k2_9zq1a.tmp"),
      wd.path(".summary.json.q0w9e8r7.tmp"),
  ]
  kept = [wd.figure("scores.png"), wd.path("mine", ".notes.abcdefgh.tmp")]
  for p in left + kept:
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
      f.write("x")
  with wd.lock():
    pass
  assert [os.path.exists(p) for p in left] == [False] * 3
  assert all(os.path.exists(p) for p in kept)  # finished files, and folders not freqjax's
