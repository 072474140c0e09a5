"""Host input pipeline for training feed-forward networks: resumable, prefetched image batches.

Synopsis::

  from nst_jax.core import data
  ds = data.make_dataset("../shared/data/train", size=256, seed=0)   # or "tfds:coco/2017"
  with ds.batches(4, start_step=1000, prefetch=3) as it:
    for batch in it:             # float32 [4, 256, 256, 3] in [0, 1]
      step = it.step - 1         # the step this batch belongs to
      print(it.last_wait)        # seconds the caller waited for it ("data time per step")

The batch at step ``s`` is a pure function of ``(seed, s)`` (and the set of images): sample
``i = s * batch_size + j`` of the stream is image ``perm_e[i % N]`` of the permutation of epoch
``e = i // N``, drawn by a numpy Generator seeded with ``(seed, e)``, and its random crop comes
from a Generator seeded with ``(seed, i)``. So a run resumed at step ``s`` sees exactly the batches
an uninterrupted run would, with or without prefetching. Batches may straddle epoch boundaries.

Multi-host: with ``shard_index=p, shard_count=P`` a process reads part ``p`` of the global batch
(samples ``(s * P + p) * batch_size + j``), so the ``P`` processes of a run together see exactly
the batches of one process reading ``P * batch_size`` images per step.

References:
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016 (training on COCO images resized to 256 x 256).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from nst_jax.core import image_io
from nst_jax.core.errors import UserError

DATA_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CROPS = ("random", "resize", "patch")
TFDS_PREFIX = "tfds:"
_SHUFFLE, _CROP = 0, 1  # stream tags in the seeds, so permutations and crops never share a stream


class DataWarning(UserWarning):
  """Unreadable training images were skipped."""


def default_num_workers() -> int:
  return max(2, min(16, os.cpu_count() or 2))


class IndexedDataset:
  """A deterministic, resumable, infinite stream of square crops from N indexed images.

  Subclasses provide ``__len__`` (N), ``_load(i)`` -> PIL image (raising ``UserError`` when the
  item is unreadable) and ``_describe(i)`` (a name for messages).
  """

  def __init__(self, *, size: int, crop: str, seed: int):
    if not isinstance(size, (int, np.integer)) or size < 1:
      raise UserError(f"image size must be a positive integer, got {size!r}")
    if crop not in CROPS:
      raise UserError(f"unknown crop {crop!r}; expected one of {CROPS}")
    self.size, self.crop, self.seed = int(size), crop, int(seed)
    self.num_skipped = 0
    self.skipped: list[str] = []  # "name: reason" for each unreadable item
    self._bad: set[int] = set()
    self._lock = threading.Lock()
    self._perms: dict[int, np.ndarray] = {}  # the last few epochs' permutations

  def __len__(self) -> int:
    raise NotImplementedError

  def _load(self, index: int) -> Image.Image:
    raise NotImplementedError

  def _describe(self, index: int) -> str:
    return f"item {index}"

  def permutation(self, epoch: int) -> np.ndarray:
    """The order of the images in ``epoch``: a pure function of (seed, epoch)."""
    with self._lock:
      perm = self._perms.get(epoch)
      if perm is None:
        perm = np.random.default_rng([self.seed, _SHUFFLE, epoch]).permutation(len(self))
        if len(self._perms) >= 4:
          self._perms.pop(min(self._perms))
        self._perms[epoch] = perm
    return perm

  def example(self, index: int) -> np.ndarray:
    """Sample ``index`` of the stream: float32 [size, size, 3] in [0, 1].

    An image that fails to decode is recorded in ``skipped`` and replaced by the next image of the
    same epoch's permutation, so the stream stays a pure function of (seed, index).
    """
    n = len(self)
    epoch, pos = divmod(int(index), n)
    perm = self.permutation(epoch)
    rng = np.random.default_rng([self.seed, _CROP, int(index)])
    for k in range(n):
      item = int(perm[(pos + k) % n])
      if item in self._bad:
        continue
      try:
        img = self._load(item)
      except UserError as e:
        self._record_bad(item, str(e))
        continue
      return transform(img, self.size, self.crop, rng)
    raise UserError(f"no readable images left in the training data ({self.num_skipped} skipped)")

  def _record_bad(self, item: int, reason: str) -> None:
    with self._lock:
      if item in self._bad:
        return
      self._bad.add(item)
      self.num_skipped += 1
      self.skipped.append(f"{self._describe(item)}: {reason}")
    warnings.warn(f"skipping unreadable training image {self._describe(item)}: {reason}",
                  DataWarning, stacklevel=2)

  def get_batch(self, step: int, batch_size: int, *, shard_index: int = 0,
                shard_count: int = 1) -> np.ndarray:
    """The batch at ``step`` (synchronous): float32 [batch_size, size, size, 3] in [0, 1]; with
    ``shard_count`` > 1, part ``shard_index`` of the global batch (see the module docstring)."""
    first = first_sample(step, batch_size, shard_index, shard_count)
    return np.stack([self.example(first + j) for j in range(batch_size)])

  def batches(self, batch_size: int, *, start_step: int = 0, num_steps: int | None = None,
              prefetch: int = 3, num_workers: int | None = None, shard_index: int = 0,
              shard_count: int = 1) -> "BatchIterator":
    """Iterates over batches ``start_step, start_step + 1, ...`` (forever unless ``num_steps``).

    Args:
      batch_size: images per batch (per process, when ``shard_count`` > 1).
      start_step: the step of the first batch (resume from a checkpoint's step).
      num_steps: stop after this many batches; None iterates forever.
      prefetch: batches decoded ahead in the background (0: decode synchronously on ``next``).
      num_workers: decoding threads (default: the CPU count, 2..16).
      shard_index: this process' part of each global batch (``jax.process_index()``).
      shard_count: the number of parts (``jax.process_count()``).

    Returns:
      A ``BatchIterator``; close it (or use it as a context manager) to stop the threads.
    """
    if batch_size < 1 or start_step < 0 or prefetch < 0 or not 0 <= shard_index < shard_count:
      raise UserError(f"invalid batching: batch_size={batch_size} (>= 1), "
                      f"start_step={start_step} (>= 0), prefetch={prefetch} (>= 0), "
                      f"shard {shard_index} of {shard_count}")
    return BatchIterator(self, batch_size, start_step=start_step, num_steps=num_steps,
                         prefetch=prefetch, num_workers=num_workers or default_num_workers(),
                         shard=(shard_index, shard_count))


def first_sample(step: int, batch_size: int, shard_index: int = 0, shard_count: int = 1) -> int:
  """The stream index of the first sample of part ``shard_index`` of the batch at ``step``."""
  return (int(step) * shard_count + shard_index) * batch_size


def transform(img: Image.Image, size: int, crop: str, rng: np.random.Generator) -> np.ndarray:
  """PIL image -> float32 RGB [size, size, 3] in [0, 1].

  Args:
    img: any mode; converted to RGB (alpha over white, 16-bit scaled) via ``image_io``.
    size: the output side.
    crop: "random" (resize the short side to ``size``, then a random square crop) or "resize"
      (squash to size x size, as Johnson et al. did with COCO) or "patch" (a random square at the
      image's own resolution, for super-resolution; images smaller than ``size`` are enlarged).
    rng: draws the crop offset.

  Returns:
    float32 [size, size, 3] in [0, 1].
  """
  img = to_rgb(img)
  w, h = img.size
  if crop == "resize":
    img = img.resize((size, size), Image.Resampling.LANCZOS)
  else:
    scale = size / min(w, h)
    if crop == "patch":
      scale = max(scale, 1.0)  # native resolution unless the image is too small
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
      img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left = int(rng.integers(0, new_w - size + 1))
    top = int(rng.integers(0, new_h - size + 1))
    img = img.crop((left, top, left + size, top + size))
  return np.asarray(img, dtype=np.float32) / np.float32(255.0)  # as image_io.load_image


def to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode -> 8-bit RGB; odd modes go through ``image_io``'s float conversion."""
  if img.mode == "RGB":
    return img
  if img.mode == "L":
    return img.convert("RGB")
  rgb = image_io.to_rgb_array(img)  # alpha over white, 16-bit, CMYK, palette
  return Image.fromarray(image_io.to_uint8(rgb))


class FolderDataset(IndexedDataset):
  """Every image below a folder (recursive; jpg, jpeg, png, bmp, webp), as an ``IndexedDataset``.

  Files that are not readable images (empty, unidentified) are found by a header scan at
  construction and skipped with one summary ``DataWarning``; files that fail later, at decoding
  (truncated data), are skipped when met. ``num_skipped`` counts both.

  Args:
    root: the folder.
    size: output side in pixels.
    crop: "random" or "resize" (see ``transform``).
    seed: the shuffling and cropping seed.
    verify: scan the headers at construction (a few ms per 100 files, done in threads).
  """

  def __init__(self, root: str | os.PathLike, *, size: int = 256, crop: str = "random",
               seed: int = 0, verify: bool = True):
    super().__init__(size=size, crop=crop, seed=seed)
    self.root = Path(root).expanduser()
    if not self.root.is_dir():
      raise UserError(f"training data folder not found: {self.root}")
    paths = sorted(p for p in self.root.rglob("*")
                   if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if verify:
      paths = self._verify(paths)
    if not paths:
      raise UserError(f"no readable images ({', '.join(DATA_SUFFIXES)}) found under {self.root}")
    self.paths: list[Path] = paths

  def _verify(self, paths: list[Path]) -> list[Path]:
    with concurrent.futures.ThreadPoolExecutor(default_num_workers()) as pool:
      problems = list(pool.map(probe_image, paths))
    bad = [(p, why) for p, why in zip(paths, problems) if why]
    if bad:
      self.num_skipped += len(bad)
      self.skipped += [f"{p}: {why}" for p, why in bad]
      warnings.warn(f"skipped {len(bad)} of {len(paths)} files under {self.root} that are not "
                    f"readable images (first: {bad[0][0]}: {bad[0][1]})", DataWarning,
                    stacklevel=3)
    return [p for p, why in zip(paths, problems) if not why]

  def __len__(self) -> int:
    return len(self.paths)

  def _load(self, index: int) -> Image.Image:
    return image_io.open_image(self.paths[index])

  def _describe(self, index: int) -> str:
    return str(self.paths[index])


def probe_image(path: Path) -> str | None:
  """Why ``path`` is not a readable image, from its header alone; None if it looks fine."""
  try:
    if path.stat().st_size == 0:
      return "empty file"
    with Image.open(path) as img:
      w, h = img.size
    return None if w > 0 and h > 0 else f"invalid size {w}x{h}"
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    return " ".join(str(e).split()) or type(e).__name__


class TfdsDataset(IndexedDataset):
  """A tensorflow-datasets split with random access (``tfds.data_source``), as an
  ``IndexedDataset``.

  The dataset must be prepared in the ArrayRecord format
  (``tfds build coco/2017 --file_format=array_record``); TensorFlow itself is not needed to read it.

  Args:
    name: the tfds name, e.g. "coco/2017".
    split: e.g. "train".
    image_key: the feature holding the image.
    data_dir: the tfds data folder (default: tfds' own).
    size, crop, seed: as for ``FolderDataset``.
  """

  def __init__(self, name: str, *, split: str = "train", image_key: str = "image",
               data_dir: str | None = None, size: int = 256, crop: str = "random", seed: int = 0):
    super().__init__(size=size, crop=crop, seed=seed)
    tfds = import_tfds()
    self.name, self.split, self.image_key = name, split, image_key
    try:
      self.source: Sequence[Any] = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises many types; any of them means "cannot use this source"
      raise UserError(f"cannot open tfds dataset {name!r} split {split!r}: {e} (prepare it with "
                      f"`tfds build {name} --file_format=array_record`)") from None
    if len(self.source) == 0:
      raise UserError(f"tfds dataset {name!r} split {split!r} is empty")

  def __len__(self) -> int:
    return len(self.source)

  def _load(self, index: int) -> Image.Image:
    try:
      arr = np.asarray(self.source[index][self.image_key])  # [H, W, C] uint8
    except KeyError:
      raise UserError(f"tfds dataset {self.name!r} has no feature {self.image_key!r}") from None
    except Exception as e:  # a corrupt record: skipped like a corrupt file
      raise UserError(f"cannot decode record: {e}") from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    return Image.fromarray(arr.astype(np.uint8))

  def _describe(self, index: int) -> str:
    return f"{self.name}[{self.split}][{index}]"


def import_tfds():
  """Imports tensorflow_datasets lazily, with a one-line install hint when it is missing."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("tensorflow-datasets is not installed: pip install nst_jax[tfds]") from None
  return tfds


def make_dataset(source: str | os.PathLike, *, size: int = 256, crop: str = "random",
                 seed: int = 0, split: str = "train") -> IndexedDataset:
  """A training dataset from a folder path or ``"tfds:NAME"`` (e.g. ``"tfds:coco/2017"``).

  Args:
    source: a folder of images, or ``tfds:`` followed by a tensorflow-datasets name.
    size: output side in pixels.
    crop: "random" or "resize".
    seed: the shuffling and cropping seed.
    split: the tfds split (ignored for folders).

  Returns:
    A ``FolderDataset`` or ``TfdsDataset``.
  """
  source = str(source)
  if source.startswith(TFDS_PREFIX):
    return TfdsDataset(source[len(TFDS_PREFIX):], split=split, size=size, crop=crop, seed=seed)
  return FolderDataset(source, size=size, crop=crop, seed=seed)


class BatchIterator:
  """Batches from an ``IndexedDataset``, decoded by a thread pool ``prefetch`` batches ahead.

  Attributes:
    step: the step of the next batch to be returned.
    last_wait: seconds the last ``next()`` blocked waiting for its batch (data time per step).
    total_wait: the sum of ``last_wait`` over all batches returned.
  """

  def __init__(self, dataset: IndexedDataset, batch_size: int, *, start_step: int,
               num_steps: int | None, prefetch: int, num_workers: int,
               shard: tuple[int, int] = (0, 1)):
    self.dataset, self.batch_size, self.prefetch = dataset, batch_size, prefetch
    self.shard = shard  # (this process' part, parts per global batch)
    self.step = start_step
    self._end = None if num_steps is None else start_step + num_steps
    self._next_submit = start_step
    self._pending: collections.deque = collections.deque()  # (step, buffer, futures)
    self._pool = (concurrent.futures.ThreadPoolExecutor(num_workers, "nst-data")
                  if prefetch else None)
    self.last_wait = 0.0
    self.total_wait = 0.0
    self._closed = False

  def __iter__(self) -> "BatchIterator":
    return self

  def __next__(self) -> np.ndarray:
    if self._closed or (self._end is not None and self.step >= self._end):
      self.close()
      raise StopIteration
    t0 = time.perf_counter()
    if self._pool is None:
      batch = self.dataset.get_batch(self.step, self.batch_size, shard_index=self.shard[0],
                                     shard_count=self.shard[1])
    else:
      self._fill()
      step, batch, futures = self._pending.popleft()
      assert step == self.step
      for f in futures:
        f.result()  # re-raises a worker's exception here
      self._fill()  # keep the workers busy while the caller uses this batch
    self.last_wait = time.perf_counter() - t0
    self.total_wait += self.last_wait
    self.step += 1
    return batch  # [B, size, size, 3] float32

  def _fill(self) -> None:
    while len(self._pending) < self.prefetch and (self._end is None or
                                                  self._next_submit < self._end):
      step = self._next_submit
      size = self.dataset.size
      buf = np.empty((self.batch_size, size, size, 3), np.float32)
      first = first_sample(step, self.batch_size, *self.shard)
      futures = [self._pool.submit(_fill_slot, self.dataset, buf, j, first + j)
                 for j in range(self.batch_size)]
      self._pending.append((step, buf, futures))
      self._next_submit += 1

  def close(self) -> None:
    """Cancels pending work and stops the threads; the iterator is then exhausted."""
    self._closed = True
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None
      self._pending.clear()

  def __enter__(self) -> "BatchIterator":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _fill_slot(dataset: IndexedDataset, buf: np.ndarray, j: int, index: int) -> None:
  buf[j] = dataset.example(index)
