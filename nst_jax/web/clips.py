"""Video jobs: uploaded clips checked within the service's limits, stylized frame by frame in
the worker, returned as an MP4 with a preview strip.

Synopsis::

  from nst_jax.web import clips
  clip = clips.clean_clip(data, cfg.limits)          # raises uploads.UploadError (4xx)
  mp4, strip_png = clips.run_video(executor, job, stop_check)   # in the worker

An upload is checked from its container header alone (``video_io.probe``; nothing is decoded
in the web process): the byte limit of images, a video stream, the image pixel limit per frame,
the minimum side, and the clip limits (``WebLimits.video_max_seconds``, ``video_max_frames``).
The worker stops reading at ``video_max_frames`` + 1 frames whatever the header claimed, so a
clip that under-reports its length still costs at most one frame more. The upload is stored as
it came (``.video``); the result is an H.264 MP4 at the clip's frame rate, with its audio, and
the strip a PNG of ``STRIP_FRAMES`` frames side by side.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.web import uploads

UPLOAD_EXT = "video"  # how a stored upload's key ends (served as application/octet-stream)
RESULT_EXT = "mp4"
STRIP_FRAMES = 4
STRIP_HEIGHT = 128  # px of each frame in the strip
MIN_SIDE = 16
# A probe failure's message -> the HTTP status it stands for (the rest are 400).
_UNSUPPORTED = ("not a readable video", "no video stream", "is an image")


@dataclasses.dataclass(frozen=True)
class CleanClip:
  """An accepted clip: its bytes and what its header says."""
  data: bytes
  width: int
  height: int
  frames: int
  seconds: float
  fps: float


def clean_clip(data: bytes, limits: config.WebLimits) -> CleanClip:
  """Checks an uploaded clip against ``limits`` from its header (nothing is decoded).

  Raises:
    uploads.UploadError: 400 (empty, corrupt, too small a frame, unknown length), 413 (too many
      bytes, pixels per frame, seconds or frames) or 415 (not a video), with one line.
  """
  max_bytes = int(limits.max_upload_mb * 1e6)
  if len(data) > max_bytes:
    raise uploads.UploadError(f"file is {len(data):,} bytes, above the limit of {max_bytes:,}",
                              413)
  if len(data) < 8:
    raise uploads.UploadError("the file is empty or too small to be a video", 400)
  from nst_jax.core import video_io  # pylint: disable=import-outside-toplevel  (PyAV)
  with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
    tmp.write(data)
    tmp.flush()
    try:
      info = video_io.probe(tmp.name, max_pixels=limits.max_upload_pixels)
    except UserError as e:
      message = str(e).replace(tmp.name, "the upload")
      status = (413 if "too large" in message else
                415 if any(s in message for s in _UNSUPPORTED) else 400)
      if status == 415:
        message = "not a video we can read (upload an MP4, MOV, WEBM, MKV or AVI clip)"
      raise uploads.UploadError(message, status) from None
  return check_clip_limits(info, data, limits)


def check_clip_limits(info, data: bytes, limits: config.WebLimits) -> CleanClip:
  """``clean_clip``'s size, length and frame-count checks of a probed clip."""
  if min(info.width, info.height) < MIN_SIDE:
    raise uploads.UploadError(f"the video is {info.width}x{info.height}; each side must be at "
                              f"least {MIN_SIDE} pixels", 400)
  fps = float(info.fps)
  seconds = info.duration if info.duration else info.frame_count / fps
  if not info.frame_count and not seconds:
    raise uploads.UploadError("the clip's length cannot be told from its header", 400)
  if seconds > limits.video_max_seconds + 0.5 / fps:
    raise uploads.UploadError(f"the clip is {seconds:.1f} s long, above the limit of "
                              f"{limits.video_max_seconds:g} s; cut it shorter", 413)
  if info.frame_count > limits.video_max_frames:
    raise uploads.UploadError(f"the clip has {info.frame_count} frames, above the limit of "
                              f"{limits.video_max_frames}", 413)
  return CleanClip(data, info.width, info.height, int(info.frame_count), float(seconds), fps)


def capped(frames: Iterator[np.ndarray], limit: int) -> Iterator[np.ndarray]:
  """``frames``, failing (UserError) on frame ``limit`` + 1: a header that under-counted."""
  for i, frame in enumerate(frames):
    if i >= limit:
      raise UserError(f"the clip has more than {limit} frames (its header said fewer)")
    yield frame


def strip_png(frames: list[np.ndarray]) -> bytes:
  """The frames side by side, each ``STRIP_HEIGHT`` px high, as PNG bytes."""
  tiles = []
  for frame in frames:
    img = Image.fromarray(np.asarray(frame, np.uint8))
    w = max(1, round(img.width * STRIP_HEIGHT / img.height))
    tiles.append(img.resize((w, STRIP_HEIGHT), Image.Resampling.LANCZOS))
  strip = Image.new("RGB", (sum(t.width for t in tiles), STRIP_HEIGHT))
  x = 0
  for tile in tiles:
    strip.paste(tile, (x, 0))
    x += tile.width
  buf = io.BytesIO()
  strip.save(buf, format="PNG")
  return buf.getvalue()


def strip_picks(count: int, n: int = STRIP_FRAMES) -> list[int]:
  """Frame indices of the strip: ``n`` spread evenly over ``count`` frames (first and last)."""
  k = min(n, count)
  return sorted({round(i * (count - 1) / max(1, k - 1)) for i in range(k)})


def run_video(executor, job, on_frame: Callable[[int], None]) -> tuple[bytes, bytes]:
  """A video job's (MP4 bytes, strip PNG bytes); ``on_frame(frames done)`` after each frame
  (it raises to stop the job)."""
  from nst_jax.core import video_io  # pylint: disable=import-outside-toplevel
  p, lim = job.params, executor.cfg.limits
  with tempfile.TemporaryDirectory(prefix="nst_video_") as tmp:
    source = executor.store.path(job.content_key)
    if source is None:
      source = Path(tmp) / "clip.upload"
      source.write_bytes(executor.store.get(job.content_key))
    info = video_io.probe(source, max_pixels=lim.max_upload_pixels)
    frames = capped(video_io.read_frames(source, size=int(p["size"]),
                                         max_pixels=lim.max_upload_pixels),
                    lim.video_max_frames)
    picks, kept = set(strip_picks(max(1, int(job.total or info.frame_count)))), {}
    out_path = Path(tmp) / f"result.{RESULT_EXT}"
    with video_io.VideoWriter(out_path, fps=info.fps, audio_from=info) as writer:
      for i, out in enumerate(stylized(executor, job, frames)):
        frame = np.asarray(out)
        frame = frame if frame.dtype == np.uint8 else (np.clip(frame, 0, 1) * 255 + 0.5).astype(
            np.uint8)
        writer.write(frame)
        if i in picks:
          kept[i] = frame
        kept["last"] = frame
        on_frame(i + 1)
    chosen = [kept[i] for i in sorted(k for k in kept if k != "last")]
    if len(chosen) < min(STRIP_FRAMES, writer.count):  # the header over-counted
      chosen.append(kept["last"])
    return out_path.read_bytes(), strip_png(chosen)


def stylized(executor, job, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
  """The job's output frames: its style network (``fast.video``, temporally consistent unless
  ``temporal`` is off)."""
  from nst_jax.fast import video as fast_video  # pylint: disable=import-outside-toplevel
  p = job.params
  stylizer = executor.stylizer(p["model"])
  stylizer.set_style(index=int(p.get("style_index", 0)))
  yield from fast_video.stylize_frames(stylizer, frames, temporal=bool(p.get("temporal", True)),
                                       strength=float(p.get("strength", 1.0)),
                                       original_colors="yiq" if p.get("keep_colors") else "")
