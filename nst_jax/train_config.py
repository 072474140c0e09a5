"""Configuration of feed-forward training (Johnson et al. 2016) as frozen dataclasses, with presets.

Synopsis::

  from nst_jax import train_config, config
  cfg = train_config.thesis()                     # or johnson(), smoke()
  cfg = config.override(cfg, {"style": "starry.jpg", "data": "../shared/data/train",
                              "net.width": "0.5", "size": "128", "num_steps": "400"})
  model = train_config.make_model(cfg.net)        # a nets.TransformNet

Everything the training run needs, including the style image and data paths, is in the config, so
the JSON written beside each checkpoint rebuilds the network (and the run) on its own.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import jax.numpy as jnp

from nst_jax import config, masks, nets, photo_train
from nst_jax.config import LossConfig
from nst_jax.errors import UserError

THESIS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
JOHNSON_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
SCHEDULES = ("constant", "cosine", "step")
PHOTO_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")  # Luan's, pre-ReLU
PHOTO_AFFINE_WEIGHT = 1e3  # calibrated in docs/fast_photoreal.md ("Calibration")
# The photoreal preset scores outputs after the smooth local affine step at this weight
# (docs/fast_photoreal.md, "Training through the post-step").
PHOTO_AFFINE_OUTPUT = 50.0


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
    mask_pooling: how masks follow VGG's pools (``masks.downsample_masks``).
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
  style: str = ""  # the style image
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


def smoke() -> TrainConfig:
  """A tiny, fast run for tests: the thesis' losses, a tiny net, 32-px crops."""
  cfg = thesis()
  return dataclasses.replace(
      cfg, net=dataclasses.replace(cfg.net, width=0.125, num_residual=1), size=32, style_size=32,
      batch_size=2, num_steps=6, checkpoint_every=3, log_every=2, sample_every=3, num_samples=2,
      prefetch=1)


PRESETS = {"thesis": thesis, "johnson": johnson, "photoreal": photoreal, "smoke": smoke}


def make_model(net: NetConfig, *, bf16: bool = False) -> nets.TransformNet:
  """The ``TransformNet`` a ``NetConfig`` describes (bfloat16 compute with ``bf16``)."""
  model = nets.TransformNet(normalization=net.normalization, upsample=net.upsample,
                            padding=net.padding, width=net.width, num_residual=net.num_residual,
                            input_blend=net.input_blend, output=net.output,
                            affine_grid=net.affine_grid,
                            dtype=jnp.bfloat16 if bf16 else jnp.float32)
  nets.check_options(model)
  return model


def check_config(cfg: TrainConfig) -> None:
  """Raises ``UserError`` for values no training run can use."""
  make_model(cfg.net)
  positive = ("size", "style_size", "batch_size", "checkpoint_every", "keep_checkpoints",
              "log_every", "sample_every")
  bad = [f"{k}={getattr(cfg, k)}" for k in positive if getattr(cfg, k) < 1]
  bad += [f"{k}={getattr(cfg, k)}" for k in ("num_steps", "warmup_steps", "num_samples",
                                              "prefetch") if getattr(cfg, k) < 0]
  if bad:
    raise UserError(f"invalid training config: {', '.join(bad)}")
  if cfg.size % nets.MULTIPLE:
    raise UserError(f"training size must be a multiple of {nets.MULTIPLE}, got {cfg.size}")
  if not cfg.learning_rate > 0 or cfg.input_noise < 0:
    raise UserError(f"need learning_rate > 0 and input_noise >= 0, got {cfg.learning_rate}, "
                    f"{cfg.input_noise}")
  if not 0 <= cfg.ema_decay < 1:
    raise UserError(f"need ema_decay in [0, 1), got {cfg.ema_decay}")
  if cfg.schedule not in SCHEDULES:
    raise UserError(f"unknown schedule {cfg.schedule!r}; expected one of {SCHEDULES}")
  check_photo(cfg.photo)


def check_photo(photo: PhotoTrainConfig) -> None:
  """Raises ``UserError`` for photorealistic settings no run can use."""
  if (photo.regions < 0 or not photo.affine_weight >= 0 or not 0 <= photo.min_area < 1
      or not photo.affine_eps > 0):
    raise UserError(f"need photo.regions >= 0, photo.affine_weight >= 0, photo.affine_eps > 0 "
                    f"and photo.min_area in [0, 1); got {photo.regions}, {photo.affine_weight}, "
                    f"{photo.affine_eps}, {photo.min_area}")
  if not photo.affine_output >= 0 or (photo.affine_output and photo.guided_output):
    raise UserError(f"need photo.affine_output >= 0 and not both it and photo.guided_output; "
                    f"got {photo.affine_output}, {photo.guided_output}")
  if photo.regions and photo.fit_photos < 1:
    raise UserError("photo.fit_photos must be >= 1 with photo.regions > 0")
  if photo.affine_loss not in photo_train.AFFINE_LOSSES:
    raise UserError(f"unknown photo.affine_loss {photo.affine_loss!r}; expected one of "
                    f"{photo_train.AFFINE_LOSSES}")
  if photo.mask_pooling not in masks.MASK_POOLINGS:
    raise UserError(f"unknown photo.mask_pooling {photo.mask_pooling!r}; expected one of "
                    f"{masks.MASK_POOLINGS}")


def to_json(cfg: TrainConfig) -> str:
  return config.to_json(cfg)


def from_json(text: str) -> TrainConfig:
  """Rebuilds a ``TrainConfig`` from ``to_json`` output (unknown keys raise ``UserError``)."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserError(f"not a training config (bad JSON: {e})") from None
  return from_dict(data)


def from_dict(data: dict) -> TrainConfig:
  if not isinstance(data, dict) or "net" not in data or "loss" not in data:
    raise UserError("not a training config: no 'net' and 'loss' sections")
  try:
    return config.from_dict(TrainConfig, data)
  except (TypeError, ValueError) as e:
    raise UserError(f"not a valid training config: {e}") from None
