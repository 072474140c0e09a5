"""Slow (per-image optimization) configs: artistic transfer, photorealistic transfer, unit
visualization, and their presets."""

from __future__ import annotations

from dataclasses import dataclass, field

from nst_jax.config.common import (
  AFFINE_WEIGHT,
  LUAN_STYLE_LAYERS,
  LossConfig,
  OptimConfig,
)


# -------------------------------------------------------------------------- slow artistic transfer
@dataclass(frozen=True)
class TransferConfig:
  """Slow (optimization-based) artistic transfer, Gatys et al. 2016."""
  loss: LossConfig = field(default_factory=LossConfig)
  optim: OptimConfig = field(default_factory=OptimConfig)
  size: int = 512  # long side of the output, pixels
  scales: int = 1  # coarse-to-fine levels, each twice the previous size, ending at `size`
  level_iters: tuple[int, ...] = ()  # iterations per level (coarse first); () = optim.num_iters each
  style_scale: float = 1.0  # style image long side relative to the output's
  init: str = "content"  # content | noise | mix | net | path to an image
  noise_ratio: float = 0.6  # mix: noise_ratio * noise + (1 - noise_ratio) * content
  seed: int = 0
  original_colors: str = ""  # "" | yiq | yuv: keep the content's chroma


def gatys() -> TransferConfig:
  """Gatys et al. 2016 with L-BFGS-B, average pooling, relu4_2 content and relu*_1 styles."""
  return TransferConfig()


def smoke() -> TransferConfig:
  """A tiny, fast configuration for tests."""
  return TransferConfig(size=64, optim=OptimConfig(num_iters=20, chunk=5))


PRESETS = {"gatys": gatys, "smoke": smoke}

# ----------------------------------------------------------------------- photorealistic transfer
def _photo_loss() -> LossConfig:
  return LossConfig(content_layers=("conv4_2",), style_layers=LUAN_STYLE_LAYERS,
                    style_weight=1e-4, tv_weight=1e2)


@dataclass(frozen=True)
class PhotoConfig:
  """Slow photorealistic transfer (hashable; a static argument of the compiled loss)."""
  loss: LossConfig = field(default_factory=_photo_loss)
  optim: OptimConfig = field(default_factory=lambda: OptimConfig(num_iters=300))
  matting_weight: float = 3e9  # times sum_c V_c^T L V_c / N, N = pixels (calibrated)
  stages: int = 2  # 2: without the penalty, then with it (Luan); 1: with it from the content
  stage_iters: tuple[int, ...] = ()  # iterations per stage; () = optim.num_iters each
  # What the stages with the penalty optimize: "affine", an image whose smooth local affine
  # step (I + affine_weight L)^-1 (content's L at EVAL_EPS) is the output; "guided", an image
  # whose guided filter (content as guide, smooth_radius / smooth_eps) is; "pixels": the output
  # itself (Luan). Calibrated in docs/photoreal.md (fifth calibration).
  parameterization: str = "affine"
  affine_weight: float = 30.0
  size: int = 512  # long side of the output, pixels
  style_scale: float = 1.0  # style image long side relative to the output's
  num_regions: int = 3  # automatic masks only
  mask_pooling: str = "avg"  # how masks follow VGG's pools (regions.downsample_masks)
  smooth: bool = False  # the post-step (Luan's optional one), content as guide
  smooth_method: str = "affine"  # "affine": affine_smooth; "guided": guided_smooth, one pass
  smooth_weight: float = AFFINE_WEIGHT  # affine: the Laplacian's weight
  # affine: > 0 picks the weight per image, the least that keeps the output's matting_ratio
  # within this (0: smooth_weight for all)
  matting_budget: float = 0.0
  smooth_radius: int = 0  # guided filter (post-step "guided" and the parameterization): box
  # radius, 0: long side / 24, at least 1 (calibrated, docs/photoreal.md)
  smooth_eps: float = 1e-4
  seed: int = 0


# ------------------------------------------------------------------ layer reconstructions
@dataclass(frozen=True)
class ReconstructConfig:
  """The figure's settings, the arguments of ``research.reconstruct_all``.

  ``nst-jax reconstruct``'s config (``nst_jax/cli/reconstruct.py``).
  """
  optim: OptimConfig = field(default_factory=lambda: OptimConfig(num_iters=100))
  size: int = 128  # long side of the inputs and reconstructions, px
  content_layers: tuple[str, ...] = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
  style_layers: tuple[str, ...] = LUAN_STYLE_LAYERS  # conv1_1 ... conv5_1
  tv_weight: float = 0.0
  pooling: str = "avg"
  seed: int = 0  # of the initial noise


# ------------------------------------------------------------------------ unit visualization
@dataclass(frozen=True)
class VisualizeConfig:
  """Regularized gradient ascent (Yosinski et al. 2015, Sec. 3)."""
  size: int = 128  # side of the square images, px
  num_iters: int = 200
  learning_rate: float = 0.05  # step in pixel units along the gradient divided by its mean |g|
  decay: float = 0.01  # L2 decay towards grey: x <- 0.5 + (1 - decay) (x - 0.5)
  blur_every: int = 4  # Gaussian blur every N steps (0: never)
  blur_sigma: float = 0.5  # px
  jitter: int = 0  # random shifts of up to N px before each step (0: none)
  spatial: str = "mean"  # maximize the channel's mean, or its "center" unit
  pooling: str = "max"  # the network as trained
  seed: int = 0
  chunk: int = 10  # iterations per compiled chunk
  conv_impl: str = "auto"  # VGG's convolutions: auto | xla | cpu_fast (see CONV_IMPLS)
