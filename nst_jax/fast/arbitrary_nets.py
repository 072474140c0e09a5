"""The networks of arbitrary style transfer (Ghiasi et al. 2017), Flax Linen, NHWC.

Synopsis::

  from nst_jax import config
  from nst_jax.fast import arbitrary_nets
  predictor, transfer = arbitrary_nets.make_networks(config.ArbitraryConfig())
  params = arbitrary_nets.init_params(jax.random.key(0), config.ArbitraryConfig())
  emb = predictor.apply({"params": params["predictor"]}, paintings)        # [B, E]
  out = transfer.apply({"params": params["transfer"]}, photos, emb)        # [B, H, W, 3]
  out = transfer.apply({"params": params["transfer"]}, photos, emb, quant["transfer"])  # int8

``quant`` (optional) maps point names ("res1/norm1/rsqrt", "conv1/relu", ...) to [scale,
zero_point]: the activation at each named point is fake-quantized (``fake_quant``) as the
released int8 graph's QuantizeLinear -> DequantizeLinear pairs do. A point may map to a
function of the activation instead (outside jit): it is called in place of ``fake_quant``, e.g.
to record each point or to substitute a reference engine's tensor there
(``benchmarks/arbitrary_layers.py``). ``fast.arbitrary`` has the helpers (embedding, stylization,
interpolation) and the loaded-model object.

References:
  Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
  neural artistic stylization network", BMVC 2017.
  Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", CVPR 2018 (the distilled style predictor).
  Dumoulin, Shlens & Kudlur, "A Learned Representation for Artistic Style", ICLR 2017.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax import config
from nst_jax.core.conv import resolve_impl
from nst_jax.core.errors import UserError
from nst_jax.fast import layers

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
  # The activation at point ``name``, fake-quantized when ``quant`` names that point (or mapped
  # by the point's function: a diagnostic hook, see the module docstring).
  if quant is None or name not in quant:
    return x
  qp = quant[name]
  return qp(x) if callable(qp) else fake_quant(x, qp)


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
    mean, var = self.moments(x, quant)
    rsqrt = _q(quant, "rsqrt", 1.0 / jnp.sqrt(_q(quant, "add", var + self.epsilon)))
    mul = _q(quant, "mul", rsqrt * gamma)
    shift = _q(quant, "sub", beta - _q(quant, "mul_2", mean * mul))
    return _q(quant, "add_1", _q(quant, "mul_1", x * mul) + shift)

  def moments(self, x, quant=None):  # [B, H, W, C] -> the mean and variance [B, 1, 1, C]
    # A method of its own so that tiled inference (``fast.tiled``) can give the whole image's.
    mean = _q(quant, "mean", jnp.mean(x, axis=(1, 2), keepdims=True))
    sq = _q(quant, "squared_difference", jnp.square(x - mean))
    return mean, _q(quant, "variance", jnp.mean(sq, axis=(1, 2), keepdims=True))


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
  resolve_impl(cfg.conv_impl)  # UserError naming conv_impl
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
