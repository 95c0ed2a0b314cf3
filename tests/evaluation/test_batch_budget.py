"""Stages outside the DFM engine keep their batches within the per-device memory budget
(`parallel.fit_batch`: fewer images per pass, the same results up to float rounding, and
the very same where the configured batch fits), and show progress bars."""

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import parallel
from freqjax.evaluation import shortcut
from freqjax.spectral import sensitivity

S, C, K, H = 12, 3, 4, 512


def _mlp(seed=0):
  """A two-layer net: its backward pass keeps the (N, H) hidden layer, so a pass's buffers
  grow with the batch."""
  rng = np.random.default_rng(seed)
  v = {
      "w1": jnp.asarray(rng.normal(size=(S * S * C, H)).astype(np.float32) / 20),
      "w2": jnp.asarray(rng.normal(size=(H, K)).astype(np.float32) / 20),
  }
  return lambda v, x: jnp.tanh(x.reshape(len(x), -1) @ v["w1"]) @ v["w2"], v


def _data(n=40, seed=1):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, S, S, C)).astype(np.float32), np.arange(n) % K


def _lower(apply_fn, v, mesh):
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  fn = jax.jit(
      lambda v, x, y: sensitivity.power_spectra(apply_fn, v, x, y),
      in_shardings=(repl, data, data),
      out_shardings=data,
  )
  v = parallel.replicate(mesh, v)
  return lambda b: fn.lower(
      v,
      jax.ShapeDtypeStruct((b, S, S, C), jnp.float32, sharding=data),
      jax.ShapeDtypeStruct((b,), jnp.int32, sharding=data),
  )


def test_fit_batch_keeps_a_batch_that_fits_and_shrinks_one_that_does_not():
  apply_fn, v = _mlp()
  mesh = parallel.make_mesh(4)
  lower = _lower(apply_fn, v, mesh)
  b, compiled = parallel.fit_batch(lower, 256, 40, mesh, 2**30)
  assert b == 40  # what padded_batches takes: min(batch, images), a multiple of 4
  full = compiled.memory_analysis().temp_size_in_bytes
  assert full > 0
  b, compiled = parallel.fit_batch(lower, 256, 40, mesh, full / 3)
  assert b % 4 == 0 and 4 <= b < 40
  assert compiled.memory_analysis().temp_size_in_bytes <= full / 3
  b, _ = parallel.fit_batch(lower, 256, 40, mesh, 1.0)  # never below one image per device
  assert b == 4


def test_sensitivity_within_a_small_budget_equals_the_full_batch(capsys):
  apply_fn, v = _mlp()
  x, y = _data()
  mesh = parallel.make_mesh(4)
  want, counts = sensitivity.class_sensitivity(apply_fn, v, mesh, x, y, K, batch_size=40)
  # The default budget holds the whole batch: the result is the very same.
  again, _ = sensitivity.class_sensitivity(
      apply_fn, v, mesh, x, y, K, batch_size=40, memory_budget_mb=1e6
  )
  np.testing.assert_array_equal(again, want)
  full = _lower(apply_fn, v, mesh)(40).compile().memory_analysis().temp_size_in_bytes
  got, got_counts = sensitivity.class_sensitivity(
      apply_fn, v, mesh, x, y, K, batch_size=40, memory_budget_mb=full / 3 / 2**20, progress=True
  )
  np.testing.assert_array_equal(got_counts, counts)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  err = capsys.readouterr().err
  assert "Fourier sensitivity" in err and "40/40" in err


def test_shortcut_test_shows_its_passes_and_fits_the_budget(capsys):
  apply_fn, v = _mlp()
  x, y = _data(30)
  y = y % 3
  dfms = np.random.default_rng(2).random((3, S, S)) > 0.5
  mesh = parallel.make_mesh(4)
  want = shortcut.run(apply_fn, v, mesh, x, y, dfms, batch_size=32)
  assert "shortcut test" not in capsys.readouterr().err  # no bar unless asked
  got = shortcut.run(
      apply_fn, v, mesh, x, y, dfms, batch_size=32, memory_budget_mb=1e-3, progress=True
  )
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  err = capsys.readouterr().err
  assert "shortcut test (7 passes)" in err and "210/210" in err  # (1 + 2·3) passes × 30
