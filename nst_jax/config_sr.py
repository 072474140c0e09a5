"""Super-resolution configs: frozen dataclasses and presets (``nst_jax/sr``).

Synopsis::

  from nst_jax import config, config_sr
  cfg = config_sr.SR_PRESETS["johnson"](4)                 # Johnson et al.'s x4 network and loss
  cfg = config.override(cfg, {"loss.pixel_weight": "1"})   # the same typed overrides as config

A leaf beside ``config`` (which is at its size limit): it imports nothing from the package but
``nst_jax.config``, and holds only names, dataclasses and presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from nst_jax.config import ConfigError

SR_ARCHS = ("johnson", "subpixel")
SR_UPSAMPLES = ("transpose", "resize")
SR_NORMALIZATIONS = ("batch", "none")
PIXEL_LOSSES = ("mse", "l1")
LOSS_NETWORKS = ("vgg16", "vgg19")
DEGRADATIONS = ("bicubic", "bicubic_noaa", "johnson")
SR_SCALES = (2, 3, 4, 8)


@dataclass(frozen=True)
class SRNetConfig:
  """The options of ``sr.nets`` (see ``make_net``).

  Attributes:
    arch: "johnson" (9x9 in, residual blocks at LR, log2(scale) x2 stages, 9x9 out) or
      "subpixel" (Shi et al.'s ESPCN: convolutions at LR, then a pixel shuffle).
    width: channels of the hidden layers.
    num_residual: residual blocks (johnson) / hidden 3x3 layers after the first (subpixel).
    upsample: johnson's x2 stages: "transpose" (fractionally strided) or "resize" (nearest x2,
      then a 3x3 convolution).
    normalization: "batch" (the paper's supplement) or "none".
    residual_bicubic: predict a residual over the bicubic upsample of the input.
  """
  arch: str = "johnson"
  width: int = 64
  num_residual: int = 4
  upsample: str = "transpose"
  normalization: str = "batch"
  residual_bicubic: bool = False


@dataclass(frozen=True)
class SRLossConfig:
  """Weighted pixel, feature-reconstruction and TV losses (``sr.losses``)."""
  pixel_loss: str = "mse"
  pixel_weight: float = 0.0
  feature_weight: float = 1.0
  feature_layers: tuple[str, ...] = ("relu2_2",)
  loss_network: str = "vgg16"  # Johnson et al.'s
  tv_weight: float = 0.0


@dataclass(frozen=True)
class SRConfig:
  """A super-resolution model and its training run (training itself: a later issue)."""
  net: SRNetConfig = field(default_factory=SRNetConfig)
  loss: SRLossConfig = field(default_factory=SRLossConfig)
  scale: int = 4
  degradation: str = "bicubic"
  size: int = 288  # HR training crops (Johnson et al.: 288 px)
  batch_size: int = 4
  num_steps: int = 200_000
  learning_rate: float = 1e-3
  seed: int = 0


def check(cfg: SRConfig) -> SRConfig:
  """Validates the choices; raises ``ConfigError`` naming the key."""
  for key, value, allowed in (
      ("scale", cfg.scale, SR_SCALES), ("degradation", cfg.degradation, DEGRADATIONS),
      ("net.arch", cfg.net.arch, SR_ARCHS), ("net.upsample", cfg.net.upsample, SR_UPSAMPLES),
      ("net.normalization", cfg.net.normalization, SR_NORMALIZATIONS),
      ("loss.pixel_loss", cfg.loss.pixel_loss, PIXEL_LOSSES),
      ("loss.loss_network", cfg.loss.loss_network, LOSS_NETWORKS)):
    if value not in allowed:
      raise ConfigError(key, f"{value!r} is not one of {allowed}")
  if cfg.net.width < 1 or cfg.net.num_residual < 0:
    raise ConfigError("net.width", "width must be >= 1 and num_residual >= 0")
  return cfg


def johnson(scale: int = 4) -> SRConfig:
  """Johnson et al. 2016 (supplement): 9x9 conv 64, 4 residual blocks, log2(scale) stride-1/2
  3x3 convs, 9x9 conv out, batch norm; feature loss at VGG16 relu2_2; 288-px HR crops, batch 4,
  200k steps of Adam at 1e-3, blur (sigma 1) + bicubic degradation."""
  return SRConfig(net=SRNetConfig(), loss=SRLossConfig(), scale=scale, degradation="johnson")


def fast(scale: int = 4) -> SRConfig:
  """A sub-pixel network at LR resolution over a bicubic residual, small enough for a CPU;
  pixel (MSE) loss, bicubic degradation."""
  return SRConfig(
      net=SRNetConfig(arch="subpixel", width=32, num_residual=2, normalization="none",
                      residual_bicubic=True),
      loss=SRLossConfig(pixel_weight=1.0, feature_weight=0.0), scale=scale, size=96,
      batch_size=16)


def smoke(scale: int = 4) -> SRConfig:
  """A tiny configuration for tests."""
  cfg = fast(scale)
  return dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, width=8, num_residual=1),
                             size=32, batch_size=2, num_steps=4)


SR_PRESETS = {"johnson": johnson, "fast": fast, "smoke": smoke}
