"""Low-resolution images made in JAX: MATLAB ``imresize`` bicubic, and Johnson et al.'s blur.

Synopsis::

  from nst_jax.sr import degrade
  hr = degrade.crop_to_multiple(hr, 4)                    # [B, H, W, 3], H and W multiples of 4
  lr = degrade.degrade(hr, 4)                             # MATLAB imresize(hr, 1/4), antialiased
  lr = degrade.degrade(hr, 4, kind="johnson")             # Gaussian blur sigma 1, then bicubic
  up = degrade.resize_bicubic(lr, hr.shape[1:3])          # the bicubic baseline

``resize_bicubic`` reproduces MATLAB's ``imresize(..., 'bicubic')`` exactly (up to float
rounding): Keys' cubic kernel with a = -0.5, the kernel widened by the scale when shrinking
(antialiasing), pixel centres aligned, borders mirrored (symmetric padding). It is a pair of
small dense matrices, one per axis, applied with ``einsum``: exact, jit-able and differentiable.
``jax.image.resize(..., "cubic", antialias=True)`` uses the same kernel and alignment, but it
renormalises the kernel where it leaves the image instead of mirroring, so it differs near the
borders (measured in tests/test_sr_protocol.py); ``method="jax"`` selects it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core.errors import UserError

SCALES = (2, 3, 4, 8)
KINDS = ("bicubic", "bicubic_noaa", "johnson")
METHODS = ("matlab", "jax")
JOHNSON_SIGMA = 1.0


def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  """Keys' cubic convolution kernel (a = -0.5: MATLAB's and jax.image's bicubic).

  References:
    Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP 1981.
  """
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int, antialias: bool = True) -> np.ndarray:
  """MATLAB ``imresize``'s bicubic weights along one axis, as a dense [out, in] matrix.

  Mirrors ``contributions`` in MATLAB's imresize.m: output pixel ``x`` (1-based) samples the
  input at ``u = x / s + 0.5 (1 - 1 / s)``; when shrinking (s < 1) with antialiasing, the kernel
  is ``s * cubic(s t)`` over ``4 / s`` taps; rows are normalised to sum to 1; taps past a border
  are mirrored back into the image (``[1..n, n..1]`` repeated).
  """
  s = out_size / in_size
  kernel, width = cubic, 4.0
  if s < 1 and antialias:
    kernel, width = (lambda t: s * cubic(s * t)), width / s
  u = np.arange(1, out_size + 1) / s + 0.5 * (1 - 1 / s)  # [out]
  left = np.floor(u - width / 2)
  taps = int(math.ceil(width)) + 2
  idx = left[:, None] + np.arange(taps)[None, :]  # [out, taps], 1-based
  w = kernel(u[:, None] - idx)
  w = w / w.sum(axis=1, keepdims=True)
  mirror = np.concatenate([np.arange(in_size), np.arange(in_size)[::-1]])
  idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_size)]
  out = np.zeros((out_size, in_size), np.float64)
  np.add.at(out, (np.repeat(np.arange(out_size), taps), idx.ravel()), w.ravel())
  return out.astype(np.float32)


def resize_bicubic(images: jax.Array, hw: tuple[int, int], *, antialias: bool = True,
                   method: str = "matlab") -> jax.Array:
  """Bicubic resize of [B, H, W, C] (or [H, W, C]) images to ``hw``, MATLAB ``imresize`` style.

  Args:
    images: float images (no clipping is done: bicubic overshoots slightly).
    hw: the output (height, width).
    antialias: widen the kernel when shrinking (MATLAB's default). Without it the kernel
      samples (aliases) the image: the bicubic SR baseline drops by 0.4-1 dB at x4.
    method: "matlab" (mirrored borders, exact) or "jax" (``jax.image.resize``).

  Returns:
    The resized images, same rank and dtype.

  References:
    MATLAB ``imresize`` (Image Processing Toolbox); the SR protocol of Yang et al. 2010,
    Dong et al. 2014 (SRCNN) and later papers generates LR images and baselines with it.
  """
  if method not in METHODS:
    raise UserError(f"unknown resize method {method!r}; expected one of {METHODS}")
  h, w = images.shape[-3:-1]
  if method == "jax":
    shape = (*images.shape[:-3], *hw, images.shape[-1])
    return jax.image.resize(images, shape, "cubic", antialias=antialias)
  mh = jnp.asarray(resize_matrix(h, hw[0], antialias), images.dtype)  # [H', H]
  mw = jnp.asarray(resize_matrix(w, hw[1], antialias), images.dtype)  # [W', W]
  out = jnp.einsum("ph,...hwc->...pwc", mh, images, precision="highest")
  return jnp.einsum("qw,...pwc->...pqc", mw, out, precision="highest")


def check_scale(scale: int) -> int:
  if scale not in SCALES:
    raise UserError(f"unsupported scale {scale}; expected one of {SCALES}")
  return scale


def crop_to_multiple(images, scale: int):
  """Crops [..., H, W, C] at the bottom/right to multiples of ``scale`` (MATLAB ``modcrop``)."""
  h, w = images.shape[-3:-1]
  if h < scale or w < scale:
    raise UserError(f"image of {w}x{h} pixels is smaller than the scale x{scale}")
  return images[..., : h - h % scale, : w - w % scale, :]


def gaussian_kernel(sigma: float) -> np.ndarray:
  """A normalised 1-D Gaussian of radius ceil(3 sigma)."""
  radius = max(1, int(math.ceil(3 * sigma)))
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(images: jax.Array, sigma: float = JOHNSON_SIGMA) -> jax.Array:
  """Separable Gaussian blur of [B, H, W, C] images with mirrored (reflect) borders."""
  k = jnp.asarray(gaussian_kernel(sigma), images.dtype)
  r = (k.shape[0] - 1) // 2
  x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
  h, w = images.shape[1:3]
  x = sum(k[i] * x[:, i:i + h] for i in range(k.shape[0]))  # [B, H, W + 2r, C]
  return sum(k[i] * x[:, :, i:i + w] for i in range(k.shape[0]))


def degrade(hr: jax.Array, scale: int, *, kind: str = "bicubic",
            method: str = "matlab") -> jax.Array:
  """The LR image of an HR batch [B, H, W, C] (H, W multiples of ``scale``): [B, H/s, W/s, C].

  Args:
    hr: HR images in [0, 1].
    scale: 2, 3, 4 or 8.
    kind: "bicubic" (MATLAB ``imresize``, antialiased: the field's protocol), "bicubic_noaa"
      (the same kernel without antialiasing, a known trap), or "johnson" (Gaussian blur of
      sigma 1.0, then bicubic without further antialiasing: the blur is the low-pass filter).
    method: see ``resize_bicubic``.

  Returns:
    The LR images (not quantised; clip and round them to mimic 8-bit files).

  References:
    Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
    Super-Resolution", ECCV 2016, Sec. 4.2.
  """
  check_scale(scale)
  h, w = hr.shape[-3:-1]
  if h % scale or w % scale:
    raise UserError(f"HR size {w}x{h} is not a multiple of the scale {scale}: crop it first")
  lr_hw = (h // scale, w // scale)
  if kind == "bicubic":
    return resize_bicubic(hr, lr_hw, antialias=True, method=method)
  if kind == "bicubic_noaa":
    return resize_bicubic(hr, lr_hw, antialias=False, method=method)
  if kind == "johnson":
    return resize_bicubic(gaussian_blur(hr), lr_hw, antialias=False, method=method)
  raise UserError(f"unknown degradation {kind!r}; expected one of {KINDS}")


def quantize(images: jax.Array) -> jax.Array:
  """Clips to [0, 1] and rounds to 8-bit levels, as when an image is saved as PNG."""
  return jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0) / 255.0


def upsample_bicubic(lr: jax.Array, scale: int, *, method: str = "matlab") -> jax.Array:
  """The bicubic baseline: ``imresize(lr, scale, 'bicubic')`` of [B, h, w, C] -> [B, sh, sw, C]."""
  h, w = lr.shape[-3:-1]
  return resize_bicubic(lr, (h * scale, w * scale), method=method)
