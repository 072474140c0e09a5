"""Slow photorealistic style transfer (Luan et al. 2017, "Deep Photo Style Transfer").

Synopsis::

  from nst_jax import photoreal, vgg, image_io
  params = vgg.load_vgg19(path)
  content = image_io.load_image("in1.png")
  style = image_io.load_image("tar1.png")
  out = photoreal.stylize(params, content, style, photoreal.PhotoConfig(size=256))
  out.images[0]              # float32 [H, W, 3] in [0, 1]
  out.history["matting"]     # the weighted matting penalty per iteration (0 in stage 1)

The objective is the content loss at conv4_2, the masked Gram loss at conv1_1..conv5_1 (pre-ReLU,
which the reference thesis found better), TV, and the photorealism penalty
``lambda * sum_c V_c^T L V_c / N`` with L the content's matting Laplacian (N pixels). Region
masks come from the user (Luan's colour code) or from ``masks.auto_masks``. The Laplacian's window
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
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import artistic, image_io, losses, masks, matting, objective, optimize
from nst_jax.config import LossConfig, OptimConfig
from nst_jax.errors import UserError

EVAL_EPS = 1e-4  # matting_ratio's regulariser (see there)
SMOOTH_RADIUS_DIVISOR = 24  # default guided-filter radius: long side / 24 (3 px at 64, 21 at 512)
# The post-step of feed-forward photorealistic networks (``inference``): long side / 12, twice
# the slow method's, whose optimizer already leaves little texture (docs/fast_photoreal.md).
FAST_SMOOTH_RADIUS_DIVISOR = 12
SMOOTH_METHODS = ("affine", "guided")
AFFINE_MAX_ITERS = 1000  # conjugate-gradient iterations of the smooth local affine post-step
AFFINE_WEIGHT = 1.2  # the smooth local affine post-step's default weight (docs/photoreal.md)
AFFINE_MIN_WEIGHT, AFFINE_MAX_WEIGHT = 1 / 64, 1e4  # the weights a matting budget may pick
LUAN_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
PARAMETERIZATIONS = ("guided", "pixels", "affine")  # what the penalized stages optimize
PARAM_TOL = 1e-3  # relative residual of the "affine" parameterization's solves (float32: >~5e-5)


def _photo_loss() -> LossConfig:
  return LossConfig(content_layers=("conv4_2",), style_layers=LUAN_STYLE_LAYERS,
                    style_weight=1e-4, tv_weight=1e2)


@dataclass(frozen=True)
class PhotoConfig:
  """Slow photorealistic transfer (hashable; a static argument of the compiled loss)."""
  loss: LossConfig = field(default_factory=_photo_loss)
  optim: OptimConfig = field(default_factory=lambda: OptimConfig(num_iters=300))
  matting_weight: float = 3e9  # times sum_c V_c^T L V_c / N, N = pixels (calibrated)
  stages: int = 2  # 2: without the penalty, then with it (Luan); 1: with it from the content
  stage_iters: tuple[int, ...] = ()  # iterations per stage; () = optim.num_iters each
  # What the stages with the penalty optimize: "affine", an image whose smooth local affine
  # step (I + affine_weight L)^-1 (content's L at EVAL_EPS) is the output; "guided", an image
  # whose guided filter (content as guide, smooth_radius / smooth_eps) is; "pixels": the output
  # itself (Luan). Calibrated in docs/photoreal.md (fifth calibration).
  parameterization: str = "affine"
  affine_weight: float = 30.0
  size: int = 512  # long side of the output, pixels
  style_scale: float = 1.0  # style image long side relative to the output's
  num_regions: int = 3  # automatic masks only
  mask_pooling: str = "avg"  # how masks follow VGG's pools (masks.downsample_masks)
  smooth: bool = False  # the post-step (Luan's optional one), content as guide
  smooth_method: str = "affine"  # "affine": affine_smooth; "guided": guided_smooth, one pass
  smooth_weight: float = AFFINE_WEIGHT  # affine: the Laplacian's weight
  # affine: > 0 picks the weight per image, the least that keeps the output's matting_ratio
  # within this (0: smooth_weight for all)
  matting_budget: float = 0.0
  smooth_radius: int = 0  # guided filter (post-step "guided" and the parameterization): box
  # radius, 0: long side / 24, at least 1 (calibrated, docs/photoreal.md)
  smooth_eps: float = 1e-4
  seed: int = 0


def check_config(cfg: PhotoConfig) -> None:
  """Validates a photorealistic configuration (UserError on bad values)."""
  objective.check_loss_config(cfg.loss)
  if cfg.loss.style_loss != "gram":
    raise UserError("photorealistic transfer uses the masked Gram loss; --style-loss must be gram")
  if cfg.stages not in (1, 2):
    raise UserError(f"--stages must be 1 or 2, got {cfg.stages}")
  if cfg.stage_iters and len(cfg.stage_iters) != cfg.stages:
    raise UserError(f"--stage-iters needs one count per stage ({cfg.stages})")
  if cfg.size < 16 or cfg.style_scale <= 0 or cfg.num_regions < 1:
    raise UserError("need --size >= 16, --style-scale > 0 and --regions >= 1")
  if cfg.optim.num_iters < 0 or cfg.optim.chunk < 1 or any(n < 0 for n in cfg.stage_iters):
    raise UserError("need --iters >= 0 and --chunk >= 1")
  if not cfg.matting_weight >= 0 or cfg.smooth_eps <= 0 or cfg.smooth_radius < 0:
    raise UserError("need --matting-weight >= 0, --smooth-eps > 0 and --smooth-radius >= 0")
  if not (cfg.matting_budget >= 0 and cfg.smooth_weight > 0 and cfg.affine_weight > 0):
    raise UserError("need --matting-budget >= 0, --smooth-weight > 0 and --affine-weight > 0")
  if cfg.smooth_method not in SMOOTH_METHODS:
    raise UserError(f"--smooth-method must be one of {', '.join(SMOOTH_METHODS)}")
  if cfg.parameterization not in PARAMETERIZATIONS:
    raise UserError(f"--parameterization must be one of {', '.join(PARAMETERIZATIONS)}")
  if cfg.mask_pooling not in masks.MASK_POOLINGS:
    raise UserError(f"--mask-pooling must be one of {', '.join(masks.MASK_POOLINGS)}")


def masked_style_targets(vgg_params, style: jax.Array, style_masks, present,
                         cfg: PhotoConfig) -> dict:
  """Per-layer masked Grams of the style image.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    style: [1, h, w, 3] in [0, 1].
    style_masks: [R, h, w] soft regions of the style image.
    present: [R], 1 for regions present in both images (``masks.pair_regions``).
    cfg: the configuration (layers, pooling, mask pooling).

  Returns:
    ``{layer: {"gram": [1, R, C, C], "present": [1, R]}}``.

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017.
  """
  layers = cfg.loss.style_layers
  feats = objective.target_features(vgg_params, style, layers=layers,
                                     pooling=cfg.loss.pooling)
  per_layer = masks.downsample_masks(jnp.asarray(style_masks, jnp.float32), layers,
                                     cfg.mask_pooling)             # {l: [R, h', w']}
  present = jnp.asarray(present, jnp.float32)[None]                          # [1, R]
  return {l: {"gram": losses.masked_gram(feats[l], per_layer[l][None]), "present": present}
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
  present = masks.pair_regions(content_masks, style_masks)
  if not present.any():
    raise UserError("the content and style masks share no region; paint matching colours")
  content_b = jnp.asarray(content)[None]
  content_feats = objective.target_features(
      vgg_params, content_b, layers=cfg.loss.content_layers, pooling=cfg.loss.pooling)
  per_layer = masks.downsample_masks(jnp.asarray(content_masks, jnp.float32),
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
  guide: a ``masks.GuidedFilter`` (the "guided" parameterization) or an ``AffineStep``
  ("affine"). Both are linear maps of x whose outputs are (nearly) locally affine in the
  content's colours."""
  step = aux["filter"]
  if isinstance(step, AffineStep):
    smooth = lambda v: affine_system_solve(step.coeffs, v, v, step.weight, tol=PARAM_TOL)
  else:
    smooth = lambda v: masks.apply_guided_filter(step, v[0])[None]
  return jax.lax.cond(aux["filtered"] > 0, smooth, lambda v: v, x)


@functools.lru_cache(maxsize=16)
def make_loss_fn(loss_cfg: LossConfig):
  """``(x, vgg_params, aux) -> (total, terms)`` of ``output_image(x, aux)`` with aux =
  {"targets", "matting", "matting_weight", "filter", "filtered"}; one per loss config, so all
  stages reuse one compiled program."""

  def loss_fn(x, vgg_params, aux):
    x = output_image(x, aux)
    terms = objective.loss_terms(vgg_params, x, aux["targets"], loss_cfg)
    pixels = x.shape[-3] * x.shape[-2]
    energy = matting.energy_with_coefficients(aux["matting"], x) / pixels     # [B]
    terms["matting"] = aux["matting_weight"] * energy
    terms["total"] = terms["total"] + terms["matting"]
    return jnp.sum(terms["total"]), terms

  return loss_fn


def matting_ratio(content: np.ndarray, image: np.ndarray, *, eps: float = EVAL_EPS) -> float:
  """Matting energy of ``image`` under the content's Laplacian, relative to the content's own.

  Args:
    content: [H, W, 3] in [0, 1].
    image: [H, W, 3], same size.
    eps: the Laplacian's regulariser. At Luan's 1e-7 the content's own energy is only ~3 eps per
      window (it is exactly affine in itself), so 8-bit rounding alone multiplies it by ~60;
      ``EVAL_EPS`` measures local affinity with a tolerance of ~1% of the colour range.

  Returns:
    ``sum_c I_c^T L I_c / sum_c C_c^T L C_c`` (1: as locally affine in the content's colours as
    the content itself).
  """
  coeffs = matting.matting_coefficients(jnp.asarray(content, jnp.float32), eps=eps)
  energy = lambda v: float(matting.energy_with_coefficients(coeffs, jnp.asarray(v, jnp.float32)))
  return energy(image) / max(energy(content), 1e-12)


def default_radius(hw: tuple[int, int], divisor: int = SMOOTH_RADIUS_DIVISOR) -> int:
  """The guided filter's default box radius for an image of size ``hw``: long side / divisor."""
  return max(1, round(max(hw) / divisor))


def guided_smooth(image: np.ndarray, guide: np.ndarray, *, radius: int = 0,
                  eps: float = 1e-4) -> np.ndarray:
  """Edge-preserving smoothing of ``image`` guided by the content (Luan's optional post-step).

  Args:
    image: [H, W, 3] stylized output in [0, 1].
    guide: [H, W, 3] the content at the same size.
    radius: box radius; 0 picks max(1, round(long side / ``SMOOTH_RADIUS_DIVISOR``)).
    eps: regulariser; smaller keeps more of the image's detail.

  Returns:
    [H, W, 3] float32 in [0, 1]: locally an affine function of the content's colours.

  References:
    He, Sun & Tang, "Guided Image Filtering", ECCV 2010 / PAMI 2013.
  """
  radius = radius or default_radius(image.shape[:2])
  out = masks.guided_filter(np.asarray(guide, np.float32), np.asarray(image, np.float32),
                            radius=radius, eps=eps)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def affine_system_solve(coeffs: matting.MattingCoefficients, image: jax.Array, x0: jax.Array,
                        weight: jax.Array | float, *, tol: float = 1e-6) -> jax.Array:
  """Solves ``(I + weight L) x = image`` per channel (and image of a batch) by conjugate
  gradients (I + wL is SPD), L applied matrix-free from ``coeffs``, to a residual of ``tol``
  relative to ``image``; differentiable in ``image`` (``lax.custom_linear_solve``: the backward
  pass is one more solve, started from zero, not from ``x0``: a cotangent is rough, and from
  itself the initial residual ``weight L g`` would be far larger than ``g``), not in ``x0``."""
  op = lambda v: v + weight * matting.apply_with_coefficients(coeffs, v)
  cg = lambda matvec, b, start: jax.scipy.sparse.linalg.cg(
      matvec, b, x0=start, tol=tol, maxiter=AFFINE_MAX_ITERS)[0]
  start = jax.lax.stop_gradient(x0)
  return jax.lax.custom_linear_solve(op, image, lambda matvec, b: cg(matvec, b, start),
                                     lambda matvec, b: cg(matvec, b, jnp.zeros_like(b)),
                                     symmetric=True)


_affine_solve = jax.jit(affine_system_solve)


def affine_smooth(image: np.ndarray, guide: np.ndarray, *, weight: float = AFFINE_WEIGHT,
                  budget: float = 0.0, min_weight: float = 0.0,
                  eps: float = EVAL_EPS) -> tuple[np.ndarray, float]:
  """Smooth local affine post-step: the image nearest ``image`` that is locally affine in the
  guide's colours.

  Minimizes ``|O - image|^2 + weight * sum_c O_c^T L O_c`` with L the guide's matting Laplacian
  (3x3 windows, ``eps``), i.e. solves ``(I + weight L) O = image`` per channel with the
  matrix-free ``L`` and conjugate gradients; O(pixels) memory, jit-compiled, on any device.
  Unlike the guided filter it changes only what the matting energy penalizes, so at the same
  matting energy it keeps more of the style (docs/photoreal.md, fourth calibration).

  Args:
    image: [H, W, 3] stylized output in [0, 1].
    guide: [H, W, 3] the content at the same size.
    weight: the penalty's weight (> 0); larger: closer to locally affine, further from ``image``.
    budget: if > 0, ``weight`` is ignored and chosen per image instead: 0 (``image`` unchanged)
      if its matting ratio (under the same Laplacian) is at most ``budget``, else the smallest
      weight in [``AFFINE_MIN_WEIGHT``, ``AFFINE_MAX_WEIGHT``], to within a factor 1.1, that
      brings it within (the largest if none does).
    min_weight: with a budget, the weight is at least this (for networks trained through the
      post-step at that weight, ``PhotoTrainConfig.affine_output``); 0: none (``image`` itself
      when within budget).
    eps: the Laplacian's regulariser (``matting_ratio``'s by default).

  Returns:
    (the image [H, W, 3] float32 clipped to [0, 1], the weight used).

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017 (its "smooth local
    affine" post-processing); Levin, Lischinski & Weiss, PAMI 2008 (the Laplacian).
  """
  if not (weight > 0 and budget >= 0 and min_weight >= 0):
    raise UserError(f"need a smoothing weight > 0 and a matting budget and least weight >= 0, "
                    f"got {weight}, {budget}, {min_weight}")
  coeffs = matting.matting_coefficients(jnp.asarray(guide, jnp.float32), eps=eps)
  b = jnp.asarray(np.clip(image, 0.0, 1.0), jnp.float32)
  solve = lambda w, x0: np.clip(np.asarray(_affine_solve(coeffs, b, x0, jnp.float32(w))),
                                0.0, 1.0)
  if budget <= 0:
    return solve(weight, b), float(weight)
  energy = lambda v: float(matting.energy_with_coefficients(coeffs, jnp.asarray(v)))
  target = budget * max(energy(guide), 1e-12)
  lo = float(min_weight)
  out = solve(lo, b) if lo > 0 else np.asarray(b)
  if energy(out) <= target:
    return out, lo
  # Grow hi until within budget, then bisect (in log).
  hi = min(max(AFFINE_MIN_WEIGHT, 4 * lo), AFFINE_MAX_WEIGHT)
  out = solve(hi, out)
  while energy(out) > target and hi < AFFINE_MAX_WEIGHT:
    lo, hi = hi, min(4 * hi, AFFINE_MAX_WEIGHT)
    out = solve(hi, out)
  while lo > 0 and hi / lo > 1.1:
    mid = float(np.sqrt(lo * hi))
    trial = solve(mid, out)
    if energy(trial) > target:
      lo = mid
    else:
      hi, out = mid, trial
  return out, hi


def prepare_masks(vgg_params, content, style, content_masks, style_masks, cfg: PhotoConfig):
  """Given masks resized to the images, or automatic ones: ([R, H, W], [R, h, w])."""
  if (content_masks is None) != (style_masks is None):
    raise UserError("give both a content mask and a style mask, or neither (automatic masks)")
  if content_masks is None:
    return masks.auto_masks(vgg_params, content, style, num_regions=cfg.num_regions,
                            seed=cfg.seed)
  content_masks, style_masks = np.asarray(content_masks), np.asarray(style_masks)
  if content_masks.shape[0] != style_masks.shape[0]:
    raise UserError(f"region counts differ: {content_masks.shape[0]} vs {style_masks.shape[0]}")
  return (masks.resize_masks(content_masks, content.shape[:2]),
          masks.resize_masks(style_masks, style.shape[:2]))


def _digest(cfg: PhotoConfig, arrays) -> str:
  """Identifies a run (config, inputs, masks), so a checkpoint is resumed only by the same run."""
  h = hashlib.sha256(repr(cfg).encode())
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


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
            on_chunk: Callable[[int, int, list[np.ndarray]], None] | None = None
            ) -> artistic.Output:
  """Photorealistic transfer of ``style``'s look onto ``content``.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    content: [H, W, 3] in [0, 1], any size (resized to ``cfg.size``).
    style: [h, w, 3] in [0, 1].
    cfg: the configuration.
    content_masks, style_masks: [R, H, W] / [R, h, w] region masks (e.g.
      ``masks.load_color_mask``), both or neither; neither: ``masks.auto_masks``.
    progress: show a progress bar.
    checkpoint: file to save progress to and resume from (same config, inputs and masks only).
    checkpoint_every: iterations between checkpoints.
    on_chunk: ``(stage, iteration, [image])`` after every chunk.

  Returns:
    ``artistic.Output`` with one image; ``level_starts`` holds the stages' first iterations.

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017.
  """
  check_config(cfg)
  hw = artistic.fit_hw(content.shape[:2], cfg.size)
  content = image_io.resize_array(content, hw)
  style = image_io.resize_array(style, artistic.fit_hw(style.shape[:2],
                                                       round(cfg.size * cfg.style_scale)))
  cm, sm = prepare_masks(vgg_params, content, style, content_masks, style_masks, cfg)
  aux = {"targets": make_targets(vgg_params, content, style, cm, sm, cfg),
         "matting": matting.matting_coefficients(jnp.asarray(content)),
         "filter": parameterization_step(content, cfg)}
  ckpt = artistic.Checkpointer(checkpoint, checkpoint_every, _digest(cfg, (content, style, cm, sm)))
  saved = ckpt.load() or {}
  done = saved.get("done", {})
  loss_fn = make_loss_fn(cfg.loss)
  x, pieces, starts, seconds = jnp.asarray(content)[None], [], [], 0.0
  for stage, (optim_cfg, scalars) in enumerate(_stage_plan(cfg)):
    starts.append(sum(len(p["total"]) for p in pieces))
    aux = dict(aux, **scalars)
    if str(stage) in done:  # finished before an interruption
      pieces.append(done[str(stage)]["history"])
      x = jnp.asarray(done[str(stage)]["x"])
      continue
    state, start, earlier = None, 0, None
    if saved.get("level") == stage:
      template = optimize.init_state(loss_fn, x, vgg_params, aux, optim_cfg)
      state = flax.serialization.from_state_dict(template, saved["state"])
      x, start, earlier = jnp.asarray(saved["x"]), int(saved["iteration"]), saved.get("history")

    def chunk_cb(it, xi, st, hist, stage=stage, earlier=earlier, aux=aux):
      ckpt.save(stage, it, xi, st, artistic.join_history(earlier, hist), done)
      if on_chunk is not None:
        on_chunk(stage, it, [np.asarray(output_image(xi, aux)[0])])

    res = optimize.run(loss_fn, x, vgg_params, aux, optim_cfg, state=state, start=start,
                       progress=progress, on_chunk=chunk_cb,
                       desc=f"stage {stage + 1}/{cfg.stages} {max(hw)}px")
    seconds += res.seconds
    hist = artistic.join_history(earlier, res.history)
    pieces.append(hist)
    x = res.image
    if res.nan_at is not None:
      return artistic.Output([_finish(output_image(x, aux), content, cfg)], _sum_terms(pieces),
                             starts, starts[-1] + res.nan_at, seconds)
    done[str(stage)] = {"history": hist, "x": np.asarray(x)}
  ckpt.remove()
  return artistic.Output([_finish(output_image(x, aux), content, cfg)], _sum_terms(pieces),
                         starts, None, seconds)


def _sum_terms(pieces):
  return artistic.concat_levels(pieces)


def parameterization_step(content: np.ndarray, cfg: PhotoConfig):
  """aux["filter"] for ``output_image``: the content's ``AffineStep`` (``cfg.affine_weight``,
  eps ``EVAL_EPS``) for the "affine" parameterization, else its guided filter (``smooth_radius``
  or ``default_radius``, ``smooth_eps``; unused by "pixels")."""
  if cfg.parameterization == "affine":
    coeffs = matting.matting_coefficients(jnp.asarray(content, jnp.float32), eps=EVAL_EPS)
    return AffineStep(coeffs, jnp.float32(cfg.affine_weight))
  radius = cfg.smooth_radius or default_radius(content.shape[:2])
  return masks.guided_filter_for(content, radius=radius, eps=cfg.smooth_eps)


def post_smooth(image: np.ndarray, content: np.ndarray, cfg: PhotoConfig) -> np.ndarray:
  """The configured post-step of ``image`` [H, W, 3] (``content``: the guide, same size): none
  (``cfg.smooth`` off), ``affine_smooth`` or ``guided_smooth``; float32 in [0, 1]."""
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if not cfg.smooth:
    return image
  if cfg.smooth_method == "affine":
    return affine_smooth(image, content, weight=cfg.smooth_weight, budget=cfg.matting_budget)[0]
  return guided_smooth(image, content, radius=cfg.smooth_radius, eps=cfg.smooth_eps)


def _finish(x, content, cfg: PhotoConfig) -> np.ndarray:
  return post_smooth(np.asarray(x)[0], content, cfg)
