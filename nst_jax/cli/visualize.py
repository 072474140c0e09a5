"""``nst-jax visualize``: images that maximize chosen VGG19 channels (Yosinski et al.'s Deep
Visualization), as one grid.

Example::

  nst-jax visualize --layer conv5_1 --units 0,1,2,3 --out out/conv5_1.png --size 128

All units are optimized together, as one batch; the grid has up to ``--columns`` images a row. The
resolved config is written beside it (``<out>_config.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core.errors import UserError

HELP = "activation maximization of VGG19 channels (Yosinski et al. 2015), as one grid"
# Flag (argparse dest) -> VisualizeConfig key.
FLAGS = common.field_flags(config.VisualizeConfig)


def make_base() -> config.VisualizeConfig:
  """``VisualizeConfig()`` with this command's 100 steps."""
  return dataclasses.replace(config.VisualizeConfig(), num_iters=100)


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--layer", required=True, help="a VGG19 layer, e.g. conv5_1 (pre-ReLU)")
  p.add_argument("--units", required=True, metavar="U1,U2", help="channel indices, e.g. 0,1,2,3")
  p.add_argument("--out", required=True, metavar="PNG", help="the grid figure (.png)")
  common.add_field_flags(p, config.VisualizeConfig)
  p.add_argument("--columns", type=common.positive_int, default=4, help="images per grid row")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  common.add_weights_flag(p)
  common.add_config_flags(p, "VisualizeConfig")
  common.annotate_defaults(p, FLAGS, make_base())


def resolve_config(args) -> config.VisualizeConfig:
  """The defaults (100 steps) < --config < the flags < --set (unchecked)."""
  return common.resolve_config(args, make_base(), common.flag_overrides(args, FLAGS))


def parse_units(text: str) -> tuple[int, ...]:
  try:
    units = tuple(int(u) for u in text.split(",") if u.strip())
  except ValueError:
    raise UserError(f"--units must be comma-separated integers, got {text!r}") from None
  if not units:
    raise UserError("--units needs at least one channel index")
  return units


def run(args) -> int:
  from nst_jax.core import plots, vgg  # pylint: disable=import-outside-toplevel
  from nst_jax.slow import research  # pylint: disable=import-outside-toplevel
  out = common.check_output_path(args.out, (".png",))
  units = parse_units(args.units)
  cfg = resolve_config(args)
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
  common.write_config(common.config_path(out), cfg)
  gains = ", ".join(f"#{u}: {a:.3g} -> {b:.3g}"
                    for u, a, b in zip(units, result.initial, result.final))
  print(f"wrote {out} (mean activation {gains})", file=sys.stderr)
  return 0
