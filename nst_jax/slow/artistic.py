"""Slow artistic style transfer (Gatys et al. 2016): initialization, coarse-to-fine, batches of
problems, luminance-only transfer, checkpoints.

Synopsis::

  from nst_jax import config
  from nst_jax.core import image_io, vgg
  from nst_jax.slow import artistic
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
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.config import INITS, ConfigError, TransferConfig
from nst_jax.core import colors, image_io, memory, objective
from nst_jax.slow import driver


@dataclasses.dataclass
class Problem:
  """One output: its content (None for texture synthesis), styles and their blend weights, and
  the image ``init="net"`` starts from (e.g. a feed-forward network's output; any size, resized
  to the first level's)."""
  content: np.ndarray | None  # [H, W, 3] in [0, 1], full resolution
  styles: Sequence[np.ndarray]  # each [h, w, 3]
  blend: Sequence[float] | None = None
  init: np.ndarray | None = None  # [h, w, 3] in [0, 1]: the first iterate when cfg.init == "net"


def level_sizes(size: int, scales: int, min_long: int = 16) -> list[int]:
  """Long sides of the coarse-to-fine levels, doubling up to ``size``: (512, 3) -> [128, 256, 512];
  a coarse level is never below ``min_long`` (nor above ``size``)."""
  return [min(size, max(min_long, size // 2 ** (scales - 1 - i))) for i in range(scales)]


def fitted_level_sizes(hw: tuple[int, int], cfg: TransferConfig) -> list[int]:
  """``level_sizes`` for an image of shape ``hw``, with coarse levels raised so that their short
  side still reaches the loss's deepest layer (e.g. 32 px over 2 scales: [22, 32], not [16, 32])."""
  need, _ = memory.min_side(tuple(cfg.loss.content_layers) + tuple(cfg.loss.style_layers))
  return level_sizes(cfg.size, cfg.scales, max(16, math.ceil(need * max(hw) / min(hw))))


def initial_image(init: str, content: np.ndarray | None, hw: tuple[int, int], *, seed: int,
                  noise_ratio: float, image: np.ndarray | None = None) -> np.ndarray:
  """content | noise (uniform) | mix (noise_ratio * noise + rest * content) | net (``image``,
  resized to ``hw``) | an image path.

  Raises:
    ConfigError: ``init`` is "net" and no ``image`` was supplied.
  """
  if init == "net":
    if image is None:
      raise ConfigError("init", NET_INIT_MISSING)
    return image_io.resize_array(np.asarray(image, np.float32), hw)
  noise = np.random.default_rng(seed).uniform(0.0, 1.0, hw + (3,)).astype(np.float32)
  if init == "noise" or (content is None and init in INITS):
    return noise
  if init == "content":
    return content
  if init == "mix":
    return noise_ratio * noise + (1.0 - noise_ratio) * content
  return image_io.resize_array(image_io.load_image(init), hw)


NET_INIT_MISSING = ("'net' starts from an image the caller supplies (Problem.init: the arbitrary "
                    "network's output, which `nst-jax optimize --init net` computes); none given")


def first_level_hw(problem: Problem, cfg: TransferConfig) -> tuple[int, int]:
  """(H, W) of the first (coarsest) level's image: the size an ``init="net"`` image is used at."""
  base = problem.content if problem.content is not None else problem.styles[0]
  return driver.fit_hw(base.shape[:2], fitted_level_sizes(base.shape[:2], cfg)[0])


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
  hw = driver.fit_hw(base.shape[:2], long_side)
  targets, inits = [], []
  for i, p in enumerate(problems):
    content = None if p.content is None else image_io.resize_array(p.content, hw)
    styles = [image_io.resize_array(s, driver.fit_hw(s.shape[:2], round(long_side * cfg.style_scale)))
              for s in p.styles]
    targets.append(objective.make_targets(
        vgg_params, None if content is None else jnp.asarray(content)[None],
        [jnp.asarray(s)[None] for s in styles], cfg.loss, p.blend))
    if prev is None:
      inits.append(initial_image(cfg.init, content, hw, seed=cfg.seed + i,
                                 noise_ratio=cfg.noise_ratio, image=p.init))
    else:
      inits.append(np.asarray(jax.image.resize(prev[i], hw + (3,), "bicubic")).clip(0, 1))
  stack = lambda *xs: jnp.stack(xs)
  return jax.tree.map(stack, *targets), jnp.asarray(np.stack(inits))[:, None]


def stylize(vgg_params, problems: Sequence[Problem], cfg: TransferConfig, *, progress: bool = True,
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 50,
            on_chunk: Callable[[int, int, list[np.ndarray]], None] | None = None,
            max_memory: float | None = None,
            on_loss: Callable[[int, int, float], None] | None = None) -> driver.Output:
  """Optimizes one image per problem; all problems must give the same output shape.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    problems: the problems to solve together (one compiled, vmapped program when several).
    cfg: the transfer configuration; ``cfg.level_iters`` (or ``cfg.optim.num_iters``) iterations
      at each level; with ``cfg.init == "net"`` each problem's ``init`` image starts the first
      level.
    progress: show a progress bar.
    checkpoint: file to save progress to and resume from (same config and inputs only).
    checkpoint_every: iterations between checkpoints.
    on_chunk: ``(level, iteration, images)`` after every chunk (for intermediate images).
    on_loss: ``(level or stage, iteration, total loss)`` after every chunk.
    max_memory: GB the run may use (default ``memory.budget_bytes``); a larger estimated peak
      is refused before anything is allocated.

  Returns:
    A ``driver.Output``; on a NaN/Inf loss, the last good images and ``nan_at``.

  Raises:
    UserError: a bad configuration, an output too small for the layers or too large for memory.
    ConfigError: ``init="net"`` without an ``init`` image in every problem.

  References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  """
  cfg.check()
  check_size(problems, cfg, max_memory)
  if cfg.init == "net" and any(p.init is None for p in problems):
    raise ConfigError("init", NET_INIT_MISSING)
  batched = len(problems) > 1
  arrays = [a for p in problems for a in ([p.content] if p.content is not None else []) + list(p.styles)]
  if cfg.init == "net":  # the start is an input too: another init image is another run
    arrays += [p.init for p in problems]
  run_digest = driver.digest(cfg, arrays, repr([p.blend for p in problems]))
  res = driver.run_stages(
      make_loss_fn(cfg.loss), vgg_params, _levels(vgg_params, problems, cfg, batched),
      digest_=run_digest, batched=batched, checkpoint=checkpoint, config=cfg,
      checkpoint_every=checkpoint_every, progress=progress,
      on_chunk=None if on_chunk is None else
      lambda level, it, x, aux: on_chunk(level, it, _unstack(x, len(problems))),
      on_loss=on_loss)
  images = _finish(_unstack(res.x, len(problems)), problems, cfg)
  return driver.Output(images, res.history, res.starts, res.nan_at, res.seconds)


def check_size(problems: Sequence[Problem], cfg: TransferConfig,
               max_memory: float | None = None) -> None:
  """Refuses outputs whose short side is too small for the loss's layers, or whose estimated
  peak memory exceeds ``max_memory`` GB (``memory.budget_bytes``), before any work."""
  base = problems[0].content if problems[0].content is not None else problems[0].styles[0]
  hw = driver.fit_hw(base.shape[:2], cfg.size)
  layers = tuple(cfg.loss.content_layers) + tuple(cfg.loss.style_layers)
  memory.check_min_side(driver.fit_hw(base.shape[:2], fitted_level_sizes(base.shape[:2], cfg)[0]),
                        layers)
  history = 0 if cfg.optim.optimizer == "adam" else cfg.optim.history_size
  memory.check_fits("optimize", hw, memory.budget_bytes(max_memory), batch=len(problems),
                    layers=layers, history=history, remat=cfg.loss.remat)


def _levels(vgg_params, problems, cfg: TransferConfig, batched: bool) -> list[driver.Stage]:
  """One ``driver.Stage`` per coarse-to-fine level, each starting from the previous result."""
  stages = []
  base = problems[0].content if problems[0].content is not None else problems[0].styles[0]
  for level, long_side in enumerate(fitted_level_sizes(base.shape[:2], cfg)):
    optim_cfg = cfg.optim
    if cfg.level_iters:
      optim_cfg = dataclasses.replace(optim_cfg, num_iters=cfg.level_iters[level])

    def inputs(prev, long_side=long_side):
      prev = None if prev is None else _unstack(prev, len(problems))
      targets, x0 = _level_inputs(vgg_params, problems, cfg, long_side, prev)
      if not batched:
        targets, x0 = jax.tree.map(lambda a: a[0], targets), x0[0]
      return x0, targets

    stages.append(driver.Stage(optim_cfg, inputs, f"level {level + 1}/{cfg.scales} {long_side}px"))
  return stages


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
