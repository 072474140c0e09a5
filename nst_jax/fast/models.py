"""The transform network a training config describes, and its JSON round trip.

Synopsis::

  from nst_jax import config
  from nst_jax.fast import models
  cfg = config.override(config.thesis(), {"net.width": "0.5", "size": "128"})
  cfg.check()                                 # ConfigError for values no run can use
  model = models.make_model(cfg.net)          # a nets.TransformNet
  cfg2 = models.from_json(config.to_json(cfg))

The training configs themselves (``TrainConfig``, ``NetConfig``, ``PhotoTrainConfig``, the
presets and their checks) live in ``nst_jax/config/fast.py``. Everything a training run needs,
including the style image and data paths, is in its config, so the JSON written beside each
checkpoint rebuilds the network (and the run) on its own.
"""

from __future__ import annotations

import json

import jax.numpy as jnp

from nst_jax import config
from nst_jax.config import NetConfig, TrainConfig
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
