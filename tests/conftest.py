"""Test set-up: four CPU devices for every test process (multi-device code is tested on the
CPU with forced host devices), quiet logs, and small shared fixtures.

XLA flags other than the device count are kept, for this process and the launchers tests
start. `make test` uses that for its second pass: the tests marked `trains` (they assert what
a trained model learned) run again with `--xla_cpu_max_isa=SSE4_2`, XLA's CPU code for an
older processor, which trains a model whose parameters differ in every bit. A test that
passes under both asserts what the method promises, not one machine's training outcome.
"""

import hashlib
import os

# Must happen before JAX initialises its backends.
_flags = [
    f
    for f in os.environ.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
]
os.environ["XLA_FLAGS"] = " ".join(_flags + ["--xla_force_host_platform_device_count=4"])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for the whole session (xdist workers and the
# subprocesses tests start): the same small programs compile once, not once per test.
# One cache per set of XLA flags (the ISA pass compiles other code).
_tag = hashlib.sha1(" ".join(sorted(_flags)).encode()).hexdigest()[:8] if _flags else "default"
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.environ.get("TMPDIR", "/tmp"), f"freqjax-test-xla-cache-{os.getuid()}-{_tag}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} (the shared real-image data) is not present")
  return SHARED_DATA


def load_config(spec: str):
  """Loads configs/<file>.py:<variant> as the launchers do."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  file, _, variant = spec.partition(":")
  s = importlib.util.spec_from_file_location("cfg_" + pathlib.Path(file).stem, REPO / file)
  m = importlib.util.module_from_spec(s)
  s.loader.exec_module(m)
  return m.get_config(variant or None)


def tiny_synthetic_config(data_dir, **overrides):
  """A seconds-long synthetic training config: width-4 ResNet-18, 160 train images."""
  c = load_config("configs/synthetic.py:syn1")
  c.data.data_dir = str(data_dir)
  c.data.synthetic.train_per_class, c.data.synthetic.test_per_class = 40, 10
  c.model.width_multiplier = 1 / 16
  c.train.batch_size, c.train.eval_batch_size = 8, 16
  c.train.epochs, c.train.log_every_steps = 2, 1
  c.train.progress = False
  c.train.prefetch = 0
  c.dynamics.every_steps = 0
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def tiny_resnet(size: int, num_classes: int = 3, seed: int = 0):
  """(apply_fn, variables) of a width-4 ResNet-18 in eval mode, with random BN statistics so
  the network is not trivially symmetric: the model the spectral tests rank candidates of."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from freqjax import models  # pylint: disable=g-import-not-at-top

  model = models.create("resnet18", num_classes=num_classes, width_multiplier=1 / 16)
  variables = models.init(model, jax.random.key(seed), size)
  rng = np.random.default_rng(seed)
  variables = jax.tree_util.tree_map(
      lambda x: x + 0.1 * rng.normal(size=x.shape).astype(x.dtype), variables
  )
  return (lambda v, x: model.apply(v, x, train=False)), variables
