"""Feed-forward image transformation networks for fast style transfer (Flax Linen).

Synopsis::

  import jax
  from nst_jax.fast import nets
  model = nets.ThesisNet()                                    # or JohnsonNet(), TinyNet()
  variables = nets.init_variables(model, jax.random.key(0))
  out = model.apply(variables, images)                        # [B, H, W, 3] in [0, 1]; H, W % 4 == 0
  out = nets.stylize_any_size(model, variables, odd_images)   # pads, applies, crops back
  nets.count_params(variables)                                # 1_679_235 for JohnsonNet
  model = nets.make_model(cfg.net)                            # the net a NetConfig describes
  cfg = nets.config_from_json(config.to_json(cfg))            # a run's config.json, rebuilt
  w = nets.style_vector(["starry", "wave"], mix="0.5:starry,0.5:wave")  # [S] style weights

  # batch normalization: statistics live in the "batch_stats" collection
  out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])

  # conditional instance normalization: one scale/shift row per style, blended per example
  multi = nets.ThesisNet(num_styles=4)
  out = multi.apply(multi_vars, images, style_weights)        # style_weights [B, 4], rows sum 1

The network maps RGB images in [0, 1] to RGB images in [0, 1]; it is fully convolutional with two
stride-2 downsamplings, so a direct call needs H and W divisible by 4 (``stylize_any_size`` lifts
that). Layer names follow the caffe habit: ``conv1 norm1 conv2 norm2 conv3 norm3 res1..res5
(conv1 norm1 conv2 norm2) deconv1|upconv1 norm4 deconv2|upconv2 norm5 conv_out``.

References:
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
  ECCV 2016, and its supplementary material (the architecture). The layers' references
  (instance and conditional instance normalization, resize-convolutions) are in ``layers``.
"""

from __future__ import annotations

import functools
import json
import math
import types
from collections.abc import Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core.conv import resolve_impl, space_to_depth
from nst_jax.core.errors import UserError
from nst_jax.fast import layers

AFFINE_SCALE = 0.1  # the affine head's raw outputs are scaled by this (starts near the identity)
THESIS_INPUT_BLEND = 0.15  # the reference thesis' training-time blend of the input into the output
MULTIPLE = config.NET_MULTIPLE  # two stride-2 stages: H and W must be divisible by 4


class TransformNet(nn.Module):
  """The image transformation network of Johnson et al. (2016), with the common variations.

  Architecture (channels at ``width=1``): c9s1-32, d64, d128, ``num_residual`` x R128, u64, u32,
  c9s1-3, where every convolution but the last is followed by normalization and ReLU. The output
  is ``(tanh(x) + 1) / 2``, exactly in [0, 1] (the paper's scaled tanh, mapped to our [0, 1]
  image range), then optionally blended with the input: ``(1 - a) * out + a * images``.

  Attributes:
    normalization: "instance" (Ulyanov et al. 2016, learned scale and bias; the default) or
      "batch" (the paper; statistics in the "batch_stats" collection, see ``train``).
    upsample: "transpose" (the paper's fractionally-strided 3x3 convolutions, layers
      ``deconv1/2``) or "resize" (nearest-neighbour x2 then a 3x3 convolution, layers
      ``upconv1/2``, which avoids checkerboard artifacts; Odena et al. 2016).
    padding: "reflect" (default) or "zero", for every ordinary convolution (the transposed ones
      always zero-pad, as in the paper).
    width: channel multiplier (e.g. 0.25 for a tiny, fast network); counts are rounded, >= 1.
    num_residual: the number of residual blocks (5 in the paper).
    input_blend: ``a`` above; 0 disables it, ``THESIS_INPUT_BLEND`` (0.15) is the thesis' value.
    output: "rgb" (the paper: the last 9x9 convolution gives the colours) or "affine" (for
      photorealism: a 3x4 colour transform per pixel p, ``out = A(p) images(p) + b(p)`` clipped
      to [0, 1], starting near the identity; see ``affine_grid`` for where it is computed). Such an
      output is locally affine in the input's colours, which is what the matting Laplacian
      leaves unpenalized; cf. Gharbi et al. 2017, Xia et al. 2020).
    affine_grid: with the "affine" head, 1 (default): the usual decoder, then a 3x3 ``conv_out``
      with 12 channels at every pixel; 4: no upsampling layers, a 3x3 ``conv_out`` on the
      quarter-resolution trunk, upsampled bilinearly (smooth in space by construction, cheaper,
      but blends the transforms of neighbouring regions across edges: worse photorealism and
      style in docs/fast_photoreal.md).
    pixel_shuffle: False (default): the paper's 9x9 convolutions at full resolution in and out;
      True: nothing runs at full resolution (Shi et al. 2016's sub-pixel idea, as in small CPU
      stylizers): 2x2 pixel blocks become 12 channels in (``space_to_depth``), ``conv1`` is 3x3
      and ``conv2`` stride 1 at H/2; the decoder's second stage is a 3x3 ``conv4`` at H/2, and
      ``conv_out`` a resize-convolution to RGB (nearest x2, 3x3; computed at H/2 in sub-pixel
      form). Several times cheaper at large sizes; the ``lite`` preset. (A free pixel shuffle
      out, 12 channels to 2x2 pixels, learned a 2-pixel checkerboard that the Gram loss
      rewards.)
    num_styles: S; 1 (default): ordinary instance norm (parameters ``scale``, ``bias`` [C]);
      S > 1: ``ConditionalInstanceNorm`` everywhere (``scale``, ``bias`` [S, C]), one row per
      style, blended by the call's ``style_weights`` [B, S] (instance norm only).
    dtype: the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and the output is
      float32.
    conv_impl: "auto" (default: the CPU kernels of ``core.conv`` on the CPU backend, XLA's own
      convolutions elsewhere), "xla" or "cpu_fast"; the same values and gradients either way.
  """

  normalization: str = "instance"
  upsample: str = "transpose"
  padding: str = "reflect"
  width: float = 1.0
  num_residual: int = 5
  input_blend: float = 0.0
  output: str = "rgb"
  affine_grid: int = 1
  pixel_shuffle: bool = False
  num_styles: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  def channels(self, base: int) -> int:
    return max(1, int(round(base * self.width)))

  @nn.compact
  def __call__(self, images: jax.Array, style_weights: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Stylizes ``images`` [B, H, W, 3] in [0, 1] (H, W divisible by 4) -> [B, H, W, 3] float32.

    Args:
      images: RGB [B, H, W, 3] in [0, 1].
      style_weights: [B, num_styles] per-example style weights (one-hot: one style; rows
        summing to 1: a mix); ignored when ``num_styles`` is 1; default: the first style.
      train: batch normalization only: use batch statistics and update the running averages
        (then call ``apply`` with ``mutable=["batch_stats"]``); otherwise the running averages.

    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    options_checked(tuple(getattr(self, name) for name in _OPTIONS))
    _check_size(images.shape)
    w = self._style_weights(style_weights, images.shape[0])  # [B, S] or None
    conv = functools.partial(layers.conv_layer, padding=self.padding, dtype=self.dtype,
                             conv_impl=self.conv_impl)

    def norm_relu(x, name):
      return nn.relu(layers.norm(self.normalization, train, self.dtype, name, w)(x))

    x = images.astype(self.dtype) * 2.0 - 1.0  # [B, H, W, 3] centred
    shuffle = self.pixel_shuffle
    if shuffle:
      x = space_to_depth(x, 2)  # [B, H/2, W/2, 12]
    x = norm_relu(conv(x, self.channels(32), 3 if shuffle else 9, name="conv1"), "norm1")
    # [B, H, W, 32] (pixel_shuffle: [B, H/2, W/2, 32]) -> [B, H/2, W/2, 64]
    x = norm_relu(conv(x, self.channels(64), 3, 1 if shuffle else 2, name="conv2"), "norm2")
    x = norm_relu(conv(x, self.channels(128), 3, 2, name="conv3"), "norm3")  # [B, H/4, W/4, 128]
    for i in range(1, self.num_residual + 1):
      x = layers.ResidualBlock(self.channels(128), self.normalization, self.padding,
                               self.dtype, self.conv_impl, name=f"res{i}")(x, w, train=train)
    if self.output == "affine" and self.affine_grid == 4:
      # Colour transforms on the quarter-resolution trunk, upsampled bilinearly: smooth in
      # space by construction, so the output is locally affine in the input's colours.
      coeffs = conv(x, 12, 3, name="conv_out").astype(jnp.float32)  # [B, H/4, W/4, 12]
      coeffs = jax.image.resize(coeffs, images.shape[:3] + (12,), "linear")  # [B, H, W, 12]
      return self._blend(affine_output(coeffs, images.astype(jnp.float32)), images)
    for i, base in ((1, 64), (2, 32)):  # [B, H/2, W/2, 64], then [B, H, W, 32]
      if i == 2 and shuffle:  # [B, H/2, W/2, 32]
        x = conv(x, self.channels(base), 3, name="conv4")
      else:
        x = layers.upsample(x, self.channels(base), mode=self.upsample, padding=self.padding,
                            dtype=self.dtype, conv_impl=self.conv_impl, index=i)
      x = norm_relu(x, f"norm{3 + i}")
    if self.output == "affine":  # per-pixel colour transforms (a 3x3 conv: cheaper than a 9x9 here)
      coeffs = conv(x, 12, 3, name="conv_out").astype(jnp.float32)  # [B, H, W, 12]
      return self._blend(affine_output(coeffs, images.astype(jnp.float32)), images)
    if shuffle:  # [B, H, W, 3]
      x = layers.resize_conv(x, 3, padding=self.padding, dtype=self.dtype,
                             conv_impl=self.conv_impl, name="conv_out")
    else:
      x = conv(x, 3, 9, name="conv_out")  # [B, H, W, 3]
    return self._blend((jnp.tanh(x.astype(jnp.float32)) + 1.0) * 0.5, images)

  def _style_weights(self, style_weights, batch: int):
    if self.num_styles == 1:
      return None
    if style_weights is None:
      return jax.nn.one_hot(jnp.zeros((batch,), jnp.int32), self.num_styles)
    if style_weights.shape != (batch, self.num_styles):
      raise ValueError(f"style_weights must be [{batch}, {self.num_styles}], got "
                       f"{style_weights.shape}")
    return style_weights

  def _blend(self, out, images):
    if self.input_blend:
      return (1.0 - self.input_blend) * out + self.input_blend * images.astype(jnp.float32)
    return out


def affine_output(coeffs: jax.Array, images: jax.Array) -> jax.Array:
  """Per-pixel colour transforms applied to the input: the "affine" head of ``TransformNet``.

  Args:
    coeffs: [B, H, W, 12] raw head outputs: a 3x3 matrix (row-major, output colour first) then an
      offset, each scaled by ``AFFINE_SCALE``; the matrix is added to the identity.
    images: [B, H, W, 3] the network's input in [0, 1].

  Returns:
    ``clip((Id + s M) images + s b, 0, 1)``, float32 [B, H, W, 3].
  """
  coeffs = AFFINE_SCALE * coeffs
  matrix = coeffs[..., :9].reshape(coeffs.shape[:-1] + (3, 3))  # [B, H, W, out, in]
  out = images + jnp.einsum("bhwoi,bhwi->bhwo", matrix, images) + coeffs[..., 9:]
  return jnp.clip(out, 0.0, 1.0)


def check_options(model: TransformNet) -> None:
  """Raises ``UserError`` for an unknown option value of a ``TransformNet``."""
  for attr, valid in (("normalization", config.NORMALIZATIONS), ("upsample", config.UPSAMPLES),
                      ("padding", config.PADDINGS), ("output", config.NET_OUTPUTS)):
    if getattr(model, attr) not in valid:
      raise UserError(f"unknown {attr} {getattr(model, attr)!r}; expected one of {valid}")
  resolve_impl(model.conv_impl)  # UserError naming conv_impl
  if model.num_styles < 1 or (model.num_styles > 1 and model.normalization != "instance"):
    raise UserError(f"num_styles must be >= 1, and > 1 only with instance normalization; got "
                    f"{model.num_styles} with {model.normalization!r}")
  if model.affine_grid not in (1, 4):
    raise UserError(f"affine_grid must be 1 or 4, got {model.affine_grid}")
  if model.pixel_shuffle and model.output != "rgb":
    raise UserError(f"pixel_shuffle needs the rgb output, got {model.output!r}")
  if not model.width > 0 or model.num_residual < 0 or not 0.0 <= model.input_blend < 1.0:
    raise UserError(f"invalid network size or blend: width={model.width} (> 0), "
                    f"num_residual={model.num_residual} (>= 0), "
                    f"input_blend={model.input_blend} (in [0, 1))")


_OPTIONS = ("normalization", "upsample", "padding", "output", "conv_impl", "num_styles",
            "affine_grid", "pixel_shuffle", "width", "num_residual", "input_blend")


@functools.lru_cache(maxsize=64)
def options_checked(values: tuple) -> None:
  """``check_options`` once per distinct option values: every trace of a network (the parameter
  shapes, then each compilation) calls it, and a value that passed once passes again. A failing
  check is not cached."""
  check_options(types.SimpleNamespace(**dict(zip(_OPTIONS, values))))


def _check_size(shape: tuple[int, ...]) -> None:
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f"expected RGB images [B, H, W, 3], got shape {shape}")
  if shape[1] % MULTIPLE or shape[2] % MULTIPLE:
    raise ValueError(f"image height and width must be divisible by {MULTIPLE}, got {shape[1:3]}; "
                     "use nets.stylize_any_size for other sizes")


# Presets. The paper's network; the reference thesis' (instance norm, reflection padding,
# resize-convolution upsampling); a tiny one for tests.
JohnsonNet = functools.partial(TransformNet, normalization="batch", upsample="transpose",
                               padding="zero")
ThesisNet = functools.partial(TransformNet, normalization="instance", upsample="resize",
                              padding="reflect")
TinyNet = functools.partial(TransformNet, width=0.125, num_residual=1)
LiteNet = functools.partial(ThesisNet, width=0.25, pixel_shuffle=True)  # fast on CPUs


@functools.partial(jax.jit, static_argnames=("model", "size"))  # one program, not op by op
def init_variables(model: nn.Module, key: jax.Array, *, size: int = 64) -> dict:
  """Initializes ``model`` (a ``TransformNet``) with ``key`` on a dummy [1, size, size, 3] batch
  (size a multiple of 4; the shapes do not depend on it); returns ``{"params": ...}``, plus
  ``{"batch_stats": ...}`` for batch normalization."""
  return model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))


def count_params(variables: Any) -> int:
  """The number of trainable scalars: of ``variables["params"]`` if present, else of the tree;
  arrays or ``jax.ShapeDtypeStruct`` leaves (from ``jax.eval_shape(model.init, ...)``)."""
  tree = variables.get("params", variables) if hasattr(variables, "get") else variables
  return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


def pad_to_multiple(images: jax.Array, multiple: int = MULTIPLE,
                    ) -> tuple[jax.Array, tuple[tuple[int, int], tuple[int, int]]]:
  """Reflect-pads [B, H, W, C] images so that H and W are multiples of ``multiple``.

  The padding is split between both sides (the extra pixel, if any, after).

  Args:
    images: [B, H, W, C].
    multiple: the required divisor of the output height and width.

  Returns:
    ``(padded [B, H', W', C], ((top, bottom), (left, right)))``; undo with ``crop_padding``.
  """
  pads = []
  for n in images.shape[1:3]:
    extra = -n % multiple
    pads.append((extra // 2, extra - extra // 2))
  padded = jnp.pad(images, ((0, 0), pads[0], pads[1], (0, 0)), mode="reflect")
  return padded, (pads[0], pads[1])


def crop_padding(images: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Undoes ``pad_to_multiple``: [B, H', W', C] -> [B, H, W, C]."""
  (top, bottom), (left, right) = pads
  h, w = images.shape[1:3]
  return images[:, top:h - bottom, left:w - right, :]


def apply_any_size(apply_fn: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
  """Pads ``images`` [B, H, W, C] to a multiple of 4, calls ``apply_fn``, crops back."""
  padded, pads = pad_to_multiple(images, MULTIPLE)
  return crop_padding(apply_fn(padded), pads)


def stylize_any_size(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  """Applies a transformation network (inference mode) to images of any size.

  Args:
    model: a ``TransformNet``.
    variables: its variables (``params`` and, for batch norm, ``batch_stats``).
    images: RGB [B, H, W, 3] in [0, 1], any H, W >= 1.

  Returns:
    float32 [B, H, W, 3] in [0, 1].
  """
  return apply_any_size(lambda x: model.apply(variables, x, train=False), images)

# ------------------------------------------------------------------ the network a config describes
def make_model(net: config.NetConfig, *, bf16: bool = False) -> TransformNet:
  """The ``TransformNet`` a ``NetConfig`` describes (bfloat16 compute with ``bf16``); its options
  are checked when it is first called (``check_options``)."""
  return TransformNet(normalization=net.normalization, upsample=net.upsample, padding=net.padding,
                      width=net.width, num_residual=net.num_residual,
                      input_blend=net.input_blend, output=net.output,
                      affine_grid=net.affine_grid, pixel_shuffle=net.pixel_shuffle,
                      conv_impl=net.conv_impl, num_styles=net.num_styles,
                      dtype=jnp.bfloat16 if bf16 else jnp.float32)


def config_from_json(text: str) -> config.TrainConfig:
  """Rebuilds a ``TrainConfig`` from ``config.to_json`` output (unknown keys raise ``UserError``).

  Everything a training run needs, the style image and data paths included, is in its config, so
  the JSON written beside each checkpoint rebuilds the network (and the run) on its own.
  """
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserError(f"not a training config (bad JSON: {e})") from None
  return config_from_dict(data)


def config_from_dict(data: dict) -> config.TrainConfig:
  """``config_from_json`` of parsed JSON."""
  if not isinstance(data, dict) or "net" not in data or "loss" not in data:
    raise UserError("not a training config: no 'net' and 'loss' sections")
  try:
    return config.from_dict(config.TrainConfig, data)
  except (TypeError, ValueError) as e:  # config.ConfigError included
    raise UserError(f"not a valid training config: {e}") from None


def style_vector(names: Sequence[str], *, index: int | None = None, name: str | None = None,
                 mix: str | None = None) -> np.ndarray:
  """The style weights [S] a user picks: ``index``, ``name``, or ``mix`` ("0.5:a,0.5:b"; names
  or indices, weights normalized to sum 1); default the first style.

  Raises:
    UserError: an unknown name, an index out of range, a malformed mix, or several choices.
  """
  if sum(x is not None for x in (index, name, mix)) > 1:
    raise UserError("give at most one of --style-index, --style-name and --mix")
  weights = np.zeros(len(names), np.float32)
  if mix is not None:
    for part in mix.split(","):
      w, sep, who = part.partition(":")
      try:
        value = float(w)
      except ValueError:
        value = -1.0
      if not sep or not value >= 0:
        raise UserError(f"--mix expects WEIGHT:STYLE,WEIGHT:STYLE (e.g. 0.5:starry,0.5:wave), "
                        f"got {part!r}")
      weights[_find_style(names, who.strip())] += value
    if weights.sum() <= 0:
      raise UserError(f"--mix weights must not all be 0: {mix!r}")
    return weights / weights.sum()
  weights[_find_style(names, name if name is not None else str(index or 0))] = 1.0
  return weights


def _find_style(names: Sequence[str], who: str) -> int:
  if who.isdigit():
    if int(who) >= len(names):
      raise UserError(f"style index {who} out of range: the model has {len(names)} style(s)")
    return int(who)
  hits = [i for i, n in enumerate(names) if n == who] or [
      i for i, n in enumerate(names) if who.lower() in n.lower()]
  if len(hits) != 1:
    raise UserError(f"style {who!r} {'is ambiguous' if hits else 'not found'}; the model's "
                    f"styles: {', '.join(f'{i}:{n}' for i, n in enumerate(names))}")
  return hits[0]
