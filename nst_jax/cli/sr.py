"""``nst-jax sr eval``: PSNR / SSIM (Y, border shaved) and LPIPS of an SR model on a folder.

Synopsis::

  nst-jax sr eval --model bicubic --data ../shared/data/sr/Set5 --scale 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

from nst_jax.cli.common import positive_int
from nst_jax.core import image_io
from nst_jax.core.errors import UserError

HELP = "super-resolution: evaluate a model (or bicubic) by the field's protocol"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="sr_command", required=True, metavar="ACTION")
  p = sub.add_parser("eval", help="PSNR/SSIM on Y and LPIPS over a folder of HR images")
  p.add_argument("--model", required=True, help="'bicubic' (trained checkpoints: later)")
  p.add_argument("--data", required=True, help="folder of HR images (e.g. Set5)")
  p.add_argument("--scale", type=positive_int, default=4, help="2, 3, 4 or 8")
  p.add_argument("--lpips", default="alexnet,vgg16",
                 help="LPIPS networks, comma-separated ('' for none)")
  p.add_argument("--json", metavar="PATH", help="write the rows and means as JSON")


def load_upscaler(model: str, scale: int):
  """'bicubic' for now; trained SR checkpoints come with the training issue."""
  from nst_jax.sr import degrade, evaluate  # pylint: disable=import-outside-toplevel
  degrade.check_scale(scale)
  if model == "bicubic":
    return evaluate.bicubic_upscaler(scale)
  raise UserError(f"unknown SR model {model!r}: only 'bicubic' exists until trained "
                  "checkpoints ship")


def run(args: argparse.Namespace) -> int:
  from nst_jax.sr import evaluate  # pylint: disable=import-outside-toplevel
  nets = tuple(n for n in args.lpips.split(",") if n)
  upscale = load_upscaler(args.model, args.scale)
  rows = evaluate.evaluate_folder(upscale, args.data, scale=args.scale, lpips_nets=nets)
  mean = evaluate.summarize(rows)
  for row in rows + [{"name": "mean", **mean}]:
    print(f"{row['name']:>12}  " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                                             if k != "name"))
  if args.json:
    report = {"model": args.model, "scale": args.scale, "data": str(args.data), "rows": rows,
              "mean": mean}
    image_io.write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
  return 0
