"""Scores photoreal post-steps on the same raw outputs: guided filter vs smooth local affine.

Synopsis::

  python benchmarks/post_step_eval.py --pairs all --size 96 --iters 40
  python benchmarks/post_step_eval.py --pairs 1 --weights 1.2 --budgets 2

For each pair, runs Gatys and slow photoreal without its post-step as ``benchmarks/photo_eval.py``
does (hand-made masks, the default config with ``--iters`` per stage, Gatys 2x as many), then
applies each post-step to the raw photoreal output and scores it with photo_eval's measures
(``bench_common.score_photo``): the matting ratio (eps 1e-4), style loss relative to Gatys', and the
gradient correlation with the content. Post-steps: none ("raw"), one guided-filter pass
("guided", radius long side / 24), ``smoothing.affine_smooth`` at each of ``--weights`` ("wX")
and with each matting budget of ``--budgets`` ("bX"). Prints a table of means (medians; pairs
within 2x) and writes ``post_step_eval.json`` to ``--results``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import bench_common as bc
import numpy as np

from nst_jax.core import smoothing
from nst_jax.slow import photoreal


def post_steps(raw: np.ndarray, content: np.ndarray, weights, budgets) -> dict:
  """{name: image} for every post-step of ``raw`` (content: the guide)."""
  out = {"raw": raw, "guided": smoothing.guided_smooth(raw, content)}
  out.update({f"w{w:g}": smoothing.affine_smooth(raw, content, weight=w)[0] for w in weights})
  out.update({f"b{b:g}": smoothing.affine_smooth(raw, content, budget=b)[0] for b in budgets})
  return out


def summary_table(rows: list[dict], names: list[str]) -> str:
  lines = ["| post-step | matting x | style / Gatys' | grad corr |", "|---|---|---|---|"]
  for name in names:
    m = np.array([r[name]["matting_ratio"] for r in rows])
    s = np.array([r[name]["style_vs_gatys"] for r in rows])
    g = np.array([r[name]["grad_corr"] for r in rows])
    lines.append(f"| {name} | {m.mean():.3f} ({np.median(m):.2f}; {(m <= 2).sum()}/{len(m)}) | "
                 f"{s.mean():.3f} ({np.median(s):.2f}; {(s <= 2).sum()}/{len(s)}) | "
                 f"{g.mean():.3f} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p)
  p.add_argument("--pairs", default="all", help="'all' or comma-separated pair numbers (1..20)")
  p.add_argument("--size", type=int, default=96)
  p.add_argument("--iters", type=int, default=40, help="photoreal iterations per stage")
  p.add_argument("--weights", default="0.3,1,1.2,1.5,3,10", help="affine_smooth weights")
  p.add_argument("--budgets", default="1.5,2,3", help="affine_smooth matting budgets")
  p.add_argument("--results", default=str(bc.RESULTS), help="folder of post_step_eval.json")
  args = p.parse_args(argv)
  weights = [float(w) for w in args.weights.split(",") if w]
  budgets = [float(b) for b in args.budgets.split(",") if b]
  photo_dir = bc.data_dir(args) / "photo"
  params = bc.load_vgg(args)
  pcfg = dataclasses.replace(bc.photo_config(args.size, args.iters), smooth=False)
  rows, t0 = [], time.perf_counter()
  for n in bc.parse_pairs(args.pairs):
    content, style, cm, sm = bc.load_photo_pair(photo_dir, n, args.size)
    gatys = bc.style_distance(params, bc.run_gatys(params, content, style, 2 * args.iters),
                              style, cm, sm)
    raw = photoreal.stylize(params, content, style, pcfg, content_masks=cm, style_masks=sm,
                            progress=False).images[0]
    row = {"pair": n}
    for name, image in post_steps(raw, content, weights, budgets).items():
      m = bc.score_photo(params, image, content, style, cm, sm)
      row[name] = dict(m, style_vs_gatys=m["style_loss"] / gatys)
    rows.append(row)
    print(json.dumps({k: (v if k == "pair" else [round(v["matting_ratio"], 3),
                                                 round(v["style_vs_gatys"], 3)])
                      for k, v in row.items()}), flush=True)
  names = [k for k in rows[0] if k != "pair"]
  print(f"{len(rows)} pairs at {args.size} px, {args.iters} iterations per stage; "
        f"{time.perf_counter() - t0:.0f} s\n" + summary_table(rows, names))
  bc.write_result(Path(args.results) / "post_step_eval.json", {"rows": rows}, args)


if __name__ == "__main__":
  bc.run_main(main)
