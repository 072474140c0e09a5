"""``nst-jax reconstruct``: what each VGG19 layer keeps of an image, as in Gatys et al.'s Figure 1.

Example::

  nst-jax reconstruct --content photo.jpg --style starry.jpg --out out/fig1.png --size 128

Row 1: images optimized from noise to match the content's features at one layer (conv1_2 ...
conv5_2). Row 2: images matching the style's Gram matrices on growing stacks of layers (conv1_1;
conv1_1..conv2_1; ... conv1_1..conv5_1). One PNG grid, written at the end.
"""

from __future__ import annotations

import argparse
import sys

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io, memory, plots, vgg
from nst_jax.core.errors import UserError
from nst_jax.slow import research

HELP = "content and style reconstructions from VGG19 layers, as one grid (Gatys et al. Fig. 1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--content", required=True, metavar="IMG", help="content image")
  p.add_argument("--style", required=True, metavar="IMG", help="style image")
  p.add_argument("--out", required=True, metavar="PNG", help="the grid figure (.png)")
  p.add_argument("--size", type=common.positive_int, default=128,
                 help="long side of the inputs and reconstructions (px, default 128)")
  p.add_argument("--iters", type=common.positive_int, default=100,
                 help="iterations per reconstruction (default 100)")
  p.add_argument("--optimizer", choices=config.OPTIMIZERS, default="lbfgsb")
  p.add_argument("--learning-rate", "--lr", type=common.non_negative_float, default=0.02,
                 help="Adam step size")
  p.add_argument("--content-layers", default=",".join(research.CONTENT_LAYERS),
                 metavar="L1,L2", help="one content reconstruction per layer")
  p.add_argument("--style-layers", default=",".join(research.STYLE_LAYERS), metavar="L1,L2",
                 help="one style reconstruction per growing stack of these layers")
  p.add_argument("--tv-weight", type=common.non_negative_float, default=0.0)
  p.add_argument("--pooling", choices=("avg", "max"), default="avg")
  p.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
  p.add_argument("--chunk", type=common.positive_int, default=10,
                 help="iterations per compiled chunk")
  p.add_argument("--no-progress", action="store_true")
  common.add_weights_flag(p)


def parse_layers(text: str, flag: str) -> tuple[str, ...]:
  layers = tuple(l.strip() for l in text.split(",") if l.strip())
  if not layers:
    raise UserError(f"{flag} needs at least one layer name")
  return vgg.check_layers(layers)


def run(args) -> int:
  out = common.check_output_path(args.out, (".png",))
  content_layers = parse_layers(args.content_layers, "--content-layers")
  style_layers = parse_layers(args.style_layers, "--style-layers")
  optim = config.OptimConfig(optimizer=args.optimizer, num_iters=args.iters,
                             learning_rate=args.learning_rate, chunk=args.chunk)
  memory.check_files_fit("reconstruct", (args.content, args.style), args.size,  # before resizing
                         memory.budget_bytes(args.max_memory), layers=content_layers + style_layers,
                         history=0 if optim.optimizer == "adam" else optim.history_size)
  content = image_io.load_image(args.content, size=args.size, max_pixels=args.max_pixels)
  style = image_io.load_image(args.style, size=args.size, max_pixels=args.max_pixels)
  params = common.load_vgg(args)
  contents, styles = research.reconstruct_all(
      params, content, style, optim, content_layers=content_layers, style_layers=style_layers,
      tv_weight=args.tv_weight, pooling=args.pooling, seed=args.seed,
      progress=not args.no_progress, max_memory=args.max_memory)
  failed = [r.label for r in contents + styles if r.nan_at is not None]
  rows, row_titles, col_titles = research.figure_rows(content, style, contents, styles)
  plots.save_image_grid(out, rows, row_titles=row_titles, col_titles=col_titles)
  print(f"wrote {out} ({len(contents)} content and {len(styles)} style reconstructions, "
        f"{args.iters} iterations each)", file=sys.stderr)
  if failed:
    print(f"warning: the loss became NaN/Inf in {', '.join(failed)}; those show the last good "
          "image", file=sys.stderr)
  return 0
