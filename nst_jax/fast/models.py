"""The transform network a training config describes, and the checks of a training config.

Synopsis::

  from nst_jax import config
  from nst_jax.fast import models
  cfg = config.override(config.thesis(), {"net.width": "0.5", "size": "128"})
  models.check_config(cfg)                    # UserError for values no run can use
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
from nst_jax.config import NetConfig, PhotoTrainConfig, TrainConfig
from nst_jax.core.errors import UserError
from nst_jax.fast import nets


def make_model(net: NetConfig, *, bf16: bool = False) -> nets.TransformNet:
  """The ``TransformNet`` a ``NetConfig`` describes (bfloat16 compute with ``bf16``)."""
  model = nets.TransformNet(normalization=net.normalization, upsample=net.upsample,
                            padding=net.padding, width=net.width, num_residual=net.num_residual,
                            input_blend=net.input_blend, output=net.output,
                            affine_grid=net.affine_grid, conv_impl=net.conv_impl,
                            dtype=jnp.bfloat16 if bf16 else jnp.float32)
  nets.check_options(model)
  return model


def check_config(cfg: TrainConfig) -> None:
  """Raises ``UserError`` for values no training run can use."""
  for key, value in (("net.conv_impl", cfg.net.conv_impl), ("loss.conv_impl", cfg.loss.conv_impl)):
    if value not in config.CONV_IMPLS:
      raise UserError(f"unknown {key} {value!r}; expected one of {', '.join(config.CONV_IMPLS)}")
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
  if cfg.schedule not in config.SCHEDULES:
    raise UserError(f"unknown schedule {cfg.schedule!r}; expected one of {config.SCHEDULES}")
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
  if photo.affine_loss not in config.AFFINE_LOSSES:
    raise UserError(f"unknown photo.affine_loss {photo.affine_loss!r}; expected one of "
                    f"{config.AFFINE_LOSSES}")
  if photo.mask_pooling not in config.MASK_POOLINGS:
    raise UserError(f"unknown photo.mask_pooling {photo.mask_pooling!r}; expected one of "
                    f"{config.MASK_POOLINGS}")


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
