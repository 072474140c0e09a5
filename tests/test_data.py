"""Tests for nst_jax.data: the resumable, prefetched training-image pipeline."""

import io
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from nst_jax.core import image_io
from nst_jax.core.errors import UserError
from nst_jax.core import data

SIZE = 16


def _rgb(rng, h, w):
  return (rng.uniform(size=(h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """8 good images (RGB of several shapes, grayscale, RGBA, 16-bit, nested), 1 corrupt, 1 text."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  (root / "nested" / "deeper").mkdir(parents=True)
  Image.fromarray(_rgb(rng, 24, 32)).save(root / "a.jpg", quality=95)
  Image.fromarray(_rgb(rng, 32, 20)).save(root / "b.png")
  Image.fromarray(_rgb(rng, 16, 16)).save(root / "c.JPEG", quality=95)
  Image.fromarray(_rgb(rng, 20, 20)).save(root / "nested" / "d.bmp")
  Image.fromarray(_rgb(rng, 18, 30)).save(root / "nested" / "deeper" / "e.webp", lossless=True)
  Image.fromarray(np.full((16, 16), 77, np.uint8)).save(root / "gray.png")
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., 0] = 255  # red, fully transparent: composited over white
  Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
  Image.fromarray(np.full((16, 16), 30000, np.uint16)).save(root / "nested" / "deep16.png")
  (root / "corrupt.jpg").write_bytes(b"this is not a jpeg" * 10)
  (root / "notes.txt").write_text("ignored")
  return root


@pytest.fixture(scope="module")
def dataset(folder):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", data.DataWarning)
    return data.FolderDataset(folder, size=SIZE, crop="random", seed=0)


def test_scan_is_recursive_and_skips_the_corrupt_file_with_one_warning(folder):
  with pytest.warns(data.DataWarning, match=r"skipped 1 of 9 files") as record:
    ds = data.FolderDataset(folder, size=SIZE)
  assert len(record) == 1 and "corrupt.jpg" in str(record[0].message)
  assert len(ds) == 8 and ds.num_skipped == 1 and "corrupt.jpg" in ds.skipped[0]
  names = {p.name for p in ds.paths}
  assert {"e.webp", "deep16.png", "c.JPEG"} <= names and "notes.txt" not in names


@pytest.mark.parametrize("crop", data.CROPS)
def test_batch_shape_dtype_and_range(folder, crop):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", data.DataWarning)
    ds = data.FolderDataset(folder, size=12, crop=crop, seed=3)
  batch = ds.get_batch(0, 5)
  assert batch.shape == (5, 12, 12, 3) and batch.dtype == np.float32
  assert batch.min() >= 0.0 and batch.max() <= 1.0 and batch.std() > 0.01


def test_conversion_to_rgb(folder):
  rng = np.random.default_rng(0)

  def load(name):
    return data.transform(image_io.open_image(folder / name), SIZE, "random", rng)

  np.testing.assert_array_equal(load("gray.png"), np.full((SIZE, SIZE, 3), 77 / 255, np.float32))
  np.testing.assert_array_equal(load("rgba.png"), np.ones((SIZE, SIZE, 3), np.float32))
  np.testing.assert_allclose(load("nested/deep16.png"), round(30000 / 65535 * 255) / 255, atol=1e-6)


def test_random_crop_is_a_window_of_the_short_side_resized_image(folder):
  img = image_io.open_image(folder / "a.jpg")  # 32 x 24
  full = np.asarray(img, np.float32) / 255
  rng = np.random.default_rng(1)
  lefts = set()
  for _ in range(8):
    out = data.transform(img, 24, "random", rng)  # short side already 24: a pure crop
    left = [x for x in range(9) if np.array_equal(out, full[:, x:x + 24])]
    assert len(left) == 1
    lefts.add(left[0])
  assert len(lefts) > 1  # the offset is random
  squashed = data.transform(img, 8, "resize", rng)
  ref = np.asarray(img.resize((8, 8), Image.Resampling.LANCZOS), np.float32) / 255
  np.testing.assert_array_equal(squashed, ref)


def test_each_epoch_visits_every_image_once(dataset):
  n = len(dataset)
  for epoch in range(3):
    np.testing.assert_array_equal(np.sort(dataset.permutation(epoch)), np.arange(n))
  assert not np.array_equal(dataset.permutation(0), dataset.permutation(1))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", data.DataWarning)
    squash = data.FolderDataset(dataset.root, size=SIZE, crop="resize", seed=0)
  rng = np.random.default_rng(0)
  expected = sorted(data.transform(image_io.open_image(p), SIZE, "resize", rng).tobytes()
                    for p in squash.paths)
  got = sorted(squash.example(n + i).tobytes() for i in range(n))  # the second epoch
  assert got == expected


def test_same_seed_same_batches_other_seed_other_batches(folder, dataset):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", data.DataWarning)
    again = data.FolderDataset(folder, size=SIZE, seed=0)
    other = data.FolderDataset(folder, size=SIZE, seed=1)
  for step in range(4):
    np.testing.assert_array_equal(dataset.get_batch(step, 3), again.get_batch(step, 3))
  assert any(not np.array_equal(dataset.get_batch(s, 3), other.get_batch(s, 3)) for s in range(2))


def test_resuming_at_a_step_gives_the_tail_of_an_uninterrupted_run(dataset):
  # batch size 3 over 8 images: batches straddle epoch boundaries.
  with dataset.batches(3, num_steps=7, prefetch=2, num_workers=2) as it:
    full = list(it)
  assert len(full) == 7
  with dataset.batches(3, start_step=4, num_steps=3, prefetch=2, num_workers=2) as it:
    resumed = list(it)
  for a, b in zip(full[4:], resumed):
    np.testing.assert_array_equal(a, b)


def test_prefetching_iterator_equals_the_synchronous_path(dataset):
  with dataset.batches(3, start_step=2, num_steps=6, prefetch=3, num_workers=3) as it:
    prefetched = list(it)
    assert it.step == 8 and it.total_wait >= it.last_wait >= 0.0
  synchronous = list(dataset.batches(3, start_step=2, num_steps=6, prefetch=0))
  assert len(prefetched) == len(synchronous) == 6
  for step, (a, b) in enumerate(zip(prefetched, synchronous), start=2):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, dataset.get_batch(step, 3))


def test_closed_iterator_stops(dataset):
  it = dataset.batches(2, prefetch=2, num_workers=2)
  assert next(it).shape == (2, SIZE, SIZE, 3)
  it.close()
  with pytest.raises(StopIteration):
    next(it)


def _truncated_copy(folder, tmp_path):
  root = tmp_path / "trunc"
  root.mkdir()
  for name in ("a.jpg", "b.png", "c.JPEG"):
    (root / name).write_bytes((folder / name).read_bytes())
  blob = (folder / "a.jpg").read_bytes()
  (root / "zz_truncated.jpg").write_bytes(blob[:len(blob) // 2])  # passes the header scan
  return root


def test_file_failing_at_decode_is_skipped_deterministically(folder, tmp_path):
  ds = data.FolderDataset(_truncated_copy(folder, tmp_path), size=SIZE, crop="resize", seed=0)
  assert len(ds) == 4 and ds.num_skipped == 0
  bad = [p.name for p in ds.paths].index("zz_truncated.jpg")
  pos = int(np.flatnonzero(ds.permutation(0) == bad)[0])
  substitute = int(ds.permutation(0)[(pos + 1) % 4])
  with pytest.warns(data.DataWarning, match="zz_truncated"):
    got = ds.example(pos)
  assert ds.num_skipped == 1 and "zz_truncated" in ds.skipped[0]
  rng = np.random.default_rng(0)
  expected = data.transform(image_io.open_image(ds.paths[substitute]), SIZE, "resize", rng)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(ds.example(pos), got)  # the same again, with no new warning
  assert ds.num_skipped == 1


def test_worker_errors_reach_the_caller(tmp_path):
  blob = _jpeg_bytes()
  (tmp_path / "x.jpg").write_bytes(blob[:len(blob) // 2])  # a valid header, truncated pixels
  ds = data.FolderDataset(tmp_path, size=SIZE)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", data.DataWarning)
    with pytest.raises(UserError, match="no readable images left"):
      next(ds.batches(2, prefetch=2, num_workers=2))


def _jpeg_bytes():
  buf = io.BytesIO()
  Image.fromarray(_rgb(np.random.default_rng(5), 96, 96)).save(buf, format="JPEG")
  return buf.getvalue()


def test_bad_input_raises_user_error(tmp_path, folder):
  with pytest.raises(UserError, match="not found"):
    data.FolderDataset(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no readable images"):
    data.make_dataset(tmp_path / "empty")
  with pytest.raises(UserError, match="crop"):
    data.FolderDataset(folder, crop="center")
  with pytest.raises(UserError, match="size"):
    data.FolderDataset(folder, size=0)


def test_tfds_source_without_tfds_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # "import" raises ImportError
  with pytest.raises(UserError, match=r"pip install nst_jax\[tfds\]"):
    data.make_dataset("tfds:coco/2017")


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets", reason="needs tensorflow-datasets (README, the optional extras)")
  with tfds.testing.mock_data(num_examples=6):
    ds = data.make_dataset("tfds:mnist", size=SIZE, seed=0)
    assert len(ds) == 6
    batch = ds.get_batch(0, 4)
    np.testing.assert_array_equal(batch, ds.get_batch(0, 4))
  assert batch.shape == (4, SIZE, SIZE, 3) and 0.0 <= batch.min() and batch.max() <= 1.0


def test_real_training_folder(data_dir):
  ds = data.make_dataset(data_dir / "train" / "t91", size=32, seed=0)
  assert len(ds) == 91 and ds.num_skipped == 0
  with ds.batches(4, num_steps=2, prefetch=2, num_workers=2) as it:
    batches = list(it)
  assert [b.shape for b in batches] == [(4, 32, 32, 3)] * 2
  assert all(0.0 <= b.min() and b.max() <= 1.0 and b.std() > 0.02 for b in batches)
  assert not np.array_equal(batches[0], batches[1])
