"""How launchers report failures: one line for user errors (exit code 2), the real error last."""

import errno
import os

from freqjax import cli, errors


def _raise_chain():
  try:
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/5/state")
  except OSError as e:
    raise RuntimeError("orbax: async save failed") from e


def test_a_full_disk_buried_in_library_errors_is_one_clear_line(capsys):
  try:
    _raise_chain()
  except RuntimeError as e:
    code = cli.report_failure(e)
  err = capsys.readouterr().err
  assert code == 2
  assert err.strip().splitlines() == [
      "Error: No space left on the device while writing /runs/x/checkpoints/5/state. Free some "
      "space (or use a --workdir on another disk) and rerun the same command: finished work "
      "is kept and the launch resumes where it stopped."
  ]


def test_a_full_disk_reported_by_tensorstore_is_recognised(capsys):
  # What Orbax's TensorStore writer raises (copied from a real full tmpfs): no errno, only text.
  e = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "params.Dense_0.bias/0" in OCDBT database at local file '
      '"/w/checkpoints/28.orbax-checkpoint-tmp/state/": Failed writing: "/w/checkpoints/28.orbax-'
      'checkpoint-tmp/state/d/394f": Failed to write 84537 bytes to file 18: No space left on '
      "device [os_error_code='28']"
  )
  assert cli.report_failure(e) == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith(
      "Error: No space left on the device while writing /w/checkpoints/28.orbax-checkpoint-tmp/"
      "state/d/394f. Free some space"
  )


def test_user_errors_are_one_line_unless_the_traceback_is_asked_for(capsys):
  e = errors.ConfigError("config.train.lr=-1 must be positive.")
  assert cli.report_failure(e) == 2
  assert capsys.readouterr().err == "Error: config.train.lr=-1 must be positive.\n"
  try:
    raise e
  except errors.ConfigError as raised:
    assert cli.report_failure(raised, show_traceback=True) == 2
  err = capsys.readouterr().err
  assert "Traceback" in err and err.strip().splitlines()[-1].startswith("Error: config.train")


def test_a_bug_is_one_line_naming_the_log_file_that_keeps_its_traceback(
    capsys, tmp_path, monkeypatch
):
  monkeypatch.setenv("FREQJAX_LOG_DIR", str(tmp_path / "logs"))
  try:
    {}["missing"]
  except KeyError as e:
    assert cli.report_failure(e) == 1
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith("Error: KeyError: 'missing' (an unexpected failure"), line
  (log,) = (tmp_path / "logs").iterdir()
  assert str(log) in line
  text = log.read_text()
  assert "Traceback" in text and "in test_a_bug_is_one_line" in text and "KeyError" in text
  try:
    {}["missing"]
  except KeyError as e:
    assert cli.report_failure(e, show_traceback=True) == 1
  err = capsys.readouterr().err
  assert "Traceback" in err and err.strip().splitlines()[-1].startswith("Error: KeyError")


def test_a_path_that_cannot_be_written_is_a_user_error(capsys):
  e = PermissionError(errno.EACCES, "Permission denied", "/runs/x/.lock")
  assert cli.report_failure(e) == 2
  assert capsys.readouterr().err.strip() == (
      "Error: Cannot write or read /runs/x/.lock (permission denied). Use a --workdir (or "
      "data_dir) you can write to, or fix its permissions."
  )


def test_launchers_default_to_one_host_device_per_core_unless_xla_flags_say_otherwise(monkeypatch):
  monkeypatch.setattr(os, "cpu_count", lambda: 6)
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  cli.default_host_devices(env)
  assert env["XLA_FLAGS"] == (
      "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4"
  )
  kept = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  cli.default_host_devices(kept)
  assert kept["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
  monkeypatch.setattr(os, "cpu_count", lambda: 1)
  single = {}
  cli.default_host_devices(single)
  assert "XLA_FLAGS" not in single
