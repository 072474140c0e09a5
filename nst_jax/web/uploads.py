"""Uploaded images: sniffed, bounded, oriented, stripped of metadata and re-encoded as PNG.

Synopsis::

  from nst_jax.web import uploads
  try:
    clean = uploads.clean_upload(data, max_bytes=20 << 20, max_pixels=25_000_000)
  except uploads.UploadError as e:
    return JSONResponse({"error": e.message}, status_code=e.status)
  image = uploads.decode_png(clean.png)              # float32 [H, W, 3] in [0, 1]

The type comes from the bytes (Pillow's own sniffing), never from a filename. The byte limit is
checked before Pillow sees the data and the pixel limit from the header before any pixel is
decoded, so a small file that claims a huge canvas (a decompression bomb) costs nothing. The
output is a fresh 8-bit RGB PNG: EXIF (GPS, camera, orientation), ICC, XMP and text chunks are
gone; the orientation is applied first and an embedded colour profile is converted to sRGB. An
upload that is already such a PNG (8-bit RGB, IHDR/IDAT/IEND chunks only, nothing appended) is
kept as it is once its pixel stream proved whole (it inflates to exactly the rows the header
promises), which spares a decode and a re-encoding (the costs:
docs/research/implementation_notes.md).

Decoding is budgeted by bytes: a ``DecodeBudget`` (one per web process) admits a decode only while
the estimated pixel bytes of all decodes in flight (width x height x bytes per pixel of every
copy the conversion holds at once) fit its budget and fewer than its count run; the others wait,
and after ``wait_s`` are refused with 503 and a Retry-After. The conversion stays in 8-bit
Pillow images (alpha composited by ``Image.paste``, 16-bit and float modes scaled in bands), so
no full-resolution float copy exists in the web process, and each decode ends by handing the
freed pages back to the system (``release_memory``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import math
import struct
import threading
import time
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from nst_jax.core import image_io

ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "BMP": "BMP",
                    "GIF": "GIF", "TIFF": "TIFF"}
# Leading bytes of the accepted formats: a file that starts like one of them but that Pillow cannot
# read is corrupt (400), anything else is a type we do not take (415).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00",
               b"MM\x00*")
_NATIVE_RGB_MODES = ("RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV")
_PNG_LEVEL = 1  # zlib level: files a little larger than level 6's, far faster (docs/research/implementation_notes.md)
_BARE_PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}


class UploadError(ValueError):
  """A refused upload: ``message`` is one line for the user, ``status`` the HTTP code.

  400: empty, corrupt, truncated or too small; 413: too many bytes or pixels; 415: not an image
  type we accept.
  """

  def __init__(self, message: str, status: int = 400, retry_after: int | None = None):
    self.message = " ".join(str(message).split())
    self.status = status
    self.retry_after = retry_after  # seconds, with 503
    super().__init__(self.message)


def _libc_malloc_trim():
  """glibc's ``malloc_trim``, or None elsewhere (musl, macOS: nothing to call)."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return libc.malloc_trim
  except (OSError, AttributeError):
    return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_memory() -> None:
  """Hands the heap's free pages back to the system (glibc ``malloc_trim(0)``).

  Pillow allocates a large image in fixed-size blocks; once glibc's mmap threshold has grown
  past that size (it does after the first such block is freed), the blocks come from the heaps
  of the threadpool's threads and stay mapped after ``free``, so the process kept the peak of
  its largest decodes. No library offers this call; ctypes is the standard way to reach it.
  """
  if _MALLOC_TRIM is not None:
    _MALLOC_TRIM(0)


def pixel_bytes(mode: str) -> int:
  """Bytes per pixel of a Pillow image in ``mode`` (Pillow keeps 3-band images in 4 bytes)."""
  if mode in ("1", "L", "P"):
    return 1
  if mode.startswith("I;16"):
    return 2
  return 4


def decode_cost(width: int, height: int, mode: str) -> int:
  """Bytes a decode of a ``mode`` image of this size may hold at once: the decoded source, one
  intermediate (orientation or colour profile applied) and the RGB result (4 bytes per pixel
  each, at most), and an 8-bit alpha mask."""
  return width * height * (pixel_bytes(mode) + 4 + 4 + 1)


class DecodeBudget:
  """Admits decodes while their estimated bytes fit ``max_bytes`` and at most ``max_decodes``
  run at once; the others wait up to ``wait_s`` seconds, then are refused (503, Retry-After).

  A decode larger than the whole budget is admitted alone (its cost is capped at the budget),
  so every upload under the pixel limit can be decoded. Thread-safe: the web app decodes in its
  threadpool.
  """

  def __init__(self, max_bytes: int, max_decodes: int, wait_s: float, clock=time.monotonic):
    if max_bytes <= 0 or max_decodes < 1 or wait_s < 0:
      raise ValueError("max_bytes must be > 0, max_decodes >= 1 and wait_s >= 0")
    self.max_bytes, self.max_decodes, self.wait_s, self.clock = (
        max_bytes, max_decodes, wait_s, clock)
    self.bytes = self.decodes = 0
    self.peak_bytes = 0  # the most bytes admitted at once (for tests and benchmarks)
    self._cond = threading.Condition()

  @contextlib.contextmanager
  def hold(self, nbytes: int):
    """Waits for room for ``nbytes``, holds it during the block, then frees it (and the
    process's free heap pages)."""
    nbytes = min(int(nbytes), self.max_bytes)
    deadline = self.clock() + self.wait_s
    with self._cond:
      while self.decodes >= self.max_decodes or self.bytes + nbytes > self.max_bytes:
        left = deadline - self.clock()
        if left <= 0:
          raise UploadError("the server is busy decoding other large images; please try again "
                            "in a few seconds", 503, retry_after=max(1, math.ceil(self.wait_s)))
        self._cond.wait(left)
      self.bytes += nbytes
      self.decodes += 1
      self.peak_bytes = max(self.peak_bytes, self.bytes)
    try:
      yield
    finally:
      release_memory()
      with self._cond:
        self.bytes -= nbytes
        self.decodes -= 1
        self._cond.notify_all()


@dataclass(frozen=True)
class CleanImage:
  """A cleaned upload: 8-bit RGB PNG bytes without metadata, its size and the sniffed format."""
  png: bytes
  width: int
  height: int
  source_format: str


def _looks_like_accepted(data: bytes) -> bool:
  return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _open(data: bytes, max_pixels: int, min_side: int) -> Image.Image:
  """Sniffs and checks the header; nothing is decoded yet."""
  try:
    img = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError:
    raise UploadError("image has too many pixels (decompression bomb guard)", 413) from None
  except UnidentifiedImageError:
    if _looks_like_accepted(data):
      raise UploadError("the image file is corrupt or truncated", 400) from None
    raise UploadError("not an accepted image type (use JPEG, PNG, WEBP, BMP, GIF or TIFF)",
                      415) from None
  except (OSError, SyntaxError, ValueError, EOFError, struct.error):
    raise UploadError("the image file is corrupt or truncated", 400) from None
  fmt = ACCEPTED_FORMATS.get(img.format or "")
  if fmt is None:
    raise UploadError(f"{img.format} images are not accepted "
                      "(use JPEG, PNG, WEBP, BMP, GIF or TIFF)", 415)
  w, h = img.size
  if w * h > max_pixels:
    raise UploadError(f"image is {w}x{h} = {w * h:,} pixels, above the limit of "
                      f"{max_pixels:,}", 413)
  if min(w, h) < min_side:
    raise UploadError(f"image is {w}x{h}; each side must be at least {min_side} pixels", 400)
  return img


def is_bare_png(data: bytes) -> bool:
  """Whether ``data`` is an 8-bit RGB PNG made of IHDR, IDAT and IEND chunks alone (no metadata,
  no colour profile), every CRC right and nothing after IEND: what ``clean_upload`` would write."""
  pos, kinds = 8, []
  while pos + 12 <= len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    end = pos + 12 + length
    if end > len(data) or kind not in _BARE_PNG_CHUNKS:
      return False
    if zlib.crc32(data[pos + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
      return False
    if kind == b"IHDR" and data[pos + 16:pos + 18] != b"\x08\x02":  # 8-bit truecolour only
      return False
    kinds.append(kind)
    pos = end
    if kind == b"IEND":
      break
  return pos == len(data) and kinds[:1] == [b"IHDR"] and kinds[-1:] == [b"IEND"]


def whole_png_pixels(data: bytes) -> bool:
  """Whether a bare PNG's (``is_bare_png``) pixel stream is whole: not interlaced, and its IDAT
  data inflate to exactly one filter byte (0-4) and 3 * width bytes per row of the header, the
  zlib stream ending there. A full decode would find nothing more wrong; this skips unfiltering
  the rows."""
  width, height, depth, colour, compression, filtering, interlace = struct.unpack(
      ">IIBBBBB", data[16:29])
  if (depth, colour, compression, filtering, interlace) != (8, 2, 0, 0, 0):
    return False
  stride = 1 + 3 * width
  size = stride * height
  inflate, pos, raw, total = zlib.decompressobj(), 8, [], 0
  try:
    while pos + 12 <= len(data):
      length, kind = struct.unpack(">I4s", data[pos:pos + 8])
      if kind == b"IDAT":  # never more than the header's rows + 1 byte in memory
        raw.append(inflate.decompress(data[pos + 8:pos + 8 + length], size + 1 - total))
        total += len(raw[-1])
        if total > size or inflate.unconsumed_tail:
          return False
      pos += 12 + length
  except zlib.error:
    return False
  rows = b"".join(raw)
  return (inflate.eof and not inflate.unused_data and len(rows) == size
          and int(np.frombuffer(rows, np.uint8)[::stride].max(initial=0)) <= 4)


def _to_srgb(img: Image.Image) -> Image.Image:
  """Converts pixels with an embedded ICC profile to sRGB; unusable profiles are ignored."""
  icc = img.info.get("icc_profile")
  if not icc or img.mode not in ("RGB", "CMYK", "L"):
    return img
  try:
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
  except (ImageCms.PyCMSError, OSError, ValueError):
    return img


def _to_rgb8(img: Image.Image) -> Image.Image:
  """Any mode -> 8-bit RGB; alpha is composited on white, 16-bit and float images rescaled
  (as ``image_io.to_rgb_array`` does, without its float copy of the whole image)."""
  if img.mode == "RGB":
    return img
  if img.mode in _NATIVE_RGB_MODES or (img.mode == "P" and "transparency" not in img.info):
    return img.convert("RGB")
  if img.mode.startswith("I") or img.mode == "F":
    return _gray_to_l(img).convert("RGB")
  rgba = img if img.mode == "RGBA" else img.convert("RGBA")
  out = Image.new("RGB", rgba.size, (255, 255, 255))
  out.paste(rgba, (0, 0), rgba.getchannel("A"))  # rgb * a + white * (1 - a), in 8 bits
  return out


def _gray_to_l(img: Image.Image, rows: int = 256) -> Image.Image:
  """A 16-bit or 32-bit (I, F) gray image -> 8-bit L: 16-bit data over 65535, others over 255
  unless their maximum is above it; floats only for a band of ``rows`` rows at a time."""
  if img.mode.startswith("I;16"):
    scale = 65535.0
  else:
    scale = 65535.0 if float(img.getextrema()[1] or 0) > 255 else 255.0
  w, h = img.size
  out = np.empty((h, w), np.uint8)
  for y in range(0, h, rows):
    band = np.asarray(img.crop((0, y, w, min(h, y + rows))), dtype=np.float32)
    out[y:y + rows] = np.round(np.clip(band / scale, 0.0, 1.0) * 255.0)
  return Image.fromarray(out, mode="L")


def clean_upload(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int = 16,
                 budget: DecodeBudget | None = None) -> CleanImage:
  """Validates an uploaded image and re-encodes it as a metadata-free 8-bit RGB PNG.

  Args:
    data: the uploaded bytes (the filename plays no part).
    max_bytes: refuse larger uploads (413) before decoding anything.
    max_pixels: refuse images whose header claims more pixels (413) before decoding.
    min_side: refuse images with a side shorter than this (400).
    budget: the process's decode budget (None: decode at once, unbounded).

  Returns:
    A ``CleanImage`` (EXIF orientation applied, sRGB, no EXIF/ICC/text metadata).

  Raises:
    UploadError: with ``status`` 400, 413, 415 or 503 (the budget stayed full) and a one-line
      ``message``.
  """
  if len(data) > max_bytes:
    raise UploadError(f"file is {len(data):,} bytes, above the limit of {max_bytes:,}", 413)
  if len(data) < 8:
    raise UploadError("the file is empty or too small to be an image", 400)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # DecompressionBombWarning, odd-EXIF warnings
    img = _open(data, max_pixels, min_side)
    fmt = ACCEPTED_FORMATS[img.format]
    hold = (budget.hold(decode_cost(img.width, img.height, img.mode)) if budget is not None
            else contextlib.nullcontext())
    try:
      with hold:
        if fmt == "PNG" and img.mode == "RGB" and is_bare_png(data) and whole_png_pixels(data):
          return CleanImage(png=bytes(data), width=img.width, height=img.height,
                            source_format=fmt)
        png, size = _decode_to_png(img)
    finally:
      img.close()
  return CleanImage(png=png, width=size[0], height=size[1], source_format=fmt)


def _decode_to_png(img: Image.Image) -> tuple[bytes, tuple[int, int]]:
  """Decodes an opened upload and re-encodes it (8-bit RGB PNG, no metadata); every
  intermediate image is freed by the time this returns."""
  try:
    img.seek(0)  # animated GIF/WEBP, multi-page TIFF: the first frame
    img.load()
    ImageOps.exif_transpose(img, in_place=True)  # no copy unless it must turn the image
    img = _to_srgb(img)
    img = _to_rgb8(img)
  except Image.DecompressionBombError:
    raise UploadError("image has too many pixels (decompression bomb guard)", 413) from None
  except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError):
    raise UploadError("the image file is corrupt or truncated", 400) from None
  img.info = {}  # no EXIF, ICC, text or transparency reaches the PNG writer
  try:
    return _save_png(img), img.size
  finally:
    img.close()


def _save_png(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="PNG", compress_level=_PNG_LEVEL)
  return buf.getvalue()


def decode_png(png: bytes, *, reduce_for: int | None = None) -> np.ndarray:
  """A PNG (from ``clean_upload`` or ``encode_png``) as float32 RGB [H, W, 3] in [0, 1].

  ``reduce_for``: the long side the caller will resize to; a much larger image is first
  shrunk in 8 bits by an integer factor (Pillow's box ``reduce``) to no less than twice that,
  so no float copy of a full-resolution upload is made.
  """
  with Image.open(io.BytesIO(png)) as img:
    img.load()
    factor = max(img.size) // (2 * reduce_for) if reduce_for else 1
    if factor >= 2:
      small = img.reduce(factor)
      img.close()
      img = small
    return image_io.to_rgb_array(img)


def encode_png(image: np.ndarray) -> bytes:
  """Encodes an RGB image [H, W, 3] (float in [0, 1], clipped, or uint8) as PNG bytes."""
  arr = np.asarray(image)
  if arr.ndim != 3 or arr.shape[-1] != 3:
    raise ValueError(f"expected an RGB image [H, W, 3], got shape {arr.shape}")
  pixels = arr if arr.dtype == np.uint8 else image_io.to_uint8(arr)
  return _save_png(Image.fromarray(pixels, mode="RGB"))


def thumbnail(png: bytes, size: int = 256) -> bytes:
  """A PNG thumbnail whose long side is at most ``size`` (never enlarged, aspect kept)."""
  with Image.open(io.BytesIO(png)) as img:
    img.load()
    small = _to_rgb8(img)
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    return _save_png(small)
