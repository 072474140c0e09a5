"""Image loading: every kind of bad or unusual file, and atomic saving."""

import numpy as np
import pytest
from PIL import Image

from nst_jax.core import image_io
from nst_jax.core.errors import UserError


def _save(img, path, **kw):
  img.save(path, **kw)
  return path


def test_rgb_roundtrip_and_resize(tmp_path, rng):
  arr = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
  path = _save(Image.fromarray(arr), tmp_path / "a.png")
  out = image_io.load_image(path)
  assert out.dtype == np.float32 and out.shape == (40, 60, 3)
  np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)
  small = image_io.load_image(path, size=30)
  assert small.shape == (20, 30, 3) and 0 <= small.min() and small.max() <= 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_modes_are_converted_to_rgb(tmp_path, rng, mode):
  base = Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
  if mode == "I;16":
    img = Image.fromarray((rng.integers(0, 65536, (16, 20))).astype(np.uint16))
    assert img.mode.startswith("I")
  else:
    img = base.convert(mode)
  path = _save(img, tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
  out = image_io.load_image(path)
  assert out.shape == (16, 20, 3) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  if mode in ("L", "I;16"):
    np.testing.assert_array_equal(out[..., 0], out[..., 1])


def test_16bit_keeps_precision(tmp_path):
  ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
  out = image_io.load_image(_save(Image.fromarray(ramp), tmp_path / "r.png"))
  np.testing.assert_allclose(out[..., 0], ramp / 65535.0, atol=1e-6)


def test_alpha_is_composited_over_white(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0] = 255  # red, fully transparent -> white
  out = image_io.load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
  np.testing.assert_allclose(out, 1.0)


def test_exif_orientation_is_honoured(tmp_path):
  img = Image.new("RGB", (30, 10), (200, 10, 10))
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees on display
  path = tmp_path / "o.jpg"
  img.save(path, exif=exif.tobytes())
  assert image_io.load_image(path).shape == (30, 10, 3)


def test_animated_gif_takes_first_frame(tmp_path):
  frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
  path = tmp_path / "a.gif"
  frames[0].save(path, save_all=True, append_images=frames[1:])
  out = image_io.load_image(path)
  assert out[0, 0, 0] > 0.9 and out[0, 0, 2] < 0.1


@pytest.mark.parametrize("content,match", [
    (None, "not found"), (b"", "empty"), (b"this is not an image", "not a readable image"),
])
def test_bad_files_raise_one_line_errors(tmp_path, content, match):
  path = tmp_path / "bad.jpg"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(UserError, match=match) as e:
    image_io.load_image(path)
  assert "\n" not in str(e.value)


def test_truncated_and_directory_and_too_large(tmp_path, rng):
  good = _save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "g.jpg")
  data = good.read_bytes()
  trunc = tmp_path / "t.jpg"
  trunc.write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match="corrupt or truncated"):
    image_io.load_image(trunc)
  with pytest.raises(UserError, match="directory"):
    image_io.load_image(tmp_path)
  with pytest.raises(UserError, match="too large"):
    image_io.load_image(good, max_pixels=1000)


def test_save_is_atomic_and_checks_extension(tmp_path, rng):
  img = rng.uniform(size=(5, 6, 3)).astype(np.float32)
  out = image_io.save_image(tmp_path / "sub" / "x.jpg", img)
  assert Image.open(out).size == (6, 5)
  with pytest.raises(UserError, match="extension"):
    image_io.save_image(tmp_path / "x.xyz", img)

  def failing(tmp):
    open(tmp, "w").write("partial")
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError):
    image_io.atomic_write(tmp_path / "never.png", failing)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no partial or temp files


def test_write_text_replaces_whole_file_as_ordinary_file(tmp_path):
  out = tmp_path / "deep" / "report.json"
  image_io.write_text(out, "first, longer text\n")
  assert image_io.write_text(out, "second\n") == out
  assert out.read_text() == "second\n"
  assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
  assert [p.name for p in out.parent.iterdir()] == ["report.json"]  # no temp files left
