"""A whole slow photoreal run with a preview after every chunk (the web worker's pattern), cold.

Usage::

  python benchmarks/photo_preview_bench.py                     # pair 3, 128 px, 2 x 20, chunk 2

Runs ``photoreal.stylize`` once in this process (compilations included: they are what this
measures) with an ``on_chunk`` callback that receives the current output image, as the web
worker's previews do, and prints the seconds, the number of previews and the final loss. To
compare two versions, run it at each commit. Writes its JSON to ``--out``
(under ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import bench_common as bc

from nst_jax.slow import photoreal


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "photo_preview_bench.json")
  p.add_argument("--pair", type=int, default=3)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--iters", type=int, default=20, help="iterations per stage")
  p.add_argument("--chunk", type=int, default=2, help="iterations between previews")
  args = p.parse_args(argv)
  params = bc.load_vgg(args)
  content, style, cm, sm = bc.load_photo_pair(bc.data_dir(args) / "photo", args.pair, args.size)
  cfg = bc.photo_config(args.size, args.iters)
  cfg = dataclasses.replace(cfg, stage_iters=(args.iters, args.iters),
                            optim=dataclasses.replace(cfg.optim, chunk=args.chunk))
  previews = []
  start = time.perf_counter()
  out = photoreal.stylize(params, content, style, cfg, content_masks=cm, style_masks=sm,
                          progress=False, on_chunk=lambda stage, it, images: previews.append(it))
  seconds = time.perf_counter() - start
  result = {"pair": args.pair, "size": args.size, "iters_per_stage": args.iters,
            "chunk": args.chunk, "seconds": seconds, "previews": len(previews),
            "final_total": float(out.history["total"][-1])}
  print(f"{seconds:.1f} s, {len(previews)} previews, final loss {result['final_total']:.4g}")
  bc.write_result(args.out, result, args)


if __name__ == "__main__":
  bc.run_main(main)
