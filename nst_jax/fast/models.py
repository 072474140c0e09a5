"""The transform network a training config describes, and the checks of a training config.

Synopsis::

  from nst_jax import config
  from nst_jax.fast import models
  cfg = config.override(config.thesis(), {"net.width": "0.5", "size": "128"})
  models.check_config(cfg)                    # ConfigError for values no run can use
  model = models.make_model(cfg.net)          # a nets.TransformNet
  cfg2 = models.from_json(config.to_json(cfg))

The training configs themselves (``TrainConfig``, ``NetConfig``, ``PhotoTrainConfig`` and the
presets) live in ``nst_jax.config``. Everything a training run needs, including the style image
and data paths, is in its config, so the JSON written beside each checkpoint rebuilds the network
(and the run) on its own.
"""

from __future__ import annotations

import json

import jax.numpy as jnp

from nst_jax import config
from nst_jax.config import CONV_IMPLS, ConfigError, NetConfig, PhotoTrainConfig, TrainConfig
from nst_jax.core import objective
from nst_jax.core.errors import UserError
from nst_jax.fast import nets


def make_model(net: NetConfig, *, bf16: bool = False) -> nets.TransformNet:
  """The ``TransformNet`` a ``NetConfig`` describes (bfloat16 compute with ``bf16``)."""
  model = nets.TransformNet(normalization=net.normalization, upsample=net.upsample,
                            padding=net.padding, width=net.width, num_residual=net.num_residual,
                            input_blend=net.input_blend, output=net.output,
                            affine_grid=net.affine_grid, pixel_shuffle=net.pixel_shuffle,
                            conv_impl=net.conv_impl,
                            num_styles=net.num_styles,
                            dtype=jnp.bfloat16 if bf16 else jnp.float32)
  nets.check_options(model)
  return model


def style_paths(cfg: TrainConfig) -> tuple[str, ...]:
  """The run's style images: ``cfg.styles``, else ``(cfg.style,)`` (``()`` when neither is set)."""
  return tuple(cfg.styles) or ((cfg.style,) if cfg.style else ())


def check_styles(cfg: TrainConfig) -> None:
  """Raises ``config.ConfigError`` when the style images do not fit the network's styles."""
  if cfg.style and cfg.styles:
    raise ConfigError("styles", "give style (one image) or styles (several), not both")
  n = len(style_paths(cfg))
  if cfg.base_model:
    if not cfg.net.num_styles > n >= 1:
      raise ConfigError("net.num_styles", f"an add-style run needs the base network's styles "
                        f"plus its {n} new one(s), got {cfg.net.num_styles}")
  elif n > 1 and n != cfg.net.num_styles:
    raise ConfigError("net.num_styles", f"{n} style images need net.num_styles={n}, got "
                      f"{cfg.net.num_styles}")
  if cfg.net.num_styles > 1 and cfg.photo.regions:
    raise ConfigError("photo.regions", "multi-style networks have no masked (region) style loss")


def check_config(cfg: TrainConfig) -> None:
  """Raises ``config.ConfigError``, naming the key, for values no training run can use."""
  check_net(cfg.net)
  check_styles(cfg)
  # The loss network (VGG19 or VGG16) and its layer names, weights, style loss, conv_impl.
  objective.check_loss_config(cfg.loss, networks=config.LOSS_NETWORKS)
  positive = ("size", "style_size", "batch_size", "checkpoint_every", "keep_checkpoints",
              "log_every", "sample_every")
  for key in positive:
    if getattr(cfg, key) < 1:
      raise ConfigError(key, f"must be >= 1, got {getattr(cfg, key)}")
  for key in ("num_steps", "warmup_steps", "num_samples", "prefetch"):
    if getattr(cfg, key) < 0:
      raise ConfigError(key, f"must be >= 0, got {getattr(cfg, key)}")
  if cfg.size % nets.MULTIPLE:
    raise ConfigError("size", f"training size must be a multiple of {nets.MULTIPLE}, "
                      f"got {cfg.size}")
  if not cfg.learning_rate > 0:
    raise ConfigError("learning_rate", f"must be > 0, got {cfg.learning_rate}")
  if not cfg.input_noise >= 0:
    raise ConfigError("input_noise", f"must be >= 0, got {cfg.input_noise}")
  if not 0 <= cfg.ema_decay < 1:
    raise ConfigError("ema_decay", f"must be in [0, 1), got {cfg.ema_decay}")
  if cfg.schedule not in config.SCHEDULES:
    raise ConfigError("schedule", f"unknown schedule {cfg.schedule!r}; expected one of "
                      f"{', '.join(config.SCHEDULES)}")
  check_photo(cfg.photo)


def check_net(net: NetConfig) -> None:
  """Raises ``config.ConfigError`` (key ``net.*``) for a network no run can build."""
  for key, valid in (("normalization", config.NORMALIZATIONS), ("upsample", config.UPSAMPLES),
                     ("padding", config.PADDINGS), ("output", config.NET_OUTPUTS),
                     ("conv_impl", CONV_IMPLS)):
    if getattr(net, key) not in valid:
      raise ConfigError(f"net.{key}", f"unknown {key} {getattr(net, key)!r}; expected one of "
                        f"{', '.join(valid)}")
  for key, ok, need in (("affine_grid", net.affine_grid in (1, 4), "1 or 4"),
                        ("width", net.width > 0, "> 0"),
                        ("num_residual", net.num_residual >= 0, ">= 0"),
                        ("input_blend", 0.0 <= net.input_blend < 1.0, "in [0, 1)"),
                        ("num_styles", net.num_styles == 1 or (
                            net.num_styles > 1 and net.normalization == "instance"),
                         ">= 1, and 1 unless normalization is instance")):
    if not ok:
      raise ConfigError(f"net.{key}", f"must be {need}, got {getattr(net, key)}")
  make_model(net)  # anything else the network itself rejects


def check_photo(photo: PhotoTrainConfig) -> None:
  """Raises ``config.ConfigError`` (key ``photo.*``) for photorealistic settings no run can use."""
  for key, ok, need in (
      ("regions", photo.regions >= 0, ">= 0"), ("affine_weight", photo.affine_weight >= 0, ">= 0"),
      ("min_area", 0 <= photo.min_area < 1, "in [0, 1)"),
      ("affine_eps", photo.affine_eps > 0, "> 0"),
      ("affine_output", photo.affine_output >= 0, ">= 0"),
      ("guided_output", not (photo.affine_output and photo.guided_output),
       "false with photo.affine_output > 0 (one post-step or the other)"),
      ("fit_photos", photo.fit_photos >= 1 or not photo.regions, ">= 1 with photo.regions > 0"),
      ("affine_loss", photo.affine_loss in config.AFFINE_LOSSES,
       f"one of {', '.join(config.AFFINE_LOSSES)}"),
      ("mask_pooling", photo.mask_pooling in config.MASK_POOLINGS,
       f"one of {', '.join(config.MASK_POOLINGS)}")):
    if not ok:
      raise ConfigError(f"photo.{key}", f"must be {need}, got {getattr(photo, key)!r}")


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
  except (TypeError, ValueError) as e:  # config.ConfigError included
    raise UserError(f"not a valid training config: {e}") from None
