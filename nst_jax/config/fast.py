"""Feed-forward configs: the transform network, its training run and presets, the post-step
of its outputs, and the arbitrary-style networks and their training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from nst_jax.config.common import (
  AFFINE_LOSSES,
  CONV_IMPLS,
  FAST_MATTING_BUDGET,
  JOHNSON_STYLE_LAYERS,
  LOSS_NETWORKS,
  MASK_POOLINGS,
  NET_OUTPUTS,
  NORMALIZATIONS,
  PADDINGS,
  PHOTO_AFFINE_OUTPUT,
  PHOTO_AFFINE_WEIGHT,
  PHOTO_STYLE_LAYERS,
  SCHEDULES,
  SMOOTH_METHODS,
  THESIS_STYLE_LAYERS,
  UPSAMPLES,
  ConfigError,
  LossConfig,
  check_once,
  flag_field,
)

# ------------------------------------------------------------------------- feed-forward networks
NET_MULTIPLE = 4  # the transform net's two stride-2 stages: H and W must be divisible by 4


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

  @check_once
  def check(self) -> NetConfig:
    """Raises ``ConfigError`` (key ``net.*``) for a network no run can build."""
    for key, valid in (("normalization", NORMALIZATIONS), ("upsample", UPSAMPLES),
                       ("padding", PADDINGS), ("output", NET_OUTPUTS), ("conv_impl", CONV_IMPLS)):
      if getattr(self, key) not in valid:
        raise ConfigError(f"net.{key}", f"unknown {key} {getattr(self, key)!r}; expected one of "
                          f"{', '.join(valid)}")
    for key, ok, need in (("affine_grid", self.affine_grid in (1, 4), "1 or 4"),
                          ("width", self.width > 0, "> 0"),
                          ("num_residual", self.num_residual >= 0, ">= 0"),
                          ("input_blend", 0.0 <= self.input_blend < 1.0, "in [0, 1)"),
                          ("num_styles", self.num_styles == 1 or (
                              self.num_styles > 1 and self.normalization == "instance"),
                           ">= 1, and 1 unless normalization is instance"),
                          ("pixel_shuffle", not (self.pixel_shuffle and self.output != "rgb"),
                           "false unless output is rgb")):
      if not ok:
        raise ConfigError(f"net.{key}", f"must be {need}, got {getattr(self, key)}")


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

  @check_once
  def check(self) -> PhotoTrainConfig:
    """Raises ``ConfigError`` (key ``photo.*``) for photorealistic settings no run can use."""
    for key, ok, need in (
        ("regions", self.regions >= 0, ">= 0"), ("affine_weight", self.affine_weight >= 0, ">= 0"),
        ("min_area", 0 <= self.min_area < 1, "in [0, 1)"),
        ("affine_eps", self.affine_eps > 0, "> 0"),
        ("affine_output", self.affine_output >= 0, ">= 0"),
        ("guided_output", not (self.affine_output and self.guided_output),
         "false with photo.affine_output > 0 (one post-step or the other)"),
        ("fit_photos", self.fit_photos >= 1 or not self.regions, ">= 1 with photo.regions > 0"),
        ("affine_loss", self.affine_loss in AFFINE_LOSSES, f"one of {', '.join(AFFINE_LOSSES)}"),
        ("mask_pooling", self.mask_pooling in MASK_POOLINGS,
         f"one of {', '.join(MASK_POOLINGS)}")):
      if not ok:
        raise ConfigError(f"photo.{key}", f"must be {need}, got {getattr(self, key)!r}")


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
  data: str = flag_field(  # a folder of training photos, or "tfds:NAME"
      "", help="a folder of training photos (recursive), or tfds:NAME (e.g. tfds:coco/2017, "
      "needs tensorflow-datasets); required unless --config gives it")
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

  @check_once
  def check(self) -> TrainConfig:
    """Raises ``ConfigError``, naming the key, for values no training run can use."""
    self.net.check()
    self.check_styles()
    # The loss network (VGG19 or VGG16) and its layer names, weights, style loss, conv_impl.
    self.loss.check(networks=LOSS_NETWORKS)
    positive = ("size", "style_size", "batch_size", "checkpoint_every", "keep_checkpoints",
                "log_every", "sample_every")
    for key in positive:
      if getattr(self, key) < 1:
        raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")
    for key in ("num_steps", "warmup_steps", "num_samples", "prefetch"):
      if getattr(self, key) < 0:
        raise ConfigError(key, f"must be >= 0, got {getattr(self, key)}")
    if self.size % NET_MULTIPLE:
      raise ConfigError("size", f"training size must be a multiple of {NET_MULTIPLE}, "
                        f"got {self.size}")
    if not self.learning_rate > 0:
      raise ConfigError("learning_rate", f"must be > 0, got {self.learning_rate}")
    if not self.input_noise >= 0:
      raise ConfigError("input_noise", f"must be >= 0, got {self.input_noise}")
    if not 0 <= self.ema_decay < 1:
      raise ConfigError("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
    if self.schedule not in SCHEDULES:
      raise ConfigError("schedule", f"unknown schedule {self.schedule!r}; expected one of "
                        f"{', '.join(SCHEDULES)}")
    self.photo.check()

  def check_styles(self) -> None:
    """Raises ``ConfigError`` when the style images do not fit the network's styles."""
    if self.style and self.styles:
      raise ConfigError("styles", "give style (one image) or styles (several), not both")
    n = len(self.styles) or (1 if self.style else 0)
    if self.base_model:
      if not self.net.num_styles > n >= 1:
        raise ConfigError("net.num_styles", f"an add-style run needs the base network's styles "
                          f"plus its {n} new one(s), got {self.net.num_styles}")
    elif n > 1 and n != self.net.num_styles:
      raise ConfigError("net.num_styles", f"{n} style images need net.num_styles={n}, got "
                        f"{self.net.num_styles}")
    if self.net.num_styles > 1 and self.photo.regions:
      raise ConfigError("photo.regions", "multi-style networks have no masked (region) style "
                        "loss")


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
  method: str = flag_field(
      "affine", help="affine (smooth local affine, the default) or guided (guided filter)",
      name="smooth-method", choices=SMOOTH_METHODS)
  weight: float = flag_field(
      0.0, help="affine: the weight, with a budget the least one (default: the weight the "
      "network was trained through, else 0)", name="smooth-weight", type="float")
  budget: float = flag_field(
      FAST_MATTING_BUDGET, help="affine: per image, the least smoothing that keeps the matting "
      f"energy within X times the photo's (default {FAST_MATTING_BUDGET:g}; 0: exactly "
      "--smooth-weight)", name="matting-budget", type="float")
  radius: int = flag_field(0, help="guided: the filter's box radius (default 0: long side / 12)",
                           name="smooth-radius", type="int")

  @check_once
  def check(self) -> Smoothing:
    """Raises ``ConfigError`` (naming the field) for a post-step no image can use."""
    if self.method not in SMOOTH_METHODS:
      raise ConfigError("method", f"must be one of {', '.join(SMOOTH_METHODS)}, "
                        f"got {self.method!r}")
    for key in ("weight", "budget", "radius"):
      if not getattr(self, key) >= 0:
        raise ConfigError(key, f"must be >= 0, got {getattr(self, key)}")


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
