"""Peak memory of a run, estimated from its requested size before anything is allocated.

Synopsis::

  from nst_jax.core import memory
  budget = memory.budget_bytes()                  # 80% of MemAvailable, or $NST_JAX_MAX_MEMORY GB
  memory.estimate_peak_bytes("optimize", (384, 512), layers=("relu1_1", "relu5_1"), history=20)
  memory.check_fits("optimize", (75000, 100000), budget, layers=("relu5_1",))  # UserError
  memory.largest_fitting_size("optimize", (768, 1024), budget, layers=("relu5_1",))  # long side

The model (bytes, float32)::

  peak = base + margin * batch * pixels * 4 * floats_per_pixel
  slow methods:  floats_per_pixel = VGG_FACTOR[remat] * (VGG19 activations per input pixel, every
                 layer up to the deepest one used: what the backward pass keeps of them, and its
                 transients; ``remat`` as in ``LossConfig.remat``)
                 + 3 * (2 * history + IMAGE_COPIES)  (L-BFGS keeps ``history`` (s, y) pairs of
                 image-sized vectors; the image, gradient, direction and line-search copies)
                 + WINOGRAD_FLOATS when the layers reach block 3 (the transient Winograd
                 transforms of ``vgg.conv3x3``'s wide layers, measured on the CPU) times
                 min(1, WINOGRAD_WHOLE_PIXELS / pixels): above that many pixels block 3 runs
                 them in row strips of ``vgg.WINOGRAD_STRIP_PIXELS``, a constant amount
  photo:         + PHOTO_FLOATS (two sets of matting-Laplacian window coefficients, 27 floats per
                 pixel each, plus their gradients and the conjugate-gradient vectors)
  stylize:       the transform net's activations, no backward pass: STYLIZE_FLOATS plus
                 STYLIZE_PER_CHANNEL per first-layer channel (32 * width), plus PHOTO_FLOATS when
                 the smoothing post-step runs

``base`` is the interpreter, XLA and its compiler, and the VGG weights. The factors were fitted
to the peak RSS (``ru_maxrss`` of a subprocess) on the 2-core CPU machine, ``MARGIN`` added on
top; the fit's measurements are in docs/research/implementation_notes.md. The slow factors of
"optimize", "texture" and "reconstruct" were refitted per ``remat`` to the measured peaks of
``nst-jax optimize`` at 256-1024 px and, for "masks", 3000 px (BENCHMARKS.md, "Big
pictures: slow transfer at 3000 px"), with ``REFITTED_MARGIN``; the measured peak grows more
slowly than the compiled program's ``memory_analysis()`` (tests/test_memory.py states the
tolerance). "photo" and "visualize" keep the earlier, larger factor and ``MARGIN`` (not
re-measured).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Sequence

from nst_jax.core.errors import UserError
from nst_jax.core.vgg import VGG19_LAYERS, WINOGRAD_STRIP_PIXELS

MEMORY_ENV = "NST_JAX_MAX_MEMORY"  # GB
DEFAULT_FRACTION = 0.8  # of the machine's available memory
GB = 2 ** 30

SLOW_KINDS = ("optimize", "texture", "reconstruct", "visualize", "photo")
KINDS = SLOW_KINDS + ("stylize",)
VGG_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}  # per block
BASE_BYTES = {"slow": int(0.75 * GB), "stylize": int(0.65 * GB)}
# Block 3's layers (1/16 of the pixels) run whole up to here, in strips above (vgg.conv3x3).
WINOGRAD_WHOLE_PIXELS = 16 * WINOGRAD_STRIP_PIXELS
REFITTED = ("optimize", "texture", "reconstruct")  # VGG_FACTOR by remat; the others: 2.3
VGG_FACTOR = {"none": 1.03, "masks": 0.59, "blocks": 1.03}  # kept for the backward pass, transients
OLD_VGG_FACTOR = 2.3
IMAGE_COPIES = 10
WINOGRAD_FLOATS = 170
PHOTO_FLOATS = 4 * 27 * 2
STYLIZE_FLOATS = 64  # the image, the padded input, the output and XLA's buffers
STYLIZE_PER_CHANNEL = 3  # full-resolution activations per first-layer channel
MARGIN = 1.25
REFITTED_MARGIN = 1.1  # the refitted factors are within 10 % of the measured peaks
MIN_SIDE = 16  # VGG19's block 5 is 1/16 of the input


def vgg_floats_per_pixel(layers: Sequence[str]) -> float:
  """Floats per input pixel of every VGG19 activation up to the deepest of ``layers``.

  ``convB_I`` and ``reluB_I`` of block B are at 1/4^(B-1) of the input's pixels, ``poolB`` at
  1/4^B; e.g. up to ``relu5_1`` about 610 floats per pixel, two thirds of them in block 1.
  """
  if not layers:
    return 0.0
  deepest = max(VGG19_LAYERS.index(l) for l in layers)
  total = 0.0
  for name in VGG19_LAYERS[:deepest + 1]:
    block = int(name[4])
    scale = 4 ** (block if name.startswith("pool") else block - 1)
    total += VGG_CHANNELS[block] / scale
  return total


def floats_per_pixel(kind: str, *, layers: Sequence[str] = (), history: int = 0,
                     width: float = 1.0, smoothing: bool = False, remat: str = "masks",
                     pixels: int = 0) -> float:
  """The per-pixel term of ``estimate_peak_bytes`` (see the module docstring) for an image of
  ``pixels`` (batch included; 0: small enough to run every layer whole)."""
  if kind not in KINDS:
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
  if kind == "stylize":
    net = STYLIZE_FLOATS + STYLIZE_PER_CHANNEL * max(1, round(32 * width))
    return net + (PHOTO_FLOATS if smoothing else 0)
  factor = VGG_FACTOR[remat] if kind in REFITTED else OLD_VGG_FACTOR
  floats = factor * vgg_floats_per_pixel(layers) + 3 * (2 * history + IMAGE_COPIES)
  if layers and max(VGG19_LAYERS.index(l) for l in layers) >= VGG19_LAYERS.index("conv3_1"):
    floats += WINOGRAD_FLOATS * min(1.0, WINOGRAD_WHOLE_PIXELS / max(pixels, 1))
  return floats + (PHOTO_FLOATS if kind == "photo" else 0)


def estimate_peak_bytes(kind: str, hw: tuple[int, int], *, batch: int = 1, **model) -> int:
  """Estimated peak resident memory of a run whose largest image is ``hw``.

  Args:
    kind: the command: "optimize", "texture", "reconstruct", "visualize", "photo" or "stylize".
    hw: (height, width) of the largest image the run processes (the last coarse-to-fine level;
      for stylize the padded input).
    batch: images processed together (problems, units, the stylize batch).
    **model: ``layers`` (VGG layers used), ``history`` (L-BFGS memory; 0 for Adam),
      ``width`` (transform net width), ``smoothing`` (stylize's post-step), ``remat`` (what VGG's
      backward pass keeps, ``LossConfig.remat``), as in ``floats_per_pixel``.

  Returns:
    Bytes, the safety margin included; monotone in ``hw`` and ``batch``.
  """
  pixels = int(hw[0]) * int(hw[1])
  base = BASE_BYTES["stylize" if kind == "stylize" else "slow"]
  margin = REFITTED_MARGIN if kind in REFITTED else MARGIN
  return int(base + margin * batch * pixels * 4 * floats_per_pixel(kind, pixels=batch * pixels,
                                                                     **model))


def available_bytes() -> int | None:
  """The machine's available memory: MemAvailable in /proc/meminfo, else ``os.sysconf``."""
  try:
    for line in Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def budget_bytes(max_memory_gb: float | None = None) -> int | None:
  """The memory a run may use: ``max_memory_gb``, else $NST_JAX_MAX_MEMORY (GB), else 80% of the
  available memory; None when none of them is known (no check)."""
  if max_memory_gb is None and os.environ.get(MEMORY_ENV):
    try:
      max_memory_gb = float(os.environ[MEMORY_ENV])
    except ValueError:
      raise UserError(f"${MEMORY_ENV} must be a number of GB, got "
                      f"{os.environ[MEMORY_ENV]!r}") from None
  if max_memory_gb is not None:
    if not max_memory_gb > 0:
      raise UserError(f"--max-memory must be a positive number of GB, got {max_memory_gb}")
    return int(max_memory_gb * GB)
  available = available_bytes()
  return None if available is None else int(DEFAULT_FRACTION * available)


def scaled_hw(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
  """(H, W) scaled so that the long side is ``long_side`` (each side at least 1)."""
  h, w = hw
  s = long_side / max(h, w)
  return max(1, round(h * s)), max(1, round(w * s))


def largest_fitting_size(kind: str, hw: tuple[int, int], budget: int, **model) -> int:
  """The largest long side L (at ``hw``'s aspect ratio) whose estimate fits ``budget``, by
  bisection; 0 when not even one pixel fits."""
  fits = lambda side: estimate_peak_bytes(kind, scaled_hw(hw, side), **model) <= budget
  if not fits(1):
    return 0
  lo, hi = 1, 2
  while fits(hi):
    lo, hi = hi, hi * 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def release_free_memory() -> bool:
  """Returns the heap's free pages to the operating system (glibc's ``malloc_trim``).

  XLA's compiler frees most of what it allocates, but glibc keeps the freed small blocks
  resident, so a process's resident memory after compiling a large program stays hundreds of MB
  above what it uses; the program's buffers are then allocated on top. Calling this between
  compiling and running lets them reuse those pages (docs/slow_transfer.md). No other library
  exposes ``malloc_trim``; it is one ctypes call. False where there is no glibc.
  """
  try:
    return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
  except (OSError, AttributeError):
    return False


# Runs argv[2:] and writes its peak RSS (KiB, the children's ru_maxrss) to the file argv[1].
_PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "  f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n")


def run_with_peak_rss(argv: Sequence[str], **popen_kwargs) -> tuple[int, int]:
  """Runs a command as ``subprocess.run`` would; returns (exit code, its peak RSS in bytes).

  Linux carries a process's peak RSS across ``exec``, and a child made by ``fork`` or ``vfork``
  starts with its parent's: the ``ru_maxrss`` of a command started by a large process (a pytest
  worker, a benchmark that has compiled programs) is at least that process's size. The command
  therefore runs under a small intermediate Python process, whose own children start small.
  """
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    report = Path(tmp) / "peak_kib"
    code = subprocess.run([sys.executable, "-c", _PEAK_RSS_WRAPPER, str(report), *argv],
                          check=False, **popen_kwargs).returncode
    return code, int(report.read_text()) * 1024 if report.exists() else 0


def _format_bytes(n: float) -> str:
  for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
    if n < 1024 or unit == "PB":
      return f"{n:.3g} {unit}"
    n /= 1024
  return f"{n:.3g} PB"


def check_fits(kind: str, hw: tuple[int, int], budget: int | None, **model) -> None:
  """Raises a one-line ``UserError`` naming the largest size that fits when the estimated peak
  memory of a ``kind`` run at ``hw`` exceeds ``budget`` (None: no check).

  Args:
    kind: see ``estimate_peak_bytes``.
    hw: the largest image of the run.
    budget: bytes (``budget_bytes``).
    **model: ``batch``, ``layers``, ``history``, ``width``, ``smoothing``.
  """
  if budget is None:
    return
  need = estimate_peak_bytes(kind, hw, **model)
  if need <= budget:
    return
  largest = largest_fitting_size(kind, hw, budget, **model)
  fix = (f"the largest size that fits is --size {largest}" if largest >= 1 else
         "not even a 1-pixel image fits")
  raise UserError(f"a {hw[1]}x{hw[0]} {kind} run needs about {_format_bytes(need)}, more than "
                  f"the {_format_bytes(budget)} allowed (--max-memory or ${MEMORY_ENV}, default "
                  f"{DEFAULT_FRACTION:.0%} of available memory); {fix}")


def min_side(layers: Sequence[str]) -> tuple[int, str | None]:
  """The smallest image side from which VGG19 reaches the deepest of ``layers`` (each pooling
  halves it), and that layer's name (``(1, None)`` for no layers)."""
  if not layers:
    return 1, None
  pools = {l: int(l[4]) - (not l.startswith("pool")) for l in layers}  # poolings before l
  deepest = max(pools, key=pools.get)
  return 2 ** pools[deepest], deepest


def check_min_side(hw: tuple[int, int], layers: Sequence[str]) -> None:
  """Refuses an image too small for VGG19 to reach the deepest of ``layers`` (each pooling
  halves it): a one-line ``UserError`` instead of empty features and NaN losses."""
  need, deepest = min_side(layers)
  if min(hw) < need:
    raise UserError(f"a {hw[1]}x{hw[0]} image is too small: VGG19's {deepest} needs both sides "
                    f">= {need} px (raise --size or use a less elongated image)")


def planned_hw(path: str | os.PathLike, size: int | None) -> tuple[int, int] | None:
  """(H, W) an image file will have once its long side is scaled to ``size`` (None keeps it),
  from the header alone; None when the file cannot be read (loading it reports why)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as img:
      w, h = img.size
  except (OSError, ValueError, SyntaxError):
    return None
  return (h, w) if not size else scaled_hw((h, w), size)


def check_files_fit(kind: str, paths: Sequence[str | os.PathLike], size: int | None,
                    budget: int | None, *, tiled_bytes: int = 0, **model) -> None:
  """``check_fits`` for image files about to be loaded with their long side scaled to ``size``
  (from their headers: a hostile ``size`` is refused before the resize allocates it).

  With ``tiled_bytes`` (per pixel, what a run in tiles keeps of the whole image: its input and
  output, ``fast.tiled.SAVE_BYTES``), an image too large for the untiled run need only leave room
  for that; 0: the run cannot be tiled.
  """
  for path in paths:
    hw = planned_hw(path, size)
    if hw is None:
      continue
    if not tiled_bytes or budget is None or estimate_peak_bytes(kind, hw, **model) <= budget:
      check_fits(kind, hw, budget, **model)
      continue
    need = BASE_BYTES[kind] + tiled_bytes * hw[0] * hw[1]
    if need > budget:
      room = max(0.0, (budget - BASE_BYTES[kind]) / tiled_bytes / (hw[0] * hw[1]))
      raise UserError(f"a {hw[1]}x{hw[0]} {kind} run needs more than {need / GB:.3g} GB "
                      f"even in tiles, more than the {budget / GB:.3g} GB allowed; the "
                      f"largest size that fits is --size {int(max(hw) * room ** 0.5)}")
