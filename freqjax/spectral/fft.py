"""Centred Fourier transforms of NHWC image batches and frequency filtering.

All functions take images (..., H, W, C), transform over H and W per channel, and use the
centred layout: `centred_spectrum(x)[..., H//2, W//2, :]` is DC. Filtering follows the
official code exactly: real(ifft2(ifftshift(fftshift(fft2(x)) * mask))), one mask (H, W) for
every channel.
"""

from __future__ import annotations

import jax.numpy as jnp

_HW = (-3, -2)


def centred_spectrum(x):
  """fftshift(fft2(x)) over H, W: complex (..., H, W, C)."""
  return jnp.fft.fftshift(jnp.fft.fft2(x, axes=_HW), axes=_HW)


def from_centred_spectrum(spectrum):
  """Inverse of `centred_spectrum`; complex result (the real part is the image)."""
  return jnp.fft.ifft2(jnp.fft.ifftshift(spectrum, axes=_HW), axes=_HW)


def filter_spectrum(spectrum, mask):
  """Real images from a centred spectrum (..., H, W, C) times mask (H, W)."""
  return jnp.real(from_centred_spectrum(spectrum * mask[..., :, :, None]))


def filter_images(x, mask):
  """Keeps the frequencies where mask (H, W, centred) is 1; returns real (..., H, W, C)."""
  return filter_spectrum(centred_spectrum(x), jnp.asarray(mask, x.dtype))


def amplitude(x):
  """|centred spectrum| per channel, (..., H, W, C)."""
  return jnp.abs(centred_spectrum(x))
