"""Host image I/O: robust loading to float RGB in [0, 1], atomic saving.

Synopsis::

  from nst_jax.core import image_io
  img = image_io.load_image("photo.jpg", size=512)     # float32 [H, W, 3] in [0, 1]
  image_io.save_image("out.png", img)                  # written atomically

Every failure on user input raises ``UserError`` with a one-line message.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_jax.core.errors import UserError

DEFAULT_MAX_PIXELS = 64_000_000  # ~ 8000 x 8000; above this we refuse (decompression bombs)
MAX_PIXELS_ENV = "NST_JAX_MAX_PIXELS"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def max_pixels_default() -> int:
  value = os.environ.get(MAX_PIXELS_ENV)
  return int(value) if value else DEFAULT_MAX_PIXELS


def to_rgb_array(img: Image.Image) -> np.ndarray:
  """Any Pillow mode -> float32 RGB [H, W, 3] in [0, 1]; alpha is composited over white."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
    gray = np.asarray(img, dtype=np.float32) / 65535.0
    return np.repeat(gray[..., None], 3, axis=-1)
  if img.mode in ("I", "F"):
    arr = np.asarray(img, dtype=np.float32)
    scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
    gray = np.clip(arr / scale, 0.0, 1.0)
    return np.repeat(gray[..., None], 3, axis=-1)
  if img.mode == "P" and "transparency" in img.info:
    img = img.convert("RGBA")
  if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + (1.0 - alpha)
  return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def resize_long_side(img: Image.Image, size: int | None) -> Image.Image:
  """Resizes so that the longer side is ``size`` pixels (Lanczos); None keeps the size."""
  if not size:
    return img
  w, h = img.size
  scale = size / max(w, h)
  new = (max(1, round(w * scale)), max(1, round(h * scale)))
  return img if new == img.size else img.resize(new, Image.Resampling.LANCZOS)


def open_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
  """Opens, validates and fully decodes an image (first frame, EXIF orientation applied)."""
  path = Path(path)
  limit = max_pixels or max_pixels_default()
  if not path.exists():
    raise UserError(f"image not found: {path}")
  if path.is_dir():
    raise UserError(f"expected an image file, got a directory: {path}")
  if path.stat().st_size == 0:
    raise UserError(f"image file is empty (0 bytes): {path}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      img = Image.open(path)
      w, h = img.size
      if w * h > limit:
        raise UserError(f"image too large: {path} is {w}x{h} = {w * h:,} pixels, above the "
                        f"limit of {limit:,} (raise it with {MAX_PIXELS_ENV})")
      img.seek(0)  # animated images: first frame
      img.load()
      img = ImageOps.exif_transpose(img)
  except UserError:
    raise
  except UnidentifiedImageError:
    raise UserError(f"not a readable image file: {path}") from None
  except Image.DecompressionBombError:
    raise UserError(f"image too large (decompression bomb guard): {path}") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f"corrupt or truncated image {path}: {e}") from None
  return img


def load_image(path: str | os.PathLike, *, size: int | None = None,
               max_pixels: int | None = None) -> np.ndarray:
  """Loads an image as float32 RGB [H, W, 3] in [0, 1].

  Args:
    path: image file; grayscale, RGBA, CMYK, palette and 16-bit images are converted.
    size: if given, resize so the long side is this many pixels.
    max_pixels: refuse images with more pixels than this (default 64 Mpx or $NST_JAX_MAX_PIXELS).

  Returns:
    float32 array [H, W, 3] in [0, 1].

  Raises:
    UserError: for missing, unreadable, corrupt, truncated, empty or oversized files.
  """
  img = open_image(path, max_pixels=max_pixels)
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    arr = to_rgb_array(img)
    if size:
      arr = resize_array(arr, _scaled_hw(arr.shape[:2], size))
    return arr
  img = resize_long_side(img if img.mode in ("RGB", "L") else _pil_rgb(img), size)
  return to_rgb_array(img)


def _pil_rgb(img: Image.Image) -> Image.Image:
  return Image.fromarray(np.round(to_rgb_array(img) * 255).astype(np.uint8))


def _scaled_hw(hw: tuple[int, int], size: int) -> tuple[int, int]:
  h, w = hw
  scale = size / max(h, w)
  return max(1, round(h * scale)), max(1, round(w * scale))


def resize_array(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Resizes a float [H, W, C] array in [0, 1] with Lanczos (per channel, float precision)."""
  h, w = hw
  chans = [np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F")
                      .resize((w, h), Image.Resampling.LANCZOS)) for c in range(arr.shape[-1])]
  return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def to_uint8(arr, rows: int = 256) -> np.ndarray:
  """[0, 1] floats -> uint8, ``rows`` rows at a time (float temporaries of a band, not of a
  whole large image)."""
  arr = np.asarray(arr, dtype=np.float32)
  if arr.ndim < 2:
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
  out = np.empty(arr.shape, np.uint8)
  for i in range(0, arr.shape[0], rows):
    out[i:i + rows] = np.round(np.clip(arr[i:i + rows], 0.0, 1.0) * 255.0)
  return out


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
  """Calls ``write_fn(tmp_path)`` then renames onto ``path``: no partial file is ever left."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
  os.close(fd)
  try:
    write_fn(tmp)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_text(path: str | os.PathLike, text: str) -> Path:
  """Writes ``text`` to ``path`` through ``atomic_write`` (reports, configs, JSON results)."""
  return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_image(path: str | os.PathLike, image) -> Path:
  """Saves a float [H, W, 3] image in [0, 1]; the format follows the extension."""
  path = Path(path)
  if path.suffix.lower() not in IMAGE_SUFFIXES:
    raise UserError(f"unsupported output image extension {path.suffix!r} for {path}; "
                    f"use one of {', '.join(IMAGE_SUFFIXES)}")
  pil = Image.fromarray(to_uint8(image))
  fmt = Image.registered_extensions()[path.suffix.lower()]
  return atomic_write(path, lambda tmp: pil.save(tmp, format=fmt))


def list_images(folder: str | os.PathLike) -> list[Path]:
  """All image files below ``folder`` (recursive), sorted."""
  return sorted(p for p in Path(folder).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
