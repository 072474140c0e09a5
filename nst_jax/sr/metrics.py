"""Super-resolution metrics by the field's protocol: PSNR and SSIM on Y, border cropped (numpy).

Synopsis::

  from nst_jax.sr import metrics
  y = metrics.rgb_to_y(rgb)                       # [H, W] in [16, 235] (MATLAB rgb2ycbcr)
  metrics.psnr_y(sr, hr, scale=4)                 # dB, ``scale`` pixels cropped at each border
  metrics.ssim_y(sr, hr, scale=4)                 # Wang et al.'s SSIM on the same crop

Inputs are float RGB [H, W, 3] in [0, 1], usually already rounded to 8-bit levels (as the
outputs are saved as PNG before the published numbers were measured).

Two details of the published protocol (MATLAB code of SRCNN / VDSR / LapSRN and the tables that
quote 28.42 dB for bicubic x4 on Set5 and 26.00 dB on Set14) matter at the 0.01 dB level:

- ``rgb2ycbcr`` of a uint8 image returns uint8, so Y is rounded to integers (unrounded Y gives
  +0.01 dB and +0.001 SSIM on Set5 x4);
- a grayscale file (Set14's bridge) is evaluated on its gray levels in [0, 255], not on a
  BT.601 Y in [16, 235]; the 219/255 contrast of the latter adds 1.32 dB to that image and
  0.09 dB to the Set14 mean (26.09 instead of 26.00). What counts is the file's mode, not the
  content: Set14's man is gray but stored as RGB, and measured on Y.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

# ITU-R BT.601, as MATLAB's rgb2ycbcr: Y = 16 + 65.481 R + 128.553 G + 24.966 B, RGB in [0, 1].
Y_OFFSET = 16.0
Y_WEIGHTS = np.array([65.481, 128.553, 24.966], np.float64)
SSIM_K1, SSIM_K2, SSIM_RANGE = 0.01, 0.03, 255.0
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
  """Luma Y of RGB [..., 3] in [0, 1], in [16, 235] (float64, not rounded)."""
  return Y_OFFSET + np.asarray(rgb, np.float64) @ Y_WEIGHTS


def y_channel(rgb: np.ndarray, *, gray: bool = False, round_y: bool = True) -> np.ndarray:
  """The channel the protocol measures, in [0, 255]: BT.601 Y, or the gray level if ``gray``.

  Args:
    rgb: [H, W, 3] in [0, 1].
    gray: the ground truth is grayscale: measure the mean of the channels times 255, as the
      MATLAB protocol measures a 2-D image it cannot convert.
    round_y: round to integers, as MATLAB's ``rgb2ycbcr`` does for uint8 images.
  """
  y = np.asarray(rgb, np.float64).mean(-1) * 255.0 if gray else rgb_to_y(rgb)
  return np.round(y) if round_y else y


def shave(image: np.ndarray, border: int) -> np.ndarray:
  """Crops ``border`` pixels at each side of [H, W, ...]."""
  if border <= 0:
    return image
  return image[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
  """Peak signal-to-noise ratio in dB (inf for identical inputs)."""
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """MATLAB ``fspecial('gaussian', size, sigma)``: a normalised [size, size] window."""
  t = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma ** 2))
  return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = SSIM_RANGE) -> float:
  """Mean SSIM of two single-channel images, as Wang et al.'s reference ``ssim_index.m``.

  11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, 'valid' filtering (no padding), no
  automatic downsampling.

  References:
    Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 2004.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  win = gaussian_window()
  if min(a.shape) < win.shape[0]:
    raise ValueError(f"SSIM needs images of at least {win.shape[0]} pixels, got {a.shape}")
  filt = lambda x: signal.fftconvolve(x, win, mode="valid")  # the window is symmetric
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  mu_a, mu_b = filt(a), filt(b)
  var_a = filt(a * a) - mu_a ** 2
  var_b = filt(b * b) - mu_b ** 2
  cov = filt(a * b) - mu_a * mu_b
  num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
  den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
  return float(np.mean(num / den))


def protocol_pair(sr: np.ndarray, hr: np.ndarray, *, scale: int, gray: bool = False,
                  round_y: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """The two [H - 2s, W - 2s] channels the protocol compares (``y_channel``, then ``shave``)."""
  if sr.shape != hr.shape:
    raise ValueError(f"SR image {sr.shape} and HR image {hr.shape} differ in shape")
  return tuple(shave(y_channel(x, gray=gray, round_y=round_y), scale) for x in (sr, hr))


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, scale: int, gray: bool = False,
           round_y: bool = True) -> float:
  """PSNR (dB) on Y of RGB [H, W, 3] images in [0, 1], ``scale`` pixels cropped at each border.

  ``gray``: the ground-truth file is grayscale (see ``y_channel``).
  """
  return psnr(*protocol_pair(sr, hr, scale=scale, gray=gray, round_y=round_y))


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, scale: int, gray: bool = False,
           round_y: bool = True) -> float:
  """SSIM on Y of RGB [H, W, 3] images in [0, 1], ``scale`` pixels cropped at each border."""
  return ssim(*protocol_pair(sr, hr, scale=scale, gray=gray, round_y=round_y))
