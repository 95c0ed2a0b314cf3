"""Shared absl flags for the launchers in launch/ (each stays a few lines long).

    from freqjax import cli
    cli.define_flags()
    def main(argv):
      some_library_function(cli.get_config(), cli.workdir())
    if __name__ == "__main__":
      cli.run(main)

Flags: --config (an ml_collections config file with an optional ':variant', locked: a
misspelt override fails and lists the valid keys), --workdir, --move_aside (a launch that
trains may move a conflicting run aside), --traceback, and the multi-host trio
--coordinator_address, --num_processes, --process_id (jax.distributed).

Errors: the config is validated before any work starts. A user error (`errors.UserError`:
config, dataset, artifact, checkpoint, workdir, a full disk, a path that cannot be written,
an unparsable flag value) prints one line, `Error: ...`, and exits with code 2;
--traceback or FREQJAX_TRACEBACK=1 shows the traceback too. Any other failure prints one
line too, naming the log file that holds its traceback (`log_dir()`), and exits with code 1.
Either way the process exits at once, so library threads' shutdown noise never buries the
message.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from freqjax import config as config_lib, errors, parallel

FLAGS = flags.FLAGS
USER_ERROR_EXIT_CODE = 2


def default_host_devices(environ=os.environ) -> None:
  """Unless XLA_FLAGS already sets it: one XLA host device per core (a power of two, at most
  8, as `make` does). On the CPU this measured 80–100 img/s against 49–59 with one device
  for a full-width ResNet-18 at 32 px on two cores (README, Performance); a GPU or TPU
  backend is unaffected (only the host platform gets the devices). Runs before JAX starts
  its backends, when the launchers import this module."""
  current = environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" in current:
    return
  n, d = os.cpu_count() or 1, 1
  while d * 2 <= min(n, 8):
    d *= 2
  if d > 1:
    environ["XLA_FLAGS"] = f"{current} --xla_force_host_platform_device_count={d}".strip()


default_host_devices()


def define_flags(config: bool = True, workdir: bool = True) -> None:
  if config:
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/synthetic.py:syn1_small", lock_config=True
    )
  if workdir:
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and artifacts.")
    flags.DEFINE_bool(
        "move_aside",
        False,
        "If the workdir holds a run of another model/classes/dataset/seed/size, "
        "rename it to <workdir>.moved-<time> (never deleted) and start afresh.",
    )
  flags.DEFINE_bool(
      "traceback", False, "Show the traceback of user errors too " "(or set FREQJAX_TRACEBACK=1)."
  )
  flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0.")
  flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", 0, "Multi-host: index of this process.")


def get_config():
  if FLAGS.config is None:
    raise errors.ConfigError("--config is required, e.g. --config=configs/synthetic.py:syn1_small")
  return FLAGS.config


def workdir() -> str:
  if not FLAGS.workdir:
    raise errors.WorkdirError("--workdir is required, e.g. --workdir=runs/syn1_small.")
  return FLAGS.workdir


def required(name: str) -> str:
  """The value of the string flag --name, or a one-line error if it is not given."""
  value = FLAGS[name].value
  if not value:
    raise errors.ConfigError(f"--{name} is required (see --help).")
  return value


def move_aside() -> bool:
  return bool(FLAGS.move_aside)


def run(main) -> None:
  """absl's app.run, after checking config overrides and values and joining a multi-host
  run; user errors end as one line with exit code 2."""

  def wrapped(argv):
    logging.set_verbosity(logging.INFO)
    quiet_library_logs()
    code = 0
    try:
      if "config" in FLAGS and FLAGS.config is not None:
        config_lib.validate(FLAGS.config)
      enable_compilation_cache()
      if "num_processes" in FLAGS:
        parallel.initialize_distributed(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
      main(argv)
    except BaseException as e:  # pylint: disable=broad-except
      if isinstance(e, SystemExit):
        raise
      code = report_failure(
          e, show_traceback=FLAGS.traceback or _env_traceback(), file=_take_stderr()
      )
    # Exit now: Orbax's and asyncio's threads would otherwise log pages of shutdown noise
    # after the real error (and a clean run has nothing left to do).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.flush()
    os._exit(code)  # pylint: disable=protected-access

  try:
    _check_config_overrides(sys.argv)
  except errors.UserError as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
  app.run(wrapped, flags_parser=parse_flags)


def parse_flags(argv):
  """absl's flag parsing, with an unparsable value (e.g. --config.train.epochs=abc) as one
  line and exit code 2, like every other user error."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    message = " ".join(str(e).split())
    print(f"Error: {message} (see --helpfull for every flag).", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_CODE)


def _take_stderr():
  """A file on the console's stderr for the failure message; from now on every other writer
  (Orbax's threads failing on a full disk, asyncio's shutdown, C++ logs) writes to /dev/null,
  so nothing can follow the message or break into its line. It starts on a new line: another
  thread may have left half a line on the console before this point."""
  console = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  sys.stderr = open(os.devnull, "w")  # pylint: disable=consider-using-with
  out = os.fdopen(console, "w")
  out.write("\n")
  return out


def _env_traceback() -> bool:
  return os.environ.get("FREQJAX_TRACEBACK", "").lower() not in ("", "0", "false", "no")


def user_message(e: BaseException) -> str | None:
  """The one-line message of a user error anywhere in e's cause chain, else None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, errors.UserError):
      return str(e)
    full = _disk_full(e)
    if full is not None:
      where = f" while writing {full}" if full else ""
      return (
          f"No space left on the device{where}. Free some space (or use a --workdir on "
          "another disk) and rerun the same command: finished work is kept and the launch "
          "resumes where it stopped."
      )
    if isinstance(e, KeyboardInterrupt):
      return (
          "Interrupted. Rerun the same command to resume: finished checkpoints and "
          "ranking chunks are kept."
      )
    denied = _denied(e)
    if denied is not None:
      return denied
    e = e.__cause__ or e.__context__
  return None


def _disk_full(e: BaseException) -> str | None:
  """The path being written when e is a full disk ('' if unknown), else None. Python's
  OSError says so with its errno; TensorStore (Orbax's writer) only in its message."""
  if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
    return e.filename or ""
  text = str(e)
  if "No space left on device" in text or "os_error_code='28'" in text:
    m = re.search(r'Failed writing: "([^"]+)"', text) or re.search(r'local file "([^"]+)"', text)
    return m.group(1) if m else ""
  return None


def _denied(e: BaseException) -> str | None:
  """The message for a path that cannot be written or read as asked (permissions, a
  read-only disk, a file where a directory belongs), else None."""
  if not isinstance(e, OSError) or e.errno not in _PATH_ERRNOS:
    return None
  what = e.filename or "a file"
  if e.errno in (errno.EEXIST, errno.ENOTDIR):
    return (
        f"{what} is in the way: a file stands where a directory is needed. Choose another "
        "--workdir (or data_dir), or move that file."
    )
  why = "the disk is read-only" if e.errno == errno.EROFS else "permission denied"
  return (
      f"Cannot write or read {what} ({why}). Use a --workdir (or data_dir) you can write to, "
      "or fix its permissions."
  )


_PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR)


def log_dir() -> str:
  """Where the traceback of an unexpected failure goes: $FREQJAX_LOG_DIR, else
  ~/.cache/freqjax/logs."""
  return os.environ.get("FREQJAX_LOG_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "freqjax", "logs"
  )


def _write_traceback(e: BaseException) -> str | None:
  """Writes e's traceback to a new file in `log_dir()`; its path, or None if none could be
  written."""
  import datetime  # pylint: disable=g-import-not-at-top

  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  name = os.path.splitext(os.path.basename(sys.argv[0] or "freqjax"))[0] or "freqjax"
  path = os.path.join(log_dir(), f"{name}-{stamp}-{os.getpid()}.log")
  try:
    os.makedirs(log_dir(), exist_ok=True)
    with open(path, "w") as f:
      f.write("command: " + " ".join(sys.argv) + "\n\n")
      traceback.print_exception(e, file=f)
  except OSError:
    return None
  return path


def report_failure(e: BaseException, show_traceback: bool = False, file=None) -> int:
  """Prints a failure for a user to `file` (default stderr) as one line; returns the exit
  code (2 for user errors, 130 for Ctrl-C, 1 otherwise). An unexpected failure's traceback
  goes to a log file (`log_dir()`) that the line names, or to `file` with `show_traceback`."""
  file = file or sys.stderr
  msg = user_message(e)
  if isinstance(e, KeyboardInterrupt):
    print(f"\n{msg}", file=file, flush=True)
    return 130
  if show_traceback:
    traceback.print_exception(e, file=file)
  if msg is None:
    where = None if show_traceback else _write_traceback(e)
    kept = f"; its traceback is in {where}" if where else ""
    print(
        f"Error: {type(e).__name__}: {' '.join(str(e).split())[:2000]} (an unexpected failure, "
        f"not a problem with your input{kept}; rerun with --traceback to see it here)",
        file=file,
        flush=True,
    )
    return 1
  print(f"Error: {msg}", file=file, flush=True)
  return USER_ERROR_EXIT_CODE


def enable_compilation_cache() -> None:
  """Persists compiled XLA programs (default ~/.cache/freqjax/xla) so reruns start fast."""
  import jax  # pylint: disable=g-import-not-at-top

  if not jax.config.jax_compilation_cache_dir:
    jax.config.update(
        "jax_compilation_cache_dir",
        os.environ.get(
            "FREQJAX_XLA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "freqjax", "xla")
        ),
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def quiet_library_logs() -> None:
  """Keeps Orbax's and tfds's INFO chatter out of the console (warnings still show)."""
  import logging as py_logging  # pylint: disable=g-import-not-at-top

  def keep(record) -> bool:
    noisy = any(s in record.pathname for s in ("orbax", "tensorflow_datasets", "etils"))
    return record.levelno >= py_logging.WARNING or not noisy

  logging.get_absl_handler().addFilter(keep)


def _check_config_overrides(argv) -> None:
  """Fails early, listing the valid keys, when an override names no field."""
  path = None
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      path = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  if not path:
    return
  file, _, variant = path.partition(":")
  if not os.path.exists(file):
    raise errors.ConfigError(f"Config file {file} does not exist (from --config={path}).")
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("_freqjax_config_check", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    cfg = module.get_config(variant or None)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  config_lib.check_overrides(cfg, argv[1:])
