"""Colour-space helpers: luminance-only transfer (Gatys et al. 2016, "Preserving Color in Neural
Artistic Style Transfer") in YIQ or YUV.

Synopsis::

  from nst_jax.core import colors
  out = colors.original_colors(stylized, content, space="yiq")   # content chroma, stylized luma
"""

from __future__ import annotations

import numpy as np

# Rows map RGB to (Y, chroma1, chroma2).
_RGB_TO = {
    "yiq": np.array([[0.299, 0.587, 0.114],
                     [0.595716, -0.274453, -0.321263],
                     [0.211456, -0.522591, 0.311135]], np.float32),
    "yuv": np.array([[0.299, 0.587, 0.114],
                     [-0.14713, -0.28886, 0.436],
                     [0.615, -0.51499, -0.10001]], np.float32),
}
SPACES = tuple(_RGB_TO)


def rgb_to(images, space: str = "yiq"):
  """[..., 3] RGB -> [..., 3] (Y, c1, c2)."""
  return images @ _RGB_TO[space].T


def to_rgb(images, space: str = "yiq"):
  """[..., 3] (Y, c1, c2) -> [..., 3] RGB."""
  return images @ np.linalg.inv(_RGB_TO[space]).T.astype(np.float32)


def original_colors(stylized, content, space: str = "yiq"):
  """Keeps the stylized luminance and the content's chroma; both [..., H, W, 3] in [0, 1].

  Returns:
    RGB in [0, 1], same shape as ``stylized``.
  """
  y = rgb_to(np.asarray(stylized, np.float32), space)[..., :1]
  chroma = rgb_to(np.asarray(content, np.float32), space)[..., 1:]
  return np.clip(to_rgb(np.concatenate([y, chroma], axis=-1), space), 0.0, 1.0)
