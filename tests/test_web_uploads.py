"""Upload cleaning: content sniffing, byte/pixel limits, orientation, metadata, every mode."""

import inspect
import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command

from nst_jax.web import uploads
from nst_jax.web.uploads import UploadError, clean_upload

_REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
LIMITS = dict(max_bytes=2_000_000, max_pixels=1_000_000)


def _encode(img, fmt, **kw):
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kw)
  return buf.getvalue()


def _gradient(w=40, h=24):
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)],
                  -1).astype(np.uint8)


def _decoded(clean):
  with Image.open(io.BytesIO(clean.png)) as img:
    assert img.format == "PNG" and img.mode == "RGB"
    img.load()
    return np.asarray(img), dict(img.info)


def _status(data, **kw):
  with pytest.raises(UploadError) as e:
    clean_upload(data, **{**LIMITS, **kw})
  assert "\n" not in e.value.message and str(e.value) == e.value.message
  return e.value.status


@pytest.mark.parametrize("fmt,lossless", [("PNG", True), ("BMP", True), ("TIFF", True),
                                          ("WEBP", True), ("JPEG", False), ("GIF", False)])
def test_accepted_formats(fmt, lossless):
  pixels = _gradient()
  kw = {"lossless": True} if fmt == "WEBP" else {}
  clean = clean_upload(_encode(Image.fromarray(pixels), fmt, **kw), **LIMITS)
  assert (clean.source_format, clean.width, clean.height) == (fmt, 40, 24)
  out, _ = _decoded(clean)
  assert out.shape == (24, 40, 3) and out.dtype == np.uint8
  err = np.abs(out.astype(int) - pixels).max()
  assert err == 0 if lossless else err < 40  # GIF: 256-colour palette; JPEG: lossy


def test_the_filename_plays_no_part():
  assert "filename" not in inspect.signature(clean_upload).parameters
  html = b"<!doctype html><script>alert(1)</script>" + b" " * 100  # whatever it was called
  assert _status(html) == 415


@pytest.mark.parametrize("mode,expected", [
    ("L", [77, 77, 77]),
    ("LA", [255, 255, 255]),          # fully transparent pixel -> white
    ("RGBA", [255, 255, 255]),
    ("P", [255, 255, 255]),           # palette with a transparent index
    ("CMYK", [0, 255, 255]),          # pure cyan
    ("I;16", [128, 128, 128]),        # 16-bit grayscale 32896/65535
    ("I", [128, 128, 128]),
    ("F", [128, 128, 128]),
])
def test_every_mode_becomes_8bit_rgb(mode, expected):
  h, w = 20, 30
  if mode == "L":
    img, fmt = Image.new("L", (w, h), 77), "PNG"
  elif mode in ("LA", "RGBA"):
    img, fmt = Image.new(mode, (w, h), (10,) * len(mode)), "PNG"  # alpha 10/255
    img.putpixel((0, 0), (10,) * (len(mode) - 1) + (0,))
  elif mode == "P":
    img = Image.new("P", (w, h), 1)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.info["transparency"] = 0
    fmt = "PNG"
  elif mode == "CMYK":
    img, fmt = Image.new("CMYK", (w, h), (255, 0, 0, 0)), "TIFF"
  elif mode == "I;16":
    img, fmt = Image.fromarray(np.full((h, w), 32896, np.uint16)), "PNG"
  elif mode == "I":
    img, fmt = Image.fromarray(np.full((h, w), 32896, np.int32)), "TIFF"
  else:
    img, fmt = Image.fromarray(np.full((h, w), 128.0, np.float32)), "TIFF"
  assert img.mode == mode
  data = _encode(img, fmt, **({"transparency": 0} if mode == "P" else {}))
  out, _ = _decoded(clean_upload(data, **LIMITS))
  assert out.shape == (h, w, 3)
  np.testing.assert_allclose(out[0, 0], expected, atol=1)
  if mode in ("LA", "RGBA"):  # alpha 10/255 over white: 10*a + 255*(1-a)
    np.testing.assert_allclose(out[5, 5], 10 * 10 / 255 + 255 * (1 - 10 / 255), atol=1)
  if mode == "P":
    np.testing.assert_array_equal(out[5, 5], [200, 0, 0])


def test_exif_orientation_is_applied_and_exif_gps_icc_text_are_stripped():
  pixels = np.zeros((20, 40, 3), np.uint8)  # landscape, red left half, blue right half
  pixels[:, :20] = [255, 0, 0]
  pixels[:, 20:] = [0, 0, 255]
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
  exif[0x010F] = "SpyCam"
  exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPS latitude
  srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
  data = _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), icc_profile=srgb,
                 quality=95)
  with Image.open(io.BytesIO(data)) as src:
    assert src.getexif().get(0x0112) == 6 and "icc_profile" in src.info
  clean = clean_upload(data, **LIMITS)
  assert (clean.width, clean.height, clean.source_format) == (20, 40, "JPEG")
  out, info = _decoded(clean)
  # Rotated clockwise: the left (red) half is now on top, the blue half at the bottom.
  np.testing.assert_allclose(out[5, 10], [255, 0, 0], atol=30)
  np.testing.assert_allclose(out[35, 10], [0, 0, 255], atol=30)
  assert not {"exif", "icc_profile", "xmp"} & set(info)
  for marker in (b"eXIf", b"iCCP", b"tEXt", b"zTXt", b"iTXt", b"SpyCam", b"Exif"):
    assert marker not in clean.png


def test_png_text_chunks_are_stripped():
  meta = PngImagePlugin.PngInfo()
  meta.add_text("Author", "secret-name")
  meta.add_itxt("Comment", "more-secret", zip=True)
  clean = clean_upload(_encode(Image.fromarray(_gradient()), "PNG", pnginfo=meta), **LIMITS)
  assert b"secret" not in clean.png and b"tEXt" not in clean.png and b"iTXt" not in clean.png


def test_animated_gif_gives_the_first_frame():
  frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
  data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
  out, _ = _decoded(clean_upload(data, **LIMITS))
  np.testing.assert_array_equal(out[10, 10], [255, 0, 0])


def _bare_png(w, h, idat: bytes, interlace: int = 0, splits: int = 1):
  """An 8-bit RGB PNG of IHDR, IDAT (``idat``, the zlib stream, cut into ``splits`` chunks) and
  IEND alone, every CRC right, whatever the stream holds."""
  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, interlace)
  cut = -(-len(idat) // splits)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
          + b"".join(chunk(b"IDAT", idat[i:i + cut]) for i in range(0, len(idat), cut))
          + chunk(b"IEND", b""))


def _png_claiming(w, h):
  """A ~70-byte PNG whose header claims w x h pixels (a decompression bomb)."""
  return _bare_png(w, h, zlib.compress(b"\x00" * 4))


def test_a_bare_png_is_kept_only_if_its_pixel_stream_is_whole():
  w, h = 40, 30
  pixels = _gradient(w, h)
  rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))  # filter 0: raw rows
  whole = _bare_png(w, h, zlib.compress(rows), splits=3)
  assert uploads.is_bare_png(whole) and uploads.whole_png_pixels(whole)
  assert clean_upload(whole, **LIMITS).png == whole
  # Right CRCs, wrong pixel streams: the full decode decides, and refuses them.
  bad_filter = rows[:5 * (1 + 3 * w)] + b"\x07" + rows[5 * (1 + 3 * w) + 1:]  # row 5: type 7
  for stream in (zlib.compress(rows)[:-40], zlib.compress(rows[:-1]), zlib.compress(bad_filter),
                 b"not zlib at all"):
    data = _bare_png(w, h, stream)
    assert uploads.is_bare_png(data) and not uploads.whole_png_pixels(data)
    assert _status(data) == 400
  # A row too many, bytes after the zlib stream: Pillow reads the pixels; they are re-encoded.
  for stream in (zlib.compress(rows + rows[:1 + 3 * w]), zlib.compress(rows) + b"junk"):
    data = _bare_png(w, h, stream)
    assert not uploads.whole_png_pixels(data)
    clean = clean_upload(data, **LIMITS)
    assert clean.png != data and uploads.whole_png_pixels(clean.png)
    np.testing.assert_array_equal(_decoded(clean)[0], pixels)
  # An interlaced (Adam7) bare PNG is valid but not checked here: decoded and re-encoded.
  adam7 = _bare_png(1, 1, zlib.compress(b"\x00\x10\x20\x30"), interlace=1)  # 1 px: pass 1
  assert uploads.is_bare_png(adam7) and not uploads.whole_png_pixels(adam7)
  clean = clean_upload(adam7, **LIMITS, min_side=1)
  assert clean.png != adam7 and uploads.whole_png_pixels(clean.png)
  np.testing.assert_array_equal(_decoded(clean)[0], [[[16, 32, 48]]])


@pytest.mark.parametrize("side", [50_000, 2_000])  # past Pillow's own guard; past only ours
def test_decompression_bomb_is_refused_fast_without_allocating(side):
  data = _png_claiming(side, side)
  assert len(data) < 100
  tracemalloc.start()
  start = time.perf_counter()
  try:
    assert _status(data) == 413
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert elapsed < 0.5 and peak < 1_000_000


def test_limits_on_bytes_pixels_and_sides():
  data = _encode(Image.fromarray(_gradient(200, 100)), "PNG")
  assert _status(data, max_bytes=len(data) - 1) == 413
  assert clean_upload(data, max_bytes=len(data), max_pixels=20_000).width == 200
  assert _status(data, max_pixels=19_999) == 413
  assert _status(data, min_side=101) == 400
  assert clean_upload(data, **LIMITS, min_side=100).height == 100
  assert _status(b"") == 400 and _status(b"\x89PNG") == 400


def test_corrupt_truncated_and_foreign_files():
  png = _encode(Image.fromarray(_gradient(64, 64)), "PNG")
  jpeg = _encode(Image.fromarray(_gradient(64, 64)), "JPEG")
  assert _status(png[: len(png) // 2]) == 400            # truncated PNG
  assert _status(jpeg[: len(jpeg) // 2]) == 400          # truncated JPEG
  assert _status(png[:16] + b"\x00" * 200) == 400        # valid signature, garbage after
  assert _status(b"\xff\xd8\xff" + b"\x00" * 200) == 400  # JPEG marker, nothing valid
  assert _status(b"hello world, not an image at all") == 415
  assert _status(b"%PDF-1.4\n" + b"x" * 100) == 415
  ico = _encode(Image.fromarray(_gradient(32, 32)), "ICO")  # Pillow reads it; we do not accept it
  assert _status(ico) == 415
  assert _status(_encode(Image.fromarray(_gradient(32, 32)), "PPM")) == 415


def test_upload_error_is_a_value_error():
  e = UploadError("too\nbig", 413)
  assert isinstance(e, ValueError) and e.message == "too big" and e.status == 413


def test_png_round_trip_and_encoding():
  pixels = _gradient(33, 17)
  png = uploads.encode_png(pixels)
  arr = uploads.decode_png(png)
  assert arr.dtype == np.float32 and arr.shape == (17, 33, 3)
  np.testing.assert_allclose(arr * 255, pixels, atol=1e-3)
  assert uploads.encode_png(arr) == png  # float in [0, 1] encodes to the same pixels
  clipped = uploads.decode_png(uploads.encode_png(np.array([[[-1.0, 0.5, 2.0]]])))
  np.testing.assert_allclose(clipped, [[[0.0, 128 / 255, 1.0]]], atol=1e-6)
  with pytest.raises(ValueError, match="RGB image"):
    uploads.encode_png(np.zeros((4, 4)))


def test_thumbnail():
  png = uploads.encode_png(_gradient(400, 100))
  with Image.open(io.BytesIO(uploads.thumbnail(png, 128))) as t:
    assert t.format == "PNG" and t.size == (128, 32)
  small = uploads.encode_png(_gradient(40, 30))
  with Image.open(io.BytesIO(uploads.thumbnail(small))) as t:
    assert t.size == (40, 30)  # never enlarged


def test_a_bare_rgb_png_is_kept_as_it_is_and_anything_else_is_rewritten():
  bare = uploads.encode_png(_gradient(40, 30))
  assert uploads.is_bare_png(bare)
  assert clean_upload(bare, **LIMITS).png == bare
  # Appended bytes (a polyglot), metadata, 16-bit, bad CRC: never passed through.
  meta = PngImagePlugin.PngInfo()
  meta.add_text("k", "v")
  with_text = _encode(Image.fromarray(_gradient(40, 30)), "PNG", pnginfo=meta)
  sixteen = _encode(Image.fromarray(np.full((30, 40), 1000, np.uint16)), "PNG")
  bad_crc = bare[:-5] + bytes([bare[-5] ^ 1]) + bare[-4:]  # IEND's CRC
  for data in (bare + b"<html>", with_text, sixteen):
    clean = clean_upload(data, **LIMITS)
    assert clean.png != data and uploads.is_bare_png(clean.png)
  assert not uploads.is_bare_png(bad_crc)
  np.testing.assert_array_equal(_decoded(clean_upload(bare + b"junk", **LIMITS))[0],
                                _gradient(40, 30))


def test_decode_budget_admits_by_bytes_and_count_then_refuses_with_retry_after():
  import threading  # pylint: disable=import-outside-toplevel
  budget = uploads.DecodeBudget(max_bytes=100, max_decodes=2, wait_s=0.2)
  inside, release = threading.Event(), threading.Event()

  def hold(nbytes):
    with budget.hold(nbytes):
      inside.set()
      release.wait(5)

  first = threading.Thread(target=hold, args=(70,))
  first.start()
  assert inside.wait(5)
  with budget.hold(30):  # fits beside the first
    assert budget.bytes == 100 and budget.decodes == 2
  t0 = time.monotonic()
  with pytest.raises(UploadError) as e, budget.hold(31):  # does not fit: waits, then 503
    pass
  assert e.value.status == 503 and e.value.retry_after >= 1
  assert 0.15 < time.monotonic() - t0 < 2
  waiter = threading.Thread(target=hold, args=(10_000,))  # larger than the budget: alone
  waiter.start()
  release.set()
  first.join(5)
  waiter.join(5)
  assert budget.bytes == 0 and budget.decodes == 0 and budget.peak_bytes == 100


def test_a_large_rgba_upload_is_decoded_in_8_bits_and_its_memory_given_back():
  """A 3000x3000 RGBA PNG (~27 KB): the old float conversion peaked at ~40 bytes per pixel;
  Pillow's 8-bit path holds the RGBA source, the alpha mask and the RGB result."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  script = (
      "import io, resource\n"
      "from PIL import Image\n"
      "from nst_jax.web import uploads\n"
      "img = Image.new('RGBA', (3000, 3000), (10, 20, 30, 128))\n"
      "buf = io.BytesIO(); img.save(buf, 'PNG', compress_level=1); img.close()\n"
      "rss = lambda: int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
      "uploads.release_memory(); base, before = resource.getrusage(0).ru_maxrss, rss()\n"
      "budget = uploads.DecodeBudget(1 << 30, 1, 1.0)\n"
      "clean = uploads.clean_upload(buf.getvalue(), max_bytes=10**8, max_pixels=10**8,\n"
      "                             budget=budget)\n"
      "peak = resource.getrusage(0).ru_maxrss\n"
      "print(peak - base, rss() - before, clean.width, budget.peak_bytes)\n")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, check=True, cwd=str(_REPO))
  grew_kb, kept_kb, width, admitted = (int(v) for v in out.stdout.split())
  assert width == 3000 and admitted == uploads.decode_cost(3000, 3000, "RGBA")
  assert grew_kb * 1024 < 3000 * 3000 * 14, grew_kb  # float: ~40 bytes per pixel
  assert kept_kb * 1024 < 3000 * 3000 * 4, kept_kb  # the decode's pages went back
