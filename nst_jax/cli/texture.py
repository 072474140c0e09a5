"""``nst-jax texture``: texture synthesis from an example image (style only, from noise).

Example::

  nst-jax texture --style starry.jpg --out out/starry_texture.png --size 256 --iters 200

Writes the texture (format by extension), ``<out>_losses.csv`` and the loss plot
``<out>_losses.png``. The texture has the example's aspect ratio and ``--size`` long side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dataclasses

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io

HELP = "texture synthesis: match the style's Gram statistics from noise (Gatys et al. 2015)"
DEFAULT_PRESET = "gatys"
_LOSS = ("style_weight", "tv_weight", "style_layers", "style_layer_weights", "style_loss",
         "pooling")
# Flag (argparse dest) -> TransferConfig key.
_OWN = ("size", "scales", "style_scale", "seed")
FLAGS = {**{k: k for k in _OWN},
         **{k: common.LOSS_FLAGS[k] for k in _LOSS}, **common.OPTIM_FLAGS}


def make_base(preset: str) -> config.TransferConfig:
  """The preset, at this command's default size (256 px: textures need less)."""
  cfg = config.PRESETS[preset]()
  return dataclasses.replace(cfg, size=256) if preset == "gatys" else cfg


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--style", required=True, metavar="IMG", help="the example texture")
  p.add_argument("--out", required=True, metavar="PATH",
                 help="output image (format by extension)")
  common.add_field_flags(p, config.TransferConfig, only=_OWN)
  common.add_field_flags(p.add_argument_group("loss"), config.LossConfig, only=_LOSS)
  common.add_optim_flags(p)
  common.add_output_flags(p, checkpoint=False)
  common.add_weights_flag(p)
  common.add_config_flags(p, "TransferConfig", presets=config.PRESETS,
                          default_preset=DEFAULT_PRESET,
                          preset_help=common.describe_presets(config.PRESETS)
                          + " (gatys at 256 px here)")
  common.annotate_defaults(p, FLAGS, make_base(DEFAULT_PRESET), DEFAULT_PRESET)


def resolve_config(args) -> config.TransferConfig:
  """The preset < --config < the flags < --set (unchecked)."""
  return common.resolve_config(args, make_base(args.preset), common.flag_overrides(args, FLAGS))


def build_config(args) -> config.TransferConfig:
  """``resolve_config``, validated (``config.ConfigError`` naming the key; the library's
  entry checks the same config again from the cache)."""
  cfg = resolve_config(args)
  if cfg.optim.num_iters < 1:
    raise config.ConfigError("optim.num_iters", f"must be at least 1, got {cfg.optim.num_iters}")
  return cfg.check()


def run(args) -> int:
  from nst_jax.slow import research  # pylint: disable=import-outside-toplevel
  out = common.check_output_path(args.out)
  log_path, plot_path = common.loss_output_paths(args, out)
  cfg = build_config(args)
  style = image_io.load_image(args.style, max_pixels=args.max_pixels)
  params = common.load_vgg(args)
  result = research.synthesize_texture(params, style, cfg, progress=not args.no_progress,
                                       max_memory=args.max_memory)
  image_io.save_image(out, result.images[0])
  common.write_config(common.config_path(out), cfg)
  common.report_run([out], result, log_path, plot_path,
                    f"texture {Path(args.style).name}: {cfg.optim.optimizer}, {cfg.size}px",
                    hide=("content",))
  return 0
