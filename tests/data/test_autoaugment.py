"""Tests for freqjax.data.autoaugment.

References are Pillow's own functions called the way torchvision's functional API calls
them on PIL images (NEAREST, fill 0). Magnitudes are torchvision's 10-bin tables, recomputed
here independently of the module.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

try:
  from freqjax.data import autoaugment as aa
except ImportError:  # not pip-installed yet: import from the checkout
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)))
  from freqjax.data import autoaugment as aa

import jax
import jax.numpy as jnp
from PIL import Image, ImageEnhance, ImageOps

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

BLACK = (0, 0, 0)


def to_float(a_u8) -> jax.Array:
  return jnp.asarray(a_u8, jnp.float32) / 255.0


def to_levels(x) -> np.ndarray:
  """float [0, 1] image -> int levels; asserts the image is on the k/255 grid."""
  x = np.asarray(x, np.float64) * 255.0
  lv = np.rint(x)
  assert np.abs(x - lv).max() < 1e-3, "output is not on the uint8 grid"
  return lv.astype(np.int64)


def pil_levels(im: Image.Image) -> np.ndarray:
  return np.asarray(im, dtype=np.int64)


def assert_same(ours, ref_im, what: str, max_diff: int = 0):
  """``ours`` (float image) vs PIL image: max |difference| in uint8 levels."""
  got = to_levels(ours)
  ref = pil_levels(ref_im)
  assert got.shape == ref.shape, what
  diff = np.abs(got - ref)
  where = np.argwhere(diff > max_diff)[:3]
  assert diff.max() <= max_diff, f"{what}: max diff {diff.max()} levels at {where}"
  return diff


def bins(start: float, end: float, steps: int = 10) -> list[float]:
  """torchvision's magnitude bins: ``torch.linspace(start, end, 10)`` as float().

  ATen's CPU kernel works in float32: ``step = (end - start) / (steps - 1)``, the first
  half is ``start + step * i`` and the second half ``end - step * (steps - 1 - i)``. (This
  differs from a float64 linspace rounded to float32, e.g. bin 8 of 0..0.9 is
  0.79999995, not 0.80000001.)"""
  f = np.float32
  s, e = f(start), f(end)
  step = (e - s) / f(steps - 1)
  vals = [s + step * f(i) if i < steps // 2 else e - step * f(steps - 1 - i) for i in range(steps)]
  return [float(v) for v in vals]


def signed(values):
  return [v for m in values for v in {m, -m}]


def tv_inverse_affine(size, angle=0.0, translate=(0, 0), shear=(0.0, 0.0), center=None):
  """Inverse matrix torchvision's F.affine hands to PIL (scale 1), from its documented
  composition M = T * C * R(angle) * SHy(shear_y) * SHx(shear_x) * C^-1."""
  w, h = size
  cx, cy = (w * 0.5, h * 0.5) if center is None else center
  a, sx, sy = (math.radians(v) for v in (angle, shear[0], shear[1]))
  rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  shx = np.array([[1.0, -math.tan(sx)], [0.0, 1.0]])
  shy = np.array([[1.0, 0.0], [-math.tan(sy), 1.0]])
  fwd = np.eye(3)
  fwd[:2, :2] = rot @ shy @ shx
  c = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
  t = np.array([[1, 0, translate[0]], [0, 1, translate[1]], [0, 0, 1.0]])
  inv = c @ np.linalg.inv(fwd) @ np.linalg.inv(c) @ np.linalg.inv(t)
  return tuple(float(v) for v in inv[:2].reshape(-1))


def pil_affine(im, **kw):
  return im.transform(
      im.size, Image.AFFINE, tv_inverse_affine(im.size, **kw), Image.NEAREST, fillcolor=BLACK
  )


def pil_op(im: Image.Image, name: str, mag: float) -> Image.Image:
  """torchvision ``_apply_op`` on a PIL image, written against Pillow directly."""
  if name == "ShearX":
    return pil_affine(im, shear=(math.degrees(math.atan(mag)), 0.0), center=(0, 0))
  if name == "ShearY":
    return pil_affine(im, shear=(0.0, math.degrees(math.atan(mag))), center=(0, 0))
  if name == "TranslateX":
    return pil_affine(im, translate=(int(mag), 0))
  if name == "TranslateY":
    return pil_affine(im, translate=(0, int(mag)))
  if name == "Rotate":
    return im.rotate(mag, resample=Image.NEAREST, fillcolor=BLACK)
  if name in ("Brightness", "Color", "Contrast", "Sharpness"):
    return getattr(ImageEnhance, name)(im).enhance(1.0 + mag)
  if name == "Posterize":
    return ImageOps.posterize(im, int(mag))
  if name == "Solarize":
    return ImageOps.solarize(im, mag)
  if name == "AutoContrast":
    return ImageOps.autocontrast(im)
  if name == "Equalize":
    return ImageOps.equalize(im)
  if name == "Invert":
    return ImageOps.invert(im)
  raise ValueError(name)


def autoaugment_magnitude(name: str, bin_id, size) -> tuple[float, bool]:
  """torchvision AutoAugment magnitude table: (magnitude, signed)."""
  w, h = size
  if bin_id is None:
    return 0.0, False
  table = {
      "ShearX": (bins(0.0, 0.3), True),
      "ShearY": (bins(0.0, 0.3), True),
      "TranslateX": (bins(0.0, 150.0 / 331.0 * w), True),
      "TranslateY": (bins(0.0, 150.0 / 331.0 * h), True),
      "Rotate": (bins(0.0, 30.0), True),
      "Posterize": ([float(8 - round(i / 2.25)) for i in range(10)], False),
      "Solarize": (bins(255.0, 0.0), False),
  }
  mags, sgn = table.get(name, (bins(0.0, 0.9), True))
  return mags[bin_id], sgn


# --------------------------------------------------------------------------------------
# test images (small, deterministic)
# --------------------------------------------------------------------------------------


def _smooth(rng, h, w, lo, hi):
  """Natural-looking image: upsampled coarse noise, channel range inside [lo, hi]."""
  coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
  up = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), np.float64)
  up = (up - up.min()) / max(np.ptp(up), 1.0)
  return np.rint(lo + up * (hi - lo)).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(2023)
  imgs = {
      "noise": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
      "smooth": _smooth(rng, 32, 32, 30, 210),
      "narrow": rng.integers(60, 141, (32, 32, 3), dtype=np.uint8),
      "dark": rng.integers(0, 26, (32, 32, 3), dtype=np.uint8),  # hi - lo = 25: PIL maps 25 -> 254
  }
  flat = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  flat[..., 1] = 77  # constant channel: autocontrast/equalize leave it alone
  imgs["flat_channel"] = flat
  skew = np.zeros((32, 32, 3), np.uint8)  # equalize LUT reaches 256 and must clip to 255
  skew[0, 0] = 255
  imgs["skewed"] = skew
  for lo, hi in [(3, 48), (10, 61), (0, 170), (17, 119)]:  # ranges with several integer LUT points
    a = rng.integers(lo, hi + 1, (32, 32, 3), dtype=np.uint8)
    a[0, 0], a[0, 1] = lo, hi
    imgs[f"range_{lo}_{hi}"] = a
  return imgs


@pytest.fixture(scope="module")
def nonsquare() -> np.ndarray:
  """24 x 40 image for the geometry (axis conventions); other ops are shape-agnostic and
  every new shape costs a compile."""
  return np.random.default_rng(24).integers(0, 256, (24, 40, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------
# individual ops vs PIL
# --------------------------------------------------------------------------------------


def test_pointwise_ops_match_pil_exactly(images):
  thresholds = bins(255.0, 0.0) + [128.0, 0.5, 254.5, 256.0]
  for name, a in images.items():
    im, x = Image.fromarray(a), to_float(a)
    assert_same(aa.invert(x), ImageOps.invert(im), f"invert {name}")
    for bits in range(1, 9):
      assert_same(aa.posterize(x, bits), ImageOps.posterize(im, bits), f"posterize {bits} {name}")
    for t in thresholds:
      assert_same(aa.solarize(x, t), ImageOps.solarize(im, t), f"solarize {t} {name}")


def test_autocontrast_matches_pil_exactly(images):
  for name, a in images.items():
    assert_same(
        aa.autocontrast(to_float(a)),
        ImageOps.autocontrast(Image.fromarray(a)),
        f"autocontrast {name}",
    )
  # PIL's float64 LUT sends the maximum of a 0..25 range to 254, not 255; we must too.
  assert to_levels(aa.autocontrast(to_float(images["dark"]))).max() == 254


def test_equalize_matches_pil_exactly(images):
  for name, a in images.items():
    assert_same(aa.equalize(to_float(a)), ImageOps.equalize(Image.fromarray(a)), f"equalize {name}")


@pytest.mark.parametrize("op", ["Brightness", "Color", "Contrast", "Sharpness"])
def test_enhance_ops_match_pil(images, op):
  """PIL blends in C float with truncation; we reproduce it (bound 1/255, exact in practice)."""
  fn = {
      "Brightness": aa.brightness,
      "Color": aa.color,
      "Contrast": aa.contrast,
      "Sharpness": aa.sharpness,
  }[op]
  factors = [1.0 + m for m in signed(bins(0.0, 0.9))] + [0.0, 0.5, 2.0, 3.3]
  n_diff = n_total = 0
  for name, a in images.items():
    im, x = Image.fromarray(a), to_float(a)
    for f in factors:
      diff = assert_same(
          fn(x, f), getattr(ImageEnhance, op)(im).enhance(f), f"{op} {f} {name}", max_diff=1
      )
      n_diff += int((diff > 0).sum())
      n_total += diff.size
  assert n_diff / n_total < 1e-3, f"{op}: {n_diff} of {n_total} values off by one"


def test_geometric_ops_match_pil_exactly(images, nonsquare):
  """NEAREST + fill 0 through PIL's fixed-point sampler: pixel-for-pixel identical."""
  rng = np.random.default_rng(7)
  angles = (
      signed(bins(0.0, 30.0))
      + [float(v) for v in rng.uniform(-45, 45, 6)]
      + [90.0, -90.0, 180.0, 12.5]
  )
  shears = signed(bins(0.0, 0.3)) + [float(v) for v in rng.uniform(-0.5, 0.5, 4)]
  for name, a in (
      ("noise", images["noise"]),
      ("nonsquare", nonsquare),
      ("smooth", images["smooth"]),
  ):
    im, x = Image.fromarray(a), to_float(a)
    w, h = im.size
    for deg in angles:  # (90/180 on a square image hit PIL's transpose fast path)
      assert_same(aa.rotate(x, deg), pil_op(im, "Rotate", deg), f"rotate {deg} {name}")
    for m in shears:
      assert_same(aa.shear_x(x, m), pil_op(im, "ShearX", m), f"shear_x {m} {name}")
      assert_same(aa.shear_y(x, m), pil_op(im, "ShearY", m), f"shear_y {m} {name}")
    for t in signed(bins(0.0, 150.0 / 331.0 * w)[::3]) + [0.4, -1.7, float(w + 3)]:
      assert_same(aa.translate_x(x, t), pil_op(im, "TranslateX", t), f"translate_x {t} {name}")
    for t in signed(bins(0.0, 150.0 / 331.0 * h)[::3]) + [2.9, -h - 1.0]:
      assert_same(aa.translate_y(x, t), pil_op(im, "TranslateY", t), f"translate_y {t} {name}")


def test_traced_magnitudes_close_to_exact(images):
  """Under jit with a traced magnitude the fixed-point coefficients come from float32;
  the documented deviation is a few isolated pixels."""
  x = to_float(images["noise"])
  rot = jax.jit(aa.rotate)
  shx = jax.jit(aa.shear_x)
  bright = jax.jit(aa.brightness)
  worst = 0.0
  for deg in signed(bins(0.0, 30.0)[1:]):
    worst = max(
        worst, float(np.mean(np.any(to_levels(rot(x, deg)) != to_levels(aa.rotate(x, deg)), -1)))
    )
  for m in signed(bins(0.0, 0.3)[1:]):
    worst = max(
        worst, float(np.mean(np.any(to_levels(shx(x, m)) != to_levels(aa.shear_x(x, m)), -1)))
    )
  assert worst < 0.02
  np.testing.assert_array_equal(to_levels(bright(x, 1.3)), to_levels(aa.brightness(x, 1.3)))


def test_tensor_flavour_kernels(images):
  """torchvision's tensor kernels (what AugMix runs); checked through their definitions."""
  a = images["smooth"]
  x = to_float(a)
  f32 = np.float32
  v = a.astype(f32)
  # Brightness: same arithmetic as PIL's blend with a black image.
  for f in (0.3, 1.4):
    np.testing.assert_array_equal(
        to_levels(aa.brightness(x, f, "tensor")), to_levels(aa.brightness(x, f))
    )
  # Color(0): every channel is trunc(0.2989 R + 0.587 G + 0.114 B) in float32.
  grey = np.floor((f32(0.2989) * v[..., 0] + f32(0.587) * v[..., 1]) + f32(0.114) * v[..., 2])
  out = to_levels(aa.color(x, 0.0, "tensor"))
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], grey)
  # Contrast(0): constant trunc(float mean of that grey image).
  np.testing.assert_array_equal(
      to_levels(aa.contrast(x, 0.0, "tensor")), np.floor(f32(grey.sum()) / f32(grey.size))
  )
  # Sharpness(1) is the identity; Sharpness(0) keeps the border and blurs the interior.
  np.testing.assert_array_equal(to_levels(aa.sharpness(x, 1.0, "tensor")), a)
  s0 = to_levels(aa.sharpness(x, 0.0, "tensor"))
  np.testing.assert_array_equal(s0[0], a[0])
  np.testing.assert_array_equal(s0[:, -1], a[:, -1])
  k = np.ones((3, 3), np.float64)
  k[1, 1] = 5.0
  v64 = v.astype(np.float64)
  blur = sum(k[i, j] * v64[i : i + 30, j : j + 30] for i in range(3) for j in range(3)) / 13.0
  assert np.abs(s0[1:-1, 1:-1] - blur).max() <= 0.5 + 1e-4
  # AutoContrast: float32 version differs from PIL's by at most one level, spans 0..255.
  for name in ("dark", "smooth", "range_17_119"):
    t = to_levels(aa.autocontrast(to_float(images[name]), "tensor"))
    assert np.abs(t - pil_levels(ImageOps.autocontrast(Image.fromarray(images[name])))).max() <= 1
    assert t.min() == 0 and t.max() == 255


def test_bilinear_geometry_conventions(images):
  """grid_sample semantics: integer shifts and quarter turns are exact resamplings."""
  a = images["noise"]
  x = to_float(a)
  np.testing.assert_array_equal(to_levels(aa.rotate(x, 0.0, "bilinear")), a)
  # Positive angles turn counter-clockwise.
  np.testing.assert_array_equal(to_levels(aa.rotate(x, 90.0, "bilinear")), np.rot90(a, 1))
  np.testing.assert_array_equal(to_levels(aa.rotate(x, -90.0, "bilinear")), np.rot90(a, -1))
  for t in (3.0, -5.0):
    np.testing.assert_array_equal(
        to_levels(aa.translate_x(x, t, "bilinear")), to_levels(aa.translate_x(x, t))
    )
    np.testing.assert_array_equal(
        to_levels(aa.translate_y(x, t, "bilinear")), to_levels(aa.translate_y(x, t))
    )
  # small rotation / shear: bilinear and nearest agree away from the border up to
  # interpolation (same geometry, different sampling)
  b = to_float(images["smooth"])
  for op, m in ((aa.rotate, 5.0), (aa.shear_x, 0.1), (aa.shear_y, -0.1)):
    d = np.abs(to_levels(op(b, m, "bilinear")) - to_levels(op(b, m)))[4:-4, 4:-4]
    assert d.mean() < 3.0, op


# --------------------------------------------------------------------------------------
# AutoAugment
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aa_batch():
  return jax.jit(jax.vmap(aa.auto_augment))


def _batch(n, h, w, seed):
  rng = np.random.default_rng(seed)
  return np.stack(
      [_smooth(rng, h, w, int(rng.integers(0, 60)), int(rng.integers(190, 256))) for _ in range(n)]
  )


def test_subpolicies_match_pil_pipeline(nonsquare):
  """All 25 ImageNet sub-policies, both ops applied, random signs: the whole chain
  (uint8 between ops) equals the PIL pipeline torchvision runs (non-square image)."""
  a = nonsquare
  im = Image.fromarray(a)
  rng = np.random.default_rng(11)
  pos = rng.integers(0, 2, (25, 2)).astype(bool)
  apply = np.ones((25, 2), bool)
  apply[::4, 0] = False  # a few with only the second op
  f = jax.jit(jax.vmap(aa.apply_subpolicy, in_axes=(None, 0, 0, 0)))
  out = f(to_float(a), jnp.arange(25), jnp.asarray(apply), jnp.asarray(pos))
  assert len(aa.IMAGENET_POLICY) == 25
  for pid, sub in enumerate(aa.IMAGENET_POLICY):
    ref = im
    for slot, (name, _, bin_id) in enumerate(sub):
      if not apply[pid, slot]:
        continue
      mag, sgn = autoaugment_magnitude(name, bin_id, im.size)
      ref = pil_op(ref, name, mag if (pos[pid, slot] or not sgn) else -mag)
    assert_same(out[pid], ref, f"sub-policy {pid} {sub}")


AA_BATCH = 128  # one batch size for all auto_augment calls at 32x32: one compile


@pytest.mark.parametrize("size", [32, 64])
def test_auto_augment_jit_vmap_shapes_range_determinism(aa_batch, size):
  n = AA_BATCH if size == 32 else 4
  x = to_float(_batch(n, size, size, seed=size))
  keys = jax.random.split(jax.random.key(size), n)
  out = aa_batch(keys, x)
  assert out.shape == (n, size, size, 3) and out.dtype == jnp.float32
  o = np.asarray(out)
  assert o.min() >= 0.0 and o.max() <= 1.0
  to_levels(o)  # on the uint8 grid
  np.testing.assert_array_equal(np.asarray(aa_batch(keys, x)), o)  # same keys -> same output
  other = np.asarray(aa_batch(jax.random.split(jax.random.key(size + 1), n), x))
  assert np.any(np.any(other != o, axis=(1, 2, 3)))  # different keys -> different outputs


def test_auto_augment_statistics(aa_batch):
  """Ops fire with their probabilities: some images change, some are left alone."""
  n = AA_BATCH
  x = _batch(n, 32, 32, seed=5)
  out = to_levels(aa_batch(jax.random.split(jax.random.key(0), n), to_float(x)))
  unchanged = np.all(out == x, axis=(1, 2, 3))
  # P(unchanged) = mean over sub-policies of prod (1 - p) over ops that change these images
  # (Color at bin 0 is factor 1.0, an exact identity).
  expected = np.mean(
      [
          np.prod([1.0 - p * (not (name == "Color" and b == 0)) for name, p, b in sub])
          for sub in aa.IMAGENET_POLICY
      ]
  )
  frac = unchanged.mean()
  assert 0.05 < frac < 0.6, frac
  assert abs(frac - expected) < 0.1, (frac, expected)
  # images are not all changed the same way
  changed = out[~unchanged]
  assert len({arr.tobytes() for arr in changed}) == len(changed)


def test_bad_input_shape_raises():
  with pytest.raises(ValueError):
    aa.auto_augment(jax.random.key(0), jnp.zeros((8, 8)))


# --------------------------------------------------------------------------------------
# AugMix
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def augmix_batch():
  return jax.jit(jax.vmap(aa.augmix))


@pytest.mark.parametrize("size", [32, 64])
def test_augmix_jit_vmap_shapes_range_determinism(augmix_batch, size):
  n = 6
  x = to_float(_batch(n, size, size, seed=100 + size))
  keys = jax.random.split(jax.random.key(3), n)
  out = augmix_batch(keys, x)
  assert out.shape == (n, size, size, 3) and out.dtype == jnp.float32
  o = np.asarray(out)
  assert o.min() >= 0.0 and o.max() <= 1.0  # convex combination of [0, 1] images
  to_levels(o)
  np.testing.assert_array_equal(np.asarray(augmix_batch(keys, x)), o)
  other = np.asarray(augmix_batch(jax.random.split(jax.random.key(4), n), x))
  assert np.all(np.any(other != o, axis=(1, 2, 3)))
  assert np.all(np.any(o != np.asarray(x), axis=(1, 2, 3)))  # mixing moves every image


def test_augmix_identity_weights_and_convexity():
  """orig weight 1, chain weights 0 -> the input; a mix stays within its inputs' range."""
  n = 4
  x = _batch(n, 32, 32, seed=9)
  keys = jax.random.split(jax.random.key(1), n)
  f = jax.jit(jax.vmap(aa.augmix_with_weights))
  ident = f(keys, to_float(x), jnp.ones(n), jnp.zeros((n, 3)))
  np.testing.assert_array_equal(to_levels(ident), x)
  # off-grid input is quantised first
  np.testing.assert_array_equal(
      to_levels(f(keys, to_float(x) + 0.3 / 255.0, jnp.ones(n), jnp.zeros((n, 3)))), x
  )
  # all weight on the original + an all-zero chain weight: still exact; half weight: <= x
  half = to_levels(f(keys, to_float(x), jnp.full(n, 0.5, jnp.float32), jnp.zeros((n, 3))))
  np.testing.assert_array_equal(half, x // 2)
  mixed = np.asarray(
      f(keys, to_float(x), jnp.full(n, 0.25, jnp.float32), jnp.full((n, 3), 0.25, jnp.float32))
  )
  assert mixed.min() >= 0.0 and mixed.max() <= 1.0


def test_augmix_weights_distribution():
  keys = jax.random.split(jax.random.key(42), 4000)
  m0, w = jax.jit(jax.vmap(aa.sample_augmix_weights))(keys)
  m0, w = np.asarray(m0), np.asarray(w)
  assert w.shape == (4000, 3)
  assert np.all(m0 >= 0) and np.all(w >= 0)
  np.testing.assert_allclose(m0 + w.sum(1), 1.0, atol=1e-5)
  assert abs(m0.mean() - 0.5) < 0.02  # Beta(1, 1)
  np.testing.assert_allclose(w.mean(0), 1.0 / 6.0, atol=0.01)
  # Dirichlet(1, 1, 1) * U: each share of the augmented part is Beta(1, 2), mean 1/3
  share = w / w.sum(1, keepdims=True)
  np.testing.assert_allclose(share.mean(0), 1.0 / 3.0, atol=0.015)


def test_augmix_rejects_bad_severity():
  with pytest.raises(ValueError):
    aa.augmix(jax.random.key(0), jnp.zeros((8, 8, 3)), severity=0)
