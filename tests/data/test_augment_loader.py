"""Augmentation on the device and the host loader: sampling rules, sharding invariance,
per-process rows, seeded order, padding of the last evaluation batch."""

import jax
import numpy as np
import pytest

from freqjax import parallel
from freqjax.data import augment, loader
from tests.conftest import load_config


def test_random_resized_crop_boxes_follow_torchvision_rules():
  keys = jax.random.split(jax.random.key(0), 2000)
  boxes = np.asarray(
      jax.vmap(lambda k: augment.rrc_box(k, 40, 40, (0.08, 1.0), (3 / 4, 4 / 3)))(keys)
  )
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 40).all()
  area = h * w / 1600
  assert area.min() >= 0.06 and area.max() <= 1.0  # rounding of h, w around the scale bounds
  assert 0.4 < np.median(area) < 0.65  # uniform area in [0.08, 1] before rounding
  ratio = w / h
  assert ratio.min() > 0.7 and ratio.max() < 1.45
  # Impossible scales fall back to the centred full image (ratio clamped).
  fb = np.asarray(augment.rrc_box(jax.random.key(1), 40, 80, (2.0, 3.0), (3 / 4, 4 / 3)))
  np.testing.assert_array_equal(fb, [0, (80 - 53) // 2, 40, 53])


def test_crop_and_resize_of_the_whole_image_is_identity():
  img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
  out = np.asarray(augment.crop_and_resize(img, np.array([0, 0, 16, 16], np.float32), 16))
  np.testing.assert_allclose(out, img, atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [
        "configs/synthetic.py:syn1",
        "configs/tiny_imagenet10.py",
        "configs/imagenet10.py:resnet18,augmix",
    ],
)
def test_train_transform_does_not_depend_on_sharding(spec):
  c = load_config(spec)
  size = c.data.storage_size or c.data.image_size
  if size > 64:  # keep the test quick: ImageNet-10's path at a smaller size
    c.data.image_size, c.data.storage_size = 48, 56
    size = 56
  images = np.random.default_rng(1).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
  fn = augment.make_train_transform(c)
  key = jax.random.key(3)
  outs = []
  for n in (1, 4):
    mesh = parallel.make_mesh(n)
    f = jax.jit(fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))
    outs.append(np.asarray(f(key, parallel.shard_batch(mesh, images))))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
  assert outs[0].shape == (8, c.data.image_size, c.data.image_size, 3)
  assert not np.allclose(outs[0][0], outs[0][1])  # per-example randomness


def test_pad_modes():
  img = np.ones((4, 4, 3), np.float32)
  assert np.asarray(augment.pad(img, 2))[0, 0].tolist() == [0, 0, 0]
  np.testing.assert_allclose(
      np.asarray(augment.pad(img, 2, "mean", (0.5, 0.4, 0.3)))[0, 0], [0.5, 0.4, 0.3]
  )
  ramp = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
  assert np.asarray(augment.pad(ramp, 1, "wrap"))[0, 0, 0] == 15
  with pytest.raises(ValueError, match="Unknown pad mode"):
    augment.pad(img, 1, "reflect")


def test_eval_transform_normalises_and_resizes_only_when_needed():
  c = load_config("configs/tiny_imagenet10.py")
  fn = augment.make_eval_transform(c)
  x = np.full((2, 64, 64, 3), 128, np.uint8)
  out = np.asarray(fn(x))
  want = (128 / 255 - np.array(c.data.mean)) / np.array(c.data.std)
  np.testing.assert_allclose(out[0, 0, 0], want, rtol=1e-5)
  assert np.asarray(fn(np.full((2, 80, 80, 3), 128, np.uint8))).shape == (2, 64, 64, 3)


class _Source:

  def __init__(self, n):
    self.images = np.arange(n)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    self.labels = np.arange(n) % 3

  def get(self, idx):
    return self.images[idx], self.labels[idx]


def test_two_processes_read_exactly_one_process_global_batches():
  src = _Source(50)
  one = loader.Loader(src, np.arange(50), 8, shuffle=True, seed=5, drop_remainder=True)
  halves = [
      loader.Loader(
          src,
          np.arange(50),
          8,
          shuffle=True,
          seed=5,
          drop_remainder=True,
          rows=slice(4 * p, 4 * p + 4),
      )
      for p in range(2)
  ]
  assert len(one) == 6
  for epoch in (0, 1):
    full = [b["image"][:, 0, 0, 0] for b in one.epoch(epoch)]
    parts = [[b["image"][:, 0, 0, 0] for b in h.epoch(epoch)] for h in halves]
    for b, (p0, p1) in enumerate(zip(*parts)):
      np.testing.assert_array_equal(np.concatenate([p0, p1]), full[b])
  assert not np.array_equal(
      np.concatenate([b["label"] for b in one.epoch(0)]),
      np.concatenate([b["label"] for b in one.epoch(1)]),
  )
  resumed = [b["image"][:, 0, 0, 0] for b in one.epoch(1, start_batch=4)]
  np.testing.assert_array_equal(resumed, [b["image"][:, 0, 0, 0] for b in one.epoch(1)][4:])


def test_last_evaluation_batch_is_padded_and_marked():
  ld = loader.Loader(_Source(10), np.arange(10), 4, shuffle=False, drop_remainder=False)
  batches = list(ld.epoch())
  assert len(ld) == 3 and [b["valid"].sum() for b in batches] == [4, 4, 2]
  assert batches[-1]["image"][:, 0, 0, 0].tolist() == [8, 9, 8, 8]
  with pytest.raises(ValueError, match="fewer than one global batch"):
    loader.Loader(_Source(3), np.arange(3), 4, shuffle=True, drop_remainder=True)


def test_loader_errors_reach_the_consumer():
  class Broken(_Source):

    def get(self, idx):
      raise OSError("disk gone")

  with pytest.raises(OSError, match="disk gone"):
    list(loader.Loader(Broken(8), np.arange(8), 4, shuffle=False, drop_remainder=True).epoch())
