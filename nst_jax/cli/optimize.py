"""``nst-jax optimize``: slow artistic style transfer (Gatys et al.) of one or several images.

Example::

  nst-jax optimize --content photo.jpg --style starry.jpg --out out/photo_starry.png --size 512
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io
from nst_jax.core.errors import UserError
from nst_jax.slow import artistic

HELP = "slow style transfer: optimize an image to match a content and style(s) (Gatys et al.)"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--content", nargs="+", required=True, metavar="IMG",
                 help="content image(s); several are optimized together (batched)")
  p.add_argument("--style", nargs="+", required=True, metavar="IMG", help="style image(s)")
  p.add_argument("--style-blend-weights", metavar="W1,W2", help="blend of several styles")
  p.add_argument("--batch-styles", action="store_true",
                 help="one output per style (optimized together) instead of blending them")
  p.add_argument("--out", required=True, metavar="PATH",
                 help="output image (format by extension); several outputs get _<name> suffixes")
  p.add_argument("--preset", choices=sorted(config.PRESETS), default="gatys")
  p.add_argument("--size", type=common.positive_int, help="long side of the output (px)")
  p.add_argument("--scales", type=common.positive_int, help="coarse-to-fine levels (x2 each)")
  p.add_argument("--level-iters", metavar="N1,N2", help="iterations per level, coarse first "
                 "(default: --iters at every level)")
  p.add_argument("--style-scale", type=float, help="style size relative to the output")
  p.add_argument("--init", help="content | noise | mix | path to an image")
  p.add_argument("--noise-ratio", type=float, help="noise share of --init mix (default 0.6)")
  p.add_argument("--seed", type=int)
  p.add_argument("--original-colors", nargs="?", const="yiq", choices=("yiq", "yuv"),
                 help="luminance-only transfer: keep the content's colours (YIQ or YUV)")
  common.add_loss_flags(p)
  common.add_optim_flags(p)
  o = common.add_output_flags(p)
  o.add_argument("--save-every", type=int, default=0, metavar="N",
                 help="also save the image every N iterations (<out>_iterNNNN.png)")
  common.add_weights_flag(p)


def build_config(args) -> config.TransferConfig:
  overrides = common.loss_and_optim_overrides(args)
  for key in ("size", "scales", "level_iters", "style_scale", "init", "noise_ratio", "seed"):
    if getattr(args, key) is not None:
      overrides[key] = getattr(args, key)
  if args.original_colors:
    overrides["original_colors"] = args.original_colors
  cfg = config.override(config.PRESETS[args.preset](), overrides)
  artistic.check_config(cfg)
  return cfg


def _blend(args, n_styles):
  if not args.style_blend_weights:
    return None
  try:
    weights = [float(w) for w in args.style_blend_weights.split(",")]
  except ValueError:
    raise UserError(f"--style-blend-weights must be numbers, got {args.style_blend_weights!r}") from None
  if len(weights) != n_styles or min(weights) < 0 or sum(weights) <= 0:
    raise UserError(f"--style-blend-weights needs {n_styles} non-negative weights, not all zero")
  return weights


def make_problems(args, contents, styles):
  """(problems, output names): batched contents, batched styles, or one blended problem."""
  if len(contents) > 1 and args.batch_styles:
    raise UserError("use either several --content images or --batch-styles, not both")
  if args.batch_styles:
    return ([artistic.Problem(contents[0][1], (s,)) for _, s in styles],
            [name for name, _ in styles])
  blend = _blend(args, len(styles))
  style_arrays = tuple(s for _, s in styles)
  return ([artistic.Problem(c, style_arrays, blend) for _, c in contents],
          [name for name, _ in contents])


def output_paths(out: Path, names: list[str]) -> list[Path]:
  if len(names) == 1:
    return [out]
  return [common.sibling(out, f"_{name}{out.suffix}") for name in names]


def run(args) -> int:
  out = common.check_output_path(args.out)
  cfg = build_config(args)
  load = lambda p: (Path(p).stem, image_io.load_image(p, max_pixels=args.max_pixels))
  contents = [load(p) for p in args.content]
  styles = [load(p) for p in args.style]
  problems, names = make_problems(args, contents, styles)
  outs = output_paths(out, names)
  log_path, plot_path = common.loss_output_paths(args, out)
  artistic.check_size(problems, cfg, args.max_memory)  # before the weights load
  params = common.load_vgg(args)

  def save_intermediate(level, it, images):
    if args.save_every and it % args.save_every == 0:
      for o, img in zip(outs, images):
        image_io.save_image(common.sibling(o, f"_L{level + 1}_iter{it:05d}"), img)

  result = artistic.stylize(params, problems, cfg, progress=not args.no_progress,
                            checkpoint=out.with_name(f".{out.name}.ckpt"),
                            checkpoint_every=args.checkpoint_every, on_chunk=save_intermediate,
                            max_memory=args.max_memory)
  for o, img in zip(outs, result.images):
    image_io.save_image(o, img)
  common.report_run(outs, result, log_path, plot_path,
                    f"{out.name}: {cfg.optim.optimizer}, {cfg.size}px")
  return 0
