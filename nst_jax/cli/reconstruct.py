"""``nst-jax reconstruct``: what each VGG19 layer keeps of an image, as in Gatys et al.'s Figure 1.

Example::

  nst-jax reconstruct --content photo.jpg --style starry.jpg --out out/fig1.png --size 128

Row 1: images optimized from noise to match the content's features at one layer (conv1_2 ...
conv5_2). Row 2: images matching the style's Gram matrices on growing stacks of layers (conv1_1;
conv1_1..conv2_1; ... conv1_1..conv5_1). One PNG grid, written at the end, with the resolved
config beside it (``<out>_config.json``).
"""

from __future__ import annotations

import argparse
import sys

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io

HELP = "content and style reconstructions from VGG19 layers, as one grid (Gatys et al. Fig. 1)"


ReconstructConfig = config.ReconstructConfig  # nst_jax/config/slow.py


# Flag (argparse dest) -> ReconstructConfig key.
FLAGS = {**common.field_flags(ReconstructConfig), "iters": "optim.num_iters",
         **{d: k for d, k in common.OPTIM_FLAGS.items()
            if d in ("optimizer", "learning_rate", "chunk")}}


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--content", required=True, metavar="IMG", help="content image")
  p.add_argument("--style", required=True, metavar="IMG", help="style image")
  p.add_argument("--out", required=True, metavar="PNG", help="the grid figure (.png)")
  common.add_field_flags(p, ReconstructConfig)
  p.add_argument("--iters", type=common.positive_int, help="iterations per reconstruction")
  common.add_field_flags(p, config.OptimConfig, only=("optimizer", "learning_rate", "chunk"))
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  common.add_weights_flag(p)
  common.add_config_flags(p, "ReconstructConfig")
  common.annotate_defaults(p, FLAGS, ReconstructConfig())


def resolve_config(args) -> ReconstructConfig:
  """ReconstructConfig() < --config < the flags < --set (unchecked)."""
  return common.resolve_config(args, ReconstructConfig(),
                               common.flag_overrides(args, FLAGS))


def build_config(args) -> ReconstructConfig:
  """``resolve_config``, validated (``config.ConfigError`` naming the key)."""
  return resolve_config(args).check()


def run(args) -> int:
  from nst_jax.core import plots  # pylint: disable=import-outside-toplevel
  from nst_jax.slow import research  # pylint: disable=import-outside-toplevel
  out = common.check_output_path(args.out, (".png",))
  cfg = build_config(args)
  from nst_jax.core import memory  # pylint: disable=import-outside-toplevel (imports JAX)
  memory.check_files_fit("reconstruct", (args.content, args.style), cfg.size,  # before resizing
                         memory.budget_bytes(args.max_memory),
                         layers=tuple(cfg.content_layers) + tuple(cfg.style_layers),
                         history=0 if cfg.optim.optimizer == "adam" else cfg.optim.history_size)
  content = image_io.load_image(args.content, size=cfg.size, max_pixels=args.max_pixels)
  style = image_io.load_image(args.style, size=cfg.size, max_pixels=args.max_pixels)
  params = common.load_vgg(args)
  contents, styles = research.reconstruct_all(
      params, content, style, cfg.optim, content_layers=cfg.content_layers,
      style_layers=cfg.style_layers, tv_weight=cfg.tv_weight, pooling=cfg.pooling, seed=cfg.seed,
      progress=not args.no_progress, max_memory=args.max_memory)
  failed = [r.label for r in contents + styles if r.nan_at is not None]
  rows, row_titles, col_titles = research.figure_rows(content, style, contents, styles)
  plots.save_image_grid(out, rows, row_titles=row_titles, col_titles=col_titles)
  common.write_config(common.config_path(out), cfg)
  print(f"wrote {out} ({len(contents)} content and {len(styles)} style reconstructions, "
        f"{cfg.optim.num_iters} iterations each)", file=sys.stderr)
  if failed:
    print(f"warning: the loss became NaN/Inf in {', '.join(failed)}; those show the last good "
          "image", file=sys.stderr)
  return 0
