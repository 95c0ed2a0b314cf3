"""Augmentation and normalisation on the accelerator (pure JAX, per-example keys).

The official training transform (torchvision, on PIL images) is
    Pad(4) -> RandomHorizontalFlip -> RandomResizedCrop(size, (0.08, 1), (3/4, 4/3))
    [-> AutoAugment | AugMix] -> ToTensor -> Normalize(mean, std)
and the evaluation transform Resize((size, size)) -> ToTensor -> Normalize. Here:
- `crop='random_resized_crop'` reproduces the official chain (torchvision's sampling: ten
  tries of scale and log-ratio, then the centre-crop fallback; bilinear, antialiased resize);
- `crop='pad_crop'` (the synthetic presets) is Pad(4) + random size×size crop; with
  `pad_mode='wrap'` the crop is a circular shift, which keeps every frequency's magnitude
  exactly, as synthetic.md asks ('zeros' pads black pixels as torchvision's Pad does, 'mean'
  pads the dataset's mean colour, i.e. zeros after normalisation);
- evaluation resizes only when the stored size differs from `image_size` (test splits are
  stored already resized, exactly as the official `Resize`).

Per-example randomness comes from `jax.random.split(key, batch)`, so results do not depend on
how the batch is sharded over devices. Images are NHWC; pixel values in [0, 1] before
normalisation, as in torchvision's ToTensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.spectral import fft


def to_float(images):
  return images.astype(jnp.float32) / 255.0


def normalize(x, mean, std):
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def resize(images, size: int):
  """Bilinear, antialiased resize of a batch (B, H, W, C) to (B, size, size, C)."""
  if images.shape[1] == size and images.shape[2] == size:
    return images
  b, _, _, c = images.shape
  return jax.image.resize(images, (b, size, size, c), method="linear", antialias=True)


def flip(key, img):
  return jnp.where(jax.random.bernoulli(key), img[:, ::-1], img)


def pad(img, p: int, mode: str = "zeros", mean=None):
  """Pads p pixels on every side: 'zeros' (black, torchvision's Pad), 'mean' (the dataset
  mean colour, i.e. zeros after normalisation) or 'wrap' (circular)."""
  widths = ((p, p), (p, p), (0, 0))
  if mode == "zeros":
    return jnp.pad(img, widths)
  if mode == "mean":
    return jnp.pad(img - jnp.asarray(mean, img.dtype), widths) + jnp.asarray(mean, img.dtype)
  if mode == "wrap":
    return jnp.pad(img, widths, mode="wrap")
  raise ValueError(f"Unknown pad mode {mode!r}; use 'zeros', 'mean' or 'wrap'.")


def random_crop(key, img, size: int):
  h, w, _ = img.shape
  ki, kj = jax.random.split(key)
  i = jax.random.randint(ki, (), 0, h - size + 1)
  j = jax.random.randint(kj, (), 0, w - size + 1)
  return jax.lax.dynamic_slice(img, (i, j, 0), (size, size, img.shape[2]))


def rrc_box(key, height: int, width: int, scale, ratio, attempts: int = 10):
  """torchvision RandomResizedCrop.get_params: (top, left, h, w) of the crop box."""
  area = height * width
  k1, k2, k3, k4 = jax.random.split(key, 4)
  target = area * jax.random.uniform(k1, (attempts,), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k2, (attempts,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
  aspect = jnp.exp(log_r)
  w = jnp.round(jnp.sqrt(target * aspect))
  h = jnp.round(jnp.sqrt(target / aspect))
  ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  top = jnp.floor(jax.random.uniform(k3, (attempts,)) * (height - h + 1))
  left = jnp.floor(jax.random.uniform(k4, (attempts,)) * (width - w + 1))
  first = jnp.argmax(ok)
  # Fallback: the whole image, cropped to the ratio range, centred.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fw, fh = width, round(width / ratio[0])
  elif in_ratio > ratio[1]:
    fw, fh = round(height * ratio[1]), height
  else:
    fw, fh = width, height
  fb = jnp.array([(height - fh) // 2, (width - fw) // 2, fh, fw], jnp.float32)
  box = jnp.stack([top[first], left[first], h[first], w[first]])
  return jnp.where(ok.any(), box, fb)


def crop_and_resize(img, box, size: int):
  """Resamples the box (top, left, h, w) of img to size×size (bilinear, antialiased)."""
  top, left, h, w = box[0], box[1], box[2], box[3]
  scale = jnp.stack([size / h, size / w])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(
      img, (size, size, img.shape[2]), (0, 1), scale, translation, method="linear", antialias=True
  )


def random_resized_crop(key, img, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  box = rrc_box(key, img.shape[0], img.shape[1], scale, ratio)
  return crop_and_resize(img, box, size)


def dfmx_keep_masks(config):
  """DFM-X's keep masks (C, S, S) float32 with DC kept, or None when it is off."""
  x, d = config.augment.dfmx, config.data
  if not x.dfms or float(x.p) == 0.0:
    return None
  from freqjax.evaluation import dfm_summary  # pylint: disable=g-import-not-at-top

  maps = dfm_summary.read_dfms(
      x.dfms, float(x.threshold), int(d.num_classes), int(d.image_size), "config.augment.dfmx.dfms"
  ).astype(np.float32)
  s = maps.shape[-1]
  maps[:, s // 2, s // 2] = 1.0
  return jnp.asarray(maps)


def dfmx(key, x, label, keep_masks, p: float):
  """DFM-X on one normalised image (S, S, C): a class m drawn uniformly; if m is not the
  image's class, with probability p keep only DFM_m's frequencies (the authors' rule)."""
  k_class, k_apply = jax.random.split(key)
  m = jax.random.randint(k_class, (), 0, keep_masks.shape[0])
  apply = (m != label) & jax.random.bernoulli(k_apply, p)
  return jnp.where(apply, fft.filter_images(x, keep_masks[m]), x)


def make_train_transform(config) -> Callable:
  """fn(key, images uint8 (B,H,W,3), labels (B,) = None) -> normalised float32
  (B, image_size, image_size, 3). Labels are needed only by DFM-X."""
  a, d = config.augment, config.data
  dfmx_masks = dfmx_keep_masks(config)
  size = int(d.image_size)
  policy = None
  if a.policy != "none":
    from freqjax.data import autoaugment  # pylint: disable=g-import-not-at-top

    policy = {"autoaugment": autoaugment.auto_augment, "augmix": autoaugment.augmix}[a.policy]

  def one(key, img, label):
    k_flip, k_crop, k_policy = jax.random.split(key, 3)
    x = img.astype(jnp.float32) / 255.0
    if a.pad:
      x = pad(x, int(a.pad), a.pad_mode, d.mean)
    if a.flip:
      x = flip(k_flip, x)
    if a.crop == "pad_crop":
      x = random_crop(k_crop, x, size)
    elif a.crop == "random_resized_crop":
      x = random_resized_crop(k_crop, x, size, tuple(a.rrc_scale), tuple(a.rrc_ratio))
      x = jnp.clip(x, 0.0, 1.0)
    else:
      x = resize(x[None], size)[0]
    if policy is not None:
      x = policy(k_policy, x)
    x = normalize(x, d.mean, d.std)
    if dfmx_masks is not None:  # its own key: runs without DFM-X draw exactly as before
      x = dfmx(jax.random.fold_in(key, 1), x, label, dfmx_masks, float(a.dfmx.p))
    return x

  def transform(key, images, labels=None):
    if labels is None:
      if dfmx_masks is not None:
        raise ValueError("DFM-X needs the images' labels.")
      labels = jnp.zeros(images.shape[0], jnp.int32)
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(one)(keys, images, labels)

  return transform


def make_eval_transform(config) -> Callable:
  """fn(images uint8 (B,H,W,3)) -> normalised float32 (B, image_size, image_size, 3)."""
  d = config.data

  def transform(images):
    return normalize(resize(to_float(images), int(d.image_size)), d.mean, d.std)

  return transform
