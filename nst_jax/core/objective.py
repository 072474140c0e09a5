"""The perceptual objective of slow style transfer: targets from images, loss terms from targets.

Synopsis::

  from nst_jax import config
  from nst_jax.core import objective
  cfg = config.LossConfig()
  targets = objective.make_targets(vgg_params, content, [style], cfg)   # a pytree of arrays
  terms = objective.loss_terms(vgg_params, image, targets, cfg)         # {"content": [B], ...}

Targets are plain arrays passed as arguments (never closed over), so one compiled program serves
any content/style of the same shapes and ``jax.vmap`` can batch several problems.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from nst_jax.config import LossConfig
from nst_jax.core import losses, vgg
from nst_jax.core.errors import UserError


def _features(vgg_params, images, cfg: LossConfig, layers):
  return vgg.vgg_features(vgg_params, images, layers, cfg.pooling, conv_impl=cfg.conv_impl,
                          remat=cfg.remat)


# Targets are computed once per image, outside the optimization loop: compile the VGG pass
# rather than dispatching it op by op (it is inlined when called under an outer jit).
target_features = jax.jit(vgg.vgg_features, static_argnames=("layers", "pooling", "conv_impl"))


def make_style_targets(vgg_params, style: jax.Array, cfg: LossConfig) -> dict:
  """{layer: style_target} for one style image [1, h, w, 3]."""
  out = _style_targets(vgg_params, style, cfg.style_layers, cfg.pooling, cfg.conv_impl,
                       cfg.style_loss)
  return {l: out[l] for l in cfg.style_layers}  # the configuration's order (jit sorts dict keys)


# One program per style shape and the settings that matter (not the loss weights), not a
# dispatch per Gram op.
@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _style_targets(vgg_params, style, layers, pooling, conv_impl, kind) -> dict:
  feats = target_features(vgg_params, style, layers=layers, pooling=pooling,
                          conv_impl=conv_impl)
  return {l: losses.style_target(feats[l], kind) for l in layers}


def make_targets(vgg_params, content: jax.Array | None, styles: Sequence[jax.Array], cfg: LossConfig,
                 blend: Sequence[float] | None = None) -> dict:
  """Everything the objective compares against.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    content: [1, H, W, 3] content image, or None for style-only synthesis (texture).
    styles: style images, each [1, h, w, 3] (sizes may differ).
    cfg: loss configuration.
    blend: one weight per style (normalized to sum 1); default equal.

  Returns:
    ``{"content": {layer: [1, h, w, C]}, "styles": ({layer: target}, ...), "blend": [S]}``.
  """
  blend = jnp.ones(len(styles)) if blend is None else jnp.asarray(blend, jnp.float32)
  if blend.shape != (len(styles),) or bool(jnp.any(blend < 0)) or float(jnp.sum(blend)) <= 0:
    raise UserError(f"need one non-negative style blend weight per style ({len(styles)})")
  content_targets = {}
  if content is not None:
    content_targets = target_features(vgg_params, content, layers=cfg.content_layers,
                                       pooling=cfg.pooling, conv_impl=cfg.conv_impl)
  return {"content": content_targets,
          "styles": tuple(make_style_targets(vgg_params, s, cfg) for s in styles),
          "blend": blend / jnp.sum(blend)}


def style_term(feats: Mapping[str, jax.Array], targets: dict, cfg: LossConfig) -> jax.Array:
  """Blend-weighted sum over styles and layers of the style losses; [B]."""
  total = 0.0
  for s, style_targets in enumerate(targets["styles"]):
    for layer, w in zip(cfg.style_layers, cfg.style_layer_weights):
      if "masks" in targets:
        t = style_targets[layer]
        layer_loss = losses.masked_style_loss(feats[layer], targets["masks"][layer], t["gram"],
                                              t["present"])
      else:
        layer_loss = losses.style_loss(feats[layer], style_targets[layer], cfg.style_loss)
      total = total + targets["blend"][s] * w * layer_loss
  return total


def loss_terms(vgg_params, images: jax.Array, targets: dict, cfg: LossConfig) -> dict:
  """The weighted loss terms and their sum, per example.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    images: [B, H, W, 3] RGB in [0, 1], the images being optimized.
    targets: from ``make_targets`` (optionally with region ``masks``, see ``photoreal``).
    cfg: loss configuration.

  Returns:
    ``{"content", "style", "tv", "total"}``, each [B], already multiplied by their weights.

  References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  """
  layers = tuple(dict.fromkeys(
      (cfg.content_layers if targets["content"] else ()) + cfg.style_layers))
  feats = _features(vgg_params, images, cfg, layers)
  content = jnp.zeros(images.shape[0])
  for layer, w in zip(cfg.content_layers, cfg.content_layer_weights):
    if layer in targets["content"]:
      content = content + w * losses.content_loss(feats[layer], targets["content"][layer])
  terms = {"content": cfg.content_weight * content,
           "style": cfg.style_weight * style_term(feats, targets, cfg),
           "tv": cfg.tv_weight * losses.tv_loss(images)}
  terms["total"] = terms["content"] + terms["style"] + terms["tv"]
  return terms
