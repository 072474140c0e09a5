"""Stylizing video with a feed-forward network, temporally consistent (no flicker).

Synopsis::

  from nst_jax.core import video_io
  from nst_jax.fast import inference, video
  stylizer = inference.Stylizer.from_any("starry_lite")     # or "arbitrary" + set_style(image=)
  frames = video_io.read_frames("clip.mp4", size=512)       # uint8 [H, W, 3] frames
  for out in video.stylize_frames(stylizer, frames):         # float32 [H, W, 3] in [0, 1]
    ...
  outs = list(video.stylize_frames(stylizer, frames, temporal=False))   # plain per frame

Each frame is stylized on its own (``Stylizer.stylize_many``, with its strength, colour and
post-step options), then made consistent with the previous *output* moved along the optical flow
of the input frames (``core.flow``): where the flow is reliable (Ruder et al.'s forward-backward
and motion-boundary checks), the output is the minimizer of

  |o - s|^2 + lambda * m * |o - w|^2,   i.e.   o = s + (lambda m / (1 + lambda m)) (w - s)

per pixel (w the previous output warped onto this frame, bicubic: ``flow.remap``; s the frame's
own stylization; m the reliability mask): a blend with weight ``weight = lambda / (1 + lambda)``
where m = 1 and none where m = 0. Disoccluded pixels, motion
boundaries and pixels entering the frame keep the frame's own stylization, so nothing of the
previous frame is dragged over what was hidden (no ghosting). Along a reliable trajectory the
output is an exponential moving average of the per-frame stylizations: the network's frame-to-
frame flicker (strokes that appear and vanish) is averaged out, and so, partly, are the strokes
themselves; a ``weight`` closer to 1 removes more flicker and softens the style more (the
trade-off is measured in BENCHMARKS.md, "Video").

``mode="propagate"`` (``video_propagate``) selects instead of blending: where the mask is 1 the
previous output's pixel is carried along the flow (without re-sampling blur), elsewhere the
frame's own stylization starts a new track; steadier and sharper on rigid motion, but it does not
follow what the flow misses (lighting, non-rigid change); docs/video.md compares the two.

The closed form is used rather than an optimization: the temporal loss above is per-pixel and
quadratic, so a few gradient steps would only approach the same blend. Ruder et al.'s full
temporal loss (with the Gatys objective) is the slow method's (``nst_jax.slow.video``).

References:
  Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos", GCPR 2016 (the temporal
  loss and its masks).
  Lai, Huang, Wang, Shechtman, Yumer & Yang, "Learning Blind Video Temporal Consistency", ECCV
  2018 (the warping error used to measure it, ``warping_error``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from nst_jax.core import flow as flow_lib
from nst_jax.fast import video_propagate

MODES = ("blend", "propagate")  # make_consistent's; cli.video.TEMPORAL_MODES repeats them
DEFAULT_MODE = "blend"
DEFAULT_WEIGHT = 0.3  # lambda = 3/7; chosen on benchmarks/video_bench.py's clips (BENCHMARKS.md)


def temporal_blend(stylized, warped_prev, mask, *, weight: float = DEFAULT_WEIGHT):
  """The consistent output: ``stylized + weight * mask * (warped_prev - stylized)``.

  The per-pixel minimizer of ``|o - s|^2 + lambda m |o - w|^2`` with ``weight = lambda / (1 +
  lambda)`` for a mask in {0, 1}. Plain arithmetic: numpy in, numpy out; JAX in, JAX out.

  Args:
    stylized: [H, W, 3] the frame's own stylization.
    warped_prev: [H, W, 3] the previous output warped onto this frame (``flow.remap``).
    mask: [H, W] reliability in [0, 1] (``flow.reliable_mask``).
    weight: in [0, 1): how much of the previous output to keep where the flow is reliable.

  Returns:
    [H, W, 3], the type of ``stylized``.
  """
  return stylized + weight * mask[..., None] * (warped_prev - stylized)


class FlowTracker:
  """The optical flow between consecutive input frames and its reliability mask.

  Args:
    preset: OpenCV DIS preset ("ultrafast", "fast", "medium").
  """

  def __init__(self, preset: str = "medium"):
    self.estimator = flow_lib.make_estimator(preset)
    self.prev: np.ndarray | None = None

  def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The backward flow (``flow.compute_flow(prev, frame)``) and its reliability mask on
    ``frame``'s grid; None for the first frame or after a size change."""
    gray = flow_lib.to_gray_uint8(frame)
    prev, self.prev = self.prev, gray
    if prev is None or prev.shape != gray.shape:
      return None
    back = flow_lib.compute_flow(prev, gray, estimator=self.estimator)
    fwd = flow_lib.compute_flow(gray, prev, estimator=self.estimator)
    return back, flow_lib.reliable_mask(back, fwd)


def make_consistent(frames: Iterable[np.ndarray], stylized: Iterable[np.ndarray], *,
                    weight: float = DEFAULT_WEIGHT, flow_preset: str = "medium",
                    mode: str = DEFAULT_MODE) -> Iterator[np.ndarray]:
  """The temporal step alone: per-frame stylizations made consistent along the input's flow.

  Args:
    frames: the input frames [H, W, 3] (uint8 or float), in order.
    stylized: their per-frame stylizations [H, W, 3] in [0, 1], same order and sizes.
    weight: the blend weight where the flow is reliable, in [0, 1) (0: unchanged).
    flow_preset: DIS preset for the flow.
    mode: "blend" (``temporal_blend`` with ``weight``) or "propagate" (where the flow is
      reliable, the previous output's pixel is selected, not blended, and carried without
      re-sampling: ``video_propagate.Carrier``; ``weight`` is not used).

  Yields:
    float32 [H, W, 3] in [0, 1]: ``temporal_blend`` of each stylization with the previous
    *output* warped (bicubic, ``flow.remap``) onto its frame, or the "propagate" output.
  """
  if not 0.0 <= weight < 1.0:
    raise ValueError(f"weight must be in [0, 1), got {weight}")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  tracker, prev = FlowTracker(flow_preset), None
  carrier = video_propagate.Carrier() if mode == "propagate" else None
  for out, frame in zip(stylized, frames):  # stylized first: ``frames`` may follow it lazily
    out = np.asarray(out, np.float32)
    found = tracker.step(frame)
    if carrier is not None:
      yield carrier.step(out, found)
      continue
    if found is not None and prev is not None and prev.shape == out.shape:
      back, mask = found
      out = np.clip(temporal_blend(out, flow_lib.remap(prev, back), mask, weight=weight), 0, 1)
    prev = out
    yield out


def stylize_frames(stylizer, frames: Iterable[np.ndarray], *, temporal: bool = True,
                   weight: float = DEFAULT_WEIGHT, flow_preset: str = "medium",
                   mode: str = DEFAULT_MODE, chunk: int | None = None,
                   on_frame: Callable[[int], None] | None = None,
                   **options) -> Iterator[np.ndarray]:
  """Stylizes a sequence of frames with a feed-forward network, consistently over time.

  Args:
    stylizer: an ``inference.Stylizer`` (any kind, its style already set).
    frames: [H, W, 3] frames, uint8 or float in [0, 1], in order (any iterable: a generator
      from ``video_io.read_frames`` is consumed lazily, ``chunk`` frames at a time).
    temporal: False gives plain per-frame stylization (the baseline).
    weight: the blend weight where the flow is reliable (see the module docstring), in [0, 1).
    flow_preset: DIS preset for the flow.
    mode: the temporal mode, "blend" or "propagate" (``make_consistent``).
    chunk: frames stylized per network call (default: the stylizer's ``batch_size``).
    on_frame: called with the number of frames done after each one (a progress bar).
    **options: ``Stylizer.stylize_many``'s (``strength``, ``original_colors``, ``smooth``,
      ``smoothing``, ``max_memory``).

  Yields:
    float32 [H, W, 3] outputs in [0, 1], one per frame.
  """
  if not 0.0 <= weight < 1.0:
    raise ValueError(f"weight must be in [0, 1), got {weight}")
  size = chunk or getattr(stylizer, "batch_size", 1)
  seen: collections.deque = collections.deque()  # frames read, not yet given to the flow

  def per_frame() -> Iterator[np.ndarray]:
    for batch in _chunks(frames, size):
      seen.extend(batch)
      yield from stylizer.stylize_many([_as_float(f) for f in batch], **options)

  def read() -> Iterator[np.ndarray]:  # only asked after per_frame yielded: never empty
    while True:
      yield seen.popleft()

  outputs = per_frame()
  if temporal:
    outputs = make_consistent(read(), outputs, weight=weight, flow_preset=flow_preset, mode=mode)
  for done, out in enumerate(outputs, start=1):
    if on_frame is not None:
      on_frame(done)
    yield np.asarray(out, np.float32)


def _as_float(frame) -> np.ndarray:
  arr = np.asarray(frame)
  return arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def warping_error(outputs, flows, masks) -> float:
  """Lai et al.'s warping error: the mean over t >= 1 of the masked mean squared difference
  between output t and output t-1 warped onto it.

  Args:
    outputs: T frames [H, W, 3] in [0, 1].
    flows: T - 1 backward flows, ``flows[t-1]`` from frame t into frame t-1 (``flow`` module's
      convention: ``outputs[t-1](x + flow(x)) ~ outputs[t](x)``).
    masks: T - 1 masks [H, W] (1 where the flow is valid: not occluded, inside the frame).

  Returns:
    The mean of ``sum(m * |o_t - warp(o_{t-1})|^2) / (3 * sum(m))`` over t; the warp is bicubic
    (``flow.remap``), as in the consistency step, so that resampling blur is not counted as
    flicker.

  References:
    Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018, Eq. (9).
  """
  errors = []
  for t in range(1, len(outputs)):
    warped = flow_lib.remap(outputs[t - 1], flows[t - 1])
    m = np.asarray(masks[t - 1], np.float32)[..., None]
    diff = (np.asarray(outputs[t], np.float32) - warped) ** 2
    errors.append(float((m * diff).sum() / max(3.0 * m.sum(), 1.0)))
  return float(np.mean(errors)) if errors else 0.0
