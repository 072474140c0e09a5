"""Evaluates photorealistic transfer against Gatys' artistic transfer on Luan et al.'s pairs.

Synopsis::

  python benchmarks/photo_eval.py --pairs 1,5,9 --size 128 --iters 60
  python benchmarks/photo_eval.py --time-size 256      # also time one whole photoreal run

For each pair N under ``DATA/photo`` (input/inN.png, style/tarN.png, segmentation/{in,tar}N.png)
at ``--size`` (long side), runs Gatys (``artistic.stylize``, 2 x ``--iters`` iterations, the
same number of evaluations) and slow photoreal (``photoreal.stylize``, ``--iters`` per stage,
with the hand-made masks or ``--masks auto``), optionally a fast photoreal checkpoint
(``--fast-checkpoint``), and measures on float outputs:

- photorealism: ``sum_c O_c^T L O_c / sum_c C_c^T L C_c`` with the content's matting Laplacian at
  the evaluation epsilon ``--eval-eps`` (1e-4; see docs/photoreal.md for why not 1e-7);
- structure: Pearson correlation of the Sobel gradient magnitudes of output and content luminance;
- style: the masked Gram loss (conv1_1..conv5_1, unit weights) to the style photo with the
  hand-made masks.

Writes ``photo_eval.json`` and ``photo_eval.md`` to ``--results`` and the table and a contact
sheet (content | style | Gatys | photoreal [| fast]) to ``--docs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from nst_jax import artistic, config, image_io, masks, objective, paths, photoreal, plots, vgg

REPO = Path(__file__).resolve().parent.parent


def load_pair(photo_dir: Path, index: int, size: int):
  """Content, style (long side ``size``) and their hand-made masks at those sizes."""
  content = image_io.load_image(photo_dir / "input" / f"in{index}.png", size=size)
  style = image_io.load_image(photo_dir / "style" / f"tar{index}.png", size=size)
  seg = photo_dir / "segmentation"
  return (content, style, masks.load_color_mask(seg / f"in{index}.png", size_hw=content.shape[:2]),
          masks.load_color_mask(seg / f"tar{index}.png", size_hw=style.shape[:2]))


def gradient_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation of the Sobel gradient magnitudes of two images' luminance."""
  def magnitude(img):
    y = img @ np.array([0.299, 0.587, 0.114], np.float32)                 # [H, W]
    return np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1)).ravel()
  return float(np.corrcoef(magnitude(a), magnitude(b))[0, 1])


def style_distance(params, image, style, cm, sm) -> float:
  """Masked conv-Gram loss (unit weights) of ``image`` to ``style`` with the given masks."""
  base = photoreal.PhotoConfig()
  cfg = dataclasses.replace(base, loss=dataclasses.replace(base.loss, content_weight=0.0,
                                                           style_weight=1.0, tv_weight=0.0))
  targets = photoreal.make_targets(params, image, style, cm, sm, cfg)
  return float(objective.loss_terms(params, jnp.asarray(image)[None], targets, cfg.loss)["style"][0])


def metrics(params, out, content, style, cm, sm, eps) -> dict:
  return {"matting_ratio": photoreal.matting_ratio(content, out, eps=eps),
          "grad_corr": gradient_correlation(out, content),
          "style_loss": style_distance(params, out, style, cm, sm)}


def run_methods(params, args, content, style, cm, sm, fast) -> dict:
  """{method: (image, seconds)} for one pair."""
  size = max(content.shape[:2])
  gcfg = config.override(config.gatys(), {"size": size, "optim.num_iters": 2 * args.iters,
                                          "optim.chunk": args.iters})
  t = time.perf_counter()
  gatys = artistic.stylize(params, [artistic.Problem(content, (style,))], gcfg, progress=False)
  out = {"gatys": (gatys.images[0], time.perf_counter() - t)}
  pcfg = config.override(photoreal.PhotoConfig(), {"size": size, "optim.num_iters": args.iters,
                                                   "optim.chunk": args.iters})
  given = {} if args.masks == "auto" else {"content_masks": cm, "style_masks": sm}
  t = time.perf_counter()
  photo = photoreal.stylize(params, content, style, pcfg, progress=False, **given)
  out["photoreal"] = (photo.images[0], time.perf_counter() - t)
  if fast is not None:
    t = time.perf_counter()
    out["fast"] = (fast(content), time.perf_counter() - t)
  return out


def markdown(rows: list[dict], methods: list[str], note: str) -> str:
  head = "| pair | " + " | ".join(f"{m} matting x | {m} grad corr | {m} style" for m in methods)
  lines = [note, "", head + " |", "|" + "---|" * (1 + 3 * len(methods))]
  for r in rows + [mean_row(rows, methods)]:
    cells = [f"{r[m]['matting_ratio']:.3g} | {r[m]['grad_corr']:.3f} | {r[m]['style_loss']:.4g}"
             for m in methods]
    lines.append(f"| {r['pair']} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def mean_row(rows, methods) -> dict:
  return {"pair": "mean", **{m: {k: float(np.mean([r[m][k] for r in rows]))
                                 for k in rows[0][m]} for m in methods}}


def contact_sheet(path: Path, sheet: list[list[np.ndarray]], names: list[str], cols: list[str]):
  """The image grid, re-saved with an adaptive 256-colour palette to stay small."""
  plots.save_image_grid(path, sheet, row_titles=names, col_titles=cols, cell=1.5)
  Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def time_one(params, photo_dir: Path, size: int, iters: int) -> dict:
  """Wall time of one whole photoreal run (automatic masks, 2 stages) at ``size``, pair 1."""
  content, style, _, _ = load_pair(photo_dir, 1, size)
  cfg = config.override(photoreal.PhotoConfig(), {"size": size, "optim.num_iters": iters,
                                                  "optim.chunk": iters})
  t = time.perf_counter()
  out = photoreal.stylize(params, content, style, cfg, progress=False)
  total = time.perf_counter() - t
  return {"size": size, "iters_per_stage": iters, "seconds_total": total,
          "seconds_optimizing": out.seconds, "seconds_per_iteration": out.seconds / (2 * iters)}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", help="shared data folder (default $NST_JAX_DATA or ../shared/data)")
  p.add_argument("--vgg-weights")
  p.add_argument("--pairs", default="1,5,9", help="comma-separated pair numbers (1..20)")
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--iters", type=int, default=60, help="photoreal iterations per stage")
  p.add_argument("--masks", choices=("given", "auto"), default="given")
  p.add_argument("--eval-eps", type=float, default=photoreal.EVAL_EPS)
  p.add_argument("--fast-checkpoint", help="a fast photoreal checkpoint for nst_jax.inference")
  p.add_argument("--time-size", type=int, default=0, help="also time one run at this size")
  p.add_argument("--time-iters", type=int, default=100)
  p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
  p.add_argument("--docs", default=str(REPO / "docs"))
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  photo_dir = paths.data_dir(args.data_dir) / "photo"
  params = vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))
  fast = None
  if args.fast_checkpoint:
    from nst_jax import inference  # pylint: disable=import-outside-toplevel
    fast = inference.Stylizer.from_checkpoint(args.fast_checkpoint)
  methods = ["gatys", "photoreal"] + (["fast"] if fast else [])
  rows, sheet, names, t0 = [], [], [], time.perf_counter()
  for n in [int(x) for x in args.pairs.split(",")]:
    content, style, cm, sm = load_pair(photo_dir, n, args.size)
    outs = run_methods(params, args, content, style, cm, sm, fast)
    row = {"pair": n}
    for m, (img, sec) in outs.items():
      row[m] = dict(metrics(params, img, content, style, cm, sm, args.eval_eps), seconds=sec)
    rows.append(row)
    print(json.dumps(row), flush=True)
    sheet.append([content, style] + [outs[m][0] for m in methods])
    names.append(f"pair {n}")
  note = (f"Pairs {args.pairs} at {args.size} px (long side), photoreal {args.iters} iterations "
          f"per stage ({args.masks} masks), Gatys {2 * args.iters}; matting ratio at eps "
          f"{args.eval_eps:g}; {time.perf_counter() - t0:.0f} s in all.")
  table = markdown(rows, methods, note)
  print(table)
  results, docs = Path(args.results), Path(args.docs)
  summary = {"args": vars(args), "rows": rows, "mean": mean_row(rows, methods)}
  if args.time_size:
    summary["timing"] = time_one(params, photo_dir, args.time_size, args.time_iters)
    print(json.dumps(summary["timing"]))
  for folder in (results, docs):
    folder.mkdir(parents=True, exist_ok=True)
  image_io.atomic_write(results / "photo_eval.json",
                        lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
  for path in (results / "photo_eval.md", docs / "photo_eval.md"):
    image_io.atomic_write(path, lambda tmp: Path(tmp).write_text(table))
  contact_sheet(docs / "photo_eval.png", sheet, names,
                ["content", "style", "Gatys", "photoreal"] + (["fast photoreal"] if fast else []))


if __name__ == "__main__":
  main()
