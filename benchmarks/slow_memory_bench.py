"""Slow transfer's memory: measured peak against the guard's estimate, the compiled program's
``memory_analysis()``, old and new backward pass side by side, and the largest size that fits.

Synopsis::

  PYTHONPATH=. python3 benchmarks/slow_memory_bench.py --sizes 256 512 1024   # peak table
  PYTHONPATH=. python3 benchmarks/slow_memory_bench.py --speed --sizes 256 512 --repeats 4
  PYTHONPATH=. python3 benchmarks/slow_memory_bench.py --largest --platform cuda   # one GPU

``--sizes`` (the default mode): for each size and ``--remat`` value one ``nst-jax optimize``
subprocess (the Gatys preset, ``--iters 3``, tubingen x Starry Night, the guard lifted with
``--max-memory``) whose peak RSS (``ru_maxrss``) is set beside ``core/memory.py``'s estimate
and, from another subprocess, the compiled chunk's ``memory_analysis()`` (temp + arguments).
``--speed``: the compiled chunk of every ``--remat`` in one process, one iteration each in turn
(the order rotating), median seconds and CPU seconds per iteration. ``--largest``: the longest
side (4:3) whose compiled chunk fits the device's memory (``memory_stats()["bytes_limit"]``,
bisection over ``memory_analysis()``), then 3 iterations at that size. Results: a table on
stdout and JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc
import numpy as np

from nst_jax import config
from nst_jax.core import memory

CONTENT = Path("content") / "classic_st" / "tubingen.jpg"
STYLE = Path("styles") / "van_gogh_starry_night.jpg"
GATYS = config.gatys()


def _problem(size: int, remat: str, args):
  """The compiled-chunk inputs of the Gatys problem at ``size`` (jax imported here only)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from nst_jax.core import image_io, objective  # pylint: disable=import-outside-toplevel
  from nst_jax.slow import artistic, optimize  # pylint: disable=import-outside-toplevel
  params = bc.load_vgg(args)
  content = jnp.asarray(image_io.load_image(bc.data_dir(args) / CONTENT, size=size))[None]
  style = content
  if args.synthetic_hw:  # noise against the real content's style: a loss with somewhere to go
    noise = np.random.default_rng(0).uniform(size=(1,) + tuple(args.synthetic_hw) + (3,))
    content = jnp.asarray(noise, jnp.float32)
  loss_cfg = dataclasses.replace(GATYS.loss, remat=remat)
  targets = objective.make_targets(params, content, [style], loss_cfg)
  optim = dataclasses.replace(GATYS.optim, chunk=1, num_iters=3)
  solver = optimize.make_solver(artistic.make_loss_fn(loss_cfg), optim)
  chunk = optimize.make_chunk_fn(solver, 1)
  state = optimize.strong(jax.jit(solver.init)(content, params, targets))
  return chunk, (content, state, params, targets, 1)


def analysis(size: int, remat: str, args) -> dict:
  """The compiled chunk's memory_analysis() in bytes."""
  chunk, inputs = _problem(size, remat, args)
  t0 = time.perf_counter()
  ma = chunk.lower(*inputs).compile().memory_analysis()
  hw = inputs[0].shape[1:3]
  return {"hw": list(hw), "temp": ma.temp_size_in_bytes, "arguments": ma.argument_size_in_bytes,
          "output": ma.output_size_in_bytes, "alias": ma.alias_size_in_bytes,
          "compile_s": time.perf_counter() - t0}


def _self(argv: list[str], args) -> dict:
  extra = ["--vgg-weights", str(args.vgg_weights)] if args.vgg_weights else []
  extra += ["--data-dir", str(args.data_dir)] if args.data_dir else []
  out = subprocess.run([sys.executable, __file__, *argv, *extra], check=True, text=True,
                       stdout=subprocess.PIPE).stdout
  return json.loads(out.strip().splitlines()[-1])


def measured_peak(size: int, remat: str, args, tmp: Path) -> dict:
  """Peak RSS and wall time of ``nst-jax optimize --size SIZE --iters 3`` in a subprocess."""
  data = bc.data_dir(args)
  argv = [sys.executable, "-m", "nst_jax.cli", "optimize", "--content", str(data / CONTENT),
          "--style", str(data / STYLE), "--size", str(size), "--iters", "3", "--no-progress",
          "--out", str(tmp / f"o_{size}_{remat}.png"), "--set", f"loss.remat={remat}",
          "--max-memory", str(args.max_memory)]
  if args.vgg_weights:
    argv += ["--vgg-weights", str(args.vgg_weights)]
  t0 = time.perf_counter()
  proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  err = proc.stderr.read()
  _, status, usage = os.wait4(proc.pid, 0)
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(err)
  return {"peak_rss": usage.ru_maxrss * 1024, "wall_s": time.perf_counter() - t0,
          "cpu_s": usage.ru_utime + usage.ru_stime}


def peak_table(args) -> list[dict]:
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in args.sizes:
      for remat in args.remat:
        a = _self(["--analysis", str(size), remat], args)
        hw = tuple(a["hw"])
        est = memory.estimate_peak_bytes("optimize", hw, layers=_layers(), history=20,
                                         remat=remat)
        row = {"size": size, "hw": hw, "remat": remat, "estimate": est, **a,
               "load_avg_1min": os.getloadavg()[0]}
        row.update(measured_peak(size, remat, args, Path(tmp)))
        rows.append(row)
        print(_line(row), flush=True)
  return rows


def _layers() -> tuple[str, ...]:
  return tuple(GATYS.loss.content_layers) + tuple(GATYS.loss.style_layers)


def _line(r: dict) -> str:
  mb = lambda b: f"{b / 2**20:,.0f}"
  program = r["temp"] + r["arguments"]
  return (f"| {r['size']} ({r['hw'][1]}x{r['hw'][0]}) | {r['remat']} | {mb(r['peak_rss'])} | "
          f"{mb(r['estimate'])} | {r['estimate'] / r['peak_rss'] - 1:+.0%} | {mb(program)} "
          f"({program / 4 / r['hw'][0] / r['hw'][1]:.0f} floats/px) | {r['wall_s']:.0f} |")


def speed(args) -> list[dict]:
  """Seconds per iteration of each remat's compiled chunk, interleaved in one process."""
  import jax  # pylint: disable=import-outside-toplevel
  rows = []
  for size in args.sizes:
    runs = {}
    for remat in args.remat:
      chunk, inputs = _problem(size, remat, args)
      compiled = chunk.lower(*inputs).compile()
      x, state, *rest = inputs
      x, state, _ = compiled(x, state, *rest)  # warm-up (the start step and one iteration)
      runs[remat] = {"fn": compiled, "x": x, "state": state, "rest": rest, "wall": [], "cpu": []}
    names = list(runs)
    for r in range(args.repeats):
      for remat in names[r % len(names):] + names[:r % len(names)]:
        run = runs[remat]
        t0, c0 = time.perf_counter(), time.process_time()
        run["x"], run["state"], _ = run["fn"](run["x"], run["state"], *run["rest"])
        jax.block_until_ready(run["x"])
        run["wall"].append(time.perf_counter() - t0)
        run["cpu"].append(time.process_time() - c0)
    base = statistics.median(runs[names[0]]["wall"])
    for remat in names:
      row = {"size": size, "remat": remat, "s_per_iter": statistics.median(runs[remat]["wall"]),
             "cpu_s_per_iter": statistics.median(runs[remat]["cpu"]),
             "wall": runs[remat]["wall"], "load_avg_1min": os.getloadavg()[0]}
      row["ratio_to_first"] = row["s_per_iter"] / base
      rows.append(row)
      print(f"| {size} | {remat} | {row['s_per_iter']:.3f} | {row['cpu_s_per_iter']:.3f} | "
            f"{row['ratio_to_first']:.2f} | {row['load_avg_1min']:.1f} |", flush=True)
  return rows


def largest(args) -> dict:
  """The longest 4:3 side whose compiled chunk fits the device, then a 3-iteration run there."""
  import jax  # pylint: disable=import-outside-toplevel
  stats = jax.devices()[0].memory_stats() or {}  # None on the CPU: the guard's budget there
  limit = stats.get("bytes_limit") or memory.budget_bytes()

  needs = {}

  def need(side):
    if side in needs:
      return needs[side]
    args.synthetic_hw = memory.scaled_hw((3, 4), side)
    chunk, inputs = _problem(side, args.remat[-1], args)
    ma = chunk.lower(*inputs).compile().memory_analysis()
    needs[side] = ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes
    return needs[side]

  lo, hi = args.max_side // 4, args.max_side // 2
  while hi < args.max_side and need(hi) <= limit:
    lo, hi = hi, hi * 2
  while hi - lo > args.resolution:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if need(mid) <= limit else (lo, mid)
  args.synthetic_hw = memory.scaled_hw((3, 4), lo)
  chunk, inputs = _problem(lo, args.remat[-1], args)
  x, state, *rest = inputs
  t0 = time.perf_counter()
  for _ in range(3):
    x, state, hist = chunk(x, state, *rest)
  jax.block_until_ready(x)
  row = {"largest_long_side": lo, "hw": list(args.synthetic_hw), "bytes_limit": limit,
         "need_bytes": need(lo), "three_iters_s": time.perf_counter() - t0,
         "loss": float(hist["total"].sum()), "device": str(jax.devices()[0])}
  print(json.dumps(row), flush=True)
  return row


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "slow_memory.json")
  p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
  p.add_argument("--remat", nargs="+", default=["none", "masks"], choices=config.REMATS)
  p.add_argument("--max-memory", type=float, default=20.0, help="GB, lifts the guard")
  p.add_argument("--speed", action="store_true")
  p.add_argument("--repeats", type=int, default=4)
  p.add_argument("--largest", action="store_true")
  p.add_argument("--resolution", type=int, default=128, help="--largest: bisection step, px")
  p.add_argument("--max-side", type=int, default=16384, help="--largest: search below this")
  p.add_argument("--platform", help="JAX_PLATFORMS (e.g. cuda)")
  p.add_argument("--analysis", nargs=2, metavar=("SIZE", "REMAT"), help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.synthetic_hw = None
  if args.platform:
    os.environ["JAX_PLATFORMS"] = args.platform
  if args.analysis:
    print(json.dumps(analysis(int(args.analysis[0]), args.analysis[1], args)))
    return 0
  if args.largest:
    bc.write_result(args.out, {"largest": largest(args)}, args)
    return 0
  if args.speed:
    print("| size | remat | s/iter | CPU s/iter | / first | load |\n|---|---|---|---|---|---|")
    bc.write_result(args.out, {"speed": speed(args)}, args)
    return 0
  print("| size | remat | peak RSS MB | estimate MB | estimate/peak | compiled temp+args MB | "
        "wall s |\n|---|---|---|---|---|---|---|")
  bc.write_result(args.out, {"peak": peak_table(args)}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
