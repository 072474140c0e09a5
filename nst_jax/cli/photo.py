"""``nst-jax photo``: photorealistic style transfer (Luan et al. 2017) of one photo.

Example::

  nst-jax photo --content in1.png --style tar1.png --out out/in1.png --size 512
  nst-jax photo --content in1.png --style tar1.png \
      --content-mask seg/in1.png --style-mask seg/tar1.png --out out/in1_masked.png
  nst-jax photo ... --smooth           # with Luan's optional post-step (smooth local affine)
  nst-jax photo ... --matting-budget 2 # post-step only as needed for 2x the content's energy
  nst-jax photo ... --parameterization pixels   # stage 2 optimizes pixels, as Luan et al.
"""

from __future__ import annotations

import argparse

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io
from nst_jax.core.errors import UserError

HELP = "photorealistic style transfer: masked style, matting-Laplacian penalty (Luan et al.)"

# Flag (argparse dest) -> PhotoConfig key.
FLAGS = {**common.field_flags(config.PhotoConfig), **common.LOSS_FLAGS, **common.OPTIM_FLAGS}


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--content", required=True, metavar="IMG", help="content photo")
  p.add_argument("--style", required=True, metavar="IMG", help="style (reference) photo")
  p.add_argument("--content-mask", metavar="IMG", help="colour-coded segmentation of the "
                 "content (Luan's colours); with --style-mask; default: automatic masks")
  p.add_argument("--style-mask", metavar="IMG",
                 help="colour-coded segmentation of the style (default: automatic masks)")
  p.add_argument("--out", required=True, metavar="PATH", help="output image (format by extension)")
  common.add_field_flags(p, config.PhotoConfig)
  common.add_loss_flags(p)
  common.add_optim_flags(p)
  common.add_output_flags(p)
  common.add_weights_flag(p)
  common.add_config_flags(p, "PhotoConfig")
  common.annotate_defaults(p, FLAGS, config.PhotoConfig())


def resolve_config(args) -> config.PhotoConfig:
  """PhotoConfig() < --config < the flags < --set (unchecked)."""
  flags = common.flag_overrides(args, FLAGS)
  if args.smooth is None and any(getattr(args, f) is not None for f in (
      "smooth_method", "smooth_weight", "matting_budget")):
    flags["smooth"] = True  # a post-step option turns the post-step on
  return common.resolve_config(args, config.PhotoConfig(), flags)


def build_config(args) -> config.PhotoConfig:
  """``resolve_config``, validated (``config.ConfigError`` naming the key; the library's
  entry checks the same config again from the cache)."""
  cfg = resolve_config(args)
  return cfg.check()


def load_inputs(args):
  """(content, style, content masks or None, style masks or None), all validated."""
  from nst_jax.core import regions  # pylint: disable=import-outside-toplevel
  if bool(args.content_mask) != bool(args.style_mask):
    raise UserError("give both --content-mask and --style-mask, or neither (automatic masks)")
  content = image_io.load_image(args.content, max_pixels=args.max_pixels)
  style = image_io.load_image(args.style, max_pixels=args.max_pixels)
  if not args.content_mask:
    return content, style, None, None
  cm = regions.load_color_mask(args.content_mask, size_hw=content.shape[:2])
  sm = regions.load_color_mask(args.style_mask, size_hw=style.shape[:2])
  return content, style, cm, sm


def run(args) -> int:
  from nst_jax.slow import photoreal  # pylint: disable=import-outside-toplevel
  out = common.check_output_path(args.out)
  cfg = build_config(args)
  log_path, plot_path = common.loss_output_paths(args, out)
  content, style, cm, sm = load_inputs(args)
  params = common.load_vgg(args)
  result = photoreal.stylize(params, content, style, cfg, content_masks=cm, style_masks=sm,
                             max_memory=args.max_memory, progress=not args.no_progress,
                             checkpoint=out.with_name(f".{out.name}.ckpt"),
                             checkpoint_every=args.checkpoint_every)
  image_io.save_image(out, result.images[0])
  common.write_config(common.config_path(out), cfg)
  common.report_run([out], result, log_path, plot_path,
                    f"{out.name}: {cfg.stages} stage(s), {cfg.optim.optimizer}, {cfg.size}px")
  return 0
