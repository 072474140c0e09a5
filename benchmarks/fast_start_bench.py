"""Fast start for slow transfer: L-BFGS-B from the arbitrary network's output (the issue's goal).

Synopsis::

  python3 benchmarks/fast_start_bench.py                          # 10 photos x 4 paintings, 256 px
  python3 benchmarks/fast_start_bench.py --photos 3 --iters 50 --net-iters 30
  python3 benchmarks/fast_start_bench.py --photos 1 --styles van_gogh_starry_night --iters 4

For each painting and each photo (``bench_common.QUALITY_PHOTOS``, zoo_quality's; ``--size`` px
long side, one level, the default loss of ``config.gatys()``), L-BFGS-B runs ``--iters``
iterations from the photo (``init="content"``) and ``--net-iters`` from the arbitrary-style
network's output (``init="net"``: the photo stylized with the painting's embedding,
``fast.arbitrary``, imported by ``nst-jax models import magenta``). Both go through
``artistic.stylize``, so the library's path is what is measured; run it from the repository root
with ``PYTHONPATH=.`` to measure this checkout. The goal: from the net, at most ``GOAL_ITERS``
iterations reach the loss the photo start reaches in ``--iters`` (``matched_at``: the first
iteration whose loss is at most that; ``net_start_worth``: the photo start's first iteration at
or below the net image's own loss). Iterations, not seconds, are counted, so a loaded machine
does not distort the result. Writes ``benchmarks/results/fast_start.json`` (with the full loss
curves) and prints a Markdown table per painting.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import bench_common as bc
from nst_jax import config
from nst_jax.core import image_io
from nst_jax.fast import arbitrary
from nst_jax.slow import artistic

PHOTOS = bc.QUALITY_PHOTOS  # zoo_quality's
STYLES = ("van_gogh_starry_night", "hokusai_great_wave", "munch_the_scream",
          "kandinsky_composition_vii")
GOAL_ITERS = 15


def losses(vgg_params, problem: artistic.Problem, cfg: config.TransferConfig, iters: int):
  """The total loss of iterates 0..iters of one run (float64 [iters + 1]) and its seconds."""
  run_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, num_iters=iters + 1))
  t0 = time.perf_counter()
  out = artistic.stylize(vgg_params, [problem], run_cfg, progress=False)
  return np.asarray(out.history["total"], np.float64).reshape(-1), time.perf_counter() - t0


def compare_one(vgg_params, model, photo, style, embedding, cfg, iters, net_iters) -> dict:
  """Loss curves from the photo and from the net's output for one (photo, painting)."""
  problem = artistic.Problem(photo, (style,))
  hw = artistic.first_level_hw(problem, cfg)
  net = np.asarray(model.stylize(image_io.resize_array(photo, hw), embedding), np.float32)
  content, t_content = losses(vgg_params, problem, dataclasses.replace(cfg, init="content"), iters)
  start, t_net = losses(vgg_params, dataclasses.replace(problem, init=net),
                        dataclasses.replace(cfg, init="net"), net_iters)
  target = content[iters]
  hits = np.nonzero(start[:net_iters + 1] <= target)[0]
  pick = lambda curve: {str(n): float(curve[n]) for n in sorted({0, GOAL_ITERS, iters, net_iters})
                        if n < len(curve)}
  worth = np.nonzero(content <= start[0])[0]  # iterations from the photo the net's image is worth
  return {"hw": list(hw), "content_init": pick(content), "net_init": pick(start),
          "target": float(target), "matched_at": int(hits[0]) if len(hits) else None,
          "net_start_worth": int(worth[0]) if len(worth) else None,
          "curves": {"content_init": content.tolist(), "net_init": start.tolist()},
          "seconds": {"content": t_content, "net": t_net}}


def summarize(rows: list[dict], iters: int) -> dict:
  """Per painting: the mean (and worst) match count and the mean losses of both starts."""
  out = {}
  for name in dict.fromkeys(r["style"] for r in rows):
    mine = [r for r in rows if r["style"] == name]
    matched = [r["matched_at"] for r in mine]
    out[name] = {"photos": len(mine), "unmatched": sum(m is None for m in matched),
                 "matched_at_mean": float(np.mean([m for m in matched if m is not None]))
                 if any(m is not None for m in matched) else None,
                 "matched_at_max": max((m for m in matched if m is not None), default=None),
                 **{f"{start}_{k}": float(np.mean([r[start][k] for r in mine]))
                    for start in ("content_init", "net_init") for k in mine[0][start]},
                 "iters": iters}
  return out


def print_table(summary: dict, iters: int) -> None:
  """The per-painting summary as Markdown (a loss not run is nan)."""
  print(f"| painting | photos | net iters to match {iters} from photo (mean / max) | "
        f"photo start 0 / {GOAL_ITERS} / {iters} | net start 0 / {GOAL_ITERS} / {iters} |")
  print("|---|---|---|---|---|")
  for name, s in summary.items():
    curve = lambda start: " / ".join(f"{s.get(f'{start}_{k}', float('nan')):.4g}"
                                     for k in (0, GOAL_ITERS, iters))
    unmatched = f" ({s['unmatched']} unmatched)" if s["unmatched"] else ""
    mean = "-" if s["matched_at_mean"] is None else f"{s['matched_at_mean']:.1f}"
    print(f"| {name} | {s['photos']} | {mean} / {s['matched_at_max']}{unmatched} | "
          f"{curve('content_init')} | {curve('net_init')} |")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "fast_start.json")
  p.add_argument("--photos", type=int, default=10, help=f"how many of {len(PHOTOS)} photos")
  p.add_argument("--skip-photos", type=int, default=0, help="start after this many photos")
  p.add_argument("--styles", nargs="+", default=list(STYLES), help="paintings (SHARED/styles)")
  p.add_argument("--size", type=int, default=256, help="long side (one level)")
  p.add_argument("--iters", type=int, default=50, help="L-BFGS-B iterations from the photo")
  p.add_argument("--net-iters", type=int, default=None,
                 help="iterations from the net's output (default --iters)")
  args = p.parse_args(argv)
  net_iters = args.iters if args.net_iters is None else args.net_iters
  model = arbitrary.load_arbitrary()  # first: without the weights, one line and exit 2
  vgg_params, data = bc.load_vgg(args), bc.data_dir(args)
  cfg = dataclasses.replace(config.gatys(), size=args.size, scales=1)
  paintings = {n: image_io.load_image(data / "styles" / f"{n}.jpg") for n in args.styles}
  embeddings = {n: model.embed(s) for n, s in paintings.items()}  # as the CLI: full resolution
  styles = {n: image_io.load_image(data / "styles" / f"{n}.jpg", size=args.size)
            for n in args.styles}
  rows = []
  for photo_name in PHOTOS[args.skip_photos:args.skip_photos + args.photos]:  # photo outer: each shape compiles once
    photo = image_io.load_image(data / "content" / photo_name, size=args.size)
    for name in args.styles:
      row = compare_one(vgg_params, model, photo, styles[name], embeddings[name], cfg,
                        args.iters, net_iters)
      rows.append({"style": name, "photo": photo_name, **row})
      print(f"{name:<28} {photo_name:<26} photo {row['content_init']} net {row['net_init']} "
            f"matched at {row['matched_at']}", flush=True)
      summary = summarize(rows, args.iters)  # written after every row: a cut run keeps its rows
      bc.write_result(args.out, {"benchmark": "fast_start", "size": args.size,
                                 "iters": args.iters, "net_iters": net_iters,
                                 "goal_iters": GOAL_ITERS, "loss": dataclasses.asdict(cfg.loss),
                                 "rows": rows, "summary": summary}, args)
  print_table(summary, args.iters)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
