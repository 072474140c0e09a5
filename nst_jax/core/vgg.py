"""VGG19 / VGG16 (Simonyan & Zisserman 2015) conv features, as a pure function of their weights.

Synopsis::

  from nst_jax.core import vgg
  params = vgg.load_vgg19("vgg19_conv.npz")
  feats = vgg.vgg_features(params, images, ("conv4_2", "relu1_1"), pooling="avg")
  feats["conv4_2"].shape   # [B, H/8, W/8, 512]
  feats = vgg.vgg_features(params, images, ("relu1_1",), conv_impl="xla")  # plain autodiff
  params16 = vgg.load_vgg("vgg16_conv.npz")             # the npz records its architecture
  vgg.vgg_features(params16, images, ("relu2_2",))     # the same function runs VGG16

The architecture is told from the params' structure (VGG19 has ``conv5_4``, VGG16 stops at
``conv5_3``), so it is static under ``jax.jit``.

The public input convention is RGB float images in [0, 1], NHWC. The weights' own convention
(Caffe: BGR, 0-255, mean-subtracted; or torchvision: RGB, mean/std) is handled once, at load time,
by reordering the first kernel to RGB and storing an affine ``preprocess`` (x * scale - offset).
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.config import REMATS, VGG_BLOCKS, VGG_LAYERS
from nst_jax.core import conv
from nst_jax.core.errors import UserError

BLOCKS = VGG_BLOCKS["vgg19"]  # convolutions per block in VGG19
VGG16_BLOCKS = VGG_BLOCKS["vgg16"]
ARCHITECTURES = ("vgg19", "vgg16")


VGG19_LAYERS = VGG_LAYERS["vgg19"]  # the names are config's (defined once there)
CONV_LAYERS = tuple(n for n in VGG19_LAYERS if n.startswith("conv"))
VGG16_LAYERS = VGG_LAYERS["vgg16"]
VGG16_CONV_LAYERS = tuple(n for n in VGG16_LAYERS if n.startswith("conv"))
LAYERS = {"vgg19": VGG19_LAYERS, "vgg16": VGG16_LAYERS}


def conv_layers(architecture: str = "vgg19") -> tuple[str, ...]:
  """The convolution names of an architecture (16 for VGG19, 13 for VGG16)."""
  return CONV_LAYERS if architecture == "vgg19" else VGG16_CONV_LAYERS


def architecture_of(params: Mapping) -> str:
  """"vgg19" or "vgg16", from the params' structure (static under jit)."""
  return "vgg19" if "conv5_4" in params else "vgg16"

CAFFE_MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)
TORCH_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
TORCH_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)
CONVENTIONS = ("caffe_bgr", "torch_rgb")


def preprocess_for(convention: str) -> dict[str, np.ndarray]:
  """The affine map RGB [0, 1] -> network input, ``x * scale - offset``, for a weight convention."""
  if convention == "caffe_bgr":
    return {"scale": np.full(3, 255.0, np.float32), "offset": CAFFE_MEAN_RGB.copy()}
  if convention == "torch_rgb":
    return {"scale": 1.0 / TORCH_STD_RGB, "offset": TORCH_MEAN_RGB / TORCH_STD_RGB}
  raise UserError(f"unknown VGG weight convention {convention!r}; expected one of {CONVENTIONS}")


def params_from_arrays(arrays: Mapping[str, np.ndarray], convention: str = "caffe_bgr",
                       architecture: str = "vgg19") -> dict:
  """Builds the params pytree from ``{"convX_Y/kernel": HWIO, "convX_Y/bias": (O,)}`` arrays."""
  if architecture not in ARCHITECTURES:
    raise UserError(f"unknown VGG architecture {architecture!r}; expected one of {ARCHITECTURES}")
  params, label = {}, architecture.upper()
  for name in conv_layers(architecture):
    try:
      kernel = np.asarray(arrays[f"{name}/kernel"], np.float32)
      bias = np.asarray(arrays[f"{name}/bias"], np.float32)
    except KeyError:
      raise UserError(f"{label} weights lack layer {name}; is this a {label} conv weights "
                      "file?") from None
    if name == "conv1_1" and convention == "caffe_bgr":
      kernel = kernel[:, :, ::-1, :]  # BGR input channels -> RGB
    params[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
  params["preprocess"] = {k: jnp.asarray(v) for k, v in preprocess_for(convention).items()}
  return params


def load_vgg19(path: str | os.PathLike) -> dict:
  """Loads VGG19 conv weights from the ``.npz`` layout (``convX_Y/kernel`` HWIO, ``convX_Y/bias``).

  An optional string entry ``convention`` ("caffe_bgr", the default, or "torch_rgb") records the
  input convention the weights were trained with.

  Args:
    path: the ``.npz`` file.

  Returns:
    A params pytree: ``{"conv1_1": {"kernel", "bias"}, ..., "preprocess": {"scale", "offset"}}``
    with the first kernel ordered RGB, ready for ``vgg_features`` on RGB [0, 1] images.

  References:
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015.
  """
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except FileNotFoundError:
    raise UserError(f"VGG19 weights not found: {path}") from None
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"cannot read VGG19 weights {path}: {e}") from None
  convention = str(arrays.pop("convention", np.array("caffe_bgr")))
  architecture = str(arrays.pop("architecture", np.array("vgg19")))
  return params_from_arrays(arrays, convention, architecture)


def load_vgg(path: str | os.PathLike) -> dict:
  """Loads VGG19 or VGG16 conv weights (the npz's ``architecture`` entry; default "vgg19")."""
  return load_vgg19(path)


def check_layers(layers: Iterable[str], architecture: str = "vgg19") -> tuple[str, ...]:
  """Validates layer names; raises ``UserError`` naming the valid ones."""
  layers = tuple(layers)
  bad = [l for l in layers if l not in LAYERS.get(architecture, VGG19_LAYERS)]
  if bad:
    last = "5_4" if architecture == "vgg19" else "5_3"
    raise UserError(f"unknown {architecture.upper()} layer(s) {', '.join(bad)}; valid names are "
                    f"conv1_1 ... conv{last}, relu1_1 ... relu{last}, pool1 ... pool5")
  return layers


def _conv3x3_xla(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


# VGG's wide layers (256 or 512 channels in or out: conv3_1 on) run as Winograd F(2x2, 3x3) on
# CPUs, forward and input gradient, from one kernel transform per evaluation: with the kernels as
# arguments (an optimizer's parameters) the whole Gatys value and gradient in the optimizer's
# loop is ~20 % faster at 256 and 512 px (benchmarks/optimize_bench.py), and no less accurate
# (against float64, the gradient at 512 px: 1.6e-3 of its largest entry against 5.0e-3). With
# 64-128 channels, and below 512 pixels (conv5 of a 256 px image), XLA's
# convolution is faster (benchmarks/vgg_conv_bench.py); small layers also keep the many small
# ops of the transforms out of the test-sized programs (with them, the suite compiled 30 % longer).
# The transforms are transient buffers of 4 (I + O) floats per output pixel.
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_MIN_PIXELS = 512  # batch x height x width
# Larger layers run the transforms in row strips of this many pixels
# (``conv.winograd_conv3x3_same``): unstriped, a wide layer's transforms alone take 4 (I + O)
# floats per pixel, 128 floats per input pixel in block 3, more than all of block 1's kept
# activations (benchmarks/slow_memory_bench.py). Layers of 512 px images stay whole (block 3 of
# 384x512: 12288 pixels).
WINOGRAD_STRIP_PIXELS = 16384


def _wide(x, kernel) -> bool:
  return (x.dtype == jnp.float32 and max(kernel.shape[2:]) >= WINOGRAD_MIN_CHANNELS
          and x.shape[0] * x.shape[1] * x.shape[2] >= WINOGRAD_MIN_PIXELS)


@jax.custom_vjp
def _conv3x3_cpu(x, kernel):
  # The input gradient is an explicit convolution with the flipped, I/O-swapped kernel in
  # canonical HWIO layout: autodiff inside a ``while_loop`` (the optimizer's loop) leaves XLA:CPU
  # with non-canonical ``01oi`` kernels that miss its fast convolution path
  # (benchmarks/conv_loop_profile.py).
  return _conv3x3_fwd(x, kernel)[0]


def _conv3x3_fwd(x, kernel):
  if _wide(x, kernel):  # the Winograd kernel once per evaluation, for both passes
    u = conv.winograd_kernel(kernel)
    return conv.winograd_conv3x3_same(x, u, strip_pixels=WINOGRAD_STRIP_PIXELS), (x, kernel, u)
  return _conv3x3_xla(x, kernel), (x, kernel, None)


def _conv3x3_bwd(residuals, g):
  x, kernel, u = residuals
  _, kernel_vjp = jax.vjp(lambda k: _conv3x3_xla(x, k), kernel)  # removed unless kernels train
  if u is not None:
    return (conv.winograd_conv3x3_same(g, u, flipped=True, strip_pixels=WINOGRAD_STRIP_PIXELS),
            kernel_vjp(g)[0])
  kernel_t = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))  # [3, 3, O, I]
  return _conv3x3_xla(g, kernel_t), kernel_vjp(g)[0]


_conv3x3_cpu.defvjp(_conv3x3_fwd, _conv3x3_bwd)

NARROW = 3  # images with a side below the kernel's: one matmul (``_conv3x3_narrow``)


def _conv3x3_narrow(x, kernel):
  # XLA:CPU's convolution is slow on an image narrower than its 3x3 kernel (VGG's conv5 at
  # 32-48 px, conv4 at 16-24 px: 1x1 to 2x3 pixels). Nine shifted copies times the kernel are
  # several times faster on every narrow shape (benchmarks/vgg_conv_bench.py --narrow;
  # docs/research/implementation_notes.md). Autodiff gives matmuls for both gradients.
  return conv.im2col_conv3x3(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel)


def conv3x3(x, kernel, *, impl: str = "auto"):
  """3x3 SAME convolution [B, H, W, I] x [3, 3, I, O] -> [B, H, W, O].

  Both implementations compute the same values and gradients. "cpu_fast" writes the input
  gradient as an explicit convolution with the flipped, I/O-swapped kernel (a custom VJP) that
  keeps XLA:CPU on its fast path inside the optimizer's loop, and runs the layers with 256 or
  more channels and 512 or more pixels as Winograd F(2x2, 3x3) matmuls
  (``WINOGRAD_MIN_CHANNELS``, ``WINOGRAD_MIN_PIXELS``) and images with a side below 3 pixels
  as one matmul (``NARROW``); "xla" is the plain
  convolution differentiated by JAX, for the backends whose compilers handle that themselves.

  Args:
    x: [B, H, W, I].
    kernel: [3, 3, I, O] (HWIO).
    impl: "auto", "xla" or "cpu_fast" (``conv.resolve_impl``, resolved at trace time).

  Returns:
    [B, H, W, O].
  """
  if conv.resolve_impl(impl) == "xla":
    return _conv3x3_xla(x, kernel)
  if min(x.shape[1:3]) < NARROW:
    return _conv3x3_narrow(x, kernel)
  return _conv3x3_cpu(x, kernel)


def _conv(x, p, impl: str):
  return conv3x3(x, p["kernel"].astype(x.dtype), impl=impl) + p["bias"].astype(x.dtype)


def _pool(x, pooling: str):
  window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
  if pooling == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, "VALID")
  if pooling == "avg":
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "VALID") * 0.25
  raise UserError(f"unknown pooling {pooling!r}; expected 'max' or 'avg'")


@jax.custom_vjp
def relu(x: jax.Array) -> jax.Array:
  """``max(x, 0)`` whose backward pass keeps one bit per value, ``x > 0``, instead of ``x``.

  ``jax.nn.relu``'s derivative reads its float input, so autodiff keeps every pre-activation of
  VGG alive from the forward to the backward pass (the convolutions' input gradients need only
  their kernels). A plain boolean mask does not help: XLA fuses the comparison into the backward
  pass and keeps the float input for it; the mask packed 8 to a byte along the channels
  (``jnp.packbits``, a reduction XLA does not duplicate) is stored instead, 1/32 of the float.
  The gradient is the same (0 at 0, as ``jax.nn.relu``'s).
  """
  return jnp.maximum(x, 0)


def _relu_fwd(x):
  # x * (x > 0), not jnp.maximum(x, 0): XLA:CPU's YNNPACK fusions pull a ReLU into the next
  # layer's convolution (through the pooling) and pass the maximum's 0 as a materialized
  # image-sized operand, hoisted to the start of the evaluation and live through it (a 64-channel
  # map of zeros at full resolution, and one per block); the product needs no constant.
  positive = x > 0
  return x * positive.astype(x.dtype), jnp.packbits(positive, axis=-1)


def _relu_bwd(bits, g):
  mask = jnp.unpackbits(bits, axis=-1, count=g.shape[-1]).astype(bool)
  return (jnp.where(mask, g, jnp.zeros_like(g)),)


relu.defvjp(_relu_fwd, _relu_bwd)


def preprocess(params: Mapping, images: jax.Array) -> jax.Array:
  """RGB [0, 1] -> the network's input convention."""
  pre = params["preprocess"]
  return images * pre["scale"].astype(images.dtype) - pre["offset"].astype(images.dtype)


def _block_fn(names: tuple[str, ...], wanted: frozenset, pooling: str, conv_impl: str,
              remat: str):
  """``(params, x) -> (x after the block's last layer, {wanted name: activation})``."""

  def block(params, x):
    out = {}
    for name in names:
      kind = name[:4]
      if kind == "conv":
        x = _conv(x, params[name], conv_impl)
      elif kind == "relu":
        x = jax.nn.relu(x) if remat == "none" else relu(x)
      else:
        x = _pool(x, pooling)
      if name in wanted:
        out[name] = x
    return x, out

  return jax.checkpoint(block) if remat == "blocks" else block


def vgg_features(params: Mapping, images: jax.Array, layers: Sequence[str],
                 pooling: str = "max", *, conv_impl: str = "auto",
                 remat: str = "masks") -> dict[str, jax.Array]:
  """VGG19 / VGG16 activations at the requested layers; nothing past the deepest one is computed.

  Args:
    params: from ``load_vgg19`` / ``load_vgg`` (the architecture is told from its layers).
    images: RGB [B, H, W, 3] in [0, 1] (float32 or bfloat16).
    layers: names among ``VGG19_LAYERS`` / ``VGG16_LAYERS`` (``convX_Y`` pre-activation,
      ``reluX_Y``, ``poolX``).
    pooling: "max" (the network as trained) or "avg" (Gatys et al.).
    conv_impl: "auto", "xla" or "cpu_fast" (``conv3x3``; "auto" is "cpu_fast" on the CPU only).
    remat: what a backward pass keeps from the forward one (``config.REMATS``; the same values
      and gradients): "none", JAX's autodiff of ``jax.nn.relu`` (every pre-activation, float);
      "masks", ``relu``'s 1-byte masks (and the requested activations); "blocks", only each
      block's input, the block recomputed in the backward pass (``jax.checkpoint``).

  Returns:
    ``{name: [B, h, w, C]}`` for each requested layer.
  """
  architecture = architecture_of(params)
  wanted = frozenset(check_layers(layers, architecture))
  if remat not in REMATS:
    raise UserError(f"unknown remat {remat!r}; expected one of {', '.join(REMATS)}")
  conv_impl = conv.resolve_impl(conv_impl)
  if not wanted:
    return {}
  names = LAYERS[architecture][:1 + max(LAYERS[architecture].index(l) for l in wanted)]
  out = {}
  x = preprocess(params, images)
  for b in range(1, 6):  # one block at a time: the unit ``remat="blocks"`` recomputes
    block = tuple(n for n in names if int(n[4]) == b)
    if block:
      x, feats = _block_fn(block, wanted, pooling, conv_impl, remat)(params, x)
      out.update(feats)
  return out
