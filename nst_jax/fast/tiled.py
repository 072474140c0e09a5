"""Stylizing pictures larger than memory: a fast network run over overlapping tiles, with every
instance norm's statistics taken over the whole image, so tiles show no seams or colour casts.

Synopsis::

  from nst_jax.fast import inference, tiled
  stylizer = inference.Stylizer.from_any("starry_lite")
  out = stylizer(photo, tile=512)          # forced; automatic when the untiled run would not fit
  tiler = tiled.Tiler(stylizer.forward, tile=512)
  plan = tiler.plan(stylizer.variables, (5120, 7680), rows)         # the stage boundaries
  tiler.run(stylizer.variables, (5120, 7680), rows, read_window, write_rows)

How: a network is a chain of stages separated by its normalization layers (``nn.InstanceNorm``,
the conditional one's inner ``nn.InstanceNorm``, ``nn.BatchNorm``, the arbitrary network's
``StyleNorm``); residual blocks add a skip input. Flax's method interception
(``nn.intercept_methods``) finds these boundaries ("points": a norm's input, a residual block's
input) without changing the networks. Pass k runs the whole network on every tile, but each
point computed in an earlier pass is replaced by its stored value (read from a temporary file),
so XLA prunes everything upstream of it, and everything downstream of norm k (which needs its
statistics, still unknown): each convolution runs once, in the pass after its input's norm is
known. Pass k writes the points it newly computes (the tile interiors) and accumulates norm k's
per-channel count, mean and centred sum of squares over the tile interiors (Chan et al.'s
pairwise update, float64 on the host); the last pass writes the network's output. Passes: the
number of norm layers + 1. A tile's exact interior excludes ``halo`` pixels on every side that is
not the image's border (where each convolution reflect-pads as the untiled network does); the
convolutions between two points need far less than 16 pixels. Tiles keep one shape per image,
the shortest that covers it in as many tiles as ``tile`` would (``fit``), so each pass compiles
one program per image size.

Memory: the input image, the output, one tile's activations, and one full-width row band of the
stored points a pass reads and writes; the stored points live in temporary files (the page
cache, not this process's resident memory), or in memory while a pass holds at most
``RAM_STORES`` bytes of them. ``estimate_bytes`` is that sum, calibrated to the peak RSS in
BENCHMARKS.md ("Big pictures: fast stylization").

References:
  Chan, Golub & LeVeque, "Algorithms for Computing the Sample Variance: Analysis and
  Recommendations", The American Statistician 1983 (merging per-tile moments).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nst_jax.core import memory
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary_nets, layers

HALO = 16  # pixels of context on each inner side of a tile (a multiple of 4)
DEFAULT_TILE = 512  # tile side in input pixels
NORMS = (nn.InstanceNorm, nn.BatchNorm, arbitrary_nets.StyleNorm)
BLOCKS = (layers.ResidualBlock, arbitrary_nets.StyleResidualBlock)
RAM_STORES = 512 * 2**20  # stores kept in memory while no pass holds more than these bytes
IMAGE_BYTES = 4 * 3 * 2  # per pixel while stylizing: the float32 input and output
SAVE_BYTES = IMAGE_BYTES + 3 * 2  # then while saving: with the 8-bit copy and PIL's image


@dataclasses.dataclass
class Point:
  """A stage boundary: the input of a norm layer ("norm", or "batch" for batch norm, whose
  statistics are fixed) or of a residual block ("block"). ``stage``: norms before it (norm j's
  is j); ``need``: the pass that reads it back (== ``stage``: never stored); ``shape``: [1, h, w,
  C] for one tile."""
  kind: str
  stage: int
  shape: tuple
  need: int = 0


def check_tile(tile: int, halo: int | None = None) -> None:
  """Raises ``UserError`` unless ``tile`` is a multiple of 4 with room for its halos."""
  halo = halo or HALO
  if tile % 4 or tile < 2 * halo + 4:
    raise UserError(f"--tile must be a multiple of 4 and at least {2 * halo + 4} pixels, got "
                    f"{tile}")


def spans(n: int, length: int, halo: int = HALO) -> list[tuple[int, int, int]]:
  """Tiles of ``length`` covering [0, n): (start, own_lo, own_hi) each; the owned ranges
  partition [0, n) and stay ``halo`` away from every tile side but the image's borders."""
  if n <= length:
    return [(0, 0, n)]
  starts = list(range(0, n - length, length - 2 * halo)) + [n - length]
  bounds = [0] + [s + halo for s in starts[1:]] + [n]
  return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def fit(n: int, tile: int, halo: int = HALO) -> int:
  """The tile length used along a side of ``n`` pixels: as many tiles as ``tile`` would need,
  each shrunk to the shortest multiple of 4 that still covers ``n``, so the last tile does not
  recompute most of its neighbour (a 1376-pixel side in 512-pixel tiles: 3 of 480, not 512)."""
  if n <= tile:
    return n
  count = len(spans(n, tile, halo))
  interior = math.ceil((n - 2 * halo) / count)  # each tile's share of the side, without its halo
  return min(tile, math.ceil((interior + 2 * halo) / 4) * 4)


def masked_moments(x: jax.Array, bounds: jax.Array, window_hw: tuple[int, int]):
  """Count, per-channel mean and centred sum of squares of ``x`` [1, h, w, C] over the owned
  rectangle ``bounds`` (y0, y1, x0, x1, in the tile's input pixels; scaled to x's size)."""
  h, w = x.shape[1:3]
  fy, fx = window_hw[0] // h, window_hw[1] // w
  ys, xs = jnp.arange(h), jnp.arange(w)
  my = (ys >= bounds[0] // fy) & (ys < bounds[1] // fy)
  mx = (xs >= bounds[2] // fx) & (xs < bounds[3] // fx)
  mask = (my[:, None] & mx[None, :]).astype(jnp.float32)[None, :, :, None]  # [1, h, w, 1]
  x = x.astype(jnp.float32)
  n = jnp.sum(mask)
  mean = jnp.sum(x * mask, axis=(0, 1, 2)) / n  # [C]
  return n, mean, jnp.sum(jnp.square(x - mean) * mask, axis=(0, 1, 2))


class MomentSum:
  """Merges per-tile (count, mean, centred sum of squares) in float64 (Chan et al. 1983)."""

  def __init__(self):
    self.n, self.mean, self.m2 = 0.0, 0.0, 0.0

  def add(self, n, mean, m2) -> None:
    n, mean, m2 = float(n), np.asarray(mean, np.float64), np.asarray(m2, np.float64)
    total = self.n + n
    delta = mean - self.mean
    self.mean = self.mean + delta * (n / total)
    self.m2 = self.m2 + m2 + np.square(delta) * (self.n * n / total)
    self.n = total

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean, biased variance) [C], float32, as instance norm uses them."""
    return (np.asarray(self.mean, np.float32), np.asarray(self.m2 / self.n, np.float32))


def normalize(module: nn.InstanceNorm, x, mean, var):
  """``nn.InstanceNorm``'s output with the given statistics [C] (its own scale and bias)."""
  params = module.variables.get("params", {})
  mul = jax.lax.rsqrt(var + module.epsilon)
  if module.use_scale:
    mul = mul * params["scale"]
  y = (x - mean) * mul
  if module.use_bias:
    y = y + params["bias"]
  return y.astype(module.dtype or x.dtype)


class _Pass:
  # The interceptor of one pass (k) over one tile; k = -1 records the points only.

  def __init__(self, k: int, plan: list[Point] | None = None, stored=None, stats=None,
               bounds=None, window_hw=None):
    self.k, self.plan, self.stored, self.stats = k, plan, stored or {}, stats or {}
    self.bounds, self.window_hw = bounds, window_hw
    self.points: list[Point] = []
    self.norms = 0
    self.emits, self.moments, self.given = {}, None, None

  def visit(self, pid: int, x):
    if pid in self.stored:
      return self.stored[pid]
    point = self.plan[pid] if self.plan else None
    if point is not None and point.stage == self.k:
      if point.need > self.k:
        self.emits[pid] = x
      if point.kind == "norm":
        self.moments = masked_moments(x, self.bounds, self.window_hw)
    return x

  def __call__(self, next_fun, args, kwargs, context):
    module, method = context.module, context.method_name
    if method == "moments" and self.given is not None:  # StyleNorm.moments
      return self.given
    if method != "__call__" or not isinstance(module, NORMS + BLOCKS):
      return next_fun(*args, **kwargs)
    kind = ("batch" if isinstance(module, nn.BatchNorm) else
            "norm" if isinstance(module, NORMS) else "block")
    point = Point(kind, self.norms, tuple(args[0].shape))
    self.points.append(point)
    x = self.visit(len(self.points) - 1, args[0])
    if kind == "block":
      out = next_fun(x, *args[1:], **kwargs)
      point.need = self.norms  # its skip input is added once the block's norms are known
      return out
    j, point.need = self.norms, self.norms + 1
    self.norms += 1
    if kind == "batch" or j not in self.stats:
      return next_fun(x, *args[1:], **kwargs)
    mean, var = self.stats[j]
    if isinstance(module, nn.InstanceNorm):
      return normalize(module, x, mean, var)
    self.given = (mean[None, None, None], var[None, None, None])  # [1, 1, 1, C] for StyleNorm
    try:
      return next_fun(x, *args[1:], **kwargs)
    finally:
      self.given = None


class _Store:
  # A point's values over the whole image [h, w, C] float32: in this process's memory when the
  # run's stores are small (``RAM_STORES``), else in a temporary file whose row bands are
  # written and read with pwrite/pread (not mmap), so they never count as resident memory.

  def __init__(self, shape: tuple[int, int, int], in_memory: bool = False):
    self.shape, self.row_bytes = shape, shape[1] * shape[2] * 4
    self.array = np.empty(shape, np.float32) if in_memory else None
    self.file = None if in_memory else tempfile.TemporaryFile(prefix="nst_jax_tile_")  # noqa: SIM115 (closed by run)

  def write_rows(self, row: int, values: np.ndarray) -> None:
    if self.array is not None:
      self.array[row:row + len(values)] = values
      return
    os.pwrite(self.file.fileno(), memoryview(np.ascontiguousarray(values, np.float32)).cast("B"),
              row * self.row_bytes)

  def read_rows(self, start: int, stop: int) -> np.ndarray:
    if self.array is not None:
      return self.array[start:stop]
    out = np.empty((stop - start,) + self.shape[1:], np.float32)
    os.preadv(self.file.fileno(), [memoryview(out).cast("B")], start * self.row_bytes)
    return out

  def close(self) -> None:
    self.array = None
    if self.file is not None:
      self.file.close()


class Tiler:
  """Runs ``forward(variables, images [1, H, W, 3], rows [1, S]) -> [1, H, W, 3]`` in tiles.

  Args:
    forward: the network, un-jitted (a ``Stylizer``'s ``forward``).
    tile: tile side in input pixels (a multiple of 4, > 2 * ``halo``).
    halo: context pixels on each inner side (a multiple of 4; at least the receptive-field
      radius between two points, in input pixels).
  """

  def __init__(self, forward: Callable, *, tile: int | None = None, halo: int | None = None):
    tile, halo = tile or DEFAULT_TILE, halo or HALO
    check_tile(tile, halo)
    if halo % 4:
      raise UserError(f"the halo must be a multiple of 4, got {halo}")
    self.forward, self.tile, self.halo = forward, tile, halo
    self._programs: dict[tuple, Callable] = {}
    self._plans: dict[tuple, list[Point]] = {}
    self.compiled_shapes: set[tuple[int, ...]] = set()

  def window_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
    """The tile shape for an image of padded size ``hw`` (``fit`` on each side)."""
    return fit(hw[0], self.tile, self.halo), fit(hw[1], self.tile, self.halo)

  def plan(self, variables, hw: tuple[int, int], rows) -> list[Point]:
    """The points of the network on one tile of an image of padded size ``hw`` (shapes only;
    kept per tile shape: the same network and style input size every call)."""
    key = (self.window_hw(hw), np.shape(rows))
    if key not in self._plans:
      trace = _Pass(-1)
      window = jax.ShapeDtypeStruct((1,) + key[0] + (3,), jnp.float32)

      def record(v, x, r):
        with nn.intercept_methods(trace):
          return self.forward(v, x, r)
      jax.eval_shape(record, variables, window, rows)
      self._plans[key] = trace.points
    return self._plans[key]

  def store_bytes(self, plan: list[Point], hw: tuple[int, int], *, band: bool = False) -> int:
    """The most bytes of stored points a pass holds (whole images, or with ``band`` one row
    band of those it reads and writes, as with the stores in files)."""
    lh, lw = self.window_hw(hw)
    sizes = [((lh if band else hw[0]) * p.shape[1] // lh) * (hw[1] * p.shape[2] // lw)
             * p.shape[3] * 4 for p in plan]
    return max((sum(n for n, p in zip(sizes, plan) if p.need > p.stage and (
        p.stage <= k <= p.need if not band else k in (p.stage, p.need)))
        for k in range(max((p.stage for p in plan), default=0) + 2)), default=0)

  def estimate_bytes(self, plan: list[Point], hw: tuple[int, int], *, width: float = 1.0,
                     smoothing: bool = False) -> int:
    """Estimated peak resident bytes of a tiled run on an image of padded size ``hw``."""
    lh, lw = self.window_hw(hw)
    band = self.store_bytes(plan, hw)
    band = band if band <= RAM_STORES else self.store_bytes(plan, hw, band=True)
    window = memory.estimate_peak_bytes("stylize", (lh, lw), width=width) - memory.BASE_BYTES[
        "stylize"]
    pixels = hw[0] * hw[1]
    stylizing = IMAGE_BYTES * pixels + window + memory.MARGIN * band
    smooth = memory.MARGIN * 4 * memory.PHOTO_FLOATS * pixels if smoothing else 0
    return int(memory.BASE_BYTES["stylize"] + max(stylizing, SAVE_BYTES * pixels) + smooth)

  def _program(self, k: int, plan: list[Point], window_hw: tuple[int, int], final: bool):
    # One jitted pass per (k, tile shape); the plan depends on the tile shape only.
    if (k, window_hw) not in self._programs:
      def run_pass(variables, window, rows, stored, stats, bounds):
        trace = _Pass(k, plan, stored, stats, bounds, window_hw)
        with nn.intercept_methods(trace):
          out = self.forward(variables, window, rows)
        return trace.emits, trace.moments, (out if final else None)
      self._programs[k, window_hw] = jax.jit(run_pass)
    return self._programs[k, window_hw]

  def run(self, variables, hw: tuple[int, int], rows, read_window: Callable,
          write_rows: Callable, *, progress: bool = True) -> None:
    """Stylizes an image of padded size ``hw`` (multiples of 4) tile by tile.

    Args:
      variables: the network's variables.
      hw: (H, W), multiples of 4.
      rows: the style input [1, S] (or [1, E]).
      read_window: (y0, y1, x0, x1) -> float32 [1, y1 - y0, x1 - x0, 3], the padded image.
      write_rows: (y0, y1, out [y1 - y0, W, 3]) called once per row band of the output, top to
        bottom.
      progress: show a progress bar (on a terminal).
    """
    plan = self.plan(variables, hw, rows)
    lh, lw = self.window_hw(hw)
    ys, xs = spans(hw[0], lh, self.halo), spans(hw[1], lw, self.halo)
    num_norms = sum(p.kind in ("norm", "batch") for p in plan)
    in_memory = self.store_bytes(plan, hw) <= RAM_STORES
    stores: dict[int, _Store] = {}
    stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def factor(p: Point) -> tuple[int, int]:  # a point's downscaling from the input
      return lh // p.shape[1], lw // p.shape[2]
    bar = tqdm(total=(num_norms + 1) * len(ys) * len(xs), desc="tiles", unit="tile",
               disable=None if progress else True, leave=False)
    try:
      for k in range(num_norms + 1):
        final = k == num_norms
        program = self._program(k, plan, (lh, lw), final)
        reads = [i for i, p in enumerate(plan) if p.stage < k == p.need]
        emits = [i for i, p in enumerate(plan) if p.stage == k < p.need]
        for i in emits:
          fy, fx = factor(plan[i])
          stores[i] = _Store((hw[0] // fy, hw[1] // fx, plan[i].shape[3]), in_memory)
        moments = MomentSum()
        for y0, oy0, oy1 in ys:
          bands = {i: stores[i].read_rows(y0 // factor(plan[i])[0],
                                          (y0 + lh) // factor(plan[i])[0]) for i in reads}
          outs = {i: np.empty(((oy1 - oy0) // factor(plan[i])[0],) + stores[i].shape[1:],
                              np.float32) for i in emits}
          out_band = np.empty((oy1 - oy0, hw[1], 3), np.float32) if final else None
          for x0, ox0, ox1 in xs:
            stored = {i: bands[i][:, x0 // factor(plan[i])[1]:(x0 + lw) // factor(plan[i])[1]]
                      [None] for i in reads}
            bounds = np.asarray([oy0 - y0, oy1 - y0, ox0 - x0, ox1 - x0], np.int32)
            self.compiled_shapes.add((k, lh, lw))
            new, mom, out = program(variables, read_window(y0, y0 + lh, x0, x0 + lw), rows,
                                    stored, stats, bounds)
            for i in emits:
              fy, fx = factor(plan[i])
              outs[i][:, ox0 // fx:ox1 // fx] = np.asarray(new[i])[
                  0, (oy0 - y0) // fy:(oy1 - y0) // fy, (ox0 - x0) // fx:(ox1 - x0) // fx]
            if mom is not None:
              moments.add(*jax.device_get(mom))
            if final:
              out_band[:, ox0:ox1] = np.asarray(out)[0, oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
            bar.update(1)
          for i in emits:
            stores[i].write_rows(oy0 // factor(plan[i])[0], outs[i])
          if final:
            write_rows(oy0, oy1, out_band)
        if moments.n:
          stats[k] = moments.result()
        for i in reads:
          stores.pop(i).close()
    finally:
      bar.close()
      for store in stores.values():
        store.close()


def reflect_indices(padded: int, n: int) -> np.ndarray:
  """Source indices of ``np.pad(..., mode="reflect")`` from ``n`` to ``padded`` (at the end)."""
  if n == 1:
    return np.zeros(padded, np.int64)
  i = np.arange(padded) % (2 * (n - 1))
  return np.where(i < n, i, 2 * (n - 1) - i)


def stylize_image(tiler: Tiler, variables, image: np.ndarray, hw: tuple[int, int], rows,
                  finish: Callable, *, progress: bool = True) -> np.ndarray:
  """One image [h, w, 3] through ``tiler``, reflect-padded to ``hw`` tile by tile (as
  ``inference.pad_to`` pads the whole image); ``finish(band, photo_band)`` post-processes each
  output row band. Returns float32 [h, w, 3]."""
  h, w = image.shape[:2]
  ry, rx = reflect_indices(hw[0], h), reflect_indices(hw[1], w)
  out = np.empty((h, w, 3), np.float32)

  def read_window(y0, y1, x0, x1):  # [1, y1 - y0, x1 - x0, 3]
    if y1 <= h and x1 <= w:  # inside the photo: no padding
      return np.asarray(image[y0:y1, x0:x1], np.float32)[None]
    return np.asarray(image[ry[y0:y1]][:, rx[x0:x1]], np.float32)[None]

  def write_rows(y0, y1, band):
    y1 = min(y1, h)
    if y0 < y1:
      out[y0:y1] = finish(band[:y1 - y0, :w], image[y0:y1])
  tiler.run(variables, hw, rows, read_window, write_rows, progress=progress)
  return out
