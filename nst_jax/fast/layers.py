"""The layers of the feed-forward transformation networks (Flax Linen): convolutions with Torch's
padding semantics, the two upsampling stages, (conditional) instance and batch normalization and
the residual block. ``nets`` assembles them into ``TransformNet``.

Synopsis::

  from nst_jax.fast import layers
  y = layers.conv_layer(x, 32, 9, name="conv1")              # inside a compact __call__
  y = layers.upsample(x, 64, mode="resize", padding="reflect", dtype=jnp.float32,
                      conv_impl="auto", index=1)               # [B, 2h, 2w, 64]
  y = layers.ResidualBlock(128)(x)

References:
  Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
  Stylization", 2016.
  Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016.
  Dumoulin, Shlens & Kudlur, "A Learned Representation for Artistic Style", ICLR 2017
  (conditional instance normalization).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from nst_jax.core.conv import conv2d, upsample_conv2d


class Conv(nn.Module):
  # nn.Conv's parameters ("kernel" [k, k, I, O] lecun-normal, "bias" [O] zeros, float32) around
  # a convolution function fn(x, kernel) -> [B, h, w, O].
  features: int
  kernel: int
  fn: Callable
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = (self.kernel, self.kernel, x.shape[-1], self.features)
    kernel = self.param("kernel", nn.linear.default_kernel_init, shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return self.fn(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


def conv_layer(x, features: int, kernel: int, stride: int = 1, *, padding: str = "reflect",
               dtype: Any = jnp.float32, conv_impl: str = "auto", name: str):
  """A k x k convolution with symmetric reflect or zero padding of k // 2 (Torch semantics).

  Call inside a compact ``__call__``: it creates the submodule ``name`` with ``nn.Conv``'s
  parameters (``kernel`` HWIO, ``bias``). With stride 2 the output is ceil(H / 2) x ceil(W / 2) as
  in the paper's Torch code (Flax's "SAME" would pad asymmetrically instead). Computed by
  ``conv2d`` with ``impl=conv_impl``.

  Args:
    x: [B, H, W, C].
    features: output channels.
    kernel: the kernel size k (odd).
    stride: 1 or 2.
    padding: "reflect" or "zero".
    dtype: the compute dtype.
    conv_impl: "auto", "xla" or "cpu_fast" (``conv.resolve_impl``).
    name: the submodule name (caffe style, e.g. "conv1").

  Returns:
    [B, H / stride, W / stride, features].
  """
  fn = functools.partial(conv2d, stride=stride, padding=padding, impl=conv_impl)
  return Conv(features, kernel, fn, dtype, name=name)(x)


def transpose_conv(features: int, dtype: Any, name: str) -> nn.Module:
  # Torch's SpatialFullConvolution(k=3, stride=2, pad=1, adj=1): the stride-dilated input is padded
  # by k - 1 - pad = 1 before and k - 1 - pad + adj = 2 after, which gives exactly 2H x 2W. The
  # kernel is Torch's flipped in H and W (Flax correlates the dilated input with it).
  return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                          dtype=dtype, name=name)


def resize_conv(x, features: int, *, padding: str, dtype: Any, conv_impl: str, name: str):
  """Nearest-neighbour x2, then a 3x3 convolution (``upsample_conv2d``): [B, h, w, C] ->
  [B, 2h, 2w, features], in the submodule ``name``."""
  fn = functools.partial(upsample_conv2d, padding=padding, impl=conv_impl)
  return Conv(features, 3, fn, dtype, name=name)(x)


def upsample(x, features: int, *, mode: str, padding: str, dtype: Any, conv_impl: str,
              index: int):
  # [B, h, w, C] -> [B, 2h, 2w, features]
  if mode == "transpose":
    return transpose_conv(features, dtype, f"deconv{index}")(x)
  return resize_conv(x, features, padding=padding, dtype=dtype, conv_impl=conv_impl,
                     name=f"upconv{index}")


class ConditionalInstanceNorm(nn.Module):
  """Instance normalization whose scale and shift are a per-example blend of per-style rows.

  ``out = x_hat * (w @ scale) + (w @ bias)`` with ``x_hat`` the instance-normalized input and
  ``w`` [B, S] the style weights (one-hot picks one style; a convex mix interpolates styles,
  Dumoulin et al. 2017, Fig. 7). Parameters: ``scale`` [S, C] (ones), ``bias`` [S, C] (zeros).
  """
  num_styles: int
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, style_weights):  # [B, H, W, C], [B, S] -> [B, H, W, C]
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), (self.num_styles, c), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.num_styles, c), jnp.float32)
    x_hat = nn.InstanceNorm(epsilon=self.epsilon, use_scale=False, use_bias=False,
                            dtype=self.dtype, name="norm")(x)
    w = style_weights.astype(jnp.float32)
    gamma, beta = w @ scale, w @ bias  # [B, C] each
    return (x_hat * gamma[:, None, None, :].astype(self.dtype)
            + beta[:, None, None, :].astype(self.dtype))


def norm(kind: str, train: bool, dtype: Any, name: str, style_weights=None) -> Callable:
  # -> x [B, H, W, C] -> [B, H, W, C]; conditional instance norm when style_weights is given.
  if style_weights is not None:
    cin = ConditionalInstanceNorm(style_weights.shape[-1], dtype=dtype, name=name)
    return lambda x: cin(x, style_weights)
  if kind == "instance":
    # Per-image, per-channel statistics over H, W with a learned scale and bias.
    return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, name=name)
  # Torch's momentum 0.1 for the running average is Flax's 0.9.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


class ResidualBlock(nn.Module):
  """Two 3x3 convolutions with normalization, ReLU after the first only, identity shortcut.

  The paper's blocks use unpadded convolutions and crop the shortcut (with 40 pixels of reflection
  padding at the network's input); here both convolutions are padded so that sizes are preserved,
  as in most re-implementations.
  """

  features: int
  normalization: str = "instance"
  padding: str = "reflect"
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, style_weights=None, *, train: bool = False):
    # [B, H, W, C] (, [B, S] for conditional instance norm) -> [B, H, W, C]
    conv = functools.partial(conv_layer, padding=self.padding, dtype=self.dtype,
                             conv_impl=self.conv_impl)
    y = conv(x, self.features, 3, name="conv1")
    y = nn.relu(norm(self.normalization, train, self.dtype, "norm1", style_weights)(y))
    y = conv(y, self.features, 3, name="conv2")
    y = norm(self.normalization, train, self.dtype, "norm2", style_weights)(y)
    return x + y
