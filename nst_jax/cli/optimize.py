"""``nst-jax optimize``: slow artistic style transfer (Gatys et al.) of one or several images.

Example::

  nst-jax optimize --content photo.jpg --style starry.jpg --out out/photo_starry.png --size 512
  nst-jax optimize ... --set loss.style_loss=mean_std --set optim.history_size=10
  nst-jax optimize ... --init net        # start from the arbitrary network's output (fast start)
  nst-jax optimize ... --config out/photo_starry_config.json   # the run above again
  nst-jax optimize --set help                                   # every key and its value

The config is built as: --preset < --config < the flags < --set; the resolved one is written to
``<out>_config.json``. ``--init net`` starts L-BFGS-B from the arbitrary-style network's output
(``fast.arbitrary``, imported by ``nst-jax models import magenta``): each content stylized with
its first style image's embedding, at the first level's size.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io
from nst_jax.core.errors import UserError

HELP = "slow style transfer: optimize an image to match a content and style(s) (Gatys et al.)"
DEFAULT_PRESET = "gatys"
# Flag (argparse dest) -> TransferConfig key.
FLAGS = {**common.field_flags(config.TransferConfig), **common.LOSS_FLAGS, **common.OPTIM_FLAGS}


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--content", nargs="+", required=True, metavar="IMG",
                 help="content image(s); several are optimized together (batched)")
  p.add_argument("--style", nargs="+", required=True, metavar="IMG", help="style image(s)")
  p.add_argument("--style-blend-weights", metavar="W1,W2",
                 help="blend of several styles (default: equal weights)")
  p.add_argument("--batch-styles", action="store_true",
                 help="one output per style (optimized together) instead of blending them")
  p.add_argument("--out", required=True, metavar="PATH",
                 help="output image (format by extension); several outputs get _<name> suffixes")
  common.add_field_flags(p, config.TransferConfig)
  common.add_loss_flags(p)
  common.add_optim_flags(p)
  o = common.add_output_flags(p)
  o.add_argument("--save-every", type=int, default=0, metavar="N",
                 help="also save the image every N iterations (<out>_iterNNNN.png)")
  common.add_weights_flag(p)
  common.add_config_flags(p, "TransferConfig", presets=config.PRESETS,
                          default_preset=DEFAULT_PRESET)
  common.annotate_defaults(p, FLAGS, config.PRESETS[DEFAULT_PRESET](), DEFAULT_PRESET)


def resolve_config(args) -> config.TransferConfig:
  """The preset < --config < the flags < --set (unchecked)."""
  return common.resolve_config(args, config.PRESETS[args.preset](),
                               common.flag_overrides(args, FLAGS))


def build_config(args) -> config.TransferConfig:
  """``resolve_config``, validated (``config.ConfigError`` naming the key; the library's
  entry checks the same config again from the cache)."""
  cfg = resolve_config(args)
  return cfg.check()


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
  from nst_jax.slow import artistic  # pylint: disable=import-outside-toplevel
  if len(contents) > 1 and args.batch_styles:
    raise UserError("use either several --content images or --batch-styles, not both")
  if args.batch_styles:
    return ([artistic.Problem(contents[0][1], (s,)) for _, s in styles],
            [name for name, _ in styles])
  blend = _blend(args, len(styles))
  style_arrays = tuple(s for _, s in styles)
  return ([artistic.Problem(c, style_arrays, blend) for _, c in contents],
          [name for name, _ in contents])


def add_net_inits(problems, cfg: config.TransferConfig, model) -> list:
  """``problems`` with their ``init``: the content at the first level's size, stylized by
  ``model`` (an ``arbitrary.ArbitraryModel``) with the embedding of the problem's first style."""
  from nst_jax.slow import artistic  # pylint: disable=import-outside-toplevel
  out = []
  for p in problems:
    content = image_io.resize_array(p.content, artistic.first_level_hw(p, cfg))
    image = model.stylize(content, model.embed(p.styles[0]))
    out.append(dataclasses.replace(p, init=np.asarray(image, np.float32)))
  return out


def output_paths(out: Path, names: list[str]) -> list[Path]:
  if len(names) == 1:
    return [out]
  return [common.sibling(out, f"_{name}{out.suffix}") for name in names]


def run(args) -> int:
  from nst_jax.slow import artistic  # pylint: disable=import-outside-toplevel
  out = common.check_output_path(args.out)
  cfg = build_config(args)
  net = None
  if cfg.init == "net":  # before any work: missing weights are one line naming the import
    from nst_jax.fast import arbitrary  # pylint: disable=import-outside-toplevel
    net = arbitrary.load_arbitrary()
  load = lambda p: (Path(p).stem, image_io.load_image(p, max_pixels=args.max_pixels))
  contents = [load(p) for p in args.content]
  styles = [load(p) for p in args.style]
  problems, names = make_problems(args, contents, styles)
  outs = output_paths(out, names)
  log_path, plot_path = common.loss_output_paths(args, out)
  params = common.load_vgg(args)
  if net is not None:
    problems = add_net_inits(problems, cfg, net)

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
  common.write_config(common.config_path(out), cfg)
  common.report_run(outs, result, log_path, plot_path,
                    f"{out.name}: {cfg.optim.optimizer}, {cfg.size}px")
  return 0
