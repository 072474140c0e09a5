"""``nst-jax video``: stylize a video clip, consistent from frame to frame (no flicker).

Synopsis::

  nst-jax video clip.mp4 --out styled.mp4 --model starry_lite --size 512
  nst-jax video clip.mp4 --out styled.mp4 --model arbitrary --style-image the_scream
  nst-jax video clip.mov --out styled.mp4 --model zoo8 --mix 0.5:starry,0.5:great_wave \\
      --start 12 --duration 4 --original-colors yiq
  nst-jax video frames/ --fps 25 --out styled/ --model starry_small --no-temporal
  nst-jax video clip.mp4 --out styled.mp4 --model starry_lite --temporal propagate
  nst-jax video clip.mp4 --out styled.mp4 --method slow --style-image the_scream

IN is any file FFmpeg reads (through PyAV, the ``video`` extra) or a folder of images (sorted by
name, ``--fps`` frames per second). OUT ending in .mp4/.mov/.mkv/... is an H.264 video at IN's
frame rate with IN's audio (the same cut), anything else a new folder of PNG frames; it appears
only when the whole clip is done (written to a temporary file and renamed). ``--method fast`` (the
default) runs a feed-forward network on each frame, with every flag of ``nst-jax stylize``, then
makes each output consistent with the previous one moved along the optical flow
(``nst_jax.fast.video``; ``--temporal blend|propagate`` chooses how; ``--no-temporal``: plain
per-frame output). ``--method slow`` optimizes
each frame with Ruder et al.'s temporal loss (``nst_jax.slow.video``). docs/video.md is the guide.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from nst_jax.cli import common, stylize
from nst_jax.core.errors import UserError

HELP = "stylize a video clip (fast network or slow optimization), without flicker"
METHODS = ("fast", "slow")
DEFAULT_WEIGHT = 0.3  # fast.video.DEFAULT_WEIGHT (tests check), not imported here: JAX
TEMPORAL_MODES = ("blend", "propagate")  # fast.video.MODES (tests check)
DEFAULT_MODE = "blend"  # fast.video.DEFAULT_MODE (tests check)


def positive_float(text: str) -> float:
  value = common.non_negative_float(text)
  if value <= 0:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
  return value


def weight_fraction(text: str) -> float:
  value = common.non_negative_float(text)
  if value >= 1:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
  return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("input", metavar="IN",
                      help="a video file (any container FFmpeg reads) or a folder of frames")
  parser.add_argument("--out", required=True,
                      help="OUT.mp4 (or .mov, .mkv, .webm, .m4v, .avi): a video with IN's audio; "
                      "any other name: a new folder of PNG frames")
  parser.add_argument("--method", choices=METHODS, default="fast",
                      help="fast: a feed-forward network per frame (default); slow: per-frame "
                      "optimization with a temporal loss (Ruder et al.)")
  parser.add_argument("--no-temporal", dest="temporal", action="store_false",
                      help="plain per-frame stylization (flickers; the baseline)")
  parser.add_argument("--temporal", dest="temporal_mode", choices=TEMPORAL_MODES,
                      default=DEFAULT_MODE,
                      help="fast: blend: mix the previous output, moved along the flow, into "
                      "each frame (--temporal-weight; follows changes, softens strokes); "
                      "propagate: carry the previous output's pixels where the flow is "
                      f"reliable (steadiest, keeps the strokes) (default {DEFAULT_MODE})")
  parser.add_argument("--temporal-weight", type=weight_fraction, default=DEFAULT_WEIGHT,
                      help="fast: how much of the previous output, moved along the flow, each "
                      "frame keeps where the flow is reliable, in [0, 1): higher is steadier "
                      f"and softer (default {DEFAULT_WEIGHT})")
  parser.add_argument("--start", type=common.non_negative_float, default=0.0, metavar="SECONDS",
                      help="skip this many seconds of IN first")
  parser.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                      help="stylize this many seconds from --start (default: to the end)")
  parser.add_argument("--fps", type=positive_float, default=None,
                      help="a folder of frames: its frame rate (default 24)")
  stylize.add_network_arguments(parser, what="frame", saved="a stylize run's "
                                "OUT/smoothing_config.json", model_required=False)
  # --method slow: the Gatys objective and its solver, the flags of `nst-jax optimize`.
  common.add_loss_flags(parser)
  common.add_optim_flags(parser)


def run(args: argparse.Namespace) -> int:
  if args.size is not None and args.size < 1:
    raise UserError(f"--size must be positive, got {args.size}")
  src, out = Path(args.input), Path(args.out)
  if src.resolve() == out.resolve():
    raise UserError(f"--out must differ from the input: {out}")
  if out.is_dir() and any(out.iterdir()):
    raise UserError(f"--out names a folder that is not empty: {out}")
  if args.method == "slow":
    return run_slow(args)
  if not args.model:
    raise UserError("--method fast needs a network: --model NAME (`nst-jax models` lists them)")
  return run_fast(args)


def run_fast(args: argparse.Namespace) -> int:
  # pylint: disable=import-outside-toplevel  (JAX, PyAV, OpenCV: not for --help)
  from nst_jax.core import memory, video_io
  from nst_jax.fast import inference
  from nst_jax.fast import video as fast_video
  logging.getLogger("absl").setLevel(logging.ERROR)
  stylize.resolve_config(args).check()  # bad smoothing flags fail before any work
  info = video_io.probe(args.input, fps=args.fps, max_pixels=args.max_pixels)
  if info.duration is not None and args.start >= info.duration:
    raise UserError(f"--start {args.start:g} s is past the end of {args.input} "
                    f"({info.duration:.3g} s)")
  hw = video_io.output_hw(info, args.size)
  memory.check_fits("stylize", inference.bucket_shape(hw, args.bucket),
                    memory.budget_bytes(args.max_memory), batch=args.batch_size)
  writer = video_io.VideoWriter(args.out, fps=info.fps, audio_from=info, start=args.start,
                                duration=args.duration)  # checks --out before the work
  stylizer = inference.Stylizer.from_any(args.model, bf16=args.bf16, bucket=args.bucket,
                                         batch_size=args.batch_size)
  stylize.set_style(stylizer, args)
  smoothing = stylize.resolve_config(args, stylizer.smoothing)
  frames = video_io.read_frames(args.input, start=args.start, duration=args.duration,
                                size=args.size, fps=args.fps, max_pixels=args.max_pixels)
  outputs = fast_video.stylize_frames(
      stylizer, frames, temporal=args.temporal, weight=args.temporal_weight,
      mode=args.temporal_mode,
      strength=args.strength, original_colors=args.original_colors, smooth=args.smooth,
      smoothing=smoothing, max_memory=args.max_memory)
  t0 = time.perf_counter()
  with writer, progress_bar(info, args.start, args.duration) as bar:
    for image in outputs:
      writer.write(image)
      bar.update(1)
  seconds = time.perf_counter() - t0
  print(out_line(writer, hw, seconds))
  return 0


def progress_bar(info, start: float, duration: float | None):
  """tqdm over the frames expected in the cut (frames/s and ETA)."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  left = max(info.frame_count - round(start * info.fps), 0)
  total = min(left, round(duration * info.fps)) if duration else left
  return tqdm(total=total or None, unit="frame", desc="video", dynamic_ncols=True)


def out_line(writer, hw: tuple[int, int], seconds: float) -> str:
  audio = " with audio" if writer.is_video and writer.audio_from and writer.audio_from.has_audio \
      else ""
  return (f"{writer.path}: {writer.count} frames of {hw[1]}x{hw[0]}{audio} in {seconds:.1f} s "
          f"({writer.count / max(seconds, 1e-9):.2f} frames/s)")


def run_slow(args: argparse.Namespace) -> int:
  """``--method slow``: ``nst_jax.slow.video.stylize_file`` (Ruder et al.) with ``config.gatys()``
  and the loss and optimizer flags given."""
  from nst_jax import config  # pylint: disable=import-outside-toplevel
  from nst_jax.slow import video as slow_video  # pylint: disable=import-outside-toplevel (JAX)
  if args.style_image is None:
    raise UserError("--method slow needs the painting to imitate: --style-image FILE_OR_STEM")
  cfg = config.override(config.gatys(), common.flag_overrides(
      args, {**common.LOSS_FLAGS, **common.OPTIM_FLAGS})).check()
  slow_video.stylize_file(args.input, args.out, style_image=stylize.find_painting(
      args.style_image), size=args.size, start=args.start, duration=args.duration,
      fps=args.fps, temporal=args.temporal, max_memory=args.max_memory, config=cfg)
  return 0
