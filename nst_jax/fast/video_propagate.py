"""Carrying stylized pixels along the optical flow without re-sampling them every frame.

Synopsis::

  from nst_jax.fast import video_propagate
  carrier = video_propagate.Carrier()
  for stylized, found in ...:              # found: (backward flow, mask) or None (a cut)
    out = carrier.step(stylized, found)    # float32 [H, W, 3]

The "propagate" temporal mode of ``nst_jax.fast.video`` (``make_consistent(mode="propagate")``):
where the flow is reliable (mask 1) a pixel shows what the previous output showed at the point
it came from, *selected* rather than blended; elsewhere (disocclusions, motion boundaries, pixels
entering the frame) it shows the frame's own stylization and starts a new track. Strokes are
therefore never averaged with differently placed strokes of another frame (the blend's loss of
style), and the output moves exactly with the estimated flow.

Carrying an output by warping it again at every frame would blur it a little at each fractional
offset (any interpolation kernel is a low-pass filter; after dozens of frames the strokes are
gone). So each output pixel keeps a *reference* instead: the index k of the stylized frame it
was taken from and its coordinates in that frame. A new frame composes the references along its
backward flow (the coordinates are smooth, so interpolating them is harmless) and samples each
stylized frame once (bicubic, ``cv2.remap``). Where a pixel's neighbourhood straddles two
references (a seam between tracks), interpolated coordinates mean nothing: it takes the nearest
pixel's reference moved by the sub-pixel offset. At most ``max_sources`` stylized frames are
kept: past that, pixels of the least used one start new tracks (a small refresh).

Limitation: a track lives as long as the flow calls it reliable, so strokes stay on a surface
through slow changes of lighting or shape; the blend mode (the default) follows such changes.

References:
  Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos", GCPR 2016 (the masks; a
  high temporal weight tends to this selection).
"""

from __future__ import annotations

import numpy as np

from nst_jax.core import errors
from nst_jax.core import flow as flow_lib

MAX_SOURCES = 48


class Carrier:
  """The per-pixel references (source frame, coordinates) of the current output.

  Args:
    max_sources: how many stylized frames may be referenced at once (memory: one frame each).
  """

  def __init__(self, max_sources: int = MAX_SOURCES):
    if max_sources < 1:
      raise ValueError(f"max_sources must be >= 1, got {max_sources}")
    self.max_sources = max_sources
    self.sources: dict[int, np.ndarray] = {}  # frame number -> stylized [H, W, 3]
    self.index: np.ndarray | None = None  # int32 [H, W]: the source frame of each pixel
    self.coords: np.ndarray | None = None  # float32 [H, W, 2]: (x, y) in that frame
    self.count = 0

  def step(self, stylized, found) -> np.ndarray:
    """The output for the next frame.

    Args:
      stylized: [H, W, 3] the frame's own stylization in [0, 1].
      found: (backward flow [H, W, 2] into the previous frame, reliability mask [H, W]) or
        None (first frame, a cut, a size change): then the output is ``stylized``.

    Returns:
      float32 [H, W, 3].
    """
    cv2 = _cv2()
    s = np.asarray(stylized, np.float32)
    t, self.count = self.count, self.count + 1
    h, w = s.shape[:2]
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    grid = np.stack([xs, ys], -1)  # [H, W, 2]
    if found is None or self.index is None or self.index.shape != (h, w):
      self.sources, self.index, self.coords = {t: s}, np.full((h, w), t, np.int32), grid
      return s
    back, mask = found
    px, py = flow_lib.host_sample_points(back)  # where each pixel was in the previous frame
    rx = np.clip(np.rint(px), 0, w - 1).astype(np.int32)
    ry = np.clip(np.rint(py), 0, h - 1).astype(np.int32)
    index = self.index[ry, rx]  # the nearest previous pixel's reference
    offset = np.stack([px - rx, py - ry], -1)
    coords = cv2.remap(self.coords, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mixed = cv2.remap(self.index.astype(np.float32), px, py, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE) != index  # on a seam between references
    # there interpolated coordinates mean nothing: the nearest pixel's, moved by the offset
    # (a flow is locally a translation); a fresh start instead would let seams creep inward
    coords[mixed] = self.coords[ry, rx][mixed] + offset[mixed]
    fresh = np.asarray(mask) < 0.5
    if len(self.sources) >= self.max_sources:  # retire the least used source: a small refresh
      keys, counts = np.unique(index, return_counts=True)
      fresh |= index == keys[np.argmin(counts)]
    index[fresh], coords[fresh] = t, grid[fresh]
    self.sources[t] = s
    used = set(np.unique(index).tolist())
    self.sources = {k: v for k, v in self.sources.items() if k == t or k in used}
    self.index, self.coords = index, coords
    out = np.empty_like(s)
    for k in used:  # each source sampled once, at just the pixels that reference it
      where = index == k
      out[where] = _sample(cv2, self.sources[k], coords[where])
    return np.clip(out, 0.0, 1.0)


def _sample(cv2, image: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Bicubic samples [N, 3] of ``image`` at ``points`` [N, 2] (x, y): cv2.remap over the points
  laid out as a [rows, 1024] map (remap wants maps of under 32767 rows and columns)."""
  n, width = len(points), 1024
  grid = np.zeros((-(-n // width) * width, 2), np.float32)
  grid[:n] = points
  grid = grid.reshape(-1, width, 2)
  return cv2.remap(image, grid[..., 0].copy(), grid[..., 1].copy(), cv2.INTER_CUBIC,
                   borderMode=cv2.BORDER_REPLICATE).reshape(-1, image.shape[-1])[:n]


def _cv2():
  errors.require_extra("video", flow_lib.REQUIRED, "optical flow")
  import cv2  # pylint: disable=import-outside-toplevel
  return cv2
