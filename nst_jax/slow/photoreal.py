"""Slow photorealistic style transfer (Luan et al. 2017, "Deep Photo Style Transfer").

Synopsis::

  from nst_jax.core import image_io, vgg
  from nst_jax.slow import photoreal
  params = vgg.load_vgg19(path)
  content = image_io.load_image("in1.png")
  style = image_io.load_image("tar1.png")
  out = photoreal.stylize(params, content, style, config.PhotoConfig(size=256))
  out.images[0]              # float32 [H, W, 3] in [0, 1]
  out.history["matting"]     # the weighted matting penalty per iteration (0 in stage 1)

The objective is the content loss at conv4_2, the masked Gram loss at conv1_1..conv5_1 (pre-ReLU,
which the reference thesis found better), TV, and the photorealism penalty
``lambda * sum_c V_c^T L V_c / N`` with L the content's matting Laplacian (N pixels). Region
masks come from the user (Luan's colour code) or from ``regions.auto_masks``. The Laplacian's window
coefficients are computed once per run and passed to the loss as an argument, as are the targets,
so both stages run the same compiled program (stage 1 with a zero matting weight).

Scales. Luan's Torch code adds ``lambda * 2 L v`` (lambda = 1e4) to gradients of caffe-scale
losses summed over pixels; our losses are means over positions and pixels are in [0, 1], so the
penalty is divided by N to be size-independent and its weight calibrated on the shared pairs
(docs/photoreal.md): with ``style_weight`` 1e-4, ``matting_weight`` = 3e9 per pixel cuts stage 1's
matting energy 20-70x; 1e7 barely moves it. On the pixels the penalty alone plateaus a few times
above the content's own matting energy (more stage-2 iterations do not help).

Parameterization. By default the penalized stage optimizes an image x whose smooth local affine
step is the output (``output_image``): O solves ``(I + affine_weight L) O = x`` (L the content's
Laplacian at ``EVAL_EPS``; conjugate gradients with the matrix-free apply, differentiated by one
more solve), the nearest image to x under a matting penalty. The losses score O, so the
iterations spend themselves on what survives the step; without any post-step this beat the
previous default (a guided-filter parameterization plus a post-step) on both the matting and the
style measure (docs/photoreal.md, fifth calibration). ``parameterization="guided"`` uses the
guided filter instead; ``"pixels"`` is Luan's.

Post-step (Luan's optional one, off by default; ``smooth``): the output smoothed with the content
as guide: the "smooth local affine" step (``affine_smooth``) or one guided-filter pass
(``guided_smooth``); ``matting_budget`` picks the step's weight per image.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.config import EVAL_EPS, LossConfig, OptimConfig, PhotoConfig
from nst_jax.core import image_io, losses, matting, memory, objective, regions, smoothing
from nst_jax.core.errors import UserError
from nst_jax.slow import driver, lbfgsb

PARAM_TOL = 1e-3  # relative residual of the "affine" parameterization's solves (float32: >~5e-5)
# A penalized stage's seconds per iteration over an unpenalized one's with the "affine" and
# "guided" parameterizations (benchmarks/photo_stage_bench.py, 2-core CPU, 2026-12-05: 1.52 at
# 256 px, 1.54 at 512 px; the lean L-BFGS-B, absent regions dropped).
PENALIZED_COST = 1.5


def masked_style_targets(vgg_params, style: jax.Array, style_masks, present,
                         cfg: PhotoConfig) -> dict:
  """Per-layer masked Grams of the style image.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    style: [1, h, w, 3] in [0, 1].
    style_masks: [R, h, w] soft regions of the style image.
    present: [R], 1 for regions present in both images (``regions.pair_regions``).
    cfg: the configuration (layers, pooling, mask pooling).

  Returns:
    ``{layer: {"gram": [1, R, C, C], "present": [1, R]}}``.

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017.
  """
  layers = cfg.loss.style_layers
  out = _masked_style_targets(vgg_params, style, jnp.asarray(style_masks, jnp.float32),
                              jnp.asarray(present, jnp.float32), layers, cfg.loss.pooling,
                              cfg.loss.conv_impl, cfg.mask_pooling)
  return {l: out[l] for l in layers}  # the configuration's order (jit sorts dict keys)


# One program per style shape and the settings that matter, not a dispatch per op.
@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _masked_style_targets(vgg_params, style, style_masks, present, layers, pooling, conv_impl,
                          mask_pooling) -> dict:
  feats = objective.target_features(vgg_params, style, layers=layers, pooling=pooling,
                                    conv_impl=conv_impl)
  per_layer = regions.downsample_masks(style_masks, layers, mask_pooling)  # {l: [R, h', w']}
  return {l: {"gram": losses.masked_gram(feats[l], per_layer[l][None]), "present": present[None]}
          for l in layers}


def make_targets(vgg_params, content: np.ndarray, style: np.ndarray, content_masks,
                 style_masks, cfg: PhotoConfig) -> dict:
  """Targets for ``objective.loss_terms`` with region masks (the masked style term).

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    content: [H, W, 3] at the output size.
    style: [h, w, 3].
    content_masks: [R, H, W]; style_masks: [R, h, w] (same region order).
    cfg: the configuration.

  Returns:
    ``{"content": {layer: [1, .., C]}, "styles": ({layer: {"gram", "present"}},),
    "blend": [1], "masks": {layer: [1, R, h, w]}}``.
  """
  present = regions.pair_regions(content_masks, style_masks)
  if not present.any():
    raise UserError("the content and style masks share no region; paint matching colours")
  # Regions missing from either image add nothing to the loss but cost a masked Gram per layer
  # and evaluation (colour masks have all 9 of Luan's codes, most empty: stage 1 cost 2.4x a
  # Gatys iteration at 256 px with them, benchmarks/photo_stage_bench.py): keep the shared ones.
  keep = np.flatnonzero(present)
  content_masks, style_masks = np.asarray(content_masks)[keep], np.asarray(style_masks)[keep]
  present = present[keep]
  content_b = jnp.asarray(content)[None]
  content_feats = objective.target_features(
      vgg_params, content_b, layers=cfg.loss.content_layers, pooling=cfg.loss.pooling,
      conv_impl=cfg.loss.conv_impl)
  per_layer = regions.downsample_masks(jnp.asarray(content_masks, jnp.float32),
                                     cfg.loss.style_layers, cfg.mask_pooling)
  return {"content": content_feats,
          "styles": (masked_style_targets(vgg_params, jnp.asarray(style)[None], style_masks,
                                          present, cfg),),
          "blend": jnp.ones(1, jnp.float32),
          "masks": {l: m[None] for l, m in per_layer.items()}}


class AffineStep(NamedTuple):
  """The smooth local affine step as a parameterization: the output O of x solves
  ``(I + weight L) O = x``, L the content's matting Laplacian (``affine_system_solve``)."""
  coeffs: matting.MattingCoefficients
  weight: jax.Array


def output_image(x: jax.Array, aux: dict) -> jax.Array:
  """The image [1, H, W, 3] that the optimized variable ``x`` stands for: x itself
  (aux["filtered"] = 0) or, with aux["filtered"] = 1, x smoothed by aux["filter"], content as
  guide: a ``smoothing.GuidedFilter`` (the "guided" parameterization) or an ``AffineStep``
  ("affine"). Both are linear maps of x whose outputs are (nearly) locally affine in the
  content's colours."""
  step = aux["filter"]
  if isinstance(step, AffineStep):
    smooth = lambda v: smoothing.affine_system_solve(step.coeffs, v, v, step.weight, tol=PARAM_TOL)
  else:
    smooth = lambda v: smoothing.apply_guided_filter(step, v[0])[None]
  return jax.lax.cond(aux["filtered"] > 0, smooth, lambda v: v, x)


# For callers outside a traced function: called eagerly, the cond compiles anew on every call
# (its branches are new closures each time).
_output_image_jit = jax.jit(output_image)


@functools.lru_cache(maxsize=16)
def make_loss_fn(loss_cfg: LossConfig) -> lbfgsb.WarmStartedLoss:
  """``(x, vgg_params, aux) -> (total, terms)`` of ``output_image(x, aux)`` with aux =
  {"targets", "matting", "matting_weight", "filter", "filtered"}; one per loss config, so all
  stages reuse one compiled program.

  A ``lbfgsb.WarmStartedLoss``: called, its "affine" solves start cold (from x, and from 0 for
  the gradient's); the L-BFGS-B solver instead uses ``warm_value_and_grad``, which starts both
  solves from the previous evaluation's solutions."""

  def scored(image, vgg_params, aux):  # the loss of the output image itself
    terms = objective.loss_terms(vgg_params, image, aux["targets"], loss_cfg)
    pixels = image.shape[-3] * image.shape[-2]
    energy = matting.energy_with_coefficients(aux["matting"], image) / pixels     # [B]
    terms["matting"] = aux["matting_weight"] * energy
    terms["total"] = terms["total"] + terms["matting"]
    return jnp.sum(terms["total"]), terms

  def loss_fn(x, vgg_params, aux):
    return scored(output_image(x, aux), vgg_params, aux)

  return lbfgsb.WarmStartedLoss(
      loss_fn, functools.partial(warm_value_and_grad, scored),
      lambda x, vgg_params, aux: WarmStart(x, jnp.zeros_like(x)))


class WarmStart(NamedTuple):
  """The "affine" parameterization's last solutions: starts for the next evaluation's solves."""
  output: jax.Array    # [1, H, W, 3] O with (I + w L) O = x
  gradient: jax.Array  # [1, H, W, 3] the loss's gradient in x, (I + w L)^-1 (its gradient in O)


def warm_value_and_grad(scored: Callable, x: jax.Array, vgg_params, aux: dict,
                        warm: WarmStart):
  """``scored``'s value, terms and gradient at ``output_image(x, aux)``, the gradient taken in
  x, and the new ``WarmStart``.

  The "affine" step O = (I + w L)^-1 x is linear and symmetric, so the gradient in x is one
  more solve with the gradient in O as right-hand side (what ``lax.custom_linear_solve``
  does). Written out here, both solves start from ``warm`` (the solutions at the last accepted
  point, scaled by ``smoothing.conjugate_gradients``'s ``scale_start``) and stop at the same
  relative residual ``PARAM_TOL`` as cold ones, so value and gradient agree with the cold
  path's within that tolerance, while a short step needs far fewer iterations. Other
  parameterizations differentiate through ``output_image`` and pass ``warm`` on.
  """
  step = aux["filter"]
  value_and_grad = jax.value_and_grad(scored, has_aux=True)
  if not isinstance(step, AffineStep):
    image, pullback = jax.vjp(lambda v: output_image(v, aux), x)
    (value, terms), grad_image = value_and_grad(image, vgg_params, aux)
    return (value, terms), pullback(grad_image)[0], warm
  solve = lambda kind, b, x0: smoothing.affine_cg(step.coeffs, b, x0, step.weight,
                                                  tol=PARAM_TOL, kind=kind, scale_start=True)
  filtered = aux["filtered"] > 0
  image = jax.lax.cond(filtered, lambda: solve("forward", x, warm.output), lambda: x)
  (value, terms), grad_image = value_and_grad(image, vgg_params, aux)
  grad = jax.lax.cond(filtered, lambda: solve("adjoint", grad_image, warm.gradient),
                      lambda: grad_image)
  return (value, terms), grad, WarmStart(image, grad)


def prepare_masks(vgg_params, content, style, content_masks, style_masks, cfg: PhotoConfig):
  """Given masks resized to the images, or automatic ones: ([R, H, W], [R, h, w])."""
  if (content_masks is None) != (style_masks is None):
    raise UserError("give both a content mask and a style mask, or neither (automatic masks)")
  if content_masks is None:
    return regions.auto_masks(vgg_params, content, style, num_regions=cfg.num_regions,
                            seed=cfg.seed)
  content_masks, style_masks = np.asarray(content_masks), np.asarray(style_masks)
  if content_masks.shape[0] != style_masks.shape[0]:
    raise UserError(f"region counts differ: {content_masks.shape[0]} vs {style_masks.shape[0]}")
  return (regions.resize_masks(content_masks, content.shape[:2]),
          regions.resize_masks(style_masks, style.shape[:2]))


def _stage_plan(cfg: PhotoConfig) -> list[tuple[OptimConfig, dict]]:
  """(optimizer config, the stage's aux scalars: matting weight, filtered) per stage."""
  weights = [0.0, cfg.matting_weight] if cfg.stages == 2 else [cfg.matting_weight]
  iters = cfg.stage_iters or (cfg.optim.num_iters,) * cfg.stages
  smoothed = cfg.parameterization != "pixels"
  scalars = [{"matting_weight": w, "filtered": float(smoothed and w > 0)} for w in weights]
  return [(dataclasses.replace(cfg.optim, num_iters=n), {k: jnp.asarray(v, jnp.float32)
                                                         for k, v in sc.items()})
          for n, sc in zip(iters, scalars)]


def stylize(vgg_params, content: np.ndarray, style: np.ndarray, cfg: PhotoConfig, *,
            content_masks: np.ndarray | None = None, style_masks: np.ndarray | None = None,
            progress: bool = True, checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int = 50,
            on_chunk: Callable[[int, int, list[np.ndarray]], None] | None = None,
            max_memory: float | None = None,
            on_loss: Callable[[int, int, float], None] | None = None) -> driver.Output:
  """Photorealistic transfer of ``style``'s look onto ``content``.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    content: [H, W, 3] in [0, 1], any size (resized to ``cfg.size``).
    style: [h, w, 3] in [0, 1].
    cfg: the configuration.
    content_masks, style_masks: [R, H, W] / [R, h, w] region masks (e.g.
      ``regions.load_color_mask``), both or neither; neither: ``regions.auto_masks``.
    progress: show a progress bar.
    checkpoint: folder to save progress to and resume from (same config, inputs and masks
      only; ``driver.Checkpointer``).
    checkpoint_every: iterations between checkpoints.
    on_chunk: ``(stage, iteration, [image])`` after every chunk.
    on_loss: ``(level or stage, iteration, total loss)`` after every chunk.
    max_memory: GB the run may use (default ``memory.budget_bytes``); a larger estimated peak
      is refused (UserError) before anything is allocated.

  Returns:
    ``driver.Output`` with one image; ``level_starts`` holds the stages' first iterations.

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017.
  """
  cfg.check()
  hw = driver.fit_hw(content.shape[:2], cfg.size)
  layers = tuple(cfg.loss.content_layers) + tuple(cfg.loss.style_layers)
  memory.check_min_side(hw, layers)
  memory.check_fits("photo", hw, memory.budget_bytes(max_memory), layers=layers,
                    history=0 if cfg.optim.optimizer == "adam" else cfg.optim.history_size)
  content = image_io.resize_array(content, hw)
  style = image_io.resize_array(style, driver.fit_hw(style.shape[:2],
                                                     round(cfg.size * cfg.style_scale)))
  cm, sm = prepare_masks(vgg_params, content, style, content_masks, style_masks, cfg)
  aux = {"targets": make_targets(vgg_params, content, style, cm, sm, cfg),
         "matting": matting.matting_coefficients(jnp.asarray(content)),
         "filter": parameterization_step(content, cfg)}
  stages = [driver.Stage(optim_cfg, lambda prev, scalars=scalars: (
                _start(prev, content), dict(aux, **scalars)),
                         f"stage {stage + 1}/{cfg.stages} {max(hw)}px")
            for stage, (optim_cfg, scalars) in enumerate(_stage_plan(cfg))]
  clock = ExpectedTime([o.num_iters for o, _ in _stage_plan(cfg)], stage_costs(cfg))

  def chunk_cb(stage, it, x, aux):
    if progress:
      clock.tick(stage, it)
    if on_chunk is not None:
      on_chunk(stage, it, [np.asarray(_output_image_jit(x, aux)[0])])

  res = driver.run_stages(
      make_loss_fn(cfg.loss), vgg_params, stages,
      digest_=driver.digest(cfg, (content, style, cm, sm)), checkpoint=checkpoint, config=cfg,
      checkpoint_every=checkpoint_every, progress=progress, on_chunk=chunk_cb,
      on_loss=on_loss)
  image = post_smooth(np.asarray(_output_image_jit(res.x, res.aux))[0], content, cfg)
  return driver.Output([image], res.history, res.starts, res.nan_at, res.seconds)


def stage_costs(cfg: PhotoConfig) -> list[float]:
  """Each stage's seconds per iteration relative to an unpenalized stage's (``PENALIZED_COST``
  for a penalized stage that solves or filters, else 1)."""
  smoothed = cfg.parameterization != "pixels"
  return [PENALIZED_COST if smoothed and sc["matting_weight"] > 0 else 1.0
          for _, sc in _stage_plan(cfg)]


def expected_seconds(rate: float, stage: int, iteration: int, stage_iters: list[int],
                     costs: list[float]) -> float:
  """Seconds left of a run: ``rate`` (s/iteration measured in ``stage``) times the iterations
  left in ``stage`` (from ``iteration``) and after it, each weighted by its stage's cost relative
  to ``stage``'s (``stage_costs``)."""
  left = [(n - iteration if s == stage else n) * costs[s] / costs[stage]
          for s, n in enumerate(stage_iters) if s >= stage]
  return rate * sum(left)


class ExpectedTime:
  """Prints "expected ~N s more" once, from the first chunk timed after a stage's first (which
  compiles): ``tick(stage, iteration)`` after every chunk; ``clock`` for tests."""

  def __init__(self, stage_iters: list[int], costs: list[float], clock=time.perf_counter,
               out=None):
    self.stage_iters, self.costs, self.clock, self.out = stage_iters, costs, clock, out
    self.mark, self.done = None, False

  def tick(self, stage: int, iteration: int) -> None:
    now = self.clock()
    if not self.done and self.mark and self.mark[0] == stage and iteration > self.mark[1]:
      rate = (now - self.mark[2]) / (iteration - self.mark[1])
      left = expected_seconds(rate, stage, iteration, self.stage_iters, self.costs)
      if left > 0:
        print(f"expected ~{left:.0f} s more ({rate:.2f} s/iteration in stage {stage + 1}; a "
              f"penalized stage costs ~{PENALIZED_COST:g}x an unpenalized one)",
              file=self.out or sys.stderr)
      self.done = True
    self.mark = (stage, iteration, now)


def _start(prev, content: np.ndarray) -> jax.Array:
  """A stage's initial x: the previous stage's result, or the content for the first."""
  return jnp.asarray(content)[None] if prev is None else prev


def parameterization_step(content: np.ndarray, cfg: PhotoConfig):
  """aux["filter"] for ``output_image``: the content's ``AffineStep`` (``cfg.affine_weight``,
  eps ``EVAL_EPS``) for the "affine" parameterization, else its guided filter (``smooth_radius``
  or ``default_radius``, ``smooth_eps``; unused by "pixels")."""
  if cfg.parameterization == "affine":
    coeffs = matting.matting_coefficients(jnp.asarray(content, jnp.float32), eps=EVAL_EPS)
    return AffineStep(coeffs, jnp.float32(cfg.affine_weight))
  radius = cfg.smooth_radius or smoothing.default_radius(content.shape[:2])
  return smoothing.guided_filter_for(content, radius=radius, eps=cfg.smooth_eps)


def post_smooth(image: np.ndarray, content: np.ndarray, cfg: PhotoConfig) -> np.ndarray:
  """The configured post-step of ``image`` [H, W, 3] (``content``: the guide, same size): none
  (``cfg.smooth`` off), ``affine_smooth`` or ``guided_smooth``; float32 in [0, 1]."""
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if not cfg.smooth:
    return image
  if cfg.smooth_method == "affine":
    return smoothing.affine_smooth(image, content, weight=cfg.smooth_weight, budget=cfg.matting_budget)[0]
  return smoothing.guided_smooth(image, content, radius=cfg.smooth_radius, eps=cfg.smooth_eps)
