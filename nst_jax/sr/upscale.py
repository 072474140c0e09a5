"""Upscaling images with an SR network (or bicubic), in overlapping tiles blended without seams.

Synopsis::

  from nst_jax.sr import upscale
  up = upscale.Upscaler.bicubic(4)                         # the baseline
  up = upscale.Upscaler(cfg, variables)                    # a network from its variables
  up = upscale.Upscaler.from_checkpoint("runs/sr_x4")      # a training run (parameters only)
  up = upscale.Upscaler.from_file("checkpoints/sr_fast_x4.npz")  # an exported float16 model
  up = upscale.Upscaler.load("sr_fast_x4")                 # any of these, or a model's name
  out = up(image, tile=128, overlap=16)                    # [H, W, 3] -> [4H, 4W, 3] in [0, 1]
  out = upscale.match_histogram(out, up.bicubic_of(image)) # Johnson's colour post-step

Tiles of ``tile`` LR pixels overlap by ``overlap``. In each shared band a tile's weight is 0
over the quarter nearest its own edge (where its zero padding reaches), then rises linearly to
1 over the middle half; the neighbour's weight is the complement, and the weighted sum is
divided by the summed weights. Tiles cross-fade without seams, and the result equals the
untiled one wherever the network's receptive radius is at most ``overlap / 4`` LR pixels.
Memory is that of one tile plus the output: one float32 output buffer, accumulated, normalised
and clipped in place (the summed weights are a row vector times a column vector).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.sr import degrade, export, nets


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of tiles of ``tile`` covering ``size`` with at least ``overlap`` shared."""
  if tile >= size:
    return [0]
  step = tile - overlap
  starts = list(range(0, size - tile, step)) + [size - tile]
  return starts


def ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
  """1-D blend weights [length]: 0 over the first quarter of ``overlap`` at an inner edge, then
  linear to 1 at three quarters (a neighbour's complementary ramp sums with it to 1)."""
  w = np.ones(length, np.float32)
  if overlap > 0:
    t = np.arange(overlap, dtype=np.float32) + 0.5
    r = np.clip((t - overlap / 4) / (overlap / 2), 0.0, 1.0)
    if not at_start:
      w[:overlap] = np.minimum(w[:overlap], r)
    if not at_end:
      w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
  return w


class Upscaler:
  """An SR model as a callable on [H, W, 3] float images in [0, 1]."""

  def __init__(self, cfg: config.SRConfig | None, variables=None, *, scale: int | None = None):
    self.cfg, self.variables = cfg, variables
    self.scale = degrade.check_scale(cfg.scale if cfg else scale)
    if cfg is None:
      self._fn = jax.jit(lambda x: degrade.upsample_bicubic(x, self.scale))
    else:
      net = nets.make_net(cfg.net, cfg.scale)
      self._fn = jax.jit(lambda x: nets.apply_net(net, variables, x))

  @classmethod
  def bicubic(cls, scale: int) -> "Upscaler":
    return cls(None, scale=scale)

  @classmethod
  def from_checkpoint(cls, path) -> "Upscaler":
    """The network of a training run (``export.load_checkpoint``: parameters only)."""
    return cls(*export.load_checkpoint(path))

  @classmethod
  def from_file(cls, path) -> "Upscaler":
    """An exported model (``export.export_npz``: float16 on disk, float32 here)."""
    cfg, variables = export.load_npz(path)
    return cls(cfg, variables)

  @classmethod
  def load(cls, model: str) -> "Upscaler":
    """What ``--model`` names (``export.load_model``): a checkpoint folder, an exported ``.npz``,
    or the name of a shipped or installed SR model (``core.zoo``)."""
    return cls(*export.load_model(model))

  @property
  def name(self) -> str:
    return "bicubic" if self.cfg is None else self.cfg.net.arch

  def bicubic_of(self, image: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(degrade.upsample_bicubic(jnp.asarray(image)[None], self.scale)[0]),
                   0, 1)

  def __call__(self, image: np.ndarray, *, tile: int = 0, overlap: int = 0) -> np.ndarray:
    """Upscales [H, W, 3]; ``tile`` > 0 processes ``tile``-pixel LR tiles overlapping by
    ``overlap`` (the output is the same as untiled away from the tiles' outer borders)."""
    h, w = image.shape[:2]
    if h < 1 or w < 1:
      raise UserError("empty image")
    if not tile or (tile >= h and tile >= w):
      out = np.array(self._fn(jnp.asarray(image, jnp.float32)[None])[0])  # a writable copy
      return np.clip(out, 0, 1, out=out)
    if not 0 <= overlap < tile:
      raise UserError(f"--overlap {overlap} must be below --tile {tile}")
    s = self.scale
    out = np.zeros((h * s, w * s, 3), np.float32)  # the one output-sized buffer
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h) * s, min(tile, w) * s  # every tile's output size
    # Tile weights are products wy (rows) x wx (columns) over a grid of starts, so their sum is
    # the product of the summed row and column ramps: no output-sized weight array.
    wys = {y: ramp(th, overlap * s, y == 0, y + tile >= h) for y in ys}
    wxs = {x: ramp(tw, overlap * s, x == 0, x + tile >= w) for x in xs}
    wy_sum, wx_sum = np.zeros(h * s, np.float32), np.zeros(w * s, np.float32)
    for y, wy in wys.items():
      wy_sum[y * s:y * s + th] += wy
    for x, wx in wxs.items():
      wx_sum[x * s:x * s + tw] += wx
    for y in ys:
      for x in xs:
        patch = jnp.asarray(image[y:y + tile, x:x + tile], jnp.float32)[None]
        res = np.asarray(self._fn(patch)[0])  # [th, tw, 3]
        wt = (wys[y][:, None] * wxs[x][None, :])[..., None]
        out[y * s:y * s + th, x * s:x * s + tw] += res * wt
    out /= wy_sum[:, None, None]  # in place, row and column factors in turn
    out /= wx_sum[None, :, None]
    return np.clip(out, 0, 1, out=out)


def match_histogram(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Per-channel histogram matching of ``image`` to ``reference`` (both [H, W, 3], [0, 1]).

  Johnson et al. match the network's output colours to the bicubic upsample of its input, so a
  feature-loss model's colour shifts are undone.
  """
  out = np.empty_like(image, dtype=np.float32)
  for c in range(image.shape[-1]):
    src = image[..., c].ravel()
    order = np.argsort(src, kind="stable")
    ref_sorted = np.sort(reference[..., c].ravel())
    quantiles = (np.arange(src.size) + 0.5) / src.size
    ref_q = (np.arange(ref_sorted.size) + 0.5) / ref_sorted.size
    matched = np.empty(src.size, np.float32)
    matched[order] = np.interp(quantiles, ref_q, ref_sorted)
    out[..., c] = matched.reshape(image.shape[:2])
  return out
