"""Does a photoreal run resumed inside stage 2 cost what the uninterrupted run cost? (issue 23)

Usage::

  python benchmarks/photo_resume_bench.py                      # 256 px, pair 1, automatic masks
  python benchmarks/photo_resume_bench.py --size 128 --stage-iters 10,30 --stop 20

Runs ``photoreal.stylize`` three times, each in a fresh process as a user's commands would (so
each compiles its programs), with the default configuration at ``--size`` (automatic masks unless
``--masks``), chunk by chunk:

- ``full``: never interrupted;
- ``interrupted``: the same with a checkpoint, stopped (KeyboardInterrupt, as Ctrl-C) after stage
  2's iteration ``--stop``;
- ``resumed``: the same command again, which resumes from the checkpoint.

For every chunk it records the wall time, the loss evaluations (stage 2 solves
``(I + affine_weight L) O = x`` once per evaluation: the forward CG solves) and the conjugate-
gradient iterations (``smoothing.recording_cg_iterations``), and compares the resumed chunks with
the same chunks of the uninterrupted run. The first chunk a process runs includes compilation.
JSON via ``bench_common``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc
import numpy as np

from nst_jax import config
from nst_jax.core import image_io, smoothing
from nst_jax.slow import photoreal


class _Stop(KeyboardInterrupt):
  pass


# The CG counts of every run: a recorder is bound into the programs traced while it is active,
# and the runs share their compiled programs, so one recorder serves them all.
_COUNTS = collections.defaultdict(list)


def run(params, content, style, masks, cfg, *, checkpoint=None, stop=None) -> list[dict]:
  """One ``stylize`` call; a row per chunk: stage, iteration, seconds, evaluations, CG."""
  rows, counts, loss = [], _COUNTS, [float("nan")]
  counts.clear()
  clock = [time.perf_counter()]

  def on_chunk(stage, iteration, images):
    now = time.perf_counter()
    fwd, adj = counts["forward"], counts["adjoint"]
    rows.append({"stage": stage + 1, "iteration": iteration, "seconds": now - clock[0],
                 "evaluations": len(fwd), "cg_forward": sum(fwd), "cg_adjoint": sum(adj),
                 "loss": loss[0]})
    r = rows[-1]
    print(f"  {r['stage']} {r['iteration']:4d} {r['seconds']:7.2f} s  evals {r['evaluations']}"
          f"  CG {r['cg_forward']}+{r['cg_adjoint']}  loss {r['loss']:.6g}", file=sys.stderr,
          flush=True)
    counts.clear()
    clock[0] = time.perf_counter()
    if (stage + 1, iteration) == stop:
      raise _Stop

  try:
    photoreal.stylize(params, content, style, cfg, content_masks=masks[0],
                      style_masks=masks[1], progress=False, checkpoint=checkpoint,
                      checkpoint_every=cfg.optim.chunk, on_chunk=on_chunk,
                      on_loss=lambda stage, iteration, total: loss.__setitem__(0, float(total)))
  except _Stop:
    pass
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bc.add_common_args(p, out=bc.RESULTS / "photo_resume_bench.json")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--pair", type=int, default=1)
  p.add_argument("--masks", action="store_true", help="the pair's hand-made masks")
  p.add_argument("--stage-iters", default="10,40")
  p.add_argument("--chunk", type=int, default=10)
  p.add_argument("--stop", type=int, default=20, help="stage-2 iteration to interrupt after")
  p.add_argument("--phase", choices=("full", "interrupted", "resumed"), help=argparse.SUPPRESS)
  p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.phase:
    return phase(args)
  result = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in ("full", "interrupted", "resumed"):
      out = Path(tmp) / f"{name}.json"
      subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                      "--phase", name, "--checkpoint", str(Path(tmp) / "run.ckpt"),
                      "--out", str(out)], check=True)
      result[name] = json.loads(out.read_text())
  report(args, result)


def phase(args) -> None:
  """One of the three runs, in this process; its rows go to ``args.out``."""
  params = bc.load_vgg(args)
  photo = bc.data_dir(args) / "photo"
  if args.masks:
    content, style, cm, sm = bc.load_photo_pair(photo, args.pair, args.size)
    masks = (cm, sm)
  else:
    content = image_io.load_image(photo / f"input/in{args.pair}.png")
    style = image_io.load_image(photo / f"style/tar{args.pair}.png")
    masks = (None, None)
  base = config.PhotoConfig(size=args.size,
                            stage_iters=tuple(int(n) for n in args.stage_iters.split(",")))
  cfg = dataclasses.replace(base, optim=dataclasses.replace(base.optim, chunk=args.chunk))
  with smoothing.recording_cg_iterations(lambda kind, n: _COUNTS[kind].append(n)):
    rows = run(params, content, style, masks, cfg,
               checkpoint=None if args.phase == "full" else args.checkpoint,
               stop=(2, args.stop) if args.phase == "interrupted" else None)
  Path(args.out).write_text(json.dumps(rows))


def report(args, result: dict) -> None:
  cfg = config.PhotoConfig(stage_iters=tuple(int(n) for n in args.stage_iters.split(",")))
  full = {(r["stage"], r["iteration"]): r for r in result["full"]}
  print(f"{args.size} px, pair {args.pair}, stage iterations {cfg.stage_iters}, chunk {args.chunk},"
        f" interrupted after stage 2 iteration {args.stop}")
  print("run          stage iter  seconds  evals  CG fwd  CG adj   CG/eval")
  for name, rows in result.items():
    for r in rows:
      per = (r["cg_forward"] + r["cg_adjoint"]) / max(r["evaluations"], 1)
      print(f"{name:12s} {r['stage']:5d} {r['iteration']:4d} {r['seconds']:8.2f} "
            f"{r['evaluations']:6d} {r['cg_forward']:7d} {r['cg_adjoint']:7d} {per:9.1f}")
  same = [r for r in result["resumed"][1:]]  # the first resumed chunk includes compilation
  ratios = [r["seconds"] / full[(r["stage"], r["iteration"])]["seconds"] for r in same]
  result["summary"] = {
      "resumed_chunks_same_work": all(
          (r["evaluations"], r["cg_forward"], r["cg_adjoint"]) == tuple(
              full[(r["stage"], r["iteration"])][k] for k in ("evaluations", "cg_forward",
                                                              "cg_adjoint"))
          for r in result["resumed"]),
      "resumed_over_full_seconds_after_compile": float(np.median(ratios)) if ratios else None}
  print(result["summary"])
  bc.write_result(args.out, {"size": args.size, "pair": args.pair, **result}, args)


if __name__ == "__main__":
  bc.run_main(main)
