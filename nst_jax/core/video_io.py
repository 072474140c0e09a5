"""Video I/O: frames in and out of any container FFmpeg reads (PyAV), or a folder of images.

Synopsis::

  from nst_jax.core import video_io
  info = video_io.probe("clip.mp4")            # VideoInfo: size, fps, frame count, audio
  frames = video_io.read_frames("clip.mp4", start=2.0, duration=3.0, size=512)
  with video_io.VideoWriter("out.mp4", fps=info.fps, audio_from=info) as out:
    for frame in frames:                       # uint8 [H, W, 3]
      out.write(frame)
  # out.mp4 appears (atomically) only when the block ends without an error

- A source is a video file or a folder of images (sorted by name; ``FOLDER_FPS`` frames per
  second unless given). A destination ending in a video suffix is an H.264 MP4 (``libx264``
  when PyAV's FFmpeg has it, else MPEG-4 part 2) at the given frame rate with the source's audio
  copied (remuxed; transcoded to AAC only when the container cannot hold its codec), cut to the
  same ``start``/``duration``; any other destination is a folder of PNGs ``frame_000001.png``...
- Output is written to a temporary file (folder) beside the destination and renamed onto it at
  the end: an interrupted or failed run leaves no partial output.
- Bad input (missing, not a video, no video stream, zero frames in the cut, a resolution above
  the pixel limit) raises ``UserError`` with one line. The memory guard for the work done on
  the frames (``memory.check_fits``) is the caller's: it knows the method.
- Needs the ``video`` extra (PyAV); a folder of images needs only Pillow.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Self

import numpy as np

from nst_jax.core import errors, image_io, memory
from nst_jax.core.errors import UserError

REQUIRED = {"av": "av"}  # import name -> distribution (pyproject.toml's ``video`` extra)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
FOLDER_FPS = Fraction(24)
VIDEO_CODECS = ("libx264", "h264", "mpeg4")  # first one PyAV's FFmpeg can encode
MP4_AUDIO = ("aac", "mp3", "ac3", "eac3", "opus", "flac", "alac")  # remuxable into MP4/MOV
CRF = "18"  # x264 quality: visually lossless for stylized frames


def _av():
  errors.require_extra("video", REQUIRED, "video reading and writing")
  import av  # pylint: disable=import-outside-toplevel
  return av


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What ``probe`` learns from a source's header (a folder: from its first image)."""
  path: Path
  width: int
  height: int
  fps: Fraction
  frame_count: int  # an estimate for files whose header does not count frames
  duration: float | None  # seconds; None when unknown
  has_audio: bool
  is_folder: bool = False


def is_video_path(path: str | os.PathLike) -> bool:
  """Whether ``path`` names a video file (by suffix) rather than a folder of frames."""
  return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path):
  av = _av()
  if not path.exists():
    raise UserError(f"video not found: {path}")
  if path.stat().st_size == 0:
    raise UserError(f"video file is empty (0 bytes): {path}")
  try:
    return av.open(str(path))
  except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
    raise UserError(f"not a readable video file: {path} ({type(e).__name__})") from None


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
  limit = max_pixels or image_io.max_pixels_default()
  if width * height > limit:
    raise UserError(f"video too large: {path} is {width}x{height} = {width * height:,} pixels "
                    f"per frame, above the limit of {limit:,} (raise it with "
                    f"{image_io.MAX_PIXELS_ENV})")


def probe(path: str | os.PathLike, *, fps: float | None = None,
          max_pixels: int | None = None) -> VideoInfo:
  """Reads a source's header: a video file or a folder of images.

  Args:
    path: the video file or folder.
    fps: a folder's frame rate (default ``FOLDER_FPS``); ignored for files.
    max_pixels: refuse frames with more pixels than this (default 64M or $NST_JAX_MAX_PIXELS).

  Raises:
    UserError: missing, unreadable, no video stream, no frames, too large.
  """
  path = Path(path)
  if path.is_dir():
    files = image_io.list_images(path)
    if not files:
      raise UserError(f"no images in the frame folder {path}")
    w, h = image_io.open_image(files[0], max_pixels=max_pixels).size
    rate = Fraction(fps).limit_denominator(1001) if fps else FOLDER_FPS
    return VideoInfo(path, w, h, rate, len(files), float(len(files) / rate), False, True)
  with _open(path) as container:
    if not container.streams.video:
      raise UserError(f"no video stream in {path}")
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
      raise UserError(f"{path} is an image, not a video (stylize it with nst-jax stylize)")
    stream = container.streams.video[0]
    w, h = stream.codec_context.width, stream.codec_context.height
    if not w or not h:
      raise UserError(f"the video stream of {path} has no frame size (not a video?)")
    _check_pixels(path, w, h, max_pixels)
    rate = Fraction(stream.average_rate or stream.guessed_rate or 0)
    if rate <= 0:
      raise UserError(f"the video stream of {path} has no frame rate")
    duration = (float(stream.duration * stream.time_base) if stream.duration else
                container.duration / 1e6 if container.duration else None)
    count = stream.frames or (round(duration * rate) if duration else 0)
    if count == 0:
      raise UserError(f"no video frames in {path}")
    return VideoInfo(path, w, h, rate, int(count), duration, bool(container.streams.audio))


def output_hw(info: VideoInfo, size: int | None) -> tuple[int, int]:
  """(H, W) of the frames ``read_frames(..., size=size)`` yields."""
  return (info.height, info.width) if not size else memory.scaled_hw((info.height, info.width),
                                                                      size)


def read_frames(path: str | os.PathLike, *, start: float = 0.0, duration: float | None = None,
                size: int | None = None, fps: float | None = None,
                max_pixels: int | None = None) -> Iterator[np.ndarray]:
  """The frames of a video file or a folder of images, in order.

  Args:
    path: the source.
    start: seconds to skip (a folder: ``start * fps`` images).
    duration: seconds to read from ``start`` (None: to the end).
    size: scale each frame so its long side is this many pixels (None keeps it).
    fps: a folder's frame rate (see ``probe``).
    max_pixels: see ``probe``.

  Yields:
    uint8 [H, W, 3] RGB frames.

  Raises:
    UserError: as ``probe``; also when the cut holds no frame (raised at the end of iteration,
    so a writer in progress is discarded) or the file is corrupt mid-stream.
  """
  info = probe(path, fps=fps, max_pixels=max_pixels)
  if start < 0 or (duration is not None and duration <= 0):
    raise UserError(f"--start must be >= 0 and --duration > 0, got {start} and {duration}")
  h, w = output_hw(info, size)
  source = (_folder_frames(info, start, duration, (h, w)) if info.is_folder else
            _file_frames(info, start, duration, (h, w)))
  count = 0
  for frame in source:
    count += 1
    yield frame
  if count == 0:
    cut = f" between {start:g} s and {start + duration:g} s" if duration else (
        f" after {start:g} s" if start else "")
    raise UserError(f"no video frames in {info.path}{cut}")


def _folder_frames(info: VideoInfo, start: float, duration: float | None,
                   hw: tuple[int, int]) -> Iterator[np.ndarray]:
  files = image_io.list_images(info.path)
  first = round(start * info.fps)
  last = len(files) if duration is None else first + round(duration * info.fps)
  for file in files[first:last]:
    image = image_io.load_image(file)
    if image.shape[:2] != hw:
      image = image_io.resize_array(image, hw)
    yield image_io.to_uint8(image)


def _file_frames(info: VideoInfo, start: float, duration: float | None,
                 hw: tuple[int, int]) -> Iterator[np.ndarray]:
  av = _av()
  end = None if duration is None else start + duration
  half = 0.5 / float(info.fps)  # a frame belongs to the cut when its time rounds into it
  with _open(info.path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
      if start > 0 and stream.time_base:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
      for frame in container.decode(stream):
        t = frame.time if frame.time is not None else 0.0
        if t < start - half:
          continue
        if end is not None and t >= end - half:
          break
        yield frame.to_ndarray(format="rgb24", width=hw[1], height=hw[0])
    except av.error.FFmpegError as e:
      raise UserError(f"corrupt video {info.path}: {e}") from None


def _even(frame: np.ndarray) -> np.ndarray:
  """H.264 in 4:2:0 needs even sides: an odd last row/column is repeated once."""
  h, w = frame.shape[:2]
  if h % 2 == 0 and w % 2 == 0:
    return frame
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def video_codec() -> str:
  """The first of ``VIDEO_CODECS`` PyAV's FFmpeg can encode."""
  av = _av()
  for name in VIDEO_CODECS:
    try:
      av.codec.Codec(name, "w")
      return name
    except (av.error.FFmpegError, ValueError):
      continue
  raise UserError(f"PyAV's FFmpeg has none of the encoders {', '.join(VIDEO_CODECS)}; write a "
                  "folder of PNGs instead (--out FOLDER)")


class VideoWriter:
  """Writes frames to a video file or a PNG folder, atomically (a context manager).

  Args:
    path: destination; a ``VIDEO_SUFFIXES`` name is a video, anything else a folder of PNGs
      (which must not exist yet or be empty).
    fps: the frame rate (a ``Fraction`` keeps NTSC rates such as 30000/1001 exact).
    audio_from: a ``VideoInfo`` whose audio is copied into a video destination (None: no audio).
    start, duration: the cut of ``audio_from`` that the frames come from (seconds).
  """

  def __init__(self, path: str | os.PathLike, *, fps, audio_from: VideoInfo | None = None,
               start: float = 0.0, duration: float | None = None):
    self.path = Path(path)
    self.fps = Fraction(fps).limit_denominator(1001)
    self.audio_from, self.start, self.duration = audio_from, start, duration
    self.is_video = is_video_path(self.path)
    self.count = 0
    self._tmp: Path | None = None
    self._container = self._stream = self._audio = None
    if self.is_video:
      _av()
    elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
      raise UserError(f"the output folder must not exist or be empty: {self.path}")

  def __enter__(self) -> Self:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.is_video:
      fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix,
                                 dir=self.path.parent)
      os.close(fd)
      self._tmp = Path(tmp)
      self._container = _av().open(tmp, "w")
    else:
      self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
    return self

  def write(self, frame) -> None:
    """Appends one frame: uint8 [H, W, 3], or float in [0, 1]."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
      frame = image_io.to_uint8(frame)
    self.count += 1
    if not self.is_video:
      image_io.save_image(self._tmp / f"frame_{self.count:06d}.png", frame.astype(np.float32) / 255)
      return
    frame = _even(frame)
    if self._stream is None:
      self._open_video_stream(frame.shape[:2])
    av_frame = _av().VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    av_frame.pts = self.count - 1
    for packet in self._stream.encode(av_frame):
      self._container.mux(packet)

  def _open_video_stream(self, hw: tuple[int, int]) -> None:
    codec = video_codec()
    self._stream = self._container.add_stream(codec, rate=self.fps)
    self._stream.height, self._stream.width = hw
    self._stream.pix_fmt = "yuv420p"
    if codec == "libx264":
      self._stream.options = {"crf": CRF}
    if self.audio_from is not None and self.audio_from.has_audio:
      self._audio = add_audio_stream(self._container, self.audio_from.path)

  def __exit__(self, exc_type, exc, tb) -> None:
    try:
      if exc_type is None:
        self._finish()
    finally:
      if self._container is not None:
        self._container.close()
    if exc_type is not None or self.count == 0:
      self._discard()
      if exc_type is None:
        raise UserError(f"no frames to write to {self.path}")
      return
    if self.is_video:
      os.chmod(self._tmp, 0o644)
      os.replace(self._tmp, self.path)
    else:
      os.chmod(self._tmp, 0o755)  # mkdtemp creates 0700; outputs are ordinary folders
      if self.path.is_dir():
        self.path.rmdir()  # empty (checked at the start)
      os.replace(self._tmp, self.path)

  def _finish(self) -> None:
    if self._stream is None:
      return
    for packet in self._stream.encode(None):
      self._container.mux(packet)
    if self._audio is not None:
      copy_audio(self.audio_from.path, self._container, self._audio[0], remux=self._audio[1],
                 start=self.start, duration=self.duration)

  def _discard(self) -> None:
    if self._tmp is None or not self._tmp.exists():
      return
    if self._tmp.is_dir():
      shutil.rmtree(self._tmp)
    else:
      self._tmp.unlink()


def add_audio_stream(output, source: Path):
  """Adds a stream for ``source``'s first audio stream to the PyAV ``output`` container (before
  anything is muxed): a copy of its parameters when the container can hold the codec (a remux),
  else AAC (a transcode). Returns (stream, remux)."""
  with _open(Path(source)) as container:
    audio = container.streams.audio[0]
    remux = (audio.codec_context.name in MP4_AUDIO or
             Path(output.name).suffix.lower() not in (".mp4", ".m4v", ".mov"))
    if remux:
      return output.add_stream_from_template(audio), True
    return output.add_stream("aac", rate=audio.codec_context.sample_rate or 48000), False


def copy_audio(source: Path, output, out, *, remux: bool, start: float = 0.0,
               duration: float | None = None) -> None:
  """Copies the first audio stream of ``source`` into ``output``'s stream ``out``
  (``add_audio_stream``), cut to [start, start + duration) and shifted to start at 0."""
  end = None if duration is None else start + duration
  with _open(Path(source)) as container:
    audio = container.streams.audio[0]
    (_remux_audio if remux else _transcode_audio)(container, audio, output, out, start, end)


def _remux_audio(container, audio, output, out, start: float, end: float | None) -> None:
  offset = None
  for packet in container.demux(audio):
    if packet.pts is None or packet.size == 0:
      continue
    t = float(packet.pts * audio.time_base)
    if t < start:
      continue
    if end is not None and t >= end:
      break
    offset = packet.pts if offset is None else offset
    packet.pts -= offset
    packet.dts = packet.pts if packet.dts is None else packet.dts - offset
    packet.stream = out
    output.mux(packet)


def _transcode_audio(container, audio, output, out, start: float, end: float | None) -> None:
  offset = None
  for frame in container.decode(audio):
    if frame.time is None or frame.time < start:
      continue
    if end is not None and frame.time >= end:
      break
    offset = frame.pts if offset is None else offset
    frame.pts -= offset
    for packet in out.encode(frame):
      output.mux(packet)
  for packet in out.encode(None):
    output.mux(packet)
