"""``nst-jax visualize``: images that maximize chosen VGG19 channels (Yosinski et al.'s Deep
Visualization), as one grid.

Example::

  nst-jax visualize --layer conv5_1 --units 0,1,2,3 --out out/conv5_1.png --size 128

All units are optimized together, as one batch; the grid has up to ``--columns`` images a row.
"""

from __future__ import annotations

import argparse
import sys

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import plots, vgg
from nst_jax.core.errors import UserError
from nst_jax.slow import research

HELP = "activation maximization of VGG19 channels (Yosinski et al. 2015), as one grid"
_DEFAULTS = config.VisualizeConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--layer", required=True, help="a VGG19 layer, e.g. conv5_1 (pre-ReLU)")
  p.add_argument("--units", required=True, metavar="U1,U2", help="channel indices, e.g. 0,1,2,3")
  p.add_argument("--out", required=True, metavar="PNG", help="the grid figure (.png)")
  p.add_argument("--size", type=common.positive_int, default=_DEFAULTS.size,
                 help=f"side of each image (px, default {_DEFAULTS.size})")
  p.add_argument("--iters", type=common.positive_int, default=100,
                 help="gradient ascent steps (default 100)")
  p.add_argument("--learning-rate", "--lr", type=common.non_negative_float,
                 default=_DEFAULTS.learning_rate,
                 help="step along the gradient normalized by its mean magnitude")
  p.add_argument("--decay", type=common.non_negative_float, default=_DEFAULTS.decay,
                 help="L2 decay towards grey per step")
  p.add_argument("--blur-every", type=int, default=_DEFAULTS.blur_every, metavar="N",
                 help="Gaussian blur every N steps (0: never)")
  p.add_argument("--blur-sigma", type=common.non_negative_float, default=_DEFAULTS.blur_sigma)
  p.add_argument("--jitter", type=int, default=_DEFAULTS.jitter, metavar="PX",
                 help="random shift of up to PX pixels before each step")
  p.add_argument("--spatial", choices=("mean", "center"), default=_DEFAULTS.spatial,
                 help="maximize the channel's mean or its center unit")
  p.add_argument("--pooling", choices=("avg", "max"), default=_DEFAULTS.pooling)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--columns", type=common.positive_int, default=4, help="images per grid row")
  p.add_argument("--chunk", type=common.positive_int, default=10,
                 help="iterations per compiled chunk")
  p.add_argument("--no-progress", action="store_true")
  common.add_weights_flag(p)


def parse_units(text: str) -> tuple[int, ...]:
  try:
    units = tuple(int(u) for u in text.split(",") if u.strip())
  except ValueError:
    raise UserError(f"--units must be comma-separated integers, got {text!r}") from None
  if not units:
    raise UserError("--units needs at least one channel index")
  return units


def run(args) -> int:
  out = common.check_output_path(args.out, (".png",))
  units = parse_units(args.units)
  cfg = config.VisualizeConfig(
      size=args.size, num_iters=args.iters, learning_rate=args.learning_rate, decay=args.decay,
      blur_every=args.blur_every, blur_sigma=args.blur_sigma, jitter=args.jitter,
      spatial=args.spatial, pooling=args.pooling, seed=args.seed, chunk=args.chunk)
  vgg.check_layers((args.layer,))  # before the weights are loaded
  params = common.load_vgg(args)
  research.check_visualize(params, args.layer, units, cfg)
  result = research.visualize_units(params, args.layer, units, cfg, progress=not args.no_progress,
                                    max_memory=args.max_memory)
  rows = research.grid_rows(result.images, args.columns)
  col_titles = [f"{args.layer} #{u}" for u in units[:args.columns]]
  row_titles = ([] if len(rows) == 1 else
                [", ".join(f"#{u}" for u in units[i:i + args.columns])
                 for i in range(0, len(units), args.columns)])
  plots.save_image_grid(out, rows, row_titles=row_titles, col_titles=col_titles)
  gains = ", ".join(f"#{u}: {a:.3g} -> {b:.3g}"
                    for u, a, b in zip(units, result.initial, result.final))
  print(f"wrote {out} (mean activation {gains})", file=sys.stderr)
  return 0
