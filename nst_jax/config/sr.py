"""Super-resolution configs: the network, the losses, the training run, presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from nst_jax.config.common import (
  CONV_IMPLS,
  LOSS_NETWORKS,
  SCHEDULES,
  ConfigError,
  check_once,
  flag_field,
)

# ---------------------------------------------------------------------------- super-resolution
SR_ARCHS = ("johnson", "subpixel")
SR_UPSAMPLES = ("transpose", "resize")
SR_NORMALIZATIONS = ("batch", "none")
PIXEL_LOSSES = ("mse", "l1")
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
    conv_impl: "auto" (``cpu_fast`` on the CPU backend, else ``xla``), "xla" (``nn.Conv`` as
      is) or "cpu_fast" (convolutions with more than 32 outputs in groups of 64,
      ``core.conv.grouped_out_conv``: the same values, a faster weight gradient on XLA:CPU).
  """
  arch: str = "johnson"
  width: int = 64
  num_residual: int = 4
  upsample: str = "transpose"
  normalization: str = "batch"
  residual_bicubic: bool = False
  conv_impl: str = "auto"


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
  """A super-resolution model and its training run (``sr.training``).

  HR patches of ``size`` pixels are cropped at the images' own resolution from ``data``; their LR
  images are made in the step (``degradation``, then 8-bit rounding). The learning rate is
  "constant" or "cosine" (decay to 0 over ``num_steps``).
  """
  net: SRNetConfig = field(default_factory=SRNetConfig)
  loss: SRLossConfig = field(default_factory=SRLossConfig)
  scale: int = flag_field(4, help="2, 3, 4 or 8", type="positive")
  degradation: str = "bicubic"
  data: str = flag_field("", help="a folder of training photos (recursive), or tfds:NAME; "
                         "required unless --config gives it")
  size: int = 288  # HR training crops (Johnson et al.: 288 px); a multiple of the scale
  batch_size: int = 4  # the global batch, split over all devices
  num_steps: int = 200_000
  learning_rate: float = 1e-3
  schedule: str = "constant"
  seed: int = 0
  init_from: str = flag_field(  # a trained SR model of this net and scale to start from
      "", help="start a new run from this trained model's parameters (same network and scale; "
      "e.g. a pixel-loss model fine-tuned under a feature loss): a training workdir or "
      "checkpoint folder, a shipped or installed model's name (e.g. sr_fast_x4; `nst-jax models "
      "--kind sr`), or an exported .npz", metavar="MODEL")
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  log_every: int = 50
  prefetch: int = 3  # batches decoded ahead

  @check_once
  def check(self) -> SRConfig:
    """Validates the choices; raises ``ConfigError`` naming the key."""
    for key, value, allowed in (
        ("scale", self.scale, SR_SCALES), ("degradation", self.degradation, DEGRADATIONS),
        ("net.arch", self.net.arch, SR_ARCHS), ("net.upsample", self.net.upsample, SR_UPSAMPLES),
        ("net.normalization", self.net.normalization, SR_NORMALIZATIONS),
        ("net.conv_impl", self.net.conv_impl, CONV_IMPLS),
        ("loss.pixel_loss", self.loss.pixel_loss, PIXEL_LOSSES),
        ("loss.loss_network", self.loss.loss_network, LOSS_NETWORKS),
        ("schedule", self.schedule, SCHEDULES[:2])):
      if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of {allowed}")
    if self.net.width < 1 or self.net.num_residual < 0:
      raise ConfigError("net.width", "width must be >= 1 and num_residual >= 0")
    if self.size < self.scale or self.size % self.scale:
      raise ConfigError("size", f"HR crops of {self.size} px must be a multiple of the scale "
                        f"{self.scale}")
    for key in ("batch_size", "num_steps", "checkpoint_every", "log_every"):
      if getattr(self, key) < 1:
        raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")


def sr_johnson(scale: int = 4) -> SRConfig:
  """Johnson et al. 2016 (supplement): 9x9 conv 64, 4 residual blocks, log2(scale) stride-1/2
  3x3 convs, 9x9 conv out, batch norm; feature loss at VGG16 relu2_2; 288-px HR crops, batch 4,
  200k steps of Adam at 1e-3, blur (sigma 1) + bicubic degradation."""
  return SRConfig(net=SRNetConfig(), loss=SRLossConfig(), scale=scale, degradation="johnson")


def sr_fast(scale: int = 4) -> SRConfig:
  """A sub-pixel network at LR resolution over a bicubic residual, small enough for a CPU;
  pixel (MSE) loss, bicubic degradation."""
  return SRConfig(
      net=SRNetConfig(arch="subpixel", width=32, num_residual=2, normalization="none",
                      residual_bicubic=True),
      loss=SRLossConfig(pixel_weight=1.0, feature_weight=0.0), scale=scale, size=96,
      batch_size=16)


def sr_smoke(scale: int = 4) -> SRConfig:
  """A tiny configuration for tests."""
  cfg = sr_fast(scale)
  return dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, width=8, num_residual=1),
                             size=32, batch_size=2, num_steps=4, checkpoint_every=2,
                             log_every=1, prefetch=1)


SR_PRESETS = {"johnson": sr_johnson, "fast": sr_fast, "smoke": sr_smoke}
