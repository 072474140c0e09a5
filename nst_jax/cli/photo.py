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
FLAGS = {"size": "size", "stages": "stages", "stage_iters": "stage_iters",
         "style_scale": "style_scale", "matting_weight": "matting_weight",
         "parameterization": "parameterization", "affine_weight": "affine_weight",
         "regions": "num_regions", "mask_pooling": "mask_pooling",
         "smooth_radius": "smooth_radius", "smooth_eps": "smooth_eps",
         "smooth_method": "smooth_method", "smooth_weight": "smooth_weight",
         "matting_budget": "matting_budget", "seed": "seed", "smooth": "smooth",
         **common.LOSS_FLAGS, **common.OPTIM_FLAGS}


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--content", required=True, metavar="IMG", help="content photo")
  p.add_argument("--style", required=True, metavar="IMG", help="style (reference) photo")
  p.add_argument("--content-mask", metavar="IMG", help="colour-coded segmentation of the "
                 "content (Luan's colours); with --style-mask; default: automatic masks")
  p.add_argument("--style-mask", metavar="IMG",
                 help="colour-coded segmentation of the style (default: automatic masks)")
  p.add_argument("--out", required=True, metavar="PATH", help="output image (format by extension)")
  p.add_argument("--size", type=common.positive_int, help="long side of the output (px)")
  p.add_argument("--stages", type=int, choices=(1, 2),
                 help="2: without, then with the matting penalty; 1: with it only")
  p.add_argument("--stage-iters", metavar="N1,N2", help="iterations per stage ('': --iters each)")
  p.add_argument("--style-scale", type=float, help="style size relative to the output")
  p.add_argument("--matting-weight", type=common.non_negative_float,
                 help="weight of the matting-Laplacian penalty per pixel")
  p.add_argument("--parameterization", choices=config.PARAMETERIZATIONS,
                 help="what the stage with the penalty optimizes: 'affine' an image "
                      "whose smooth local affine step is the output, 'guided' one whose guided "
                      "filter by the content is, 'pixels' the output")
  p.add_argument("--affine-weight", type=float,
                 help="'affine' parameterization: the matting Laplacian's weight")
  p.add_argument("--regions", type=common.positive_int, help="automatic masks: region count")
  p.add_argument("--mask-pooling", choices=config.MASK_POOLINGS,
                 help="how the masks follow VGG19's pooling")
  p.add_argument("--smooth", action=argparse.BooleanOptionalAction,
                 help="post-step with the content as guide (Luan's optional one; "
                      "--smooth-method, --smooth-weight or --matting-budget turn it on)")
  p.add_argument("--smooth-method", choices=config.SMOOTH_METHODS,
                 help="post-step: 'affine' the nearest locally affine image, or "
                      "'guided' one guided-filter pass")
  p.add_argument("--smooth-weight", type=float,
                 help="affine post-step: the matting Laplacian's weight")
  p.add_argument("--matting-budget", type=common.non_negative_float, metavar="X",
                 help="affine post-step: per image, the least smoothing that keeps the matting "
                      "energy within X times the content's (0: --smooth-weight)")
  p.add_argument("--smooth-radius", type=int,
                 help="guided filter radius, post-step and parameterization (0: size / 24)")
  p.add_argument("--smooth-eps", type=float, help="guided filter regulariser")
  p.add_argument("--seed", type=int, help="seed of the automatic masks' clustering")
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
