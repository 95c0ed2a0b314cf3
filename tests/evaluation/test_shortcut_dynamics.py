"""Shortcut test (DFM-filtered TPR/FPR) against a plain NumPy computation; dynamics maths."""

import jax.numpy as jnp
import numpy as np
import pytest

from freqjax import parallel
from freqjax.evaluation import dynamics, metrics, shortcut


def _model(v, x):
  """A fixed classifier that depends on several frequencies: pooled energy features."""
  f = jnp.concatenate([x.mean(axis=(1, 2)), (x[:, ::2] ** 2).mean(axis=(1, 2))], -1)
  return f @ v


def test_tpr_fpr_on_a_known_confusion_matrix():
  conf = np.array([[8, 2, 0], [1, 7, 2], [0, 5, 5]])
  tpr, fpr = metrics.tpr_fpr(conf)
  np.testing.assert_allclose(tpr, [0.8, 0.7, 0.5])
  np.testing.assert_allclose(fpr, [1 / 20, 7 / 20, 2 / 20])
  assert metrics.accuracy(conf) == pytest.approx(20 / 30)


def test_shortcut_test_equals_a_numpy_computation():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(30, 8, 8, 3)).astype(np.float32)
  y = np.repeat([0, 1, 2], 10)
  v = rng.normal(size=(6, 3)).astype(np.float32)
  dfms = rng.random((3, 8, 8)) > 0.6
  mesh = parallel.make_mesh(4)
  res = shortcut.run(_model, v, mesh, x, y, dfms, batch_size=8)

  def predict(images):
    return np.asarray(_model(v, jnp.asarray(images))).argmax(-1)

  def filt(images, keep):
    spec = np.fft.fftshift(np.fft.fft2(images, axes=(1, 2)), axes=(1, 2))
    return np.real(
        np.fft.ifft2(np.fft.ifftshift(spec * keep[None, :, :, None], axes=(1, 2)), axes=(1, 2))
    ).astype(np.float32)

  conf0 = metrics.confusion(y, predict(x), 3)
  np.testing.assert_array_equal(res["confusion_unfiltered"], conf0)
  for k in range(3):
    pred = predict(filt(x, dfms[k].astype(np.float64)))
    np.testing.assert_array_equal(res["confusion"][k], metrics.confusion(y, pred, 3))
    assert res["tpr"][k] == pytest.approx(np.mean(pred[y == k] == k))
    assert res["fpr"][k] == pytest.approx(np.mean(pred[y != k] == k))
    keep = (~dfms[k]).astype(np.float64)
    keep[4, 4] = 1.0
    pred_r = predict(filt(x, keep))
    assert res["tpr_removed"][k] == pytest.approx(np.mean(pred_r[y == k] == k))
  np.testing.assert_allclose(res["keep_fraction"], dfms.reshape(3, -1).mean(1))
  table = shortcut.table(res, ["a", "b", "c"])
  assert table.count("\n") == 4 and "| a |" in table


def test_all_ones_dfm_reproduces_the_unfiltered_result():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 8, 8, 3)).astype(np.float32)
  y = np.repeat([0, 1], 6)
  v = rng.normal(size=(6, 2)).astype(np.float32)
  res = shortcut.run(
      _model, v, parallel.make_mesh(4), x, y, np.ones((2, 8, 8), bool), complement=False
  )
  np.testing.assert_allclose(res["tpr"], res["tpr_unfiltered"])
  np.testing.assert_allclose(res["fpr"], res["fpr_unfiltered"])


def test_dfm_and_image_size_mismatch_states_both():
  with pytest.raises(ValueError, match=r"DFMs are 16×16 but the images are 8×8"):
    shortcut.run(
        _model,
        np.zeros((6, 2), np.float32),
        parallel.make_mesh(1),
        np.zeros((2, 8, 8, 3), np.float32),
        np.array([0, 1]),
        np.ones((2, 16, 16), bool),
    )


def test_learned_steps_use_tpr_minus_fpr():
  names = ["C0", "C1"]
  records = []
  # C1 is predicted for everything first (TPR 1, FPR 1: not learned), then both separate.
  for step, (t0, f0, t1, f1) in zip(
      [0, 5, 10, 15], [(0, 0, 1, 1), (0.2, 0, 1, 0.8), (0.6, 0, 1, 0.4), (0.9, 0, 1, 0.1)]
  ):
    records.append(
        {
            "step": step,
            "split": "dynamics/full",
            "tpr_C0": t0,
            "fpr_C0": f0,
            "tpr_C1": t1,
            "fpr_C1": f1,
            "acc_C0": t0,
            "acc_C1": t1,
        }
    )
  records.append({"step": 5, "split": "train", "loss": 1.0})
  dyn = dynamics.collect(records, names)
  assert dyn["views"] == ["full"] and dyn["steps"].tolist() == [0, 5, 10, 15]
  steps = dynamics.learned_steps(dyn, 0.5)
  assert steps.tolist() == [[10, 10]]
  assert dynamics.learned_first(steps) == [[0, 1]]
  assert dynamics.learned_first(np.array([[15, -1, 5]])) == [[2]]
  assert dynamics.learned_first(np.array([[-1, -1]])) == [[]]
