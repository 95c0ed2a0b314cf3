"""Shared absl flags for the launchers in launch/ (each stays a few lines long).

    from freqjax import cli
    cli.define_flags()
    def main(argv):
      some_library_function(cli.get_config(), cli.workdir())
    if __name__ == "__main__":
      cli.run(main)

Flags: --config (an ml_collections config file with an optional ':variant', locked: a
misspelt override fails and lists the valid keys), --workdir, and the multi-host trio
--coordinator_address, --num_processes, --process_id (jax.distributed).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from freqjax import config as config_lib, parallel

FLAGS = flags.FLAGS


def define_flags(config: bool = True, workdir: bool = True) -> None:
  if config:
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/synthetic.py:syn1_small", lock_config=True)
  if workdir:
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and artifacts.")
  flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0.")
  flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", 0, "Multi-host: index of this process.")


def get_config():
  if FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py:syn1_small")
  return FLAGS.config


def workdir() -> str:
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  return FLAGS.workdir


def run(main) -> None:
  """absl's app.run, after checking config overrides and joining a multi-host run."""
  def wrapped(argv):
    logging.set_verbosity(logging.INFO)
    quiet_library_logs()
    enable_compilation_cache()
    if "num_processes" in FLAGS:
      parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                      FLAGS.process_id)
    return main(argv)

  _check_config_overrides(sys.argv)
  app.run(wrapped)


def enable_compilation_cache() -> None:
  """Persists compiled XLA programs (default ~/.cache/freqjax/xla) so reruns start fast."""
  import jax  # pylint: disable=g-import-not-at-top
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.environ.get(
        "FREQJAX_XLA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "freqjax", "xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def quiet_library_logs() -> None:
  """Keeps Orbax's and tfds's INFO chatter out of the console (warnings still show)."""
  import logging as py_logging  # pylint: disable=g-import-not-at-top

  def keep(record) -> bool:
    noisy = any(s in record.pathname for s in ("orbax", "tensorflow_datasets", "etils"))
    return record.levelno >= py_logging.WARNING or not noisy

  logging.get_absl_handler().addFilter(keep)


def _check_config_overrides(argv) -> None:
  """Fails early, listing the valid keys, when an override names no config field."""
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
    sys.exit(f"Config file {file} does not exist (from --config={path}).")
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("_freqjax_config_check", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    cfg = module.get_config(variant or None)
    config_lib.check_overrides(cfg, argv[1:])
  except ValueError as e:
    sys.exit(f"Error: {e}")
