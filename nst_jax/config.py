"""Every configuration of the package: frozen dataclasses, presets, names, typed overrides.

Synopsis::

  from nst_jax import config
  cfg = config.gatys()                                     # the classic slow transfer
  cfg = config.override(cfg, {"loss.style_weight": "1e4", "optim.optimizer": "adam"})
  cfg.loss.style_layers                                    # ('relu1_1', ..., 'relu5_1')
  train = config.override(config.thesis(), {"net.width": "0.5", "num_steps": "400"})
  config.keys(train)                                       # every dotted key, for --set

Configs are hashable, so they can be static arguments of ``jax.jit``. This module imports nothing
else from the package (the import-rule test checks it): the names of layers, losses, optimizers and
the other choices are defined here once, and the command line's ``choices=`` read them from here.
Bad values raise ``ConfigError``, which names the config key (the command line maps it to a flag).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------- names
VGG_BLOCKS = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}  # convolutions per block
LOSS_NETWORKS = ("vgg16", "vgg19")  # the loss networks (core/vgg.py), by VGG_BLOCKS' names


def _vgg_layer_names(blocks) -> tuple[str, ...]:
  names = []
  for b, n in enumerate(blocks, start=1):
    for i in range(1, n + 1):
      names += [f"conv{b}_{i}", f"relu{b}_{i}"]
    names.append(f"pool{b}")
  return tuple(names)


# Every layer of each loss network: convX_Y (before the ReLU), reluX_Y, poolX.
VGG_LAYERS = {arch: _vgg_layer_names(blocks) for arch, blocks in VGG_BLOCKS.items()}
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
THESIS_STYLE_LAYERS = GATYS_STYLE_LAYERS
JOHNSON_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
LUAN_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")  # pre-ReLU
PHOTO_STYLE_LAYERS = LUAN_STYLE_LAYERS
STYLE_LOSSES = ("gram", "mean", "mean_std", "mmd_poly", "mmd_gauss")
POOLINGS = ("avg", "max")
OPTIMIZERS = ("lbfgsb", "lbfgs", "adam", "lbfgsb_jaxopt")
INITS = ("content", "noise", "mix", "net")  # "net": an image the caller supplies (fast start)
COLOR_MODES = ("yiq", "yuv")  # original_colors: keep the content's chroma in this space
CONV_IMPLS = ("auto", "xla", "cpu_fast")  # "auto": cpu_fast on the CPU backend, else xla
SCHEDULES = ("constant", "cosine", "step")
NORMALIZATIONS = ("instance", "batch")  # the transform net's (fast/nets.py)
UPSAMPLES = ("resize", "transpose")
PADDINGS = ("reflect", "zero")
NET_OUTPUTS = ("rgb", "affine")
AFFINE_LOSSES = ("residual", "energy")
MASK_POOLINGS = ("avg", "max", "bilinear")
SMOOTH_METHODS = ("affine", "guided")
PARAMETERIZATIONS = ("guided", "pixels", "affine")  # what photoreal's penalized stages optimize

# ------------------------------------------------------------------------------------ constants
EVAL_EPS = 1e-4  # the matting Laplacian's regulariser for ratios and the affine step
AFFINE_WEIGHT = 1.2  # the smooth local affine post-step's default weight (docs/photoreal.md)
FAST_MATTING_BUDGET = 2.0  # fast photoreal's default post-step budget: 2x the photo's energy
PHOTO_AFFINE_WEIGHT = 1e3  # calibrated in docs/fast_photoreal.md ("Calibration")
# The photoreal training preset scores outputs after the smooth local affine step at this weight
# (docs/fast_photoreal.md, "Training through the post-step").
PHOTO_AFFINE_OUTPUT = 50.0


class ConfigError(ValueError):
  """A config value no run can use, or an unknown key; ``key`` is the dotted config key."""

  def __init__(self, key: str, message: str):
    super().__init__(f"{key}: {message}")
    self.key = key
    self.message = message


# -------------------------------------------------------------------------- slow artistic transfer
@dataclass(frozen=True)
class LossConfig:
  """Weights and layers of the perceptual objective (neural-style's vocabulary)."""
  content_layers: tuple[str, ...] = ("relu4_2",)
  content_layer_weights: tuple[float, ...] = (1.0,)
  style_layers: tuple[str, ...] = GATYS_STYLE_LAYERS
  style_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
  content_weight: float = 1.0
  style_weight: float = 1e-3  # Gatys-normalized Grams of caffe-scale features are large
  tv_weight: float = 1e4  # TV of [0, 1] pixels is small
  style_loss: str = "gram"  # gram | mean | mean_std | mmd_poly | mmd_gauss
  pooling: str = "avg"  # avg (Gatys) | max
  conv_impl: str = "auto"  # VGG's convolutions: auto | xla | cpu_fast (see CONV_IMPLS)
  # vgg19 | vgg16 (LOSS_NETWORKS; the layers must be VGG_LAYERS of it); vgg16 (Johnson et al.'s
  # loss network): feed-forward training only, slow transfer runs on VGG19.
  loss_network: str = "vgg19"


@dataclass(frozen=True)
class OptimConfig:
  """The per-image optimizer."""
  # lbfgsb (lean free-variable L-BFGS-B, [0, 1] box; slow/lbfgsb.py) | lbfgs (optax + projection)
  # | adam | lbfgsb_jaxopt (jaxopt's L-BFGS-B, slower per iteration)
  optimizer: str = "lbfgsb"
  num_iters: int = 500
  learning_rate: float = 0.02  # Adam only; pixels are in [0, 1]
  history_size: int = 20  # L-BFGS memory
  chunk: int = 10  # iterations per compiled chunk, between progress updates


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


@dataclass(frozen=True)
class SlowVideoConfig:
  """Slow video transfer's temporal consistency (Ruder et al. 2016; slow/video.py), beside the
  frames' ``TransferConfig``."""
  temporal_weight: float = 2e4  # x mean(mask * (x - warped previous output)^2), pixels in [0, 1]
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


# ------------------------------------------------------------------------- feed-forward networks
@dataclass(frozen=True)
class NetConfig:
  """The options of ``nets.TransformNet`` (see there)."""
  normalization: str = "instance"
  upsample: str = "resize"
  padding: str = "reflect"
  width: float = 1.0
  num_residual: int = 5
  input_blend: float = 0.0
  output: str = "rgb"  # "affine": per-pixel colour transforms of the input (photorealism)
  affine_grid: int = 1  # where the affine head computes them: 1 = every pixel, 4 = quarter res
  pixel_shuffle: bool = False  # 2x2 pixel blocks in, all layers at <= H/2 (lite; nets.py)
  conv_impl: str = "auto"  # the net's convolutions: auto | xla | cpu_fast (see CONV_IMPLS)
  num_styles: int = 1  # > 1: conditional instance norm, one scale/shift row per style


@dataclass(frozen=True)
class PhotoTrainConfig:
  """Photorealistic training (``photo_train``); the defaults train an artistic network.

  Attributes:
    regions: 0: plain Gram style loss; R > 0: masked Gram losses over R automatic regions (the
      style and ``fit_photos`` training photos clustered jointly, then every photo assigned).
    affine_weight: weight of the matting-Laplacian affine loss (0: off).
    affine_loss: "residual" (the thesis: (1/N) sum_c |M O_c - M C_c|^2) or "energy" (Luan et
      al.: (1/N) sum_c O_c^T M O_c).
    affine_eps: the Laplacian's regulariser in the affine loss (Luan et al.: 1e-7).
    mask_pooling: how masks follow VGG's pools (``regions.downsample_masks``).
    min_area: a style region smaller than this share of the style image is ignored.
    fit_photos: training photos clustered with the style to define the regions.
    guided_output: score every output after the guided filter with its photo as guide
      (``photo_train.guided_outputs``), so the losses see what inference returns: ``nst-jax
      stylize`` then applies that filter to such a network's outputs.
    affine_output: if > 0, score every output after the smooth local affine post-step at this
      weight instead (``photo_train.affine_outputs``, differentiable); ``nst-jax stylize`` then
      smooths such a network's outputs with at least this weight.
  """
  regions: int = 0
  affine_weight: float = 0.0
  affine_loss: str = "residual"
  affine_eps: float = 1e-7
  mask_pooling: str = "avg"
  min_area: float = 1e-3
  fit_photos: int = 32
  guided_output: bool = False
  affine_output: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
  """A feed-forward style network's training run.

  The learning rate follows ``schedule``: "constant"; "cosine" (decay to 0 over ``num_steps``
  after ``warmup_steps`` of linear warm-up); "step" (times 0.1 at 75 % of the steps). With
  ``ema_decay`` > 0 the checkpoints also hold an exponential moving average of the parameters
  (Polyak averaging; horizon ~1 / (1 - ema_decay) steps), which stylization and samples use.
  """
  net: NetConfig = field(default_factory=NetConfig)
  loss: LossConfig = field(default_factory=LossConfig)
  photo: PhotoTrainConfig = field(default_factory=PhotoTrainConfig)
  style: str = ""  # the style image (one-style runs)
  styles: tuple[str, ...] = ()  # several style images: a multi-style run (net.num_styles of them)
  base_model: str = ""  # add-style runs: the trained network whose new norm rows are fitted
  data: str = ""  # a folder of training photos, or "tfds:NAME"
  size: int = 256  # training crops are size x size
  crop: str = "random"  # random | resize (see data.transform)
  style_size: int = 256  # the style image's long side when its Gram targets are computed
  batch_size: int = 4  # the global batch, split over all devices
  num_steps: int = 40_000
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  ema_decay: float = 0.0  # 0: stylize with the last parameters; e.g. 0.99: with their average
  bf16: bool = False  # bfloat16 compute in the network and VGG; float32 params, grads and losses
  input_noise: float = 0.0  # std of Gaussian noise added to the inputs (stability for video)
  seed: int = 0
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  log_every: int = 50  # scalars to the progress bar, TensorBoard and the CSV
  sample_every: int = 1000  # sample stylizations to TensorBoard
  num_samples: int = 4
  prefetch: int = 3  # batches decoded ahead


def thesis() -> TrainConfig:
  """The reference thesis: instance norm, resize-convolution, reflect padding; relu4_2 content,
  relu1_1 ... relu5_1 style, average pooling as in Gatys et al."""
  return TrainConfig(
      net=NetConfig(normalization="instance", upsample="resize", padding="reflect"),
      loss=LossConfig(content_layers=("relu4_2",), content_layer_weights=(1.0,),
                      style_layers=THESIS_STYLE_LAYERS, style_layer_weights=(1.0,) * 5,
                      content_weight=1.0, style_weight=1e-4, tv_weight=1e3, pooling="avg"))


def johnson() -> TrainConfig:
  """Johnson et al. 2016: batch norm, transposed convolutions, zero padding; relu2_2 content,
  relu1_2, relu2_2, relu3_3, relu4_3 style, max pooling; 40k steps of batch 4 at 256 px."""
  return TrainConfig(
      net=NetConfig(normalization="batch", upsample="transpose", padding="zero"),
      loss=LossConfig(content_layers=("relu2_2",), content_layer_weights=(1.0,),
                      style_layers=JOHNSON_STYLE_LAYERS, style_layer_weights=(1.0,) * 4,
                      content_weight=1.0, style_weight=1e-4, tv_weight=1e3, pooling="max"))


def photoreal() -> TrainConfig:
  """The reference thesis' fast photorealistic network, made to work: the thesis' network with
  the "affine" head (per-pixel colour transforms of the photo), Luan et al.'s objective (content
  conv4_2, masked Gram style losses at conv1_1..conv5_1 pre-ReLU, over 3 automatic regions) and
  the matting-Laplacian affine loss of each output against its photo, all scored on the outputs
  after the smooth local affine post-step that ``nst-jax stylize`` applies."""
  cfg = thesis()
  return dataclasses.replace(
      cfg, net=dataclasses.replace(cfg.net, output="affine"),
      loss=dataclasses.replace(cfg.loss, content_layers=("conv4_2",),
                               style_layers=PHOTO_STYLE_LAYERS, style_weight=1e-4, tv_weight=1e2),
      photo=PhotoTrainConfig(regions=3, affine_weight=PHOTO_AFFINE_WEIGHT,
                             affine_output=PHOTO_AFFINE_OUTPUT))


def lite() -> TrainConfig:
  """The thesis' losses on a small network for CPUs: a quarter of the channels (32 in the residual
  blocks), 2x2 pixel blocks in and a resize-convolution out (every layer at <= half
  resolution), 5 residual blocks; ~106k parameters, several times faster than the thesis
  network at 512-1024 px."""
  cfg = thesis()
  return dataclasses.replace(
      cfg, net=dataclasses.replace(cfg.net, width=0.25, pixel_shuffle=True))


def train_smoke() -> TrainConfig:
  """A tiny, fast run for tests: the thesis' losses, a tiny net, 32-px crops."""
  cfg = thesis()
  return dataclasses.replace(
      cfg, net=dataclasses.replace(cfg.net, width=0.125, num_residual=1), size=32, style_size=32,
      batch_size=2, num_steps=6, checkpoint_every=3, log_every=2, sample_every=3, num_samples=2,
      prefetch=1)


@dataclass(frozen=True)
class Smoothing:
  """The post-step of a network's outputs (``blend``), with the photo as guide.

  Attributes:
    method: "affine" (``smoothing.affine_smooth``) or "guided" (``smoothing.guided_smooth``).
    weight: affine: with a budget the least weight, else the weight (0: ``AFFINE_WEIGHT``).
    budget: affine: if > 0, per image the least weight (>= ``weight``) that keeps the matting
      energy within ``budget`` times the photo's; 0: ``weight`` as it is.
    radius: guided: the box radius; 0: long side / ``FAST_SMOOTH_RADIUS_DIVISOR``.
  """
  method: str = "affine"
  weight: float = 0.0
  budget: float = FAST_MATTING_BUDGET
  radius: int = 0


# ------------------------------------------------------------------------ arbitrary style transfer
# style prediction networks (fast/arbitrary.py); the tiny one is for tests
ARBITRARY_PREDICTORS = ("mobilenet_v2", "mobilenet_v2_tiny")


@dataclass(frozen=True)
class ArbitraryConfig:
  """The networks of arbitrary style transfer (``fast.arbitrary``, Ghiasi et al. 2017).

  Attributes:
    predictor: the style prediction network, one of ``ARBITRARY_PREDICTORS`` (the released
      distilled MobileNet-v2; an Inception-v3 one would be another name).
    embedding_dim: the style embedding's length.
    width: the transfer network's channel multiplier (1: 32-64-128; the released one: 0.25).
    num_residual: the transfer network's residual blocks.
    style_size: paintings are centre-cropped and resized to this square side before prediction.
    conv_impl: the transfer network's convolutions: auto | xla | cpu_fast (see CONV_IMPLS).
  """
  predictor: str = "mobilenet_v2"
  embedding_dim: int = 100
  width: float = 0.25
  num_residual: int = 5
  style_size: int = 256
  conv_impl: str = "auto"


@dataclass(frozen=True)
class ArbitraryTrainConfig:
  """Training both arbitrary-style networks on (photo, painting) pairs (``fast.arbitrary_train``):
  the photos of ``data``, the paintings of ``styles`` (folders and/or files), the perceptual
  ``loss`` of the other fast networks. ``init_from``: "magenta" fine-tunes the imported released
  networks, "" starts from random ones, else an arbitrary-style model file. Photos are cropped to
  ``size`` (a multiple of four), paintings to ``style_size`` (keep it ``net.style_size``, the side
  stylization gives them). The other fields mean what they mean in ``TrainConfig``."""
  net: ArbitraryConfig = field(default_factory=ArbitraryConfig)
  loss: LossConfig = field(default_factory=LossConfig)
  init_from: str = "magenta"
  data: str = ""
  styles: tuple[str, ...] = ()
  size: int = 256
  style_size: int = 256
  crop: str = "random"
  batch_size: int = 8
  num_steps: int = 20_000
  learning_rate: float = 1e-4
  schedule: str = "constant"
  warmup_steps: int = 0
  seed: int = 0
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  log_every: int = 50
  prefetch: int = 3


def arbitrary_train() -> ArbitraryTrainConfig:
  """Ghiasi et al.'s arbitrary-style networks, fine-tuned from the imported released weights on
  (photo, painting) pairs with the thesis' loss; --style gives the painting folders."""
  return ArbitraryTrainConfig(loss=thesis().loss)


TRAIN_PRESETS = {"thesis": thesis, "johnson": johnson, "photoreal": photoreal, "lite": lite,
                 "smoke": train_smoke, "arbitrary": arbitrary_train}


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
  scale: int = 4
  degradation: str = "bicubic"
  data: str = ""  # a folder of training photos, or "tfds:NAME"
  size: int = 288  # HR training crops (Johnson et al.: 288 px); a multiple of the scale
  batch_size: int = 4  # the global batch, split over all devices
  num_steps: int = 200_000
  learning_rate: float = 1e-3
  schedule: str = "constant"
  seed: int = 0
  init_from: str = ""  # a trained SR model (name, .npz, run) of this net and scale to start from
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  log_every: int = 50
  prefetch: int = 3  # batches decoded ahead


def check(cfg: SRConfig) -> SRConfig:
  """Validates the choices; raises ``ConfigError`` naming the key."""
  for key, value, allowed in (
      ("scale", cfg.scale, SR_SCALES), ("degradation", cfg.degradation, DEGRADATIONS),
      ("net.arch", cfg.net.arch, SR_ARCHS), ("net.upsample", cfg.net.upsample, SR_UPSAMPLES),
      ("net.normalization", cfg.net.normalization, SR_NORMALIZATIONS),
      ("net.conv_impl", cfg.net.conv_impl, CONV_IMPLS),
      ("loss.pixel_loss", cfg.loss.pixel_loss, PIXEL_LOSSES),
      ("loss.loss_network", cfg.loss.loss_network, LOSS_NETWORKS),
      ("schedule", cfg.schedule, SCHEDULES[:2])):
    if value not in allowed:
      raise ConfigError(key, f"{value!r} is not one of {allowed}")
  if cfg.net.width < 1 or cfg.net.num_residual < 0:
    raise ConfigError("net.width", "width must be >= 1 and num_residual >= 0")
  if cfg.size < cfg.scale or cfg.size % cfg.scale:
    raise ConfigError("size", f"HR crops of {cfg.size} px must be a multiple of the scale "
                      f"{cfg.scale}")
  for key in ("batch_size", "num_steps", "checkpoint_every", "log_every"):
    if getattr(cfg, key) < 1:
      raise ConfigError(key, f"must be >= 1, got {getattr(cfg, key)}")
  return cfg


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


# ----------------------------------------------------------------------------- (de)serialization
def to_dict(cfg) -> dict:
  return dataclasses.asdict(cfg)


def to_json(cfg) -> str:
  return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(cls, data: dict, *, prefix: str = ""):
  """Rebuilds a (nested) config dataclass from ``to_dict`` output.

  Raises:
    ConfigError: for keys ``cls`` does not have, or values of the wrong type.
  """
  if not isinstance(data, dict):
    raise ConfigError(prefix or cls.__name__, f"expected a JSON object, got {type(data).__name__}")
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - names)
  if unknown:
    raise ConfigError(prefix + unknown[0], f"unknown key in a {cls.__name__}")
  kwargs = {}
  for name, value in data.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      kwargs[name] = from_dict(hint, value, prefix=f"{prefix}{name}.")
    else:
      kwargs[name] = _coerce(value, hint, prefix + name)
  return cls(**kwargs)


def from_json(cls, text: str):
  """Rebuilds a ``cls`` from ``to_json`` output (ConfigError for bad JSON or unknown keys)."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(cls.__name__, f"not a saved config (bad JSON: {e})") from None
  return from_dict(cls, data)


def keys(cfg) -> list[str]:
  """Every dotted key of ``cfg`` (the keys ``override`` and ``--set`` accept)."""
  out = []
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      out += [f"{f.name}.{k}" for k in keys(value)]
    else:
      out.append(f.name)
  return out


# ---------------------------------------------------------------------------------- overrides
def _coerce(value, hint, key: str):
  """Parses a string (or passes a value) to the field's declared type, or raises ConfigError."""
  origin = typing.get_origin(hint)
  try:
    if origin is tuple:
      (item_type, *_rest) = typing.get_args(hint)
      items = value.split(",") if isinstance(value, str) else list(value)
      return tuple(item_type(v.strip() if isinstance(v, str) else v) for v in items if v != "")
    if hint is bool:
      if isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
          raise ValueError(value)
        return value.lower() in ("1", "true", "yes")
      if not isinstance(value, (bool, int)):
        raise TypeError(value)
      return bool(value)
    if hint is str and not isinstance(value, str):
      raise TypeError(value)
    if hint is int and isinstance(value, float) and not value.is_integer():
      raise ValueError(value)
    return hint(value)
  except (TypeError, ValueError):
    raise ConfigError(key, f"bad value {value!r}: expected "
                           f"{getattr(hint, '__name__', hint)}") from None


def override(cfg, overrides: dict):
  """Returns ``cfg`` with dotted-key overrides applied, each type-checked against the field.

  Raises:
    ConfigError: for an unknown key (listing the valid ones) or a value of the wrong type.
  """
  for key, value in overrides.items():
    cfg = _override_one(cfg, key.split("."), value, key, cfg)
  return cfg


def _override_one(cfg, parts, value, key, root):
  names = {f.name for f in dataclasses.fields(cfg)}
  current = getattr(cfg, parts[0], None)
  if parts[0] not in names or (len(parts) > 1) != dataclasses.is_dataclass(current):
    raise ConfigError(key, f"unknown config key; valid keys: {', '.join(keys(root))}")
  if len(parts) > 1:
    return dataclasses.replace(cfg, **{parts[0]: _override_one(current, parts[1:], value, key,
                                                               root)})
  hint = typing.get_type_hints(type(cfg))[parts[0]]
  return dataclasses.replace(cfg, **{parts[0]: _coerce(value, hint, key)})


def parse_assignments(items) -> dict[str, str]:
  """``["a.b=1", "c=x"]`` (``--set`` values) -> ``{"a.b": "1", "c": "x"}``."""
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ConfigError(item, "expected KEY=VALUE")
    out[key.strip()] = value.strip()
  return out


# ---------------------------------------------------------------------------------- web service
WEB_JOB_KINDS = ("fast", "artistic", "photoreal", "sr", "video")


@dataclass(frozen=True)
class WebLimits:
  """What one request or one client may ask of the service (``nst-jax serve``)."""
  max_upload_mb: float = 20.0  # bytes of one uploaded file
  max_upload_pixels: int = 40_000_000  # pixels of one decoded upload (decompression bombs)
  fast_max_size: int = 1024  # long side of a fast stylization's output, px
  slow_max_size: int = 512  # long side of an artistic / photorealistic output, px
  slow_max_iters: int = 500  # iterations of a slow job (per stage)
  sr_max_input: int = 512  # long side of a super-resolution input, px
  rate_per_minute: int = 60  # job submissions per client per minute (burst: the same)
  queue_quota: int = 5  # a client's jobs queued or running at once
  ip_rate_per_minute: int = 120  # job submissions per IP address per minute (burst: the same)
  ip_queue_quota: int = 20  # jobs queued or running at once from one IP address
  max_queued: int = 500  # jobs queued or running at once in all (beyond: 503, Retry-After)
  mails_per_hour: int = 10  # completion e-mails per address, and per network, per hour
  decode_budget_mb: int = 400  # decoded pixel bytes of the uploads in flight in the web process
  max_decodes: int = 2  # uploads decoded at once in the web process (the rest wait)
  decode_wait_s: float = 20.0  # an upload waits this long for the decode budget, then 503
  video_max_seconds: float = 10.0  # length of an uploaded clip (video jobs)
  video_max_frames: int = 300  # frames of an uploaded clip, whatever its header says
  video_max_size: int = 512  # long side of a video job's output frames, px


@dataclass(frozen=True)
class SmtpConfig:
  """E-mail on job completion; off while ``host`` is empty."""
  host: str = ""
  port: int = 25
  sender: str = "nst-jax@localhost"
  starttls: bool = False
  username: str = ""
  password: str = ""


@dataclass(frozen=True)
class WebConfig:
  """The web application and its workers (``nst-jax serve`` / ``nst-jax worker``).

  Empty URLs take the embedded defaults under ``data_dir``: SQLite ``nst.db``, a huey SQLite
  queue ``queue.db`` and the content-addressed ``blobs/`` folder. Scale-out: a
  ``postgresql://`` database, a ``redis://`` queue and a shared ``file:///`` storage folder.
  """
  data_dir: str = "nst_web_data"
  database_url: str = ""  # "": sqlite:///<data_dir>/nst.db
  queue_url: str = ""  # "": huey SqliteHuey <data_dir>/queue.db; redis://host:port/db: RedisHuey
  storage_url: str = ""  # "": <data_dir>/blobs; file:///abs/path: a shared folder
  host: str = "127.0.0.1"
  port: int = 8000
  workers: int = 1  # worker processes `serve` starts beside the app
  base_url: str = ""  # links in e-mails; "": http://<host>:<port>
  models_dir: str = ""  # user-trained style networks (.npz or workdirs); "": <data_dir>/models
  styles_dir: str = ""  # the style paintings (<identifier>.jpg) for thumbnails; "": shared data's
  sample_photo: str = ""  # a real photo every style is shown on (Models page); "": none
  poll_s: float = 0.005  # the worker's queue polling interval, seconds (SqliteHuey)
  stale_s: float = 30.0  # a running job whose heartbeat is older is taken over by another worker
  checkpoint_every: int = 20  # slow jobs: iterations between optimizer checkpoints
  slow_optimizer: str = "lbfgsb"  # slow jobs' optimizer: lbfgsb | lbfgs | adam (compiles fastest)
  # Proxies whose X-Forwarded-For / -Proto are believed (uvicorn's --forwarded-allow-ips: comma-
  # separated addresses or networks, "*" for any); "": none, the peer's address is the client's.
  forwarded_allow_ips: str = ""
  # Cookies with the Secure flag and HSTS on every answer (behind TLS or a TLS proxy); without
  # it both follow the request's scheme (https, also from a trusted proxy's X-Forwarded-Proto).
  secure_cookies: bool = False
  ssl_certfile: str = ""  # serve HTTPS itself (uvicorn's TLS) with this certificate (PEM) ...
  ssl_keyfile: str = ""  # ... and this private key; "": plain HTTP (TLS left to a proxy)
  # Hides or deletes any gallery item (``Authorization: Bearer <token>``); "": no administrator.
  # $NST_JAX_ADMIN_TOKEN sets it without writing it on a command line.
  admin_token: str = ""
  limits: WebLimits = field(default_factory=WebLimits)
  smtp: SmtpConfig = field(default_factory=SmtpConfig)
