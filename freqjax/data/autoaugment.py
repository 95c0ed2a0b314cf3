"""On-accelerator AutoAugment (ImageNet policy) and AugMix, matching torchvision on PIL images.

The augmentation studies of the paper ran ``torchvision.transforms.AutoAugment`` and
``torchvision.transforms.AugMix`` on PIL images on the host. This module re-implements both
as pure JAX functions of ONE image so that they can run on the accelerator under
``jax.jit(jax.vmap(fn))`` (one PRNG key per image, any static ``H, W``), with no host
callbacks.

Conventions
-----------
* ``image``: float32 ``(H, W, 3)``, pixel values in ``[0, 1]`` (before mean/std
  normalisation); ``key``: a JAX PRNG key. Outputs are float32 ``(H, W, 3)`` in ``[0, 1]``
  and lie on the ``k / 255`` grid.
* Internally an image is held as float32 "levels" ``0..255`` (integers). The input is
  quantised once (``round(255 * x)``, clipped) and every op returns integer levels, computed
  the way the reference computes its uint8 result (PIL often *truncates* rather than
  rounds; we follow the reference, not a blanket "round"). Chained ops therefore see
  exactly the uint8 images PIL/torchvision would see.

Public API
----------
``auto_augment(key, image)``, ``apply_subpolicy(image, policy_id, apply, positive)``,
``augmix(key, image, severity=3, mixture_width=3, chain_depth=-1, alpha=1.0, all_ops=True,
interpolation="bilinear")``, ``augmix_with_weights(key, image, orig_weight, chain_weights,
...)``, ``sample_augmix_weights(key, mixture_width=3, alpha=1.0)``, ``quantize(img)`` and the
single ops ``shear_x/shear_y(img, level)``, ``translate_x/translate_y(img, pixels)``,
``rotate(img, degrees)`` (``interpolation="nearest"`` = PIL, ``"bilinear"`` = torchvision
tensor), ``brightness/color/contrast/sharpness(img, factor, flavour="pil"|"tensor")``,
``posterize(img, bits)``, ``solarize(img, threshold)``, ``invert(img)``,
``autocontrast(img, flavour)``, ``equalize(img)``; constants ``IMAGENET_POLICY``,
``AUGMIX_OPS``.

What is reproduced
------------------
``auto_augment(key, image)`` = ``AutoAugment(AutoAugmentPolicy.IMAGENET)`` with its defaults
(``interpolation=NEAREST``, ``fill=None`` i.e. 0) applied to a PIL RGB image:

* the 25 ImageNet sub-policies (``IMAGENET_POLICY``), one drawn uniformly; each of its two
  ops applied iff ``u <= p`` with ``u ~ U[0, 1)``; signed ops negated with probability 1/2;
* torchvision's 10-bin magnitude tables, including ``torch.linspace``'s float32 values
  (emulated, see below) and the float64 arithmetic between table and PIL call:
  ShearX/Y ``0..0.3`` (applied as ``tan(atan(m))``, centre ``(0, 0)``), TranslateX/Y
  ``0..150/331 * W`` (resp. ``H``, truncated with ``int``), Rotate ``0..30`` degrees about
  the image centre, Brightness/Color/Contrast/Sharpness factor ``1 +- 0..0.9``, Posterize
  ``8..4`` bits, Solarize threshold ``255..0``, AutoContrast, Equalize, Invert;
* every op bit-exactly as Pillow computes it on uint8 RGB (verified against Pillow 13 on
  CPU, see ``tests/data/test_autoaugment.py``):

  - geometric ops: ``Image.transform(AFFINE, NEAREST)`` / ``Image.rotate`` use 16.16
    fixed-point coordinates (``affine_fixed`` in libImaging); we compute the same six
    fixed-point coefficients (in float64 on the host, at trace time, from the discrete
    magnitude table) and the same integer arithmetic on the device, so sampling
    positions are identical, including PIL's ``round(cos, 15)`` in ``rotate``;
  - AutoContrast: PIL builds its LUT with ``int(ix * scale + offset)`` in float64, which
    lands one level low at ~12k ``(lo, hi, ix)`` points where the exact value is an
    integer (e.g. the maximum maps to 254 when ``hi - lo == 25``). We use exact integer
    arithmetic plus a packed bit table of exactly those points (built once with numpy
    float64, 23 KiB);
  - Equalize: PIL's integer LUT (``step = (n - h[last]) // 255``), clipped to 255;
  - Brightness/Color/Contrast/Sharpness: ``Image.blend`` in C ``float`` with truncation;
    Color's grey image uses PIL's ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``;
    Contrast's grey level is ``int(mean(L) + 0.5)``; Sharpness's degenerate image is the
    3x3 SMOOTH filter in float32 with PIL's summation order, +0.5 rounding and
    untouched one-pixel border.

``augmix(key, image, ...)`` = ``AugMix(severity=3, mixture_width=3, chain_depth=-1,
alpha=1.0, all_ops=True)`` with its defaults (``interpolation=BILINEAR``, ``fill=None``).
torchvision's ``AugMix.forward`` converts a PIL input to a uint8 *tensor* and runs the
**tensor** kernels, so that is what is reproduced here:

* op set and order of its augmentation space (``AUGMIX_OPS``; the last four only with
  ``all_ops``), magnitude bin ``~ U{0..severity-1}`` of the 10-bin tables (TranslateX/Y
  ``0..W/3`` / ``0..H/3``, Posterize ``4..0`` bits, the rest as above), random sign;
* ``mixture_width`` chains of depth ``chain_depth`` or ``U{1, 2, 3}``;
* ``m ~ Dirichlet(alpha, alpha)`` (the Beta blend), chain weights
  ``Dirichlet(alpha * 1_k) * m[1]``, ``mix = m[0] * x + sum_i w_i * chain_i(x)`` in float32
  in the same order, then ``.to(uint8)`` (truncation), as torchvision does;
* tensor kernels: bilinear ``grid_sample`` (``align_corners=False``, zero padding, rounded
  half-to-even) on torchvision's normalised affine grid; Color with the
  ``0.2989/0.587/0.114`` grey image truncated to uint8; Contrast blending towards the
  float mean of that grey image; Sharpness towards the rounded 3x3 blur with the border
  kept; AutoContrast in float32 per channel; ``_blend`` as
  ``clamp(r * a + (1 - r) * b).to(uint8)``. Equalize/Posterize/Solarize/Invert are
  identical to PIL's.

Implementation notes
--------------------
* Every random op is one ``lax.switch`` over four kernel kinds (affine warp; pointwise
  posterize/solarize/invert/identity; LUT autocontrast/equalize; enhance blends), the op
  within a kind and its magnitude being parameters looked up from host-built tables
  (trace time, per static ``H, W``). Under ``vmap`` XLA evaluates all four kinds and
  selects, which is cheap for these ops.
* Each call draws all its randomness with ONE ``jax.random.bits`` call (PRNG calls
  dominate CPU compile time): integers as ``bits % n`` (bias < n / 2**32), uniforms with
  24-bit resolution. For ``alpha == 1`` the Dirichlets are normalised Exp(1) draws (the
  same distribution as ``jax.random.dirichlet``, without its gamma sampler).
* Products that the references round on their own before an addition are computed as
  sums of exact 12-bit partial products (``_mul_rn``), so XLA's FMA contraction (which
  XLA CPU does apply to ``a + b * c``) cannot change PIL's truncation results.

Known deviations
----------------
* Random streams: JAX PRNG instead of torch's global generator (same distributions).
* Magnitude tables: ``torch.linspace`` is emulated as ATen's scalar CPU kernel computes it
  in float32 (first half ``start + step * i``, second half ``end - step * (n - 1 - i)``),
  e.g. Color/Contrast bin 8 is 0.79999995, not 0.8. Not verified against a torch build
  here (none was available); a torch build that contracts those into FMAs could differ in
  the last bit of a bin, which moves a PIL result only at exact rounding ties.
* AugMix tensor kernels: torch's float32 accumulation order inside ``bmm`` (grid),
  ``grid_sample`` and ``conv2d`` (blur) is not specified; we use a fixed order, so a
  value that lands within float32 rounding of a .5 tie (rounding) or of an integer
  (truncation) can differ by one level. ``interpolation="nearest"`` in AugMix uses PIL's
  ``floor`` rule rather than ``grid_sample``'s ``nearbyint`` (they differ only on exact
  half-pixel ties). These kernels are tested against their definitions, not against
  torch (not installed).
* AugMix's final ``.to(uint8)`` truncates the float mix, as torchvision does, so outputs
  are biased down by up to one level relative to rounding (e.g. weights summing to
  1 - 1e-7 on an unchanged image lower some levels by one).
* The individual ops below accept traced magnitudes too (e.g. ``jax.jit(rotate)(img,
  deg)``). Then the affine coefficients are computed in float32 on the device instead of
  float64 on the host (and without PIL's 15-decimal rounding of cos/sin): rotations and
  shears can differ from PIL at a few isolated pixels (rounding of rotation sampling;
  < 2% of pixels in the tests, typically none). ``auto_augment``/``augmix`` and calls with
  Python-number magnitudes always use the exact host-computed tables.
* Limits of exactness: coordinates must stay within PIL's fixed-point range (|x| < 32768,
  i.e. any sane image size); Contrast's integer mean needs ``H * W < 4.2M`` pixels;
  ``H, W >= 3``. Exactness was verified on CPU; a GPU backend is expected to agree (all
  PIL paths are integer arithmetic or protected products) but was not available to test.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "IMAGENET_POLICY",
    "AUGMIX_OPS",
    "auto_augment",
    "apply_subpolicy",
    "augmix",
    "augmix_with_weights",
    "sample_augmix_weights",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
    "invert",
    "quantize",
]

# --------------------------------------------------------------------------------------
# Policy data (torchvision's published ImageNet AutoAugment policy and AugMix op space).
# Each sub-policy: two (op name, probability, magnitude bin or None).
# --------------------------------------------------------------------------------------
IMAGENET_POLICY: tuple = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

# Order of torchvision's AugMix augmentation space; the last four only with all_ops=True.
AUGMIX_OPS: tuple = (
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
)

_NUM_BINS = 10
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")
_F32 = jnp.float32

# --------------------------------------------------------------------------------------
# Quantisation helpers.
# --------------------------------------------------------------------------------------


def _to_levels(img) -> jax.Array:
  """[0, 1] float image -> float32 integer levels 0..255 (round half to even, clip)."""
  img = jnp.asarray(img, _F32)
  return jnp.clip(jnp.round(img * 255.0), 0.0, 255.0)


def _from_levels(v: jax.Array) -> jax.Array:
  return (v / 255.0).astype(_F32)


def quantize(img) -> jax.Array:
  """Snap a [0, 1] float image onto the uint8 grid ``k / 255`` (what every op returns)."""
  return _from_levels(_to_levels(img))


# --------------------------------------------------------------------------------------
# Kernels on levels. Signature of a branch kernel: (v, fp, ip) -> v with
# v float32 (H, W, 3) integer levels, fp float32[6] and ip int32[6] op parameters.
# --------------------------------------------------------------------------------------


def _channel_hist(vi: jax.Array) -> jax.Array:
  """Per-channel 256-bin histogram of int levels (H, W, 3) -> (3, 256) int32."""
  flat = vi.reshape(-1, 3) + jnp.arange(3, dtype=jnp.int32) * 256
  hist = jnp.zeros((768,), jnp.int32).at[flat.reshape(-1)].add(1)
  return hist.reshape(3, 256)


def _apply_lut(vi: jax.Array, lut: jax.Array) -> jax.Array:
  """out[h, w, c] = lut[c, vi[h, w, c]]."""
  return lut[jnp.arange(3)[None, None, :], vi].astype(_F32)


def _k_pointwise(v, fp, ip):
  """Posterize to ``ip[0]`` bits, then solarize at threshold ``fp[0]``.

  Posterize keeps the top ``bits`` bits (8 = identity); solarize inverts levels
  ``>= threshold`` (256 = identity, 0 = Invert). bits=8, threshold=256 is Identity."""
  vi = v.astype(jnp.int32)
  shift = 8 - ip[0].astype(jnp.int32)
  vi = jnp.bitwise_and(vi, jnp.left_shift(jnp.int32(-1), shift))
  p = vi.astype(_F32)
  return jnp.where(p >= fp[0], 255.0 - p, p)


def _lut_equalize(v):
  """``ImageOps.equalize`` LUT (torchvision's tensor equalize is the same)."""
  vi = v.astype(jnp.int32)
  n = vi.shape[0] * vi.shape[1]
  hist = _channel_hist(vi)
  top = jnp.max(vi, axis=(0, 1))
  count_top = jnp.take_along_axis(hist, top[:, None], axis=1)[:, 0]
  step = (n - count_top) // 255
  safe = jnp.maximum(step, 1)[:, None]
  below = jnp.cumsum(hist, axis=1) - hist  # number of pixels strictly below each level
  lut = jnp.minimum((below + safe // 2) // safe, 255)
  return jnp.where((step > 0)[:, None], lut, jnp.arange(256, dtype=jnp.int32)[None, :])


@functools.cache
def _autocontrast_low_bits():
  """Where PIL's float64 autocontrast LUT lands one level low, as a packed bit table.

  PIL computes ``int(ix * s + o)`` with ``s = 255.0 / (hi - lo)``, ``o = -lo * s``. The
  exact value ``255 k / d`` (``k = ix - lo``, ``d = hi - lo``) is at least ``1/d`` away
  from an integer unless it is one, so only the integer points ``k = j * d / gcd(d, 255)``
  (``j = 0..gcd``) can differ, and there float64 sometimes gives ``q - 1`` (e.g. the
  maximum maps to 254 when ``d == 25``). Bit ``base[d] + lo * (gcd + 1) + j`` is set
  where it does (~12k of 191k points).

  Returns int32 ``gcd[256]``, ``stride[256]``, ``base[256]`` and uint32 words."""
  gcd = np.ones(256, np.int64)
  stride = np.ones(256, np.int64)
  base = np.zeros(256, np.int64)
  chunks = []
  offset = 0
  for d in range(1, 256):
    g = math.gcd(d, 255)
    gcd[d], stride[d], base[d] = g, d // g, offset
    lo = np.arange(0, 256 - d, dtype=np.int64)[:, None]
    k = (np.arange(g + 1, dtype=np.int64) * (d // g))[None, :]
    scale = 255.0 / d
    approx = np.trunc((lo + k).astype(np.float64) * scale + (-lo) * scale)
    chunks.append((approx < (255 * k) // d).reshape(-1))
    offset += (256 - d) * (g + 1)
  flags = np.concatenate(chunks)
  flags = np.concatenate([flags, np.zeros((-flags.size) % 32, bool)]).reshape(-1, 32)
  words = (flags.astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(axis=1)
  return (
      gcd.astype(np.int32),
      stride.astype(np.int32),
      base.astype(np.int32),
      words.astype(np.uint32),
  )


def _lut_autocontrast_pil(v):
  """``ImageOps.autocontrast`` (cutoff 0) LUT, float64 quirks included."""
  vi = v.astype(jnp.int32)
  lo = jnp.min(vi, axis=(0, 1))
  hi = jnp.max(vi, axis=(0, 1))
  d = hi - lo
  ix = jnp.arange(256, dtype=jnp.int32)[None, :]
  exact = (255 * (ix - lo[:, None])) // jnp.maximum(d, 1)[:, None]
  gcd, stride, base, words = (jnp.asarray(t) for t in _autocontrast_low_bits())
  g, st = gcd[d][:, None], stride[d][:, None]
  k = ix - lo[:, None]
  valid = (d[:, None] > 0) & (k >= 0) & (k <= d[:, None]) & (k % st == 0)
  bit = base[d][:, None] + lo[:, None] * (g + 1) + k // st
  bit = jnp.where(valid, bit, 0)
  word = words[jnp.right_shift(bit, 5)]
  low = jnp.where(
      valid, jnp.bitwise_and(jnp.right_shift(word, (bit & 31).astype(jnp.uint32)), 1), 0
  )
  low = low.astype(jnp.int32)
  lut = jnp.clip(exact - low, 0, 255)
  return jnp.where((d > 0)[:, None], lut, jnp.broadcast_to(ix, (3, 256)))


def _lut_autocontrast_tensor(v):
  """torchvision tensor ``autocontrast``: float32 ``(x - min) * (255 / (max - min))``."""
  lo = jnp.min(v, axis=(0, 1))[:, None]
  hi = jnp.max(v, axis=(0, 1))[:, None]
  same = hi == lo
  scale = jnp.where(same, 1.0, 255.0 / jnp.where(same, 1.0, hi - lo)).astype(_F32)
  lo = jnp.where(same, 0.0, lo)
  ix = jnp.arange(256, dtype=_F32)[None, :]
  return jnp.floor(jnp.clip((ix - lo) * scale, 0.0, 255.0)).astype(jnp.int32)


def _k_lut_pil(v, fp, ip):
  """ip[1]: 0 = AutoContrast, 1 = Equalize (PIL)."""
  lut = jax.lax.switch(ip[1], [_lut_autocontrast_pil, _lut_equalize], v)
  return _apply_lut(v.astype(jnp.int32), lut)


def _k_lut_tensor(v, fp, ip):
  """ip[1]: 0 = AutoContrast, 1 = Equalize (torchvision tensor kernels)."""
  lut = jax.lax.switch(ip[1], [_lut_autocontrast_tensor, _lut_equalize], v)
  return _apply_lut(v.astype(jnp.int32), lut)


# -- PIL enhance ------------------------------------------------------------------------


def _split12(x):
  """Split float32 ``x`` into ``hi + lo`` with at most 12 significant bits each (exact)."""
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  hi = jax.lax.bitcast_convert_type(jnp.bitwise_and(bits, jnp.uint32(0xFFFFF000)), _F32)
  return hi, x - hi


def _mul_rn(a, b):
  """float32 ``a * b`` rounded on its own, immune to FMA contraction with a later add.

  XLA (CPU/GPU) may fuse ``c + a * b`` into one FMA, skipping the rounding of the
  product that the C/torch references perform. Here every partial product is exact
  (12 x 12 bits), so whether or not the compiler contracts them the result is the
  correctly rounded product whenever ``b`` has at most 12 significant bits (all integer
  levels); otherwise it is within 1 ulp of it. The result is an addition, which the
  compiler cannot contract with a following addition."""
  a_hi, a_lo = _split12(jnp.asarray(a, _F32))
  b_hi, b_lo = _split12(jnp.asarray(b, _F32))
  return a_hi * b_hi + ((a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo)


def _blend_pil(degenerate, v, alpha):
  """``Image.blend(degenerate, v, alpha)`` on uint8: C float, truncation, clip."""
  return jnp.clip(jnp.floor(degenerate + _mul_rn(alpha, v - degenerate)), 0.0, 255.0)


def _grey_pil(v):
  vi = v.astype(jnp.int32)
  lum = (vi[..., 0] * 19595 + vi[..., 1] * 38470 + vi[..., 2] * 7471 + 0x8000) >> 16
  return lum


def _row3(r, side, centre):
  """(r[x-1]*side + r[x]*centre) + r[x+1]*side over the interior columns."""
  return (_mul_rn(r[:, :-2], side) + _mul_rn(r[:, 1:-1], centre)) + _mul_rn(r[:, 2:], side)


def _smooth_pil(v):
  """PIL ``ImageFilter.SMOOTH`` (3x3, weights 1/13 and 5/13 at the centre)."""
  k1 = np.float32(1.0 / 13.0)
  k5 = np.float32(5.0 / 13.0)
  ss = np.float32(0.5) + _row3(v[2:], k1, k1)  # row below first, as libImaging does
  ss = ss + _row3(v[1:-1], k1, k5)
  ss = ss + _row3(v[:-2], k1, k1)
  return v.at[1:-1, 1:-1].set(jnp.floor(jnp.clip(ss, 0.0, 255.0)))


def _deg_zero(v):
  return jnp.zeros_like(v)


def _deg_grey_pil(v):
  return jnp.broadcast_to(_grey_pil(v).astype(_F32)[..., None], v.shape)


def _deg_mean_pil(v):
  n = v.shape[0] * v.shape[1]
  total = jnp.sum(_grey_pil(v))
  mean = ((2 * total + n) // (2 * n)).astype(_F32)  # int(mean + 0.5)
  return jnp.broadcast_to(mean, v.shape)


def _k_enhance_pil(v, fp, ip):
  """``ImageEnhance`` X ``.enhance(fp[0])``; ip[1]: 0 Brightness, 1 Color, 2 Contrast,
  3 Sharpness."""
  deg = jax.lax.switch(ip[1], [_deg_zero, _deg_grey_pil, _deg_mean_pil, _smooth_pil], v)
  return _blend_pil(deg, v, fp[0])


# -- torchvision tensor enhance --------------------------------------------------------


def _blend_tensor(v, other, r, s):
  """``_blend``: ``clamp(r * v + (1 - r) * other, 0, 255).to(uint8)``."""
  return jnp.floor(jnp.clip(_mul_rn(r, v) + _mul_rn(s, other), 0.0, 255.0))


def _grey_tensor(v):
  g = _mul_rn(np.float32(0.2989), v[..., 0]) + _mul_rn(np.float32(0.587), v[..., 1])
  g = g + _mul_rn(np.float32(0.114), v[..., 2])
  return jnp.floor(g)[..., None]


def _deg_grey_tensor(v):
  return jnp.broadcast_to(_grey_tensor(v), v.shape)


def _deg_mean_tensor(v):
  n = v.shape[0] * v.shape[1]
  total = jnp.sum(_grey_tensor(v).astype(jnp.int32))
  return jnp.broadcast_to(total.astype(_F32) / np.float32(n), v.shape)


def _deg_blur_tensor(v):
  k1 = np.float32(1.0) / np.float32(13.0)
  k5 = np.float32(5.0) / np.float32(13.0)
  conv = (_row3(v[:-2], k1, k1) + _row3(v[1:-1], k1, k5)) + _row3(v[2:], k1, k1)
  return v.at[1:-1, 1:-1].set(jnp.clip(jnp.round(conv), 0.0, 255.0))


def _k_enhance_tensor(v, fp, ip):
  """``F.adjust_{brightness,saturation,contrast,sharpness}`` on uint8 tensors:
  ``_blend(v, other, r)`` with r = fp[0], 1 - r = fp[1]; ip[1] selects ``other``."""
  other = jax.lax.switch(
      ip[1], [_deg_zero, _deg_grey_tensor, _deg_mean_tensor, _deg_blur_tensor], v
  )
  return _blend_tensor(v, other, fp[0], fp[1])


# -- geometry ----------------------------------------------------------------------------


def _k_affine_nearest(v, fp, ip):
  """PIL ``affine_fixed``: 16.16 fixed-point inverse map, nearest, fill 0.

  ``ip = (a0, a1, a2, a3, a4, a5)``: input x = (a2 + y*a1 + x*a0) >> 16, input y =
  (a5 + y*a4 + x*a3) >> 16 for output pixel (x, y)."""
  h, w = v.shape[0], v.shape[1]
  ys = jnp.arange(h, dtype=jnp.int32)[:, None]
  xs = jnp.arange(w, dtype=jnp.int32)[None, :]
  ip = ip.astype(jnp.int32)
  xin = jnp.right_shift(ip[2] + ys * ip[1] + xs * ip[0], 16)
  yin = jnp.right_shift(ip[5] + ys * ip[4] + xs * ip[3], 16)
  inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
  out = v[jnp.clip(yin, 0, h - 1), jnp.clip(xin, 0, w - 1)]
  return jnp.where(inside[..., None], out, 0.0)


def _k_affine_bilinear(v, fp, ip):
  """torchvision tensor affine: normalised grid + ``grid_sample(bilinear, zeros,
  align_corners=False)`` then round half to even.

  ``fp`` is the rescaled theta: gx = xc*fp0 + yc*fp1 + fp2, gy = xc*fp3 + yc*fp4 + fp5
  with (xc, yc) pixel centres relative to the image centre."""
  h, w = v.shape[0], v.shape[1]
  xc = (jnp.arange(w, dtype=_F32) - np.float32(w * 0.5 - 0.5))[None, :]
  yc = (jnp.arange(h, dtype=_F32) - np.float32(h * 0.5 - 0.5))[:, None]
  gx = (xc * fp[0] + yc * fp[1]) + fp[2]
  gy = (xc * fp[3] + yc * fp[4]) + fp[5]
  ix = ((gx + 1.0) * np.float32(w) - 1.0) / 2.0
  iy = ((gy + 1.0) * np.float32(h) - 1.0) / 2.0
  x0 = jnp.floor(ix)
  y0 = jnp.floor(iy)
  x1 = x0 + 1.0
  y1 = y0 + 1.0
  w_nw = (x1 - ix) * (y1 - iy)
  w_ne = (ix - x0) * (y1 - iy)
  w_sw = (x1 - ix) * (iy - y0)
  w_se = (ix - x0) * (iy - y0)

  def tap(yy, xx):
    yi = yy.astype(jnp.int32)
    xi = xx.astype(jnp.int32)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    val = v[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
    return jnp.where(ok[..., None], val, 0.0)

  out = (
      tap(y0, x0) * w_nw[..., None]
      + tap(y0, x1) * w_ne[..., None]
      + tap(y1, x0) * w_sw[..., None]
      + tap(y1, x1) * w_se[..., None]
  )
  return jnp.clip(jnp.round(out), 0.0, 255.0)


# Four kernel kinds; which variant of a kind runs is a parameter (ip[1]), so a random op
# is one lax.switch over four branches (under vmap every branch is evaluated).
_KERNELS: dict = {
    ("pointwise", "pil"): _k_pointwise,
    ("pointwise", "tensor"): _k_pointwise,
    ("lut", "pil"): _k_lut_pil,
    ("lut", "tensor"): _k_lut_tensor,
    ("enhance", "pil"): _k_enhance_pil,
    ("enhance", "tensor"): _k_enhance_tensor,
    ("affine", "nearest"): _k_affine_nearest,
    ("affine", "bilinear"): _k_affine_bilinear,
}
_JIT_KERNELS = {k: jax.jit(f) for k, f in _KERNELS.items()}

# op name -> (kind, variant stored in ip[1])
_KIND = {
    "ShearX": ("affine", 0),
    "ShearY": ("affine", 0),
    "TranslateX": ("affine", 0),
    "TranslateY": ("affine", 0),
    "Rotate": ("affine", 0),
    "Brightness": ("enhance", 0),
    "Color": ("enhance", 1),
    "Contrast": ("enhance", 2),
    "Sharpness": ("enhance", 3),
    "Posterize": ("pointwise", 0),
    "Solarize": ("pointwise", 0),
    "Invert": ("pointwise", 0),
    "Identity": ("pointwise", 0),
    "AutoContrast": ("lut", 0),
    "Equalize": ("lut", 1),
}
_IDENTITY_FP = np.array([256.0, 0, 0, 0, 0, 0], np.float32)
_IDENTITY_IP = np.array([8, 0, 0, 0, 0, 0], np.int32)


def _kernel_key(kind: str, flavour: str, interpolation: str):
  return (kind, interpolation) if kind == "affine" else (kind, flavour)


# --------------------------------------------------------------------------------------
# Parameters (host float64 for concrete magnitudes, device float32 for traced ones).
# --------------------------------------------------------------------------------------


class _HostMath:
  atan = staticmethod(math.atan)
  tan = staticmethod(math.tan)
  cos = staticmethod(math.cos)
  sin = staticmethod(math.sin)
  radians = staticmethod(math.radians)
  degrees = staticmethod(math.degrees)
  floor = staticmethod(math.floor)

  @staticmethod
  def trunc(x):
    return float(int(x))

  @staticmethod
  def mod(x, m):
    return x % m

  @staticmethod
  def round15(x):
    return round(x, 15)


class _DeviceMath:
  atan = staticmethod(jnp.arctan)
  tan = staticmethod(jnp.tan)
  cos = staticmethod(jnp.cos)
  sin = staticmethod(jnp.sin)
  radians = staticmethod(jnp.deg2rad)
  degrees = staticmethod(jnp.rad2deg)
  floor = staticmethod(jnp.floor)
  trunc = staticmethod(jnp.trunc)
  mod = staticmethod(jnp.mod)

  @staticmethod
  def round15(x):
    return x


def _concrete(x):
  """Python float for a concrete scalar, None for a tracer."""
  if isinstance(x, (int, float, np.integer, np.floating)):
    return float(x)
  try:
    return float(np.asarray(x))
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _pil_inverse_matrix(name, mag, h, w, xm):
  """Inverse map (output pixel-centre coords -> input coords) as PIL receives it."""
  if name in ("ShearX", "ShearY"):
    # torchvision: shear angle = degrees(atan(m)), centre (0, 0) -> factor tan(angle)
    t = xm.tan(xm.radians(xm.degrees(xm.atan(mag))))
    return (1.0, t, 0.0, 0.0, 1.0, 0.0) if name == "ShearX" else (1.0, 0.0, 0.0, t, 1.0, 0.0)
  if name == "TranslateX":
    return (1.0, 0.0, -xm.trunc(mag), 0.0, 1.0, 0.0)
  if name == "TranslateY":
    return (1.0, 0.0, 0.0, 0.0, 1.0, -xm.trunc(mag))
  if name == "Rotate":
    # Image.rotate: counter-clockwise about (w/2, h/2)
    theta = -xm.radians(xm.mod(mag, 360.0))
    c = xm.round15(xm.cos(theta))
    s = xm.round15(xm.sin(theta))
    cx, cy = w / 2.0, h / 2.0
    return (c, s, c * (-cx) + s * (-cy) + cx, -s, c, (-s) * (-cx) + c * (-cy) + cy)
  raise ValueError(name)


def _fixed_coeffs(m, xm):
  """libImaging ``affine_fixed``: 16.16 coefficients incl. the pixel-centre offset."""

  def fix(x):
    return xm.floor(x * 65536.0 + 0.5)

  a2 = m[2] + m[0] * 0.5 + m[1] * 0.5
  a5 = m[5] + m[3] * 0.5 + m[4] * 0.5
  return (fix(m[0]), fix(m[1]), fix(a2), fix(m[3]), fix(m[4]), fix(a5))


def _tensor_theta(name, mag, h, w, xm):
  """torchvision tensor-path inverse affine matrix in image-centred coordinates."""
  if name in ("ShearX", "ShearY"):
    t = xm.tan(xm.radians(xm.degrees(xm.atan(mag))))
    if name == "ShearX":  # centre=[0, 0] i.e. (-w/2, -h/2) in centred coords
      return (1.0, t, t * (h * 0.5), 0.0, 1.0, 0.0)
    return (1.0, 0.0, 0.0, t, 1.0, t * (w * 0.5))
  if name == "TranslateX":
    return (1.0, 0.0, -xm.trunc(mag), 0.0, 1.0, 0.0)
  if name == "TranslateY":
    return (1.0, 0.0, 0.0, 0.0, 1.0, -xm.trunc(mag))
  if name == "Rotate":
    a = xm.radians(mag)
    c, s = xm.cos(a), xm.sin(a)
    return (c, -s, 0.0, s, c, 0.0)
  raise ValueError(name)


def _geometric_params(name, mag, h, w, interpolation):
  conc = _concrete(mag)
  if interpolation == "nearest":
    if conc is not None:
      m = _pil_inverse_matrix(name, conc, h, w, _HostMath)
      ip = np.asarray(_fixed_coeffs(m, _HostMath), np.int64)
      if np.abs(ip).max() >= 2**31:
        raise ValueError("affine coefficients exceed PIL's fixed-point range")
      return np.zeros(6, np.float32), ip.astype(np.int32)
    mag = jnp.asarray(mag, _F32)
    m = _pil_inverse_matrix(name, mag, h, w, _DeviceMath)
    ip = jnp.stack([jnp.asarray(c, _F32) for c in _fixed_coeffs(m, _DeviceMath)])
    return jnp.zeros(6, _F32), ip.astype(jnp.int32)
  if interpolation == "bilinear":
    half = np.array([w * 0.5] * 3 + [h * 0.5] * 3, np.float32)
    if conc is not None:
      theta = np.asarray(_tensor_theta(name, conc, h, w, _HostMath), np.float64)
      return theta.astype(np.float32) / half, np.zeros(6, np.int32)
    mag = jnp.asarray(mag, _F32)
    theta = jnp.stack([jnp.asarray(c, _F32) for c in _tensor_theta(name, mag, h, w, _DeviceMath)])
    return theta / half, jnp.zeros(6, jnp.int32)
  raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")


def _enhance_params(factor, variant):
  """fp = (factor, 1 - factor) in float32 (from float64 when concrete), ip[1] = variant."""
  conc = _concrete(factor)
  ip = np.array([0, variant, 0, 0, 0, 0], np.int32)
  if conc is not None:
    return np.array([conc, 1.0 - conc, 0, 0, 0, 0], np.float32), ip
  f = jnp.asarray(factor, _F32)
  z = jnp.zeros((), _F32)
  return jnp.stack([f, 1.0 - f, z, z, z, z]), ip


def _pointwise_params(bits=8, threshold=256.0):
  fp = jnp.asarray(_IDENTITY_FP).at[0].set(jnp.asarray(threshold, _F32))
  ip = jnp.asarray(_IDENTITY_IP).at[0].set(jnp.asarray(bits, jnp.int32))
  return fp, ip


def _op_params(name, mag, h, w, interpolation):
  """Host-side parameters (numpy fp[6], ip[6]) of one op with a concrete magnitude."""
  kind, variant = _KIND[name]
  if kind == "affine":
    return _geometric_params(name, mag, h, w, interpolation)
  if kind == "enhance":
    return _enhance_params(1.0 + mag, variant)
  fp, ip = _IDENTITY_FP.copy(), _IDENTITY_IP.copy()
  ip[1] = variant
  if name == "Posterize":
    ip[0] = int(mag)
  elif name == "Solarize":
    fp[0] = mag
  elif name == "Invert":
    fp[0] = 0.0
  return fp, ip


# --------------------------------------------------------------------------------------
# Magnitude tables (torchvision's, with torch.linspace's float32 arithmetic).
# --------------------------------------------------------------------------------------


def _torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
  """float32 values of ``torch.linspace(start, end, steps)``.

  ATen's CPU kernel (scalar path, taken for tensors this small): ``step = (end - start) /
  (steps - 1)`` in float32; index ``i < steps // 2`` is ``start + step * i``, the rest
  ``end - step * (steps - 1 - i)``."""
  s, e = np.float32(start), np.float32(end)
  step = (e - s) / np.float32(steps - 1)
  half = steps // 2
  vals = [
      s + step * np.float32(i) if i < half else e - step * np.float32(steps - i - 1)
      for i in range(steps)
  ]
  return np.asarray(vals, np.float32)


def _posterize_bins(top: int) -> np.ndarray:
  i = np.arange(_NUM_BINS, dtype=np.float32)
  return top - np.round(i / np.float32((_NUM_BINS - 1) / 4)).astype(np.int64)


def _magnitudes(name: str, h: int, w: int, augmix: bool):
  """(magnitude array or None, signed) for one op of AutoAugment / AugMix."""
  if name in ("ShearX", "ShearY"):
    return _torch_linspace(0.0, 0.3, _NUM_BINS), True
  if name == "TranslateX":
    end = w / 3.0 if augmix else 150.0 / 331.0 * w
    return _torch_linspace(0.0, end, _NUM_BINS), True
  if name == "TranslateY":
    end = h / 3.0 if augmix else 150.0 / 331.0 * h
    return _torch_linspace(0.0, end, _NUM_BINS), True
  if name == "Rotate":
    return _torch_linspace(0.0, 30.0, _NUM_BINS), True
  if name in _ENHANCE:
    return _torch_linspace(0.0, 0.9, _NUM_BINS), True
  if name == "Posterize":
    return _posterize_bins(4 if augmix else 8), False
  if name == "Solarize":
    return _torch_linspace(255.0, 0.0, _NUM_BINS), False
  return None, False


def _signed_magnitude(name, mags, signed, bin_id, positive: bool) -> float:
  mag = 0.0 if (mags is None or bin_id is None) else float(mags[bin_id])
  if signed and not positive:
    mag = -mag
  return mag


# --------------------------------------------------------------------------------------
# AutoAugment.
# --------------------------------------------------------------------------------------


_KINDS = ("affine", "pointwise", "lut", "enhance")  # branch order of every lax.switch
_POINTWISE = _KINDS.index("pointwise")


@functools.cache
def _autoaugment_tables(h: int, w: int):
  """branch[25, 2], prob[25, 2], fp[25, 2, sign, 6], ip[25, 2, sign, 6] (sign 1 = +)."""
  n = len(IMAGENET_POLICY)
  branch = np.zeros((n, 2), np.int32)
  prob = np.zeros((n, 2), np.float32)
  fps = np.zeros((n, 2, 2, 6), np.float32)
  ips = np.zeros((n, 2, 2, 6), np.int32)
  for p, sub in enumerate(IMAGENET_POLICY):
    for slot, (name, pr, bin_id) in enumerate(sub):
      branch[p, slot] = _KINDS.index(_KIND[name][0])
      prob[p, slot] = pr
      mags, signed = _magnitudes(name, h, w, augmix=False)
      for sign in (0, 1):  # torchvision negates when its sign draw is 0
        mag = _signed_magnitude(name, mags, signed, bin_id, positive=bool(sign))
        fps[p, slot, sign], ips[p, slot, sign] = _op_params(name, mag, h, w, "nearest")
  return branch, prob, fps, ips


def _branches(flavour: str, interpolation: str) -> list[Callable]:
  return [_KERNELS[_kernel_key(k, flavour, interpolation)] for k in _KINDS]


def _run_ops(v, branch_ids, fps, ips, branches):
  """Apply a sequence of (branch, fp, ip) ops to levels v with a scan over one switch."""

  def step(carry, xs):
    b, fp, ip = xs
    return jax.lax.switch(b, branches, carry, fp, ip), None

  out, _ = jax.lax.scan(step, v, (branch_ids, fps, ips))
  return out


def _mask_identity(active, b, fp, ip):
  """Replace inactive ops by the pointwise identity."""
  b = jnp.where(active, b, _POINTWISE)
  fp = jnp.where(active[..., None], fp, jnp.asarray(_IDENTITY_FP))
  ip = jnp.where(active[..., None], ip, jnp.asarray(_IDENTITY_IP))
  return b, fp, ip


def _check_image(image) -> jax.Array:
  image = jnp.asarray(image, _F32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected one (H, W, 3) image, got shape {image.shape}")
  if image.shape[0] < 3 or image.shape[1] < 3:
    raise ValueError(f"images must be at least 3x3, got shape {image.shape}")
  return image


def apply_subpolicy(image: jax.Array, policy_id, apply, positive) -> jax.Array:
  """Apply ImageNet sub-policy ``policy_id`` deterministically.

  Args:
    image: float32 ``(H, W, 3)`` in ``[0, 1]``.
    policy_id: int in ``[0, 25)`` (index into ``IMAGENET_POLICY``).
    apply: two bools, whether each of the two ops is applied (the ``u <= p`` draw).
    positive: two bools, the sign of each op's magnitude (ignored for unsigned ops).
  All arguments may be traced.
  """
  image = _check_image(image)
  h, w = int(image.shape[0]), int(image.shape[1])
  branch, _, fps, ips = _autoaugment_tables(h, w)
  pid = jnp.asarray(policy_id, jnp.int32)
  slots = jnp.arange(2)
  sign = jnp.asarray(positive).astype(jnp.int32)
  b, fp, ip = _mask_identity(
      jnp.asarray(apply, bool),
      jnp.asarray(branch)[pid],
      jnp.asarray(fps)[pid, slots, sign],
      jnp.asarray(ips)[pid, slots, sign],
  )
  v = _run_ops(_to_levels(image), b, fp, ip, _branches("pil", "nearest"))
  return _from_levels(v)


def _uniform01(bits):
  """uint32 random bits -> float32 uniform on [0, 1) (24-bit resolution)."""
  return jnp.right_shift(bits, 8).astype(_F32) * np.float32(2.0**-24)


def _randint(bits, n: int):
  """uint32 random bits -> int32 uniform on {0..n-1} (modulo bias < n / 2**32)."""
  return jnp.remainder(bits, jnp.uint32(n)).astype(jnp.int32)


def auto_augment(key: jax.Array, image: jax.Array) -> jax.Array:
  """torchvision ``AutoAugment(AutoAugmentPolicy.IMAGENET)`` on ONE image.

  Draws a sub-policy uniformly, ``u ~ U[0, 1)^2`` (op i applied iff ``u[i] <= p_i``) and
  two random signs, then calls :func:`apply_subpolicy`. All draws come from one
  ``jax.random.bits`` call (each PRNG call is expensive to compile on CPU).

  Args:
    key: JAX PRNG key (one per image; vmap over a batch of keys).
    image: float32 ``(H, W, 3)`` in ``[0, 1]``.
  Returns:
    float32 ``(H, W, 3)`` in ``[0, 1]`` on the ``k / 255`` grid.
  """
  image = _check_image(image)
  _, prob, _, _ = _autoaugment_tables(int(image.shape[0]), int(image.shape[1]))
  bits = jax.random.bits(key, (5,), jnp.uint32)
  pid = _randint(bits[0], len(IMAGENET_POLICY))
  u = _uniform01(bits[1:3])
  positive = jnp.bitwise_and(bits[3:5], 1) == 1  # torchvision: sign draw 0 -> negate
  return apply_subpolicy(image, pid, u <= jnp.asarray(prob)[pid], positive)


# --------------------------------------------------------------------------------------
# AugMix.
# --------------------------------------------------------------------------------------


@functools.cache
def _augmix_tables(h: int, w: int, severity: int, all_ops: bool, interpolation: str):
  """branch[n_ops], fp[n_ops, severity, sign, 6], ip[...] (sign 1 = negated)."""
  names = AUGMIX_OPS if all_ops else AUGMIX_OPS[:9]
  branch = np.array([_KINDS.index(_KIND[n][0]) for n in names], np.int32)
  fps = np.zeros((len(names), severity, 2, 6), np.float32)
  ips = np.zeros((len(names), severity, 2, 6), np.int32)
  for i, name in enumerate(names):
    mags, signed = _magnitudes(name, h, w, augmix=True)
    for b in range(severity):
      for sign in (0, 1):  # torchvision negates when its sign draw is 1
        mag = _signed_magnitude(name, mags, signed, b, positive=not bool(sign))
        fps[i, b, sign], ips[i, b, sign] = _op_params(name, mag, h, w, interpolation)
  return branch, fps, ips


def _check_augmix_args(severity, chain_depth, interpolation):
  if not 1 <= int(severity) <= _NUM_BINS:
    raise ValueError(f"severity must be in [1, {_NUM_BINS}], got {severity}")
  if interpolation not in ("nearest", "bilinear"):
    raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
  return int(chain_depth) if int(chain_depth) > 0 else 3


def _weights_from_exponentials(bits, mixture_width: int):
  """Dirichlet(1, 1) and Dirichlet(1_k) from normalised Exp(1) draws (alpha == 1)."""
  u = (jnp.right_shift(bits, 8).astype(_F32) + 0.5) * np.float32(2.0**-24)  # (0, 1)
  e = -jnp.log(u)
  m = e[:2] / jnp.sum(e[:2])
  w = e[2:] / jnp.sum(e[2:])
  return m[0], w * m[1]


def _is_one(alpha) -> bool:
  return _concrete(alpha) == 1.0


def sample_augmix_weights(key: jax.Array, mixture_width: int = 3, alpha: float = 1.0):
  """torchvision's AugMix weights: ``m ~ Dir(alpha, alpha)``, ``w = Dir(alpha 1_k) * m[1]``.

  Returns ``(orig_weight, chain_weights)`` = ``(m[0], w)`` (scalar, ``(k,)``); they sum
  to 1. For ``alpha == 1`` (the default) the Dirichlets are drawn as normalised
  exponentials (same distribution, far cheaper to compile than gamma sampling)."""
  width = int(mixture_width)
  if _is_one(alpha):
    return _weights_from_exponentials(jax.random.bits(key, (2 + width,), jnp.uint32), width)
  k_beta, k_mix = jax.random.split(key)
  m = jax.random.dirichlet(k_beta, jnp.full((2,), alpha, _F32)).astype(_F32)
  w = jax.random.dirichlet(k_mix, jnp.full((width,), alpha, _F32)).astype(_F32)
  return m[0], w * m[1]


def _augmix_core(
    bits, image, orig_weight, chain_weights, severity, chain_depth, all_ops, interpolation
):
  """AugMix given ``3 * width * max_depth + width`` uint32 random bits."""
  max_depth = _check_augmix_args(severity, chain_depth, interpolation)
  image = _check_image(image)
  chain_weights = jnp.asarray(chain_weights, _F32)
  width = int(chain_weights.shape[0])
  h, w = int(image.shape[0]), int(image.shape[1])
  branch, fps, ips = _augmix_tables(h, w, int(severity), bool(all_ops), interpolation)
  steps = width * max_depth
  draws = bits[: 3 * steps].reshape(3, width, max_depth)
  op = _randint(draws[0], len(branch))
  bins = _randint(draws[1], int(severity))
  sign = jnp.bitwise_and(draws[2], 1).astype(jnp.int32)
  if chain_depth > 0:
    depth = jnp.full((width,), max_depth, jnp.int32)
  else:
    depth = 1 + _randint(bits[3 * steps : 3 * steps + width], 3)  # U{1, 2, 3}
  active = jnp.arange(max_depth)[None, :] < depth[:, None]
  b, fp, ip = _mask_identity(
      active,
      jnp.asarray(branch)[op],
      jnp.asarray(fps)[op, bins, sign],
      jnp.asarray(ips)[op, bins, sign],
  )
  # One flat scan over all (chain, step) pairs: a chain restarts from x at its first step
  # and is added to the mix, weighted, after its last step (torchvision's order).
  first = jnp.asarray(np.arange(steps) % max_depth == 0)
  last = jnp.asarray(np.arange(steps) % max_depth == max_depth - 1)
  weight = jnp.repeat(chain_weights, max_depth)
  branches = _branches("tensor", interpolation)
  x = _to_levels(image)

  def step(carry, xs):
    aug, mix = carry
    bi, fpi, ipi, wi, is_first, is_last = xs
    aug = jax.lax.switch(bi, branches, jnp.where(is_first, x, aug), fpi, ipi)
    mix = jnp.where(is_last, mix + wi * aug, mix)
    return (aug, mix), None

  xs = (b.reshape(steps), fp.reshape(steps, 6), ip.reshape(steps, 6), weight, first, last)
  init = (x, jnp.asarray(orig_weight, _F32) * x)
  (_, mix), _ = jax.lax.scan(step, init, xs)
  return _from_levels(jnp.clip(jnp.floor(mix), 0.0, 255.0))


def _n_chain_bits(width: int, chain_depth: int) -> int:
  max_depth = int(chain_depth) if int(chain_depth) > 0 else 3
  return 3 * width * max_depth + width


def augmix_with_weights(
    key: jax.Array,
    image: jax.Array,
    orig_weight,
    chain_weights,
    severity: int = 3,
    chain_depth: int = -1,
    all_ops: bool = True,
    interpolation: str = "bilinear",
) -> jax.Array:
  """AugMix with explicit mixing weights (the chains are still random from ``key``).

  ``out = trunc(orig_weight * x + sum_i chain_weights[i] * chain_i(x)) / 255`` with
  ``len(chain_weights)`` chains. ``orig_weight=1, chain_weights=0`` returns the
  (quantised) input."""
  width = int(jnp.shape(chain_weights)[0])
  bits = jax.random.bits(key, (_n_chain_bits(width, chain_depth),), jnp.uint32)
  return _augmix_core(
      bits, image, orig_weight, chain_weights, severity, chain_depth, all_ops, interpolation
  )


def augmix(
    key: jax.Array,
    image: jax.Array,
    severity: int = 3,
    mixture_width: int = 3,
    chain_depth: int = -1,
    alpha: float = 1.0,
    all_ops: bool = True,
    interpolation: str = "bilinear",
) -> jax.Array:
  """torchvision ``AugMix`` (defaults: severity 3, width 3, depth U{1,2,3}, alpha 1,
  all ops, bilinear) on ONE float32 ``(H, W, 3)`` image in ``[0, 1]``."""
  _check_augmix_args(severity, chain_depth, interpolation)
  width = int(mixture_width)
  n_chain = _n_chain_bits(width, chain_depth)
  if _is_one(alpha):  # one PRNG call for everything
    bits = jax.random.bits(key, (n_chain + 2 + width,), jnp.uint32)
    m0, w = _weights_from_exponentials(bits[n_chain:], width)
  else:
    k_weights, k_chains = jax.random.split(key)
    m0, w = sample_augmix_weights(k_weights, width, alpha)
    bits = jax.random.bits(k_chains, (n_chain,), jnp.uint32)
  return _augmix_core(bits[:n_chain], image, m0, w, severity, chain_depth, all_ops, interpolation)


# --------------------------------------------------------------------------------------
# Individual ops (float [0, 1] image in, quantised float image out).
# Magnitudes follow torchvision's functional API; flavour "pil" = PIL on uint8 images
# (what AutoAugment runs), "tensor" = torchvision's uint8 tensor kernels (what AugMix runs).
# Python-number magnitudes use exact host-side parameters; traced ones work under jit.
# --------------------------------------------------------------------------------------


def _run_kernel(img, key, fp, ip):
  v = _to_levels(img)
  return _from_levels(_JIT_KERNELS[key](v, jnp.asarray(fp, _F32), jnp.asarray(ip, jnp.int32)))


def _geometric(img, name, mag, interpolation):
  img = jnp.asarray(img, _F32)
  h, w = int(img.shape[0]), int(img.shape[1])
  fp, ip = _geometric_params(name, mag, h, w, interpolation)
  return _run_kernel(img, ("affine", interpolation), fp, ip)


def shear_x(img, level, interpolation: str = "nearest"):
  """AutoAugment ShearX: ``x_in = x + level * y`` (centre (0, 0)), fill 0."""
  return _geometric(img, "ShearX", level, interpolation)


def shear_y(img, level, interpolation: str = "nearest"):
  """AutoAugment ShearY: ``y_in = y + level * x`` (centre (0, 0)), fill 0."""
  return _geometric(img, "ShearY", level, interpolation)


def translate_x(img, pixels, interpolation: str = "nearest"):
  """Shift right by ``int(pixels)`` (torchvision ``translate=[int(m), 0]``), fill 0."""
  return _geometric(img, "TranslateX", pixels, interpolation)


def translate_y(img, pixels, interpolation: str = "nearest"):
  """Shift down by ``int(pixels)``, fill 0."""
  return _geometric(img, "TranslateY", pixels, interpolation)


def rotate(img, degrees, interpolation: str = "nearest"):
  """Rotate counter-clockwise by ``degrees`` about the image centre, fill 0."""
  return _geometric(img, "Rotate", degrees, interpolation)


def _enhance(img, variant, factor, flavour):
  if flavour not in ("pil", "tensor"):
    raise ValueError(f"flavour must be 'pil' or 'tensor', got {flavour!r}")
  fp, ip = _enhance_params(factor, variant)
  return _run_kernel(img, ("enhance", flavour), fp, ip)


def brightness(img, factor, flavour: str = "pil"):
  """``ImageEnhance.Brightness(img).enhance(factor)`` / ``F.adjust_brightness``."""
  return _enhance(img, 0, factor, flavour)


def color(img, factor, flavour: str = "pil"):
  """``ImageEnhance.Color`` / ``F.adjust_saturation``."""
  return _enhance(img, 1, factor, flavour)


def contrast(img, factor, flavour: str = "pil"):
  """``ImageEnhance.Contrast`` / ``F.adjust_contrast``."""
  return _enhance(img, 2, factor, flavour)


def sharpness(img, factor, flavour: str = "pil"):
  """``ImageEnhance.Sharpness`` / ``F.adjust_sharpness``."""
  return _enhance(img, 3, factor, flavour)


def posterize(img, bits):
  """``ImageOps.posterize(img, bits)``: keep the top ``bits`` bits of each level."""
  fp, ip = _pointwise_params(bits=bits)
  return _run_kernel(img, ("pointwise", "pil"), fp, ip)


def solarize(img, threshold):
  """``ImageOps.solarize(img, threshold)`` on the 0..255 scale (levels >= t inverted)."""
  fp, ip = _pointwise_params(threshold=threshold)
  return _run_kernel(img, ("pointwise", "pil"), fp, ip)


def invert(img):
  """``ImageOps.invert``."""
  fp, ip = _pointwise_params(threshold=0.0)
  return _run_kernel(img, ("pointwise", "pil"), fp, ip)


def autocontrast(img, flavour: str = "pil"):
  """``ImageOps.autocontrast(img)`` (cutoff 0) / ``F.autocontrast`` on tensors."""
  if flavour not in ("pil", "tensor"):
    raise ValueError(f"flavour must be 'pil' or 'tensor', got {flavour!r}")
  return _run_kernel(img, ("lut", flavour), _IDENTITY_FP, _IDENTITY_IP)


def equalize(img):
  """``ImageOps.equalize`` (identical to torchvision's tensor equalize)."""
  ip = _IDENTITY_IP.copy()
  ip[1] = 1
  return _run_kernel(img, ("lut", "pil"), _IDENTITY_FP, ip)
