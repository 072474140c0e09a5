"""Slow artistic style transfer (Gatys et al. 2016): initialization, coarse-to-fine, batches of
problems, luminance-only transfer, checkpoints.

Synopsis::

  from nst_jax import artistic, config, vgg, image_io
  params = vgg.load_vgg19(path)
  content = image_io.load_image("photo.jpg")
  style = image_io.load_image("painting.jpg")
  out = artistic.stylize(params, [artistic.Problem(content, (style,))], config.gatys())
  out.images[0]                # float32 [H, W, 3] in [0, 1]
  out.history["style"]         # per iteration, all levels

A list of several problems of the same output shape is solved at once (``jax.vmap`` of the whole
solver in one compiled program): several contents with the same style, or one content with
several styles.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import colors, image_io, objective, optimize
from nst_jax.config import INITS, TransferConfig
from nst_jax.errors import UserError


@dataclasses.dataclass
class Problem:
  """One output: its content (None for texture synthesis), styles and their blend weights."""
  content: np.ndarray | None  # [H, W, 3] in [0, 1], full resolution
  styles: Sequence[np.ndarray]  # each [h, w, 3]
  blend: Sequence[float] | None = None


@dataclasses.dataclass
class Output:
  images: list[np.ndarray]  # one [H, W, 3] per problem
  history: dict[str, np.ndarray]  # term -> [iterations] summed over problems
  level_starts: list[int]  # iteration at which each coarse-to-fine level starts
  nan_at: int | None = None
  seconds: float = 0.0


def level_sizes(size: int, scales: int) -> list[int]:
  """Long sides of the coarse-to-fine levels, doubling up to ``size``: (512, 3) -> [128, 256, 512]."""
  return [max(16, size // 2 ** (scales - 1 - i)) for i in range(scales)]


def fit_hw(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
  h, w = hw
  s = long_side / max(h, w)
  return max(1, round(h * s)), max(1, round(w * s))


def initial_image(init: str, content: np.ndarray | None, hw: tuple[int, int], *, seed: int,
                  noise_ratio: float) -> np.ndarray:
  """content | noise (uniform) | mix (noise_ratio * noise + rest * content) | an image path."""
  noise = np.random.default_rng(seed).uniform(0.0, 1.0, hw + (3,)).astype(np.float32)
  if init == "noise" or (content is None and init in INITS):
    return noise
  if init == "content":
    return content
  if init == "mix":
    return noise_ratio * noise + (1.0 - noise_ratio) * content
  return image_io.resize_array(image_io.load_image(init), hw)


def check_config(cfg: TransferConfig) -> None:
  """Validates a transfer configuration (UserError on bad values)."""
  objective.check_loss_config(cfg.loss)
  if cfg.init not in INITS and not Path(cfg.init).is_file():
    raise UserError(f"--init must be one of {', '.join(INITS)} or an existing image, got {cfg.init!r}")
  if cfg.size < 16 or cfg.scales < 1 or cfg.style_scale <= 0:
    raise UserError("need --size >= 16, --scales >= 1 and --style-scale > 0")
  if cfg.optim.num_iters < 0 or cfg.optim.chunk < 1 or any(n < 0 for n in cfg.level_iters):
    raise UserError("need --iters >= 0 and --chunk >= 1")
  if cfg.level_iters and len(cfg.level_iters) != cfg.scales:
    raise UserError(f"--level-iters needs one count per level ({cfg.scales}), "
                    f"got {len(cfg.level_iters)}")
  if cfg.original_colors not in ("",) + colors.SPACES:
    raise UserError(f"--original-colors must be one of {', '.join(colors.SPACES)}")


@functools.lru_cache(maxsize=16)
def make_loss_fn(loss_cfg):
  """``(x, vgg_params, targets) -> (total, terms)`` for ``optimize.run`` (one per config, so
  compiled programs are reused across calls)."""

  def loss_fn(x, vgg_params, targets):
    terms = objective.loss_terms(vgg_params, x, targets, loss_cfg)
    return jnp.sum(terms["total"]), terms

  return loss_fn


def _level_inputs(vgg_params, problems, cfg, long_side, prev):
  """Targets and initial images of all problems at one level, stacked on a problem axis."""
  base = problems[0].content if problems[0].content is not None else problems[0].styles[0]
  hw = fit_hw(base.shape[:2], long_side)
  targets, inits = [], []
  for i, p in enumerate(problems):
    content = None if p.content is None else image_io.resize_array(p.content, hw)
    styles = [image_io.resize_array(s, fit_hw(s.shape[:2], round(long_side * cfg.style_scale)))
              for s in p.styles]
    targets.append(objective.make_targets(
        vgg_params, None if content is None else jnp.asarray(content)[None],
        [jnp.asarray(s)[None] for s in styles], cfg.loss, p.blend))
    if prev is None:
      inits.append(initial_image(cfg.init, content, hw, seed=cfg.seed + i,
                                 noise_ratio=cfg.noise_ratio))
    else:
      inits.append(np.asarray(jax.image.resize(prev[i], hw + (3,), "bicubic")).clip(0, 1))
  stack = lambda *xs: jnp.stack(xs)
  return jax.tree.map(stack, *targets), jnp.asarray(np.stack(inits))[:, None]


def config_digest(cfg: TransferConfig, problems: Sequence[Problem]) -> str:
  """Identifies a run (config and input pixels), so a checkpoint is only resumed by the same run."""
  h = hashlib.sha256(repr(cfg).encode())
  for p in problems:
    for a in ([p.content] if p.content is not None else []) + list(p.styles):
      h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(p.blend).encode())
  return h.hexdigest()[:16]


class Checkpointer:
  """Saves (level, iteration, image, solver state, history) every N iterations; restores it."""

  def __init__(self, path: str | os.PathLike | None, every: int, digest: str):
    self.path, self.every, self.digest = (Path(path) if path else None), every, digest
    self._last = (None, 0)  # (level, iteration) of the last save

  def load(self) -> dict | None:
    if not self.path or not self.path.is_file():
      return None
    raw = flax.serialization.msgpack_restore(self.path.read_bytes())
    return raw if raw.get("digest") == self.digest else None

  def save(self, level, it, x, state, history, done_levels, force=False):
    # Iterations count from 0 at every level (stage), so a new level always saves.
    if not self.path or not (force or level != self._last[0] or it - self._last[1] >= self.every):
      return
    self._last = (level, it)
    data = {"digest": self.digest, "level": level, "iteration": it, "x": np.asarray(x),
            "state": flax.serialization.to_state_dict(jax.device_get(state)),
            "history": history, "done": done_levels}
    blob = flax.serialization.msgpack_serialize(data)
    image_io.atomic_write(self.path, lambda tmp: Path(tmp).write_bytes(blob))

  def remove(self):
    if self.path and self.path.is_file():
      self.path.unlink()


def stylize(vgg_params, problems: Sequence[Problem], cfg: TransferConfig, *, progress: bool = True,
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 50,
            on_chunk: Callable[[int, int, list[np.ndarray]], None] | None = None) -> Output:
  """Optimizes one image per problem; all problems must give the same output shape.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    problems: the problems to solve together (one compiled, vmapped program when several).
    cfg: the transfer configuration; ``cfg.level_iters`` (or ``cfg.optim.num_iters``) iterations
      at each level.
    progress: show a progress bar.
    checkpoint: file to save progress to and resume from (same config and inputs only).
    checkpoint_every: iterations between checkpoints.
    on_chunk: ``(level, iteration, images)`` after every chunk (for intermediate images).

  Returns:
    An ``Output``; on a NaN/Inf loss, the last good images and ``nan_at``.

  References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  """
  check_config(cfg)
  batched = len(problems) > 1
  ckpt = Checkpointer(checkpoint, checkpoint_every, config_digest(cfg, problems))
  saved = ckpt.load() or {}
  loss_fn = make_loss_fn(cfg.loss)
  pieces, starts, prev, total_seconds = [], [], None, 0.0
  done = saved.get("done", {})
  for level, long_side in enumerate(level_sizes(cfg.size, cfg.scales)):
    optim_cfg = cfg.optim
    if cfg.level_iters:
      optim_cfg = dataclasses.replace(optim_cfg, num_iters=cfg.level_iters[level])
    targets, x0 = _level_inputs(vgg_params, problems, cfg, long_side, prev)
    if not batched:
      targets, x0 = jax.tree.map(lambda a: a[0], targets), x0[0]
    starts.append(sum(len(p["total"]) for p in pieces))
    if str(level) in done:  # finished before an interruption
      pieces.append(done[str(level)]["history"])
      prev = list(np.asarray(done[str(level)]["x"]).reshape((len(problems),) + x0.shape[-3:]))
      continue
    state, start = None, 0
    if saved.get("level") == level:
      template = optimize.init_state(loss_fn, x0, vgg_params, targets, optim_cfg, batched=batched)
      state = flax.serialization.from_state_dict(template, saved["state"])
      x0, start = jnp.asarray(saved["x"]), int(saved["iteration"])
    earlier = saved.get("history") if saved.get("level") == level else None

    def chunk_cb(it, x, st, hist, level=level, earlier=earlier):
      full = join_history(earlier, hist)
      ckpt.save(level, it, x, st, full, done)
      if on_chunk is not None:
        on_chunk(level, it, _unstack(x, len(problems)))

    res = optimize.run(loss_fn, x0, vgg_params, targets, optim_cfg, batched=batched, state=state,
                       start=start, progress=progress, on_chunk=chunk_cb,
                       desc=f"level {level + 1}/{cfg.scales} {long_side}px")
    total_seconds += res.seconds
    hist = join_history(earlier, res.history)
    pieces.append(hist)
    prev = _unstack(res.image, len(problems))
    if res.nan_at is not None:
      return Output(_finish(prev, problems, cfg), concat_levels(pieces), starts,
                    starts[-1] + res.nan_at, total_seconds)
    done[str(level)] = {"history": hist, "x": np.asarray(res.image)}
  ckpt.remove()
  return Output(_finish(prev, problems, cfg), concat_levels(pieces), starts, None, total_seconds)


def join_history(earlier, hist):
  """A level's history saved before an interruption, followed by the resumed part."""
  if not earlier:
    return hist
  if not hist:
    return earlier
  return {k: np.concatenate([np.asarray(earlier[k]), hist[k]]) for k in hist}


def concat_levels(pieces):
  """Per-level histories -> one history over all iterations, summed over problems."""
  pieces = [p for p in pieces if p]
  if not pieces:
    return {}
  joined = {k: np.concatenate([np.asarray(p[k]) for p in pieces]) for k in pieces[0]}
  return {k: v.sum(axis=tuple(range(1, v.ndim))) for k, v in joined.items()}


def _unstack(x, n) -> list[np.ndarray]:
  x = np.asarray(x).reshape((n,) + tuple(np.shape(x)[-3:]))
  return [x[i] for i in range(n)]


def _finish(images, problems, cfg) -> list[np.ndarray]:
  out = []
  for img, p in zip(images, problems):
    if cfg.original_colors and p.content is not None:
      img = colors.original_colors(img, image_io.resize_array(p.content, img.shape[:2]),
                                   cfg.original_colors)
    out.append(np.clip(img, 0.0, 1.0).astype(np.float32))
  return out
