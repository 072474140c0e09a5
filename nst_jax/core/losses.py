"""Perceptual losses as pure functions of feature arrays; every loss returns per-example values [B].

Synopsis::

  from nst_jax.core import losses
  c = losses.content_loss(feats["conv4_2"], target)              # [B]
  g = losses.gram_matrix(feats["relu1_1"])                        # [B, C, C]
  s = losses.style_loss(feats["relu1_1"], losses.style_target(style_feats, "gram"), "gram")
  t = losses.tv_loss(images)                                      # [B]

Style variants follow Li et al. 2017 ("Demystifying Neural Style Transfer"): the Gram loss is
the squared MMD with the polynomial kernel k(x, y) = (x^T y)^2 over feature positions, times
1 / (4 N^2) (N = channels); "mean" is linear-kernel MMD; "mean_std" matches batch-norm statistics;
"mmd_poly" and "mmd_gauss" evaluate the kernel MMD directly.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

STYLE_LOSSES = ("gram", "mean", "mean_std", "mmd_poly", "mmd_gauss")
_EPS = 1e-8


def _flatten(features: jax.Array) -> jax.Array:
  b, h, w, c = features.shape
  return features.reshape(b, h * w, c)  # [B, M, C]


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
  """Feature reconstruction loss ||F - P||^2 / (C H W), per example.

  Args:
    features: [B, H, W, C] features of the image being optimized.
    target: [B or 1, H, W, C] features of the content image.

  Returns:
    [B] losses.

  References:
    Johnson et al., "Perceptual Losses for Real-Time Style Transfer and Super-Resolution", 2016.
  """
  return jnp.mean(jnp.square(features - target), axis=(1, 2, 3))


def gram_matrix(features: jax.Array) -> jax.Array:
  """Gram matrix G = F^T F / M over the M = H W positions.

  Args:
    features: [B, H, W, C].

  Returns:
    [B, C, C] symmetric positive semi-definite matrices.

  References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  """
  return _gram(_flatten(features))


# The Gram's gradient as one product, F (dG + dG^T) / M: autodiff of F^T F gives two ([C, M]
# each, dG^T F^T and dG F^T), which XLA computes as soon as dG is known (in the forward pass,
# the loss being quadratic) and keeps until the backward pass reaches the layer: two feature maps
# per style layer alive through the evaluation, 128 floats per pixel for relu1_1 alone.
@jax.custom_vjp
def _gram(f):
  return jnp.einsum("bmc,bmd->bcd", f, f) / f.shape[1]


def _gram_fwd(f):
  return _gram(f), f


def _gram_bwd(f, g):
  g = (g + jnp.swapaxes(g, -1, -2)).astype(f.dtype)
  return (jnp.einsum("bmc,bcd->bmd", f, g) / f.shape[1],)


_gram.defvjp(_gram_fwd, _gram_bwd)


def masked_gram(features: jax.Array, masks: jax.Array) -> jax.Array:
  """Gram matrices restricted to soft regions: G_r = F^T diag(m_r) F / sum(m_r).

  Args:
    features: [B, H, W, C].
    masks: [B, R, H, W] region weights in [0, 1] at the features' resolution.

  Returns:
    [B, R, C, C]; an empty region gives a zero matrix.

  References:
    Luan et al., "Deep Photo Style Transfer", CVPR 2017.
  """
  f = _flatten(features)  # [B, M, C]
  m = masks.reshape(masks.shape[0], masks.shape[1], -1)  # [B, R, M]
  g = jnp.einsum("brm,bmc,bmd->brcd", m, f, f)
  return g / jnp.maximum(jnp.sum(m, axis=-1), _EPS)[..., None, None]


def gram_style_loss(gram: jax.Array, target_gram: jax.Array) -> jax.Array:
  """Gatys' layer loss 1/(4 N^2 M^2) sum (G - A)^2 with unnormalized Grams = 1/4 mean((g - a)^2).

  Args:
    gram: [B, ..., C, C] Grams normalized by M (``gram_matrix``).
    target_gram: broadcastable to ``gram``.

  Returns:
    [B, ...] losses (one per example, and per region for masked Grams).
  """
  return 0.25 * jnp.mean(jnp.square(gram - target_gram), axis=(-2, -1))


def masked_style_loss(features: jax.Array, masks: jax.Array, target_grams: jax.Array,
                      target_present: jax.Array) -> jax.Array:
  """Masked Gram loss: per-region Gram losses weighted by the region's share of the image.

  Args:
    features: [B, H, W, C] features of the image being optimized.
    masks: [B, R, H, W] the content's region masks at this layer.
    target_grams: [B or 1, R, C, C] masked Grams of the style image.
    target_present: [B or 1, R] 1 where the region exists in the style image, else 0.

  Returns:
    [B] losses; regions missing from either image contribute nothing.
  """
  share = jnp.mean(masks, axis=(2, 3))  # [B, R]
  per_region = gram_style_loss(masked_gram(features, masks), target_grams)  # [B, R]
  return jnp.sum(per_region * share * target_present, axis=-1)


def _moments(features: jax.Array):
  f = _flatten(features)
  mean = jnp.mean(f, axis=1)  # [B, C]
  std = jnp.sqrt(jnp.var(f, axis=1) + _EPS)
  return mean, std


def _mmd2(x: jax.Array, y: jax.Array, kernel) -> jax.Array:
  """Biased squared MMD between position sets x [B, M, C] and y [B, K, C]."""
  kxx = jnp.mean(kernel(x, x), axis=(1, 2))
  kyy = jnp.mean(kernel(y, y), axis=(1, 2))
  kxy = jnp.mean(kernel(x, y), axis=(1, 2))
  return kxx + kyy - 2.0 * kxy


def poly_kernel(x, y, *, c: float = 0.0, d: int = 2):
  """k(x, y) = (x^T y + c)^d for all position pairs: [B, M, C], [B, K, C] -> [B, M, K]."""
  return (jnp.einsum("bmc,bkc->bmk", x, y) + c) ** d


def gauss_kernel(x, y, *, sigma2: jax.Array):
  """k(x, y) = exp(-||x - y||^2 / (2 sigma^2)); sigma2 broadcasts as [B, 1, 1]."""
  d2 = (jnp.sum(x * x, -1)[:, :, None] + jnp.sum(y * y, -1)[:, None, :]
        - 2.0 * jnp.einsum("bmc,bkc->bmk", x, y))
  return jnp.exp(-jnp.maximum(d2, 0.0) / (2.0 * sigma2))


def subsample_positions(features: jax.Array, max_positions: int) -> jax.Array:
  """[B, H, W, C] -> [B, M', C] with at most ``max_positions`` evenly strided positions."""
  f = _flatten(features)
  stride = max(1, -(-f.shape[1] // max_positions))
  return f[:, ::stride]


def style_target(features: jax.Array, kind: str = "gram", *, max_positions: int = 1024) -> dict:
  """Precomputes what a style loss compares against, from the style image's features.

  Args:
    features: [B, H, W, C] style features at one layer.
    kind: one of ``STYLE_LOSSES``.
    max_positions: MMD variants keep at most this many positions (their cost is quadratic).

  Returns:
    A dict of arrays (a pytree), the ``target`` argument of ``style_loss``.
  """
  if kind == "gram":
    return {"gram": gram_matrix(features)}
  if kind in ("mean", "mean_std"):
    mean, std = _moments(features)
    return {"mean": mean, "std": std}
  if kind in ("mmd_poly", "mmd_gauss"):
    return {"positions": subsample_positions(features, max_positions)}
  raise ValueError(f"unknown style loss {kind!r}; expected one of {STYLE_LOSSES}")


def style_loss(features: jax.Array, target: Mapping[str, jax.Array], kind: str = "gram", *,
               max_positions: int = 1024) -> jax.Array:
  """Style loss of one layer, per example.

  Args:
    features: [B, H, W, C] features of the image being optimized.
    target: from ``style_target`` (same ``kind``), batch B or 1.
    kind: "gram" (Gatys), "mean" (linear MMD), "mean_std" (BN statistics), "mmd_poly"
      (k = (x^T y)^2, scaled by 1/(4 C^2) so it equals "gram"), "mmd_gauss" (Gaussian kernel with
      sigma^2 the mean squared distance between the two position sets, Li et al.).
    max_positions: positions kept by the MMD variants.

  Returns:
    [B] losses.

  References:
    Li, Wang, Liu & Hou, "Demystifying Neural Style Transfer", IJCAI 2017.
  """
  c = features.shape[-1]
  if kind == "gram":
    return gram_style_loss(gram_matrix(features), target["gram"])
  if kind == "mean":
    mean, _ = _moments(features)
    return jnp.mean(jnp.square(mean - target["mean"]), axis=-1)
  if kind == "mean_std":
    mean, std = _moments(features)
    return jnp.mean(jnp.square(mean - target["mean"]) + jnp.square(std - target["std"]), axis=-1)
  x = subsample_positions(features, max_positions)
  y = jnp.broadcast_to(target["positions"], (x.shape[0],) + target["positions"].shape[1:])
  if kind == "mmd_poly":
    return _mmd2(x, y, poly_kernel) / (4.0 * c * c)
  if kind == "mmd_gauss":
    sigma2 = jax.lax.stop_gradient(_mean_sq_distance(x, y))[:, None, None]
    return _mmd2(x, y, lambda a, b: gauss_kernel(a, b, sigma2=sigma2))
  raise ValueError(f"unknown style loss {kind!r}; expected one of {STYLE_LOSSES}")


def _mean_sq_distance(x, y):
  """Mean over pairs of ||x_i - y_j||^2, in O((M + K) C)."""
  return (jnp.mean(jnp.sum(x * x, -1), 1) + jnp.mean(jnp.sum(y * y, -1), 1)
          - 2.0 * jnp.sum(jnp.mean(x, 1) * jnp.mean(y, 1), -1) + _EPS)


def tv_loss(images: jax.Array) -> jax.Array:
  """Total variation: mean squared difference of vertically and horizontally adjacent pixels.

  Args:
    images: [B, H, W, C].

  Returns:
    [B] losses.

  References:
    Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them", 2015.
  """
  dy = jnp.square(images[:, 1:, :, :] - images[:, :-1, :, :])
  dx = jnp.square(images[:, :, 1:, :] - images[:, :, :-1, :])
  return jnp.mean(dy, axis=(1, 2, 3)) + jnp.mean(dx, axis=(1, 2, 3))
