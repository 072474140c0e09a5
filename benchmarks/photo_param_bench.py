"""Cost of the slow photoreal method's parameterizations, side by side in one process.

Usage::

  python benchmarks/photo_param_bench.py                      # 256 px, 20 iterations per stage
  python benchmarks/photo_param_bench.py --size 512 --iters 10 --rounds 3

For pair 1 of the shared photo pairs (hand-made masks) at ``--size``, runs ``photoreal.stylize``
with each variant once to compile, then ``--rounds`` rounds of every variant in turn
(interleaved, so a change in machine load hits all of them), each a whole two-stage run of
``--iters`` L-BFGS-B iterations per stage. Variants:

- ``affine``: the default (stage 2 optimizes an image whose smooth local affine step is the
  output; two conjugate-gradient solves per evaluation; no post-step);
- ``guided_post``: the default until 2026-11-30 (guided-filter parameterization, then the smooth
  local affine post-step);
- ``pixels``: Luan's parameterization, no post-step.

Reports the median seconds per run and per iteration (stage 1 is the same program in all three)
and the ratios to ``guided_post``. Writes ``benchmarks/results/photo_param_bench.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import bench_common as bc
import numpy as np

from nst_jax.slow import photoreal

VARIANTS = {"affine": {},
            "guided_post": {"parameterization": "guided", "smooth": True},
            "pixels": {"parameterization": "pixels"}}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bc.add_common_args(p, out=bc.RESULTS / "photo_param_bench.json")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--iters", type=int, default=20, help="iterations per stage")
  p.add_argument("--rounds", type=int, default=2)
  args = p.parse_args(argv)
  params = bc.load_vgg(args)
  content, style, cm, sm = bc.load_photo_pair(bc.data_dir(args) / "photo", 1, args.size)
  base = bc.photo_config(args.size, args.iters)
  cfgs = {name: dataclasses.replace(base, **kw) for name, kw in VARIANTS.items()}
  run = lambda cfg: photoreal.stylize(params, content, style, cfg, content_masks=cm,
                                      style_masks=sm, progress=False)
  for cfg in cfgs.values():  # compile
    run(cfg)
  times = {name: [] for name in cfgs}
  for _ in range(args.rounds):
    for name, cfg in cfgs.items():
      t = time.perf_counter()
      run(cfg)
      times[name].append(time.perf_counter() - t)
  med = {name: float(np.median(t)) for name, t in times.items()}
  result = {"size": args.size, "iters_per_stage": args.iters, "rounds": args.rounds,
            "seconds_per_run": times, "median_seconds_per_run": med,
            "median_seconds_per_iteration": {k: v / (2 * args.iters) for k, v in med.items()},
            "ratio_to_guided_post": {k: v / med["guided_post"] for k, v in med.items()}}
  print(json.dumps(result, indent=2))
  bc.write_result(args.out, result, args)


if __name__ == "__main__":
  bc.run_main(main)
