"""Fast photorealistic transfer: the losses that train a feed-forward network photorealistically.

Synopsis::

  from nst_jax.fast import photo_train
  cfg = config.photoreal()                        # nst-jax train --preset photoreal
  regions = photo_train.fit_regions(vgg_params, style, sample_photos, cfg)        # once, host
  targets = photo_train.make_style_targets(vgg_params, style, regions, cfg)       # once
  terms = photo_train.masked_loss_terms(vgg_params, outputs, photos, targets, cfg)  # in the step
  terms = photo_train.add_affine_term(terms, outputs, photos, cfg.photo)

The reference thesis proposed training Johnson et al.'s network with Luan et al.'s photorealistic
objective: content, *masked* Gram style losses, TV, and the matting-Laplacian "affine" loss
``L_affine = (1/N) sum_c |M V_c[O] - M V_c[C]|^2`` of each output O against its content photo C
(M the content's matting Laplacian). Two pieces make this practical:

- The Laplacian is never built: ``matting.matting_coefficients`` of the batch's photos is
  computed inside the jitted step and ``matting.apply_with_coefficients`` applies it, at the cost
  of a few elementwise passes (the thesis rebuilt sparse matrices every step; its training time:
  docs/research/implementation_notes.md).
- Region masks for thousands of training photos come from a *style-anchored* version of
  ``regions.auto_masks``: the style photo and a sample of training photos are clustered jointly
  once (VGG relu3_1/relu4_1 features, Lab colour, position; k-means on the host), and every
  training photo is then softly assigned to those fixed centroids inside the step, from the VGG
  features the content loss computes anyway. Region r means the same thing in every photo and in
  the style, so the style's masked Gram targets are computed once.

The preset scores the network's outputs after the smooth local affine post-step that inference
applies (``affine_outputs``, ``PhotoTrainConfig.affine_output``): a conjugate-gradient solve of
``(I + W L) O = X`` in the step, differentiated by one more solve, so the network learns what
survives the step (docs/fast_photoreal.md).

References:
  Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017.
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016.
  Levin, Lischinski & Weiss, "A Closed-Form Solution to Natural Image Matting", PAMI 2008.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.config import LossConfig
from nst_jax.core import losses, matting, objective, regions, smoothing, vgg

AFFINE_LOSSES = ("residual", "energy")
# The joint clustering's block weights and PCA size: ``regions.auto_masks``' tuned defaults.
DEEP_WEIGHT, COLOUR_WEIGHT, POSITION_WEIGHT, PCA_DIMS = 1.0, 0.5, 0.6, 16
# The soft assignment's temperature is the mean squared distance to the nearest centroid divided
# by this. At 1 (``regions.auto_masks``, which then refines the masks along image edges) the
# clusters overlap so much that a pixel's largest membership averages ~0.5 and every region's
# Gram is nearly the global one; at 10 it averages ~0.95.
SHARPNESS = 10.0
# Relative residual of the conjugate-gradient solves of ``affine_outputs`` (forward and
# backward). On 256-px photos at weight 50: ~56 iterations instead of ~128 at 1e-5, outputs
# within 0.0075 (2/255) of the exact solve (docs/fast_photoreal.md, cost of a step).
AFFINE_OUTPUT_TOL = 1e-2


class RegionModel(NamedTuple):
  """Fixed centroids of a joint clustering, and the transform into their space (a pytree).

  Attributes:
    axes: [D, P] principal axes of the standardised deep descriptors.
    means: [P + 5] the mean of the projected (deep, colour, position) descriptors.
    scales: [P + 5] per-dimension factor: block weight / block standard deviation.
    centroids: [R, P + 5] ordered top to bottom by the mean height of their members.
    temperature: [] the soft assignment's temperature (see ``SHARPNESS``).
  """
  axes: jax.Array
  means: jax.Array
  scales: jax.Array
  centroids: jax.Array
  temperature: jax.Array


def _standardise(x: jax.Array) -> jax.Array:
  """Per image: zero mean over positions, unit total variance. [B, h, w, D] -> same."""
  x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
  return x * jax.lax.rsqrt(jnp.sum(jnp.mean(jnp.square(x), axis=(1, 2), keepdims=True), axis=-1,
                                   keepdims=True) + 1e-12)


def descriptors(feats: dict, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-position descriptors on the relu3_1 grid, as ``regions.auto_masks`` builds them.

  Args:
    feats: VGG features with ``regions.AUTO_LAYERS`` (relu3_1 [B, h, w, 256], relu4_1).
    images: [B, H, W, 3] the same images in [0, 1].

  Returns:
    ``(deep [B, h, w, 768], colour [B, h, w, 3], position [B, h, w, 2])``: deep features
    (unit-normalised per position, both layers on one grid) and Lab colours standardised per
    image; (y, x) in [0, 1].
  """
  deep = regions.deep_descriptors(feats)                                   # [B, h, w, 768]
  grid = deep.shape[1:3]
  small = jax.image.resize(images.astype(jnp.float32), images.shape[:1] + grid + (3,), "linear")
  position = jnp.broadcast_to(regions.position_grid(grid), images.shape[:1] + grid + (2,))
  return _standardise(deep), _standardise(regions.rgb_to_lab(small)), position


def _project(region_model: RegionModel, descs) -> jax.Array:
  """(deep, colour, position) -> [B, h, w, P + 5] in the clustering's space."""
  deep, colour, position = descs
  joint = jnp.concatenate([deep @ region_model.axes, colour, position], axis=-1)
  return (joint - region_model.means) * region_model.scales


def assign(region_model: RegionModel, descs) -> jax.Array:
  """Soft region masks [B, R, h, w] on the descriptors' grid (softmax of -distance / T)."""
  x = _project(region_model, descs)                                           # [B, h, w, D]
  dist = jnp.sum(jnp.square(x[..., None, :] - region_model.centroids), axis=-1)  # [B, h, w, R]
  soft = jax.nn.softmax(-dist / region_model.temperature, axis=-1)
  return jnp.moveaxis(soft, -1, 1)


def region_masks(region_model: RegionModel, feats: dict, images: jax.Array) -> jax.Array:
  """Soft region masks [B, R, H, W] of ``images`` at full resolution (no gradient)."""
  soft = assign(region_model, descriptors(feats, images))                     # [B, R, h, w]
  full = jax.image.resize(soft, soft.shape[:2] + images.shape[1:3], "linear")
  return jax.lax.stop_gradient(full / jnp.sum(full, axis=1, keepdims=True))


def features(vgg_params, images, loss_cfg: LossConfig, extra=()):
  layers = tuple(dict.fromkeys(tuple(extra) + loss_cfg.content_layers))
  return vgg.vgg_features(vgg_params, images, layers, loss_cfg.pooling,
                          conv_impl=loss_cfg.conv_impl)


def fit_regions(vgg_params, style: np.ndarray, photos: np.ndarray, cfg) -> RegionModel:
  """Clusters the style photo and a sample of training photos jointly (host, once per run).

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    style: [h, w, 3] in [0, 1].
    photos: [N, H, W, 3] training photos (a few dozen suffice).
    cfg: a ``TrainConfig``: ``loss.pooling``, ``photo.regions``, ``seed``.

  Returns:
    The ``RegionModel``; blocks weighted as ``regions.auto_masks`` weights them.
  """
  feature_fn = jax.jit(features, static_argnums=(2, 3))
  descs = []
  for image in [np.asarray(style)[None]] + [p[None] for p in np.asarray(photos)]:
    feats = feature_fn(vgg_params, jnp.asarray(image), cfg.loss, regions.AUTO_LAYERS)
    descs.append([np.asarray(d[0]).reshape(-1, d.shape[-1])
                  for d in descriptors(feats, jnp.asarray(image))])
  deep, colour, position = (np.concatenate([d[i] for d in descs]) for i in range(3))
  axes = regions.principal_axes(deep - deep.mean(0), PCA_DIMS, cfg.seed)
  blocks = [deep @ axes, colour, position]
  means = np.concatenate([b.mean(0) for b in blocks])
  scales = np.concatenate([np.full(b.shape[1], w / np.sqrt(np.sum(b.var(0)) + 1e-12))
                           for b, w in zip(blocks, (DEEP_WEIGHT, COLOUR_WEIGHT, POSITION_WEIGHT))])
  data = (np.concatenate(blocks, 1) - means) * scales                    # [N, D]
  centroids = regions.kmeans(data, cfg.photo.regions, cfg.seed)
  dist = np.sum(np.square(data[:, None] - centroids[None]), axis=-1)     # [N, R]
  labels = np.argmin(dist, axis=1)
  height = [position[labels == r, 0].mean() if np.any(labels == r) else 2.0
            for r in range(len(centroids))]
  return RegionModel(*(jnp.asarray(a, jnp.float32) for a in (
      axes, means, scales, centroids[np.argsort(height)], np.mean(dist.min(axis=1)) / SHARPNESS + 1e-12)))


def make_style_targets(vgg_params, style: jax.Array, region_model: RegionModel, cfg) -> dict:
  """Masked Gram targets of one style image [1, h, w, 3] under its own region masks.

  Returns:
    ``{"styles": ({layer: {"gram": [1, R, C, C], "present": [1, R]}},), "blend": [1.],
    "regions": region_model}``: the style half of the targets; the content half and the masks come
    from each batch (``masked_loss_terms``).
  """
  feats = features(vgg_params, style, cfg.loss, regions.AUTO_LAYERS + cfg.loss.style_layers)
  soft = region_masks(region_model, feats, style)                             # [1, R, h, w]
  per_layer = regions.downsample_masks(soft, cfg.loss.style_layers, cfg.photo.mask_pooling)
  present = (jnp.mean(soft, axis=(2, 3)) > cfg.photo.min_area).astype(jnp.float32)  # [1, R]
  grams = {l: {"gram": losses.masked_gram(feats[l], per_layer[l]), "present": present}
           for l in cfg.loss.style_layers}
  return {"styles": (grams,), "blend": jnp.ones((1,), jnp.float32), "regions": region_model}


def masked_loss_terms(vgg_params, outputs: jax.Array, inputs: jax.Array, style_targets: dict,
                      cfg, *, compute_dtype=jnp.float32) -> dict:
  """Content, masked style and TV terms of ``outputs`` against their photos; float32 [B] each.

  Args:
    vgg_params: VGG19 parameters.
    outputs: [B, H, W, 3] the network's outputs in [0, 1].
    inputs: [B, H, W, 3] the photos (content targets and region masks; no gradient).
    style_targets: from ``make_style_targets``.
    cfg: the ``TrainConfig``.
    compute_dtype: VGG's compute dtype.

  Returns:
    ``{"content", "style", "tv", "total"}``.
  """
  inputs = jax.lax.stop_gradient(inputs)
  feats = features(vgg_params, inputs.astype(compute_dtype), cfg.loss, regions.AUTO_LAYERS)
  soft = region_masks(style_targets["regions"], feats, inputs)          # [B, R, H, W]
  targets = {"content": {l: feats[l] for l in cfg.loss.content_layers},
             "styles": style_targets["styles"], "blend": style_targets["blend"],
             "masks": regions.downsample_masks(soft, cfg.loss.style_layers, cfg.photo.mask_pooling)}
  terms = objective.loss_terms(vgg_params, outputs.astype(compute_dtype), targets, cfg.loss)
  return {k: v.astype(jnp.float32) for k, v in terms.items()}


def affine_loss(outputs: jax.Array, inputs: jax.Array, kind: str = "residual", *,
                eps: float = matting.LUAN_EPS) -> jax.Array:
  """The photorealism loss of outputs under their content photos' matting Laplacians; [B].

  Args:
    outputs: [B, H, W, 3] in [0, 1].
    inputs: [B, H, W, 3] the content photos (the Laplacians; no gradient).
    kind: "residual": the thesis' ``(1/N) sum_c |M O_c - M C_c|^2``; "energy": Luan et al.'s
      ``(1/N) sum_c O_c^T M O_c``. Both vanish exactly when the output is locally an affine
      function of the photo's colours (M's null space).
    eps: the Laplacian's regulariser (Luan et al.: 1e-7).

  Returns:
    float32 [B], N = H * W.
  """
  coeffs = jax.lax.stop_gradient(matting.matting_coefficients(inputs.astype(jnp.float32),
                                                             eps=eps, unroll=True))
  outputs = outputs.astype(jnp.float32)
  pixels = outputs.shape[1] * outputs.shape[2]
  if kind == "energy":
    return matting.energy_with_coefficients(coeffs, outputs) / pixels
  diff = outputs - jax.lax.stop_gradient(inputs.astype(jnp.float32))
  return jnp.sum(jnp.square(matting.apply_with_coefficients(coeffs, diff)), axis=(1, 2, 3)) / pixels


def add_affine_term(terms: dict, outputs: jax.Array, inputs: jax.Array, photo) -> dict:
  """``terms`` with ``"affine"`` (weighted by ``photo.affine_weight``) added to the total."""
  affine = photo.affine_weight * affine_loss(outputs, inputs, photo.affine_loss,
                                            eps=photo.affine_eps)
  return dict(terms, affine=affine, total=terms["total"] + affine)


def guided_outputs(outputs: jax.Array, inputs: jax.Array) -> jax.Array:
  """Each output [B, H, W, 3] guided-filtered with its photo as guide, as ``nst-jax stylize``'s
  guided post-step does it (``smoothing.guided_smooth``: radius long side / 12, eps 1e-4, clipped
  to [0, 1]): training on these scores what inference returns
  (``PhotoTrainConfig.guided_output``)."""
  radius = smoothing.default_radius(outputs.shape[1:3], smoothing.FAST_SMOOTH_RADIUS_DIVISOR)
  eps = config.PhotoConfig().smooth_eps

  def one(out, photo):
    gf = smoothing.guided_filter_for(jax.lax.stop_gradient(photo), radius=radius, eps=eps)
    return jnp.clip(smoothing.apply_guided_filter(gf, out.astype(jnp.float32)), 0.0, 1.0)

  return jax.vmap(one)(outputs, inputs.astype(jnp.float32)).astype(outputs.dtype)


def affine_outputs(outputs: jax.Array, inputs: jax.Array, weight: float) -> jax.Array:
  """Each output [B, H, W, 3] after the smooth local affine post-step with its photo as guide
  (``smoothing.affine_smooth`` at ``weight``: ``(I + weight L) O = outputs``, L the photo's
  matting Laplacian at eps 1e-4, clipped to [0, 1]), differentiable: the backward pass is one
  more solve with the same system (``smoothing.affine_system_solve``). Training on these scores
  what inference returns (``PhotoTrainConfig.affine_output``)."""
  coeffs = matting.matting_coefficients(jax.lax.stop_gradient(inputs.astype(jnp.float32)),
                                        eps=config.EVAL_EPS, unroll=True)
  x = outputs.astype(jnp.float32)
  out = smoothing.affine_system_solve(coeffs, x, x, weight, tol=AFFINE_OUTPUT_TOL)
  return jnp.clip(out, 0.0, 1.0).astype(outputs.dtype)
