"""``nst-jax upscale``: upscale images with an SR model (or bicubic), tiled for large images.

Synopsis::

  nst-jax upscale --model sr_fast_x4 photo.jpg --out out/ --scale 4 --tile 256 --overlap 32
  nst-jax upscale --model runs/sr_x4 photo.jpg --out out/        # a training run's newest step
  nst-jax upscale --model bicubic photo.jpg --out out/ --scale 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nst_jax.cli.common import positive_int
from nst_jax.core import image_io
from nst_jax.core.errors import UserError

HELP = "super-resolution: upscale images (tiles for large ones; histogram matching)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("images", nargs="+", metavar="IMG")
  parser.add_argument("--model", required=True,
                      help="a training workdir or checkpoint folder, a shipped or installed "
                      "model's name (e.g. sr_fast_x4; `nst-jax models --kind sr`), an exported "
                      ".npz, or 'bicubic'")
  parser.add_argument("--out", required=True, help="output folder (PNG files)")
  parser.add_argument("--scale", type=positive_int, default=4, help="2, 3, 4 or 8")
  parser.add_argument("--tile", type=int, default=0, help="LR tile size (0: whole image)")
  parser.add_argument("--overlap", type=int, default=32, help="LR pixels shared by tiles")
  parser.add_argument("--match-histogram", action="store_true",
                      help="match the output's colour histogram to the bicubic upsample")
  parser.add_argument("--max-pixels", type=positive_int, default=None)


def load_model(model: str, scale: int):
  from nst_jax.sr import upscale  # pylint: disable=import-outside-toplevel
  if model == "bicubic":
    return upscale.Upscaler.bicubic(scale)
  up = upscale.Upscaler.load(model)
  if up.scale != scale:
    raise UserError(f"model {model} upscales x{up.scale}, not x{scale}: use --scale {up.scale}")
  return up


def run(args: argparse.Namespace) -> int:
  from nst_jax.sr import upscale  # pylint: disable=import-outside-toplevel
  if args.tile < 0 or args.overlap < 0 or (args.tile and args.overlap >= args.tile):
    raise UserError(f"need 0 <= --overlap < --tile (got --tile {args.tile}, --overlap "
                    f"{args.overlap})")
  model = load_model(args.model, args.scale)
  out_dir = Path(args.out)
  if out_dir.exists() and not out_dir.is_dir():
    raise UserError(f"--out must be a folder: {out_dir}")
  images = []  # every input is read and checked before anything is written
  for path in args.images:
    img = image_io.load_image(path, max_pixels=args.max_pixels)
    if min(img.shape[:2]) < 2:
      raise UserError(f"{path} is {img.shape[1]}x{img.shape[0]}: too small to upscale")
    images.append((Path(path), img))
  for path, img in images:
    result = model(img, tile=args.tile, overlap=args.overlap)
    if args.match_histogram:
      result = upscale.match_histogram(result, model.bicubic_of(img))
    dest = image_io.save_image(out_dir / f"{path.stem}_x{args.scale}.png", result)
    print(f"wrote {dest} ({result.shape[1]}x{result.shape[0]})", file=sys.stderr)
  return 0
