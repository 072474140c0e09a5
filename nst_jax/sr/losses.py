"""SR training losses: pixel (MSE / L1), feature reconstruction (VGG16 relu2_2), TV; per example.

Synopsis::

  from nst_jax.sr import losses
  terms = losses.sr_losses(cfg.loss, vgg16_params, sr, hr)   # {"pixel", "feature", "tv", "total"}
  terms["total"].shape                                       # [B]; the caller reduces
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from nst_jax import config
from nst_jax.core import losses, vgg
from nst_jax.core.errors import UserError


def pixel_loss(sr: jax.Array, hr: jax.Array, kind: str = "mse") -> jax.Array:
  """Mean squared ("mse") or absolute ("l1") error over [B, H, W, C] -> [B]."""
  diff = (sr - hr).astype(jnp.float32)
  if kind == "mse":
    return jnp.mean(jnp.square(diff), axis=(1, 2, 3))
  if kind == "l1":
    return jnp.mean(jnp.abs(diff), axis=(1, 2, 3))
  raise UserError(f"unknown pixel loss {kind!r}; expected one of {config.PIXEL_LOSSES}")


def feature_loss(vgg_params: Mapping, sr: jax.Array, hr: jax.Array,
                 layers=("relu2_2",)) -> jax.Array:
  """Feature reconstruction loss ||phi(sr) - phi(hr)||^2 / (C H W) summed over ``layers``, [B].

  References:
    Johnson, Alahi & Fei-Fei, ECCV 2016, Eq. 2 (VGG16 relu2_2 for super-resolution).
  """
  both = vgg.vgg_features(vgg_params, jnp.concatenate([sr, hr]), layers, pooling="max")
  b = sr.shape[0]
  return sum(losses.content_loss(f[:b].astype(jnp.float32),
                                 jax.lax.stop_gradient(f[b:]).astype(jnp.float32))
             for f in both.values())


def sr_losses(cfg: config.SRLossConfig, vgg_params, sr: jax.Array,
              hr: jax.Array) -> dict[str, jax.Array]:
  """The weighted terms and their sum, each [B]; zero-weight terms are not computed."""
  zero = jnp.zeros(sr.shape[0], jnp.float32)
  terms = {"pixel": zero, "feature": zero, "tv": zero}
  if cfg.pixel_weight:
    terms["pixel"] = pixel_loss(sr, hr, cfg.pixel_loss)
  if cfg.feature_weight:
    terms["feature"] = feature_loss(vgg_params, sr, hr, cfg.feature_layers)
  if cfg.tv_weight:
    terms["tv"] = losses.tv_loss(sr.astype(jnp.float32))
  terms["total"] = (cfg.pixel_weight * terms["pixel"] + cfg.feature_weight * terms["feature"]
                    + cfg.tv_weight * terms["tv"])
  return terms
