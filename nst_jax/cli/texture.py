"""``nst-jax texture``: texture synthesis from an example image (style only, from noise).

Example::

  nst-jax texture --style starry.jpg --out out/starry_texture.png --size 256 --iters 200

Writes the texture (format by extension), ``<out>_losses.csv`` and the loss plot
``<out>_losses.png``. The texture has the example's aspect ratio and ``--size`` long side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io
from nst_jax.core.errors import UserError
from nst_jax.slow import artistic, research

HELP = "texture synthesis: match the style's Gram statistics from noise (Gatys et al. 2015)"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--style", required=True, metavar="IMG", help="the example texture")
  p.add_argument("--out", required=True, metavar="PATH",
                 help="output image (format by extension)")
  p.add_argument("--size", type=common.positive_int, default=256,
                 help="long side of the texture (px, default 256)")
  p.add_argument("--scales", type=common.positive_int, help="coarse-to-fine levels (x2 each)")
  p.add_argument("--style-scale", type=float, help="example size relative to the output")
  p.add_argument("--seed", type=int, help="seed of the initial noise")
  g = p.add_argument_group("loss")
  g.add_argument("--style-weight", type=common.non_negative_float)
  g.add_argument("--tv-weight", type=common.non_negative_float)
  g.add_argument("--style-layers", metavar="L1,L2", help="default relu1_1,...,relu5_1")
  g.add_argument("--style-layer-weights", metavar="W1,W2")
  g.add_argument("--style-loss", choices=("gram", "mean", "mean_std", "mmd_poly", "mmd_gauss"))
  g.add_argument("--pooling", choices=("avg", "max"))
  common.add_optim_flags(p)
  common.add_output_flags(p, checkpoint=False)
  common.add_weights_flag(p)


def build_config(args) -> config.TransferConfig:
  overrides = common.loss_and_optim_overrides(args)
  for key in ("size", "scales", "style_scale", "seed"):
    if getattr(args, key) is not None:
      overrides[key] = getattr(args, key)
  cfg = config.override(config.gatys(), overrides)
  if cfg.optim.num_iters < 1:
    raise UserError(f"--iters must be at least 1, got {cfg.optim.num_iters}")
  artistic.check_config(cfg)
  return cfg


def run(args) -> int:
  out = common.check_output_path(args.out)
  log_path, plot_path = common.loss_output_paths(args, out)
  cfg = build_config(args)
  style = image_io.load_image(args.style, max_pixels=args.max_pixels)
  params = common.load_vgg(args)
  result = research.synthesize_texture(params, style, cfg, progress=not args.no_progress,
                                       max_memory=args.max_memory)
  image_io.save_image(out, result.images[0])
  common.report_run([out], result, log_path, plot_path,
                    f"texture {Path(args.style).name}: {cfg.optim.optimizer}, {cfg.size}px",
                    hide=("content",))
  return 0
