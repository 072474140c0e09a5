"""Evaluates automatic masks (``regions.auto_masks``) against Luan et al.'s hand-made masks.

Synopsis::

  python benchmarks/mask_eval.py --num-regions 2 3 4   # JSON to --out (under benchmarks/results/)

For each of the 20 pairs under ``DATA/photo`` (input/inN.png, style/tarN.png and their masks in
segmentation/), both photos are loaded at ``--size`` (long side), the ground truth is read with
``regions.load_color_mask`` at that size, and the automatic masks are scored with
``metrics.matched_region_iou``: hard (argmax) masks, ground-truth regions present in both images,
ONE Hungarian matching of predicted regions to ground-truth regions shared by content and style,
mean over ground-truth regions of (IoU in the content + IoU in the style) / 2. The baseline is
one region covering each whole image. Writes JSON to ``--out`` and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench_common as bc
import numpy as np

from nst_jax.core import image_io, metrics, regions


def evaluate_pair(params, pair, num_regions_list, options: dict) -> dict:
  content, style, truth_c, truth_s = pair
  whole_c, whole_s = np.ones((1,) + content.shape[:2]), np.ones((1,) + style.shape[:2])
  row = {"shared_regions": int(regions.pair_regions(truth_c, truth_s).sum()),
         "baseline": metrics.matched_region_iou(whole_c, whole_s, truth_c, truth_s)}
  for k in num_regions_list:
    start = time.perf_counter()
    pred_c, pred_s = regions.auto_masks(params, content, style, num_regions=k, **options)
    row[f"auto_k{k}_s"] = time.perf_counter() - start
    row[f"auto_k{k}"] = metrics.matched_region_iou(pred_c, pred_s, truth_c, truth_s)
  return row


def markdown(rows: list[dict], summary: dict) -> str:
  cols = [c for c in rows[0] if not c.endswith("_s")]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for row in rows + [summary]:
    lines.append("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                                   for c in cols) + " |")
  return "\n".join(lines)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bc.add_common_args(parser, out=bc.RESULTS / "mask_eval.json")
  parser.add_argument("--pairs", type=int, nargs="+", default=list(range(1, bc.NUM_PAIRS + 1)))
  parser.add_argument("--size", type=int, default=512, help="long side of the evaluated photos")
  parser.add_argument("--num-regions", type=int, nargs="+", default=[2, 3, 4])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--work-size", type=int, default=256)
  parser.add_argument("--deep-weight", type=float, default=None)
  parser.add_argument("--colour-weight", type=float, default=None)
  parser.add_argument("--position-weight", type=float, default=None)
  return parser.parse_args(argv)


def run(args) -> dict:
  photo_dir = bc.data_dir(args) / "photo"
  params = bc.load_vgg(args)
  options = {"seed": args.seed, "work_size": args.work_size}
  for name in ("deep_weight", "colour_weight", "position_weight"):
    if getattr(args, name) is not None:
      options[name] = getattr(args, name)
  rows = []
  for index in args.pairs:
    row = {"pair": index, **evaluate_pair(params, bc.load_photo_pair(photo_dir, index, args.size),
                                          args.num_regions, options)}
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in row.items()), flush=True)
    rows.append(row)
  summary = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if k != "pair"}
  summary["pair"] = "mean"
  summary["shared_regions"] = f"{summary['shared_regions']:.2f}"
  return {"options": options, "size": args.size, "rows": rows, "mean": summary}


def main(argv=None) -> int:
  args = parse_args(argv)
  result = run(args)
  table = markdown(result["rows"], result["mean"])
  print(table)
  out = bc.write_result(args.out, result, args)
  image_io.write_text(out.with_suffix(".md"), table + "\n")
  return 0


if __name__ == "__main__":
  bc.run_main(main)
