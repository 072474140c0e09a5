"""Configuration as nested frozen dataclasses with presets, and type-checked overrides.

Synopsis::

  from nst_jax import config
  cfg = config.gatys()                                     # the classic slow transfer
  cfg = config.override(cfg, {"loss.style_weight": "1e4", "optim.optimizer": "adam"})
  cfg.loss.style_layers                                    # ('relu1_1', ..., 'relu5_1')

Configs are hashable, so they can be static arguments of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from nst_jax.errors import UserError

GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgsb", "lbfgs", "adam")
INITS = ("content", "noise", "mix")


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


@dataclass(frozen=True)
class OptimConfig:
  """The per-image optimizer."""
  optimizer: str = "lbfgsb"  # lbfgsb (jaxopt, [0, 1] box) | lbfgs (optax + projection) | adam
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
  init: str = "content"  # content | noise | mix | path to an image
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


def to_dict(cfg) -> dict:
  return dataclasses.asdict(cfg)


def to_json(cfg) -> str:
  return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(cls, data: dict):
  """Rebuilds a (nested) config dataclass from ``to_dict`` output."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name not in data:
      continue
    value, hint = data[f.name], hints[f.name]
    if dataclasses.is_dataclass(hint):
      value = from_dict(hint, value)
    elif typing.get_origin(hint) is tuple:
      value = tuple(value)
    kwargs[f.name] = value
  return cls(**kwargs)


def _coerce(value, hint, key: str):
  """Parses a string (or passes a value) to the field's declared type, or raises UserError."""
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
      return bool(value)
    return hint(value)
  except (TypeError, ValueError):
    raise UserError(f"bad value {value!r} for {key}: expected {getattr(hint, '__name__', hint)}") from None


def override(cfg, overrides: dict):
  """Returns ``cfg`` with dotted-key overrides applied, each type-checked against the field."""
  for key, value in overrides.items():
    cfg = _override_one(cfg, key.split("."), value, key)
  return cfg


def _override_one(cfg, parts, value, key):
  names = {f.name for f in dataclasses.fields(cfg)}
  if parts[0] not in names:
    raise UserError(f"unknown config key {key!r}; valid here: {', '.join(sorted(names))}")
  hint = typing.get_type_hints(type(cfg))[parts[0]]
  current = getattr(cfg, parts[0])
  if len(parts) > 1:
    if not dataclasses.is_dataclass(current):
      raise UserError(f"unknown config key {key!r}")
    return dataclasses.replace(cfg, **{parts[0]: _override_one(current, parts[1:], value, key)})
  return dataclasses.replace(cfg, **{parts[0]: _coerce(value, hint, key)})
