"""Slow video style transfer (Ruder, Dosovitskiy & Brox 2016): each frame optimized from the
warped previous result, with a short-term temporal loss where the optical flow is reliable.

Synopsis::

  from nst_jax import config
  from nst_jax.slow import video
  frames = [...]                                   # uint8 [H, W, 3] each, in order
  style = image_io.load_image("painting.jpg")      # float [h, w, 3] in [0, 1]
  for out in video.stylize_clip(frames, style, config=config.gatys(), workdir=Path("run"),
                                vgg_params=params):
    ...                                            # uint8 [h', w', 3], long side config.size

Frame t > 0 starts from the previous output warped into frame t by the flow between the input
frames (``core.flow``), and the Gatys objective gains
``temporal_weight * mean(mask * (x - warped)^2)`` with the forward-backward reliability mask:
disoccluded pixels and motion boundaries are left to the style and content terms. The warped
image and the mask are arguments of the loss (frame 0 and ``temporal=False`` pass a zero mask),
so one compiled program serves every frame of a shape.

Resume: every finished frame is written to ``workdir/frames/NNNNNN.png`` (atomically) and
recorded in ``workdir/video.json`` with a digest of its input frame and of the run; a rerun with
the same inputs re-yields those frames from disk and continues at the first missing one, whose
optimization resumes from its own checkpoint (``driver.Checkpointer``,
``workdir/.frame_NNNNNN.ckpt``) when it was interrupted mid-way. The next frame is always warped
from the saved (8-bit) output, so an interrupted and an uninterrupted run give the same frames.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nst_jax import config as config_lib
from nst_jax.config import SlowVideoConfig, TransferConfig
from nst_jax.core import colors, flow, image_io, objective
from nst_jax.core.errors import UserError
from nst_jax.slow import artistic, driver

MANIFEST = "video.json"


def temporal_loss(x: jnp.ndarray, warped: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Short-term temporal loss: the masked mean squared difference to the warped previous output.

  Args:
    x: [B, H, W, C] the frames being optimized.
    warped: [B, H, W, C] the previous outputs warped into these frames.
    mask: [B, H, W, 1] per-pixel weights (1 where the flow is reliable, 0 at disocclusions and
      motion boundaries).

  Returns:
    [B] losses: sum over pixels and channels of mask * (x - warped)^2, divided by H W C.

  References:
    Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos", GCPR 2016, eq. (6).
  """
  return jnp.mean(mask * jnp.square(x - warped), axis=(1, 2, 3))


@functools.lru_cache(maxsize=16)
def make_loss_fn(loss_cfg: config_lib.LossConfig, temporal_weight: float):
  """``(x, vgg_params, aux) -> (total, terms)`` for ``optimize.run``: the Gatys terms of
  ``aux["targets"]`` plus ``"temporal"`` against ``aux["warped"]`` under ``aux["mask"]``
  (one function per configuration, so compiled programs are reused across frames and calls)."""

  def loss_fn(x, vgg_params, aux):
    terms = objective.loss_terms(vgg_params, x, aux["targets"], loss_cfg)
    terms["temporal"] = temporal_weight * temporal_loss(x, aux["warped"], aux["mask"])
    terms["total"] = terms["total"] + terms["temporal"]
    return jnp.sum(terms["total"]), terms

  return loss_fn


@dataclasses.dataclass
class Previous:
  """What frame t needs of frame t-1: its input frame and its output (both float [H, W, 3])."""
  frame: np.ndarray
  output: np.ndarray


def temporal_inputs(frame: np.ndarray, prev: Previous | None,
                    temporal: bool) -> tuple[np.ndarray, np.ndarray]:
  """(warped previous output [H, W, 3], reliability mask [H, W, 1]) for ``frame``; zeros when
  there is no previous frame or ``temporal`` is off (the loss term then vanishes)."""
  hw = frame.shape[:2]
  if prev is None or not temporal:
    return np.zeros(hw + (3,), np.float32), np.zeros(hw + (1,), np.float32)
  back = flow.compute_flow(prev.frame, frame)  # prev(x + back(x)) ~ frame(x)
  fwd = flow.compute_flow(frame, prev.frame)
  # Bicubic, not bilinear: the warm start is carried along a chain of warps, and bilinear
  # sampling at DIS's sub-pixel offsets (even in a still background) blurs it a little more at
  # every frame (``flow.remap``).
  warped = np.clip(flow.remap(prev.output, back), 0.0, 1.0).astype(np.float32)
  return warped, np.asarray(flow.reliable_mask(back, fwd), np.float32)[..., None]


def _frame_stages(vgg_params, frame, style, cfg: TransferConfig, warped, mask, warm: bool):
  """One ``driver.Stage`` per coarse-to-fine level of one frame; the first level starts from
  ``warped`` when ``warm`` (else from ``cfg.init``), the others from the previous level."""
  stages = []
  for level, long_side in enumerate(artistic.fitted_level_sizes(frame.shape[:2], cfg)):
    optim_cfg = cfg.optim
    if cfg.level_iters:
      optim_cfg = dataclasses.replace(optim_cfg, num_iters=cfg.level_iters[level])

    def inputs(prev, long_side=long_side):
      hw = driver.fit_hw(frame.shape[:2], long_side)
      content = image_io.resize_array(frame, hw)
      style_hw = driver.fit_hw(style.shape[:2], round(long_side * cfg.style_scale))
      targets = objective.make_targets(vgg_params, jnp.asarray(content)[None],
                                       [jnp.asarray(image_io.resize_array(style, style_hw))[None]],
                                       cfg.loss)
      if prev is not None:
        x0 = image_io.resize_array(np.asarray(prev)[0], hw)
      elif warm:
        x0 = image_io.resize_array(warped, hw)
      else:
        x0 = artistic.initial_image(cfg.init, content, hw, seed=cfg.seed,
                                    noise_ratio=cfg.noise_ratio)
      aux = {"targets": targets, "warped": jnp.asarray(image_io.resize_array(warped, hw))[None],
             "mask": jnp.asarray(_resize_mask(mask, hw))[None]}
      return jnp.asarray(x0)[None], aux

    stages.append(driver.Stage(optim_cfg, inputs, f"level {level + 1}/{cfg.scales} {long_side}px"))
  return stages


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  return mask if mask.shape[:2] == hw else image_io.resize_array(mask, hw)


def stylize_frame(vgg_params, frame: np.ndarray, style: np.ndarray, cfg: TransferConfig,
                  video_cfg: SlowVideoConfig, prev: Previous | None, *, temporal: bool = True,
                  checkpoint: Path | None = None, progress: bool = False) -> np.ndarray:
  """One frame of ``stylize_clip``: float [H, W, 3] in [0, 1] at the frame's size.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    frame: float [H, W, 3] in [0, 1], already at the output size.
    style: float [h, w, 3] in [0, 1].
    cfg: the artistic transfer configuration (``nst-jax optimize``'s).
    video_cfg: the temporal weight and the warm start.
    prev: the previous frame and its output, or None for the first frame.
    temporal: add the temporal loss and start from the warped previous output.
    checkpoint: where the optimization checkpoints (resumed when it exists).
    progress: show each level's optimization bar.
  """
  warped, mask = temporal_inputs(frame, prev, temporal)
  warm = temporal and prev is not None and video_cfg.warm_start
  stages = _frame_stages(vgg_params, frame, style, cfg, warped, mask, warm)
  run_digest = driver.digest(cfg, [frame, style, warped, mask], repr((video_cfg, warm)))
  res = driver.run_stages(make_loss_fn(cfg.loss, float(video_cfg.temporal_weight)), vgg_params,
                          stages, digest_=run_digest, checkpoint=checkpoint, config=cfg,
                          checkpoint_every=video_cfg.checkpoint_every, progress=progress)
  if res.nan_at is not None:
    raise UserError(f"the loss became NaN/Inf at iteration {res.nan_at}; lower the weights")
  out = np.clip(np.asarray(res.x)[0], 0.0, 1.0)
  if cfg.original_colors:
    out = colors.original_colors(out, frame, cfg.original_colors)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def run_digest(style: np.ndarray, cfg: TransferConfig, video_cfg: SlowVideoConfig,
               temporal: bool) -> str:
  """Identifies a clip run apart from its frames (``video.json``'s ``"run"``)."""
  return driver.digest((cfg, video_cfg, temporal), [np.asarray(style, np.float32)])


def frame_digest(frame: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()[:16]


def _load_manifest(workdir: Path, run: str) -> list[str]:
  """The input digests of the frames done by this run (none for another run or no manifest)."""
  try:
    data = json.loads((workdir / MANIFEST).read_text())
  except (OSError, ValueError):
    return []
  return list(data.get("frames", [])) if data.get("run") == run else []


def frame_path(workdir: Path, t: int) -> Path:
  return workdir / "frames" / f"{t:06d}.png"


def stylize_clip(frames: Iterable[np.ndarray], style: np.ndarray, *, config: TransferConfig,
                 workdir: str | Path, temporal: bool = True,
                 progress: bool | Callable[[int], None] | None = None,
                 vgg_params=None, video_config: SlowVideoConfig | None = None,
                 max_memory: float | None = None) -> Iterator[np.ndarray]:
  """Stylizes a clip frame by frame with the Gatys objective; resumable.

  Args:
    frames: uint8 [H, W, 3] frames in order (a generator is fine; read once).
    style: the style image, uint8 or float in [0, 1], [h, w, 3].
    config: the artistic transfer configuration (``nst-jax optimize``'s); frames are resized to
      long side ``config.size``.
    workdir: per-frame outputs, the manifest and the checkpoints; rerunning with the same
      inputs and workdir continues where a killed run stopped.
    temporal: Ruder et al.'s warm start and temporal loss (False: plain per-frame transfer).
    progress: True: a bar over frames and each frame's optimization bar; a callable:
      ``progress(frames_done)`` after each frame; None/False: quiet.
    vgg_params: from ``vgg.load_vgg19`` (default: the cached VGG19 weights).
    video_config: the temporal weight, warm start and checkpoint interval (default
      ``SlowVideoConfig()``).
    max_memory: GB a frame's optimization may use (``artistic.check_size``).

  Yields:
    uint8 [h, w, 3] stylized frames in order (those done by an earlier run come from disk).

  Raises:
    UserError: bad configuration, a frame too large for memory, or a NaN loss.

  References:
    Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos", GCPR 2016.
  """
  video_cfg = video_config or SlowVideoConfig()
  config.check()
  workdir = Path(workdir)
  style = _as_float(style)
  if vgg_params is None:
    from nst_jax.core import paths, vgg  # pylint: disable=import-outside-toplevel
    vgg_params = vgg.load_vgg19(paths.resolve_vgg_weights(None))
  run = run_digest(style, config, video_cfg, temporal)
  done = _load_manifest(workdir, run)
  digests: list[str] = []
  prev, bar = None, None
  if progress is True:
    bar = tqdm(desc="frames", unit="frame", dynamic_ncols=True)
  try:
    for t, raw in enumerate(frames):
      frame = _as_float(raw)
      frame = image_io.resize_array(frame, driver.fit_hw(frame.shape[:2], config.size))
      if t == 0:
        artistic.check_size([artistic.Problem(frame, (style,))], config, max_memory)
      digests.append(frame_digest(frame))
      reuse = t < len(done) and done[:t + 1] == digests and frame_path(workdir, t).is_file()
      if reuse:
        out = image_io.to_uint8(image_io.load_image(frame_path(workdir, t)))
      else:
        ckpt = workdir / f".frame_{t:06d}.ckpt"
        result = stylize_frame(vgg_params, frame, style, config, video_cfg, prev,
                               temporal=temporal, checkpoint=ckpt, progress=progress is True)
        out = image_io.to_uint8(result)
        image_io.save_image(frame_path(workdir, t), out.astype(np.float32) / 255.0)
        done = digests[:]
        image_io.write_text(workdir / MANIFEST, json.dumps({"run": run, "frames": done}))
      prev = Previous(frame, out.astype(np.float32) / 255.0)
      if bar is not None:
        bar.update(1)
      elif callable(progress):
        progress(t + 1)
      yield out
  finally:
    if bar is not None:
      bar.close()


def _as_float(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise UserError(f"expected an [H, W, 3] RGB frame, got shape {image.shape}")
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  return np.clip(image, 0.0, 1.0).astype(np.float32)


def stylize_file(source: str | os.PathLike, out: str | os.PathLike, *, style_image,
                 size: int | None = None, start: float = 0.0, duration: float | None = None,
                 fps: float | None = None, temporal: bool = True, max_memory: float | None = None,
                 config: TransferConfig | None = None, vgg_params=None,
                 video_config: SlowVideoConfig | None = None, progress: bool = True) -> Path:
  """``stylize_clip`` from a video file (or frame folder) to a video (or PNG folder).

  The frames, manifest and checkpoints live in a hidden folder beside ``out``
  (``.NAME.frames/``), so rerunning the same command after a kill continues at the frame it
  stopped; the folder is removed once ``out`` is written (atomically, with the source's audio).

  Args:
    source: a video file or a folder of frames (``core.video_io``).
    out: the destination (a video suffix: H.264 MP4 etc.; else a new folder of PNGs).
    style_image: the style image's path, or its pixels (float [h, w, 3] in [0, 1]).
    size: the frames' long side (default ``config.size``).
    start, duration: the cut of ``source``, seconds.
    fps: a frame folder's rate.
    temporal: Ruder et al.'s consistency (False: plain per-frame transfer).
    max_memory: GB one frame's optimization may use.
    config: the transfer configuration (default ``config.gatys()``).
    vgg_params, video_config, progress: as ``stylize_clip`` (progress: a bar over frames).

  Returns:
    ``out``.
  """
  from nst_jax.core import video_io  # pylint: disable=import-outside-toplevel  (PyAV)
  cfg = config or config_lib.gatys()
  if size:
    cfg = dataclasses.replace(cfg, size=int(size))
  style = (image_io.load_image(style_image) if isinstance(style_image, (str, os.PathLike))
           else np.asarray(style_image))
  info = video_io.probe(source, fps=fps)
  out = Path(out)
  writer = video_io.VideoWriter(out, fps=info.fps, audio_from=info, start=start,
                                duration=duration)  # checks ``out`` before the work
  frames = video_io.read_frames(source, start=start, duration=duration, size=cfg.size, fps=fps)
  workdir = out.parent / f".{out.name}.frames"
  total = round((duration or max(0.0, (info.duration or 0.0) - start)) * float(info.fps))
  with tqdm(total=total or None, unit="frame", desc="video (slow)", dynamic_ncols=True,
            disable=not progress) as bar, writer:
    for frame in stylize_clip(frames, style, config=cfg, workdir=workdir, temporal=temporal,
                              progress=lambda _: bar.update(1), vgg_params=vgg_params,
                              video_config=video_config, max_memory=max_memory):
      writer.write(frame)
  shutil.rmtree(workdir, ignore_errors=True)
  return out
