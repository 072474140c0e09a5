"""Super-resolution contact sheet: HR crop | bicubic | each model, one row per image (issue 18).

Usage::

  python3 benchmarks/sr_sheet.py --scale 4 --models sr_fast_x4 sr_feat_x4 sr_pixfeat_x4 \
      --data ../shared/data/sr/Set5 --out docs/sr_x4_set5.jpg
  python3 benchmarks/sr_sheet.py --scale 8 --models sr_fast_x8 --data ../shared/data/sr/Set5 \
      --out docs/sr_x8_set5.jpg

Each image goes through the evaluation protocol (``sr.evaluate``: crop to a multiple of the
scale, MATLAB-bicubic LR rounded to 8 bits, upscale, round to 8 bits); the sheet shows the same
``--crop`` x ``--crop`` HR window (centred, or ``--at`` y,x fractions) of the HR image, the bicubic
upsample and each model's output, enlarged ``--zoom`` times (nearest neighbour) so that textures
and artifacts show; each tile is labelled with its PSNR on Y over the whole image (``scale``
pixels shaved). ``--models`` takes shipped names, ``.npz`` files or training workdirs.
"""

from __future__ import annotations

import argparse

import bench_common as bc
import numpy as np
from PIL import Image, ImageDraw

from nst_jax.core import image_io
from nst_jax.core.errors import UserError
from nst_jax.sr import degrade, evaluate, metrics, upscale

LABEL = 14  # pixels of text above each tile


def outputs(hr: np.ndarray, scale: int, upscalers: dict) -> dict:
  """{name: SR image [H, W, 3] in [0, 1]} by the protocol, "HR" first."""
  return {"HR": hr, **{name: evaluate.protocol_output(up, hr, scale)
                       for name, up in upscalers.items()}}


def window(image: np.ndarray, crop: int, at: tuple[float, float]) -> np.ndarray:
  """The ``crop`` x ``crop`` window centred at fractions ``at`` (y, x), clipped to the image."""
  h, w = image.shape[:2]
  c = min(crop, h, w)
  top = int(np.clip(round(at[0] * h - c / 2), 0, h - c))
  left = int(np.clip(round(at[1] * w - c / 2), 0, w - c))
  return image[top:top + c, left:left + c]


def sheet(rows: list[list[tuple[str, np.ndarray]]], zoom: int) -> Image.Image:
  """Tiles [rows][columns] of (label, image [c, c, 3]) -> one labelled PIL image."""
  tile = max(img.shape[0] for row in rows for _, img in row) * zoom
  cols = max(len(row) for row in rows)
  out = Image.new("RGB", (cols * (tile + 4) + 4, len(rows) * (tile + LABEL + 4) + 4), "white")
  draw = ImageDraw.Draw(out)
  for r, row in enumerate(rows):
    for c, (label, img) in enumerate(row):
      x, y = 4 + c * (tile + 4), 4 + r * (tile + LABEL + 4)
      pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
      out.paste(pil.resize((tile, tile), Image.NEAREST), (x, y + LABEL))
      draw.text((x + 2, y), label, fill="black")
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--scale", type=int, default=4)
  p.add_argument("--models", nargs="+", required=True, help="shipped names, .npz or workdirs")
  p.add_argument("--data", required=True, help="a folder of HR images (e.g. Set5)")
  p.add_argument("--out", required=True, help="the PNG to write")
  p.add_argument("--crop", type=int, default=96, help="HR window size in pixels")
  p.add_argument("--at", default="0.5,0.5", help="window centre as y,x fractions of the image")
  p.add_argument("--zoom", type=int, default=2, help="nearest-neighbour enlargement")
  p.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
  args = p.parse_args(argv)
  at = tuple(float(v) for v in args.at.split(","))
  if len(at) != 2:
    raise UserError(f"--at takes y,x fractions, got {args.at!r}")
  upscalers = {"bicubic": evaluate.bicubic_upscaler(args.scale)}
  for model in args.models:
    up = upscale.Upscaler.load(model)
    if up.scale != args.scale:
      raise UserError(f"{model} is a x{up.scale} model, not x{args.scale}")
    upscalers[model] = up
  files = image_io.list_images(args.data)[:args.limit or None]
  if not files:
    raise UserError(f"no images found in {args.data}")
  rows = []
  for path in files:
    hr = degrade.crop_to_multiple(image_io.load_image(path), args.scale)
    row = []
    for name, img in outputs(hr, args.scale, upscalers).items():
      label = f"{path.stem}: HR" if name == "HR" else (
          f"{name} {metrics.psnr_y(img, hr, scale=args.scale):.2f} dB")
      row.append((label, window(img, args.crop, at)))
    rows.append(row)
  image_io.save_image(args.out, np.asarray(sheet(rows, args.zoom), np.float32) / 255.0)
  print(f"wrote {args.out} ({len(rows)} images x {len(upscalers) + 1} columns)")
  return 0


if __name__ == "__main__":
  bc.run_main(main)
