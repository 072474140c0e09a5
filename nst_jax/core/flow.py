"""Optical flow between video frames, warping, and the reliability (occlusion) mask.

Synopsis::

  from nst_jax.core import flow
  back = flow.compute_flow(prev, cur)      # float32 [H, W, 2]: prev(x + back(x)) ~ cur(x)
  fwd = flow.compute_flow(cur, prev)       # float32 [H, W, 2]: cur(x + fwd(x)) ~ prev(x)
  guess = flow.warp(prev_output, back)     # the previous output moved onto the current frame
  mask = flow.reliable_mask(back, fwd)     # float32 [H, W], 1 where ``guess`` can be trusted

Conventions (every function here):

- Images are [H, W, C] (or [H, W]) arrays, numpy or JAX; pixel x = (column, row) = (x, y).
- A flow is float32 [H, W, 2] in pixels, channel 0 the horizontal (dx), channel 1 the
  vertical (dy) displacement. It is a *backward* flow for the grid it lives on:
  ``compute_flow(src, dst)`` is defined on ``dst``'s pixels and points into ``src``, so that
  ``src(x + flow(x)) ~ dst(x)``; ``warp(src, flow)`` then approximates ``dst``.
- ``warp`` samples bilinearly; a sample point outside the image is clamped to the nearest edge
  pixel (replicate border). Those pixels carry no information about ``src``: ``reliable_mask``
  marks them 0 (and so do ``inside_mask``'s zeros).
- ``reliable_mask(flow_back, flow_fwd)`` lives on the *current* frame's grid, with
  ``flow_back = compute_flow(prev, cur)`` and ``flow_fwd = compute_flow(cur, prev)``.

The flow itself is OpenCV's DIS (Kroeger et al., "Fast Optical Flow using Dense Inverse Search",
ECCV 2016) from the ``video`` extra: a maintained, weight-free CPU implementation. Warping and the
masks are plain JAX/numpy, so a caller may use ``warp`` inside ``jax.jit``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from nst_jax.core import errors

# import name -> distribution (pyproject.toml's ``video`` extra)
REQUIRED = {"cv2": "opencv-python-headless"}
PRESETS = ("ultrafast", "fast", "medium")

# Ruder et al. 2016, Sec. 3.1 (their consistencyChecker's constants).
CONSISTENCY_REL = 0.01
CONSISTENCY_ABS = 0.5
BOUNDARY_REL = 0.01
BOUNDARY_ABS = 0.002


def _cv2():
  errors.require_extra("video", REQUIRED, "optical flow")
  import cv2  # pylint: disable=import-outside-toplevel
  return cv2


def to_gray_uint8(image) -> np.ndarray:
  """[H, W, 3] (uint8, or float in [0, 1]) or [H, W] -> uint8 [H, W] luma (BT.601)."""
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    arr = np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
  if arr.ndim == 2:
    return np.ascontiguousarray(arr)
  if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
    raise ValueError(f"expected an [H, W, 3] or [H, W] image, got shape {arr.shape}")
  if arr.shape[-1] == 1:
    return np.ascontiguousarray(arr[..., 0])
  return _cv2().cvtColor(np.ascontiguousarray(arr), _cv2().COLOR_RGB2GRAY)


def make_estimator(preset: str = "medium"):
  """An OpenCV DIS flow object (reusable across frames of one size and across sizes)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown DIS preset {preset!r}; expected one of {', '.join(PRESETS)}")
  cv2 = _cv2()
  code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
          "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
          "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
  return cv2.DISOpticalFlow_create(code)


def compute_flow(src, dst, *, estimator=None, preset: str = "medium") -> np.ndarray:
  """The backward flow of ``dst`` into ``src``: ``src(x + flow(x)) ~ dst(x)`` for ``dst``'s pixels.

  Args:
    src: the frame sampled from, [H, W, 3] uint8 or float in [0, 1] (or [H, W]).
    dst: the frame whose grid the flow lives on, same shape as ``src``.
    estimator: a ``make_estimator()`` object to reuse (else one is made with ``preset``).
    preset: DIS's speed/quality preset, "ultrafast", "fast" or "medium".

  Returns:
    float32 [H, W, 2], (dx, dy) in pixels.

  References:
    Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016.
  """
  a, b = to_gray_uint8(dst), to_gray_uint8(src)
  if a.shape != b.shape:
    raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
  dis = estimator if estimator is not None else make_estimator(preset)
  # OpenCV's calc(I0, I1) returns f with I0(x) ~ I1(x + f(x)): I0 = dst, I1 = src.
  return np.asarray(dis.calc(a, b, None), dtype=np.float32)


def sample_points(flow) -> tuple:
  """(x + dx, y + dy): the [H, W] coordinates each pixel of the flow's grid samples."""
  h, w = flow.shape[:2]
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  return xs + flow[..., 0], ys + flow[..., 1]


def host_sample_points(flow) -> tuple[np.ndarray, np.ndarray]:
  """``sample_points`` in numpy (float32 [H, W] each), for the host-side functions."""
  f = np.asarray(flow, np.float32)
  ys, xs = np.mgrid[:f.shape[0], :f.shape[1]].astype(np.float32)
  return xs + f[..., 0], ys + f[..., 1]


def warp(image, flow):
  """Bilinear sample of ``image`` at x + flow(x) for every pixel x of the flow's grid.

  Args:
    image: [H, W, C] or [H, W], numpy or JAX (float; integer images are cast to float32).
    flow: [H, W, 2] backward flow (see the module docstring), same H, W.

  Returns:
    JAX float32 array of ``image``'s shape; sample points outside the image take the nearest
    edge pixel's value (replicate border; ``inside_mask`` tells which they are).
  """
  img = jnp.asarray(image, dtype=jnp.float32)
  flat = img[..., None] if img.ndim == 2 else img
  h, w = flat.shape[:2]
  px, py = sample_points(jnp.asarray(flow, dtype=jnp.float32))
  px = jnp.clip(px, 0.0, w - 1.0)
  py = jnp.clip(py, 0.0, h - 1.0)
  x0 = jnp.clip(jnp.floor(px), 0, max(w - 2, 0)).astype(jnp.int32)
  y0 = jnp.clip(jnp.floor(py), 0, max(h - 2, 0)).astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  fx, fy = (px - x0)[..., None], (py - y0)[..., None]
  top = flat[y0, x0] * (1 - fx) + flat[y0, x1] * fx  # [H, W, C]
  bottom = flat[y1, x0] * (1 - fx) + flat[y1, x1] * fx
  out = top * (1 - fy) + bottom * fy
  return out[..., 0] if img.ndim == 2 else out


def remap(image, flow, *, interpolation: str = "cubic") -> np.ndarray:
  """``warp`` on the host with OpenCV: bicubic (or "linear") sampling, the same convention and
  replicate border; numpy float32 out.

  Bilinear sampling at a fractional offset is a low-pass filter: a frame warped along a chain of
  flows (an output carried from frame to frame) blurs a little more at every step. Bicubic
  sampling (Keys' kernel, a = -0.75 in OpenCV) keeps the high frequencies of brush strokes.
  """
  cv2 = _cv2()
  code = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[interpolation]
  px, py = host_sample_points(flow)
  out = cv2.remap(np.asarray(image, np.float32), px, py, code, borderMode=cv2.BORDER_REPLICATE)
  return out.reshape(np.shape(image)).astype(np.float32)


def inside_mask(flow) -> np.ndarray:
  """float32 [H, W]: 1 where x + flow(x) falls inside the image, else 0."""
  px, py = host_sample_points(flow)
  h, w = px.shape
  inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
  return inside.astype(np.float32)


def reliable_mask(flow_back, flow_fwd) -> np.ndarray:
  """Where the flow ``flow_back`` (current frame -> previous) can be trusted, on the current grid.

  A pixel x is unreliable (0) when (a) the forward-backward check fails: the forward flow at the
  point it came from, w~(x) = flow_fwd(x + flow_back(x)), does not cancel flow_back(x),
  ``|w~ + b|^2 > 0.01 (|w~|^2 + |b|^2) + 0.5`` (a disocclusion: x was hidden in the previous
  frame); (b) x is on a motion boundary, ``|grad b_x|^2 + |grad b_y|^2 > 0.01 |b|^2 + 0.002``;
  or (c) x + flow_back(x) lies outside the previous frame.

  Args:
    flow_back: [H, W, 2], ``compute_flow(prev, cur)``.
    flow_fwd: [H, W, 2], ``compute_flow(cur, prev)``.

  Returns:
    float32 [H, W] in {0, 1}.

  References:
    Ruder, Dosovitskiy, Brox, "Artistic style transfer for videos", GCPR 2016, Sec. 3.1;
    Sundaram, Brox, Keutzer, "Dense point trajectories by GPU-accelerated large displacement
    optical flow", ECCV 2010 (the consistency check).
  """
  back = np.asarray(flow_back, dtype=np.float32)
  fwd_at = remap(flow_fwd, back, interpolation="linear")  # w~(x) = flow_fwd(x + back(x))
  sq = lambda v: np.sum(v * v, axis=-1)
  consistent = sq(fwd_at + back) <= CONSISTENCY_REL * (sq(fwd_at) + sq(back)) + CONSISTENCY_ABS
  gy_u, gx_u = np.gradient(back[..., 0])
  gy_v, gx_v = np.gradient(back[..., 1])
  boundary = (gx_u ** 2 + gy_u ** 2 + gx_v ** 2 + gy_v ** 2 >
              BOUNDARY_REL * sq(back) + BOUNDARY_ABS)
  return (consistent & ~boundary).astype(np.float32) * inside_mask(back)
