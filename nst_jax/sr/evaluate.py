"""SR evaluation by the field's protocol over a folder of HR images.

Synopsis::

  from nst_jax.sr import evaluate
  rows = evaluate.evaluate_folder(evaluate.bicubic_upscaler(4), "Set5", scale=4,
                                  lpips_nets=("alexnet",))
  evaluate.summarize(rows)     # {"psnr": 28.42, "ssim": 0.8103, "lpips_alexnet": ...}

For every HR image: crop to a multiple of the scale, make the LR image (MATLAB bicubic,
antialiased) and round it to 8 bits (as the LR files of the benchmarks are), upscale, round the
result to 8 bits (as saved outputs are), then PSNR / SSIM on Y with ``scale`` pixels shaved
(``metrics``) and LPIPS on the whole RGB image.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import image_io
from nst_jax.core.errors import UserError
from nst_jax.sr import degrade, metrics

GRAY_MODES = ("L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F", "1")
Upscaler = Callable[[np.ndarray], np.ndarray]  # LR [h, w, 3] -> SR [s h, s w, 3], in [0, 1]


# Host-side helpers, compiled once per image shape rather than dispatched op by op (every
# test image has its own shape).
_upsample_bicubic = jax.jit(degrade.upsample_bicubic, static_argnums=1)
_quantize = jax.jit(degrade.quantize)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _make_lr(hr: jax.Array, scale: int, kind: str) -> jax.Array:
  return degrade.quantize(degrade.degrade(hr, scale, kind=kind))


def bicubic_upscaler(scale: int) -> Upscaler:
  """The bicubic baseline as an upscaler (MATLAB ``imresize(lr, scale)``)."""
  def upscale(lr):
    return np.asarray(_upsample_bicubic(jnp.asarray(lr)[None], scale)[0])
  return upscale


def make_lr(hr: np.ndarray, scale: int, kind: str = "bicubic") -> np.ndarray:
  """The 8-bit LR image of an HR image already cropped to a multiple of ``scale``."""
  return np.asarray(_make_lr(jnp.asarray(hr)[None], scale, kind)[0])


def protocol_output(upscale: Upscaler, hr: np.ndarray, scale: int) -> np.ndarray:
  """The SR image the protocol scores: ``hr`` (cropped to a multiple of ``scale``) to its 8-bit
  LR image, upscaled, rounded to 8 bits; [H, W, 3] in [0, 1]."""
  return np.asarray(_quantize(jnp.asarray(upscale(make_lr(hr, scale)))))


def evaluate_image(upscale: Upscaler, hr: np.ndarray, *, scale: int, gray: bool = False,
                   lpips_fns=None) -> dict:
  """Metrics of one HR image [H, W, 3] in [0, 1] (cropped here to a multiple of the scale).

  ``gray``: the HR file is grayscale, measured on its gray levels (``metrics.y_channel``).
  """
  hr = degrade.crop_to_multiple(hr, scale)
  sr = protocol_output(upscale, hr, scale)
  if sr.shape != hr.shape:
    raise UserError(f"the model returned {sr.shape[1]}x{sr.shape[0]} for a "
                    f"{hr.shape[1]}x{hr.shape[0]} target: is its scale x{scale}?")
  row = {"psnr": metrics.psnr_y(sr, hr, scale=scale, gray=gray),
         "ssim": metrics.ssim_y(sr, hr, scale=scale, gray=gray)}
  for name, fn in (lpips_fns or {}).items():
    row[f"lpips_{name}"] = float(fn(jnp.asarray(sr)[None], jnp.asarray(hr)[None])[0])
  return row


def evaluate_folder(upscale: Upscaler, folder: str | os.PathLike, *, scale: int,
                    lpips_nets: Sequence[str] = (), max_pixels: int | None = None) -> list[dict]:
  """``evaluate_image`` for every image in ``folder`` (sorted); each row has its ``name``."""
  degrade.check_scale(scale)
  files = image_io.list_images(folder) if os.path.isdir(folder) else []
  if not files:
    raise UserError(f"no images found in {folder}")
  lpips_fns = {}
  if lpips_nets:
    from nst_jax.sr import lpips  # pylint: disable=import-outside-toplevel
    lpips_fns = {net: lpips.load_lpips(net) for net in lpips_nets}
  rows = []
  for path in files:
    gray = image_io.open_image(path, max_pixels=max_pixels).mode in GRAY_MODES
    hr = image_io.load_image(path, max_pixels=max_pixels)
    rows.append({"name": path.stem, **evaluate_image(upscale, hr, scale=scale, gray=gray,
                                                     lpips_fns=lpips_fns)})
  return rows


def summarize(rows: Sequence[dict]) -> dict:
  """The mean of every metric over the rows."""
  keys = [k for k in rows[0] if k != "name"]
  return {k: float(np.mean([r[k] for r in rows])) for k in keys}
