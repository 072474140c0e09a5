"""Super-resolution networks: Johnson et al.'s residual net and a sub-pixel (ESPCN) net.

Synopsis::

  from nst_jax import config
  from nst_jax.sr import nets
  cfg = config.sr_johnson(4)
  net = nets.make_net(cfg.net, cfg.scale)
  variables = nets.init_variables(net, jax.random.key(0))   # {"params", "batch_stats"?}
  sr = nets.apply_net(net, variables, lr)                   # [B, h, w, 3] -> [B, 4h, 4w, 3]

Both networks are fully convolutional (any input size) and take and return RGB in [0, 1]; the
compute dtype follows the input (float32 or bfloat16), parameters stay float32.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax import config
from nst_jax.core import conv
from nst_jax.core.errors import UserError
from nst_jax.sr import degrade


def pixel_shuffle(x: jax.Array, scale: int) -> jax.Array:
  """Depth-to-space [B, h, w, C s^2] -> [B, s h, s w, C] (Shi et al. 2016's periodic shuffle).

  Channel ``c * s^2 + i * s + j`` becomes pixel ``(i, j)`` of channel ``c`` (PyTorch's order).
  """
  b, h, w, cs = x.shape
  c = cs // (scale * scale)
  x = x.reshape(b, h, w, c, scale, scale)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * scale, w * scale, c)


def _conv(cfg, features: int, size: int, dtype, **kwargs) -> nn.Conv:
  # nn.Conv ("SAME" zero padding); cpu_fast: wide outputs in groups (conv.grouped_out_conv).
  fast = conv.resolve_impl(cfg.conv_impl) == "cpu_fast"
  return nn.Conv(features, (size, size), dtype=dtype,
                 conv_general_dilated=conv.grouped_out_conv if fast else None, **kwargs)


def _norm(cfg, train: bool):
  if cfg.normalization == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)
  return lambda x: x


class ResidualBlock(nn.Module):
  """conv3x3-norm-ReLU-conv3x3-norm plus identity (Johnson et al.'s supplement, Gross & Wilber)."""
  cfg: config.SRNetConfig

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.relu(_norm(self.cfg, train)(_conv(self.cfg, self.cfg.width, 3, x.dtype)(x)))
    y = _norm(self.cfg, train)(_conv(self.cfg, self.cfg.width, 3, x.dtype)(y))
    return x + y


class JohnsonSR(nn.Module):
  """Johnson et al.'s SR network: 9x9 conv, residual blocks at LR, x2 stages, 9x9 conv, tanh.

  References:
    Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
    Super-Resolution", ECCV 2016, and its supplementary material (network architectures).
  """
  cfg: config.SRNetConfig
  scale: int

  @nn.compact
  def __call__(self, lr, train: bool = False):
    cfg, dt = self.cfg, lr.dtype
    x = nn.relu(_norm(cfg, train)(_conv(cfg, cfg.width, 9, dt)(lr)))  # [B, h, w, C]
    for _ in range(cfg.num_residual):
      x = ResidualBlock(cfg)(x, train)
    for _ in range(int(math.log2(self.scale))):
      if cfg.upsample == "transpose":
        x = nn.ConvTranspose(cfg.width, (3, 3), strides=(2, 2), padding="SAME", dtype=dt)(x)
      else:
        b, h, w, c = x.shape
        x = _conv(cfg, cfg.width, 3, dt)(jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest"))
      x = nn.relu(_norm(cfg, train)(x))  # [B, 2h, 2w, C] per stage
    x = _conv(cfg, 3, 9, dt)(x)
    if cfg.residual_bicubic:
      return degrade.upsample_bicubic(lr, self.scale) + x
    return (jnp.tanh(x) + 1.0) * 0.5  # Johnson's scaled tanh, to [0, 1]


class SubPixelSR(nn.Module):
  """ESPCN: 5x5 conv, 3x3 convs at LR resolution, a 3x3 conv to 3 s^2 channels, pixel shuffle.

  References:
    Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
    Convolutional Neural Network", CVPR 2016.
  """
  cfg: config.SRNetConfig
  scale: int

  @nn.compact
  def __call__(self, lr, train: bool = False):
    cfg, dt = self.cfg, lr.dtype
    x = nn.relu(_norm(cfg, train)(_conv(cfg, cfg.width, 5, dt)(lr)))
    for _ in range(cfg.num_residual):
      x = nn.relu(_norm(cfg, train)(_conv(cfg, cfg.width, 3, dt)(x)))
    # Over a bicubic residual the last layer starts at zero, so training starts from bicubic.
    init = nn.initializers.zeros if cfg.residual_bicubic else nn.linear.default_kernel_init
    x = pixel_shuffle(_conv(cfg, 3 * self.scale ** 2, 3, dt, kernel_init=init)(x), self.scale)
    if cfg.residual_bicubic:
      return degrade.upsample_bicubic(lr, self.scale) + x
    return x


def make_net(cfg: config.SRNetConfig, scale: int) -> nn.Module:
  """The flax module of a config; johnson needs a power-of-two scale (its x2 stages)."""
  degrade.check_scale(scale)
  if cfg.arch == "johnson":
    if scale & (scale - 1):
      raise UserError(f"the johnson network upsamples in x2 stages: scale {scale} is not a "
                      "power of two (use arch=subpixel)")
    return JohnsonSR(cfg, scale)
  if cfg.arch == "subpixel":
    return SubPixelSR(cfg, scale)
  raise UserError(f"unknown SR network {cfg.arch!r}; expected one of {config.SR_ARCHS}")


@functools.partial(jax.jit, static_argnames=("net", "size"))  # one program, not op by op
def init_variables(net: nn.Module, key: jax.Array, size: int = 16) -> dict:
  """The network's variables (``params`` and, with batch norm, ``batch_stats``)."""
  return dict(net.init(key, jnp.zeros((1, size, size, 3), jnp.float32)))


def apply_net(net: nn.Module, variables, lr: jax.Array) -> jax.Array:
  """Inference (running batch statistics): LR [B, h, w, 3] -> SR [B, s h, s w, 3]."""
  return net.apply(variables, lr, train=False)


def count_params(variables) -> int:
  """Trainable parameters (batch statistics excluded)."""
  return sum(x.size for x in jax.tree.leaves(variables["params"]))
