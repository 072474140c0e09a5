"""Slow (per-image optimization) configs: artistic transfer, photorealistic transfer, unit
visualization, and their presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nst_jax.config.common import (
  AFFINE_WEIGHT,
  COLOR_MODES,
  INITS,
  LUAN_STYLE_LAYERS,
  MASK_POOLINGS,
  OPTIMIZERS,
  PARAMETERIZATIONS,
  POOLINGS,
  SMOOTH_METHODS,
  VGG_LAYERS,
  ConfigError,
  LossConfig,
  OptimConfig,
  check_once,
  flag_field,
)


# -------------------------------------------------------------------------- slow artistic transfer
@dataclass(frozen=True)
class TransferConfig:
  """Slow (optimization-based) artistic transfer, Gatys et al. 2016."""
  loss: LossConfig = field(default_factory=LossConfig)
  optim: OptimConfig = field(default_factory=OptimConfig)
  size: int = flag_field(512, help="long side of the output (px)", type="positive")
  # coarse-to-fine levels, each twice the previous size, ending at `size`
  scales: int = flag_field(1, help="coarse-to-fine levels (x2 each)", type="positive")
  # () = optim.num_iters each
  level_iters: tuple[int, ...] = flag_field(
      (), help="iterations per level, coarse first ('': --iters at every level)", metavar="N1,N2")
  style_scale: float = flag_field(1.0, help="style size relative to the output", type="float")
  init: str = flag_field("content", help="content | noise | mix | net (the arbitrary-style "
                         "network's output; needs `nst-jax models import magenta`) | path to an "
                         "image")
  # mix: noise_ratio * noise + (1 - noise_ratio) * content
  noise_ratio: float = flag_field(0.6, help="noise share of --init mix", type="float")
  seed: int = flag_field(0, help="seed of the initial noise", type="int")
  original_colors: str = flag_field(
      "", help="luminance-only transfer: keep the content's colours (YIQ or YUV)",
      choices=COLOR_MODES, const="yiq")  # "": off

  @check_once
  def check(self) -> TransferConfig:
    """Validates a transfer configuration (``ConfigError`` naming the bad key)."""
    self.loss.check()
    if self.init not in INITS and not Path(self.init).is_file():
      raise ConfigError("init", f"must be one of {', '.join(INITS)} or an existing image, "
                        f"got {self.init!r}")
    for key, ok, need in (("size", self.size >= 16, ">= 16"), ("scales", self.scales >= 1, ">= 1"),
                          ("style_scale", self.style_scale > 0, "> 0"),
                          ("optim.num_iters", self.optim.num_iters >= 0, ">= 0"),
                          ("optim.chunk", self.optim.chunk >= 1, ">= 1"),
                          ("level_iters", all(n >= 0 for n in self.level_iters), ">= 0 each")):
      if not ok:
        raise ConfigError(key, f"must be {need}, got {value_of(self, key)}")
    if self.level_iters and len(self.level_iters) != self.scales:
      raise ConfigError("level_iters", f"needs one count per level ({self.scales}), "
                        f"got {len(self.level_iters)}")
    if self.original_colors not in ("",) + COLOR_MODES:
      raise ConfigError("original_colors", f"must be '' or one of {', '.join(COLOR_MODES)}, "
                        f"got {self.original_colors!r}")


def value_of(cfg, key: str):
  """The value of a dotted key of ``cfg``."""
  for part in key.split("."):
    cfg = getattr(cfg, part)
  return cfg


def gatys() -> TransferConfig:
  """Gatys et al. 2016 with L-BFGS-B, average pooling, relu4_2 content and relu*_1 styles."""
  return TransferConfig()


def smoke() -> TransferConfig:
  """A tiny, fast configuration for tests."""
  return TransferConfig(size=64, optim=OptimConfig(num_iters=20, chunk=5))


PRESETS = {"gatys": gatys, "smoke": smoke}


@dataclass(frozen=True)
class SlowVideoConfig:
  """Slow video transfer's temporal consistency (Ruder et al. 2016; slow/video.py), beside the
  frames' ``TransferConfig``."""
  temporal_weight: float = 1e7  # x mean(mask * (x - warped previous output)^2), pixels in [0, 1]
  warm_start: bool = True  # frame t > 0 starts from the warped previous output
  checkpoint_every: int = 50  # iterations between a frame's optimizer checkpoints

# ----------------------------------------------------------------------- photorealistic transfer
def _photo_loss() -> LossConfig:
  return LossConfig(content_layers=("conv4_2",), style_layers=LUAN_STYLE_LAYERS,
                    style_weight=1e-4, tv_weight=1e2)


@dataclass(frozen=True)
class PhotoConfig:
  """Slow photorealistic transfer (hashable; a static argument of the compiled loss)."""
  loss: LossConfig = field(default_factory=_photo_loss)
  optim: OptimConfig = field(default_factory=lambda: OptimConfig(num_iters=300))
  matting_weight: float = flag_field(  # times sum_c V_c^T L V_c / N, N = pixels (calibrated)
      3e9, help="weight of the matting-Laplacian penalty per pixel", type="non_negative")
  # 2: without the penalty, then with it (Luan); 1: with it from the content
  stages: int = flag_field(2, help="2: without, then with the matting penalty; 1: with it only",
                           type="int", choices=(1, 2))
  stage_iters: tuple[int, ...] = flag_field(  # () = optim.num_iters each
      (), help="iterations per stage ('': --iters each)", metavar="N1,N2")
  # What the stages with the penalty optimize: "affine", an image whose smooth local affine
  # step (I + affine_weight L)^-1 (content's L at EVAL_EPS) is the output; "guided", an image
  # whose guided filter (content as guide, smooth_radius / smooth_eps) is; "pixels": the output
  # itself (Luan). Calibrated in docs/photoreal.md (fifth calibration).
  parameterization: str = flag_field(
      "affine", help="what the stage with the penalty optimizes: 'affine' an image whose smooth "
      "local affine step is the output, 'guided' one whose guided filter by the content is, "
      "'pixels' the output", choices=PARAMETERIZATIONS)
  affine_weight: float = flag_field(
      30.0, help="'affine' parameterization: the matting Laplacian's weight", type="float")
  size: int = flag_field(512, help="long side of the output (px)", type="positive")
  style_scale: float = flag_field(1.0, help="style size relative to the output", type="float")
  num_regions: int = flag_field(3, help="automatic masks: region count", name="regions",
                                type="positive")
  # how masks follow VGG's pools (regions.downsample_masks)
  mask_pooling: str = flag_field("avg", help="how the masks follow VGG19's pooling",
                                 choices=MASK_POOLINGS)
  smooth: bool = flag_field(  # Luan's optional post-step
      False, help="post-step with the content as guide (Luan's optional one; --smooth-method, "
      "--smooth-weight or --matting-budget turn it on)", type="bool")
  # "affine": affine_smooth; "guided": guided_smooth, one pass
  smooth_method: str = flag_field(
      "affine", help="post-step: 'affine' the nearest locally affine image, or 'guided' one "
      "guided-filter pass", choices=SMOOTH_METHODS)
  smooth_weight: float = flag_field(
      AFFINE_WEIGHT, help="affine post-step: the matting Laplacian's weight", type="float")
  # affine: > 0 picks the weight per image, the least that keeps the output's matting_ratio
  # within this (0: smooth_weight for all)
  matting_budget: float = flag_field(
      0.0, help="affine post-step: per image, the least smoothing that keeps the matting energy "
      "within X times the content's (0: --smooth-weight)", type="non_negative", metavar="X")
  # guided filter (post-step "guided" and the parameterization): box radius, 0: long side / 24,
  # at least 1 (calibrated, docs/photoreal.md)
  smooth_radius: int = flag_field(
      0, help="guided filter radius, post-step and parameterization (0: size / 24)", type="int")
  smooth_eps: float = flag_field(1e-4, help="guided filter regulariser", type="float")
  seed: int = flag_field(0, help="seed of the automatic masks' clustering", type="int")

  @check_once
  def check(self) -> PhotoConfig:
    """Validates a photorealistic configuration (``ConfigError`` naming the bad key)."""
    self.loss.check()
    if self.loss.style_loss != "gram":
      raise ConfigError("loss.style_loss", "photorealistic transfer uses the masked Gram loss; "
                        f"must be gram, got {self.loss.style_loss!r}")
    if self.stages not in (1, 2):
      raise ConfigError("stages", f"must be 1 or 2, got {self.stages}")
    if self.stage_iters and len(self.stage_iters) != self.stages:
      raise ConfigError("stage_iters", f"needs one count per stage ({self.stages}), "
                        f"got {len(self.stage_iters)}")
    for key, ok, need in (
        ("size", self.size >= 16, ">= 16"), ("style_scale", self.style_scale > 0, "> 0"),
        ("num_regions", self.num_regions >= 1, ">= 1"),
        ("optim.num_iters", self.optim.num_iters >= 0, ">= 0"),
        ("optim.chunk", self.optim.chunk >= 1, ">= 1"),
        ("stage_iters", all(n >= 0 for n in self.stage_iters), ">= 0 each"),
        ("matting_weight", self.matting_weight >= 0, ">= 0"),
        ("smooth_eps", self.smooth_eps > 0, "> 0"),
        ("smooth_radius", self.smooth_radius >= 0, ">= 0"),
        ("matting_budget", self.matting_budget >= 0, ">= 0"),
        ("smooth_weight", self.smooth_weight > 0, "> 0"),
        ("affine_weight", self.affine_weight > 0, "> 0"),
        ("smooth_method", self.smooth_method in SMOOTH_METHODS,
         f"one of {', '.join(SMOOTH_METHODS)}"),
        ("parameterization", self.parameterization in PARAMETERIZATIONS,
         f"one of {', '.join(PARAMETERIZATIONS)}"),
        ("mask_pooling", self.mask_pooling in MASK_POOLINGS, f"one of {', '.join(MASK_POOLINGS)}")):
      if not ok:
        raise ConfigError(key, f"must be {need}, got {value_of(self, key)!r}")


# ------------------------------------------------------------------ layer reconstructions
@dataclass(frozen=True)
class ReconstructConfig:
  """The figure's settings, the arguments of ``research.reconstruct_all``.

  ``nst-jax reconstruct``'s config (``nst_jax/cli/reconstruct.py``).
  """
  optim: OptimConfig = field(default_factory=lambda: OptimConfig(num_iters=100))
  size: int = flag_field(128, help="long side of the inputs and reconstructions (px)",
                         type="positive")
  content_layers: tuple[str, ...] = flag_field(
      ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2"),
      help="one content reconstruction per layer", metavar="L1,L2")
  style_layers: tuple[str, ...] = flag_field(  # conv1_1 ... conv5_1
      LUAN_STYLE_LAYERS, help="one style reconstruction per growing stack of these layers",
      metavar="L1,L2")
  tv_weight: float = flag_field(0.0, help="weight of the total variation", type="non_negative")
  pooling: str = flag_field("avg", help="VGG19's pooling layers", choices=POOLINGS)
  seed: int = flag_field(0, help="seed of the initial noise", type="int")

  @check_once
  def check(self) -> ReconstructConfig:
    """Raises ``ConfigError``, naming the key, for settings no figure can use."""
    for key in ("content_layers", "style_layers"):
      bad = [l for l in getattr(self, key) if l not in VGG_LAYERS["vgg19"]]
      if bad or not getattr(self, key):
        raise ConfigError(key, f"unknown VGG19 layer(s) {', '.join(bad)}; valid names are "
                          "conv1_1 ... conv5_4, relu1_1 ... relu5_4, pool1 ... pool5"
                          if bad else "needs at least one layer name")
    for key, ok, need in (
        ("size", self.size >= 16, ">= 16"), ("tv_weight", self.tv_weight >= 0, ">= 0"),
        ("optim.num_iters", self.optim.num_iters >= 1, ">= 1"),
        ("optim.chunk", self.optim.chunk >= 1, ">= 1"),
        ("optim.optimizer", self.optim.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        ("pooling", self.pooling in POOLINGS, "avg or max")):
      if not ok:
        raise ConfigError(key, f"must be {need}, got {value_of(self, key)!r}")


# ------------------------------------------------------------------------ unit visualization
@dataclass(frozen=True)
class VisualizeConfig:
  """Regularized gradient ascent (Yosinski et al. 2015, Sec. 3)."""
  size: int = flag_field(128, help="side of each image (px)", type="positive")  # square
  num_iters: int = flag_field(200, help="gradient ascent steps", name="iters", type="positive")
  learning_rate: float = flag_field(  # in pixel units, along the gradient divided by its mean |g|
      0.05, help="step along the gradient normalized by its mean magnitude",
      type="non_negative", aliases=("lr",))
  decay: float = flag_field(  # x <- 0.5 + (1 - decay) (x - 0.5)
      0.01, help="L2 decay towards grey per step", type="non_negative")
  blur_every: int = flag_field(4, help="Gaussian blur every N steps (0: never)", type="int",
                               metavar="N")
  blur_sigma: float = flag_field(0.5, help="the blur's sigma (px)", type="non_negative")
  jitter: int = flag_field(  # 0: none
      0, help="random shift of up to PX pixels before each step", type="int", metavar="PX")
  spatial: str = flag_field("mean", help="maximize the channel's mean or its center unit",
                            choices=("mean", "center"))
  pooling: str = flag_field(  # max: the network as trained
      "max", help="VGG19's pooling layers", choices=POOLINGS)
  seed: int = flag_field(0, help="seed of the initial noise and the jitter", type="int")
  chunk: int = flag_field(10, help="iterations per compiled chunk", type="positive")
  conv_impl: str = "auto"  # VGG's convolutions: auto | xla | cpu_fast (see CONV_IMPLS)
