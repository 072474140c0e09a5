"""One VGG19 value-and-gradient of the Gatys loss with each ``conv_impl``, side by side.

Synopsis::

  python benchmarks/conv_impl_bench.py                       # 256 px, cpu_fast vs xla
  python benchmarks/conv_impl_bench.py --size 512 --repeats 7 --conv-impl xla --conv-impl auto

The objective is ``config.gatys().loss`` (relu4_2 content, relu1_1..relu5_1 Gram style, tv,
average pooling) with ``conv_impl`` replaced, for a random content, style and image of
``--size`` px (the timing does not depend on the pixels). Two programs per implementation:

- ``value_and_grad``: one jitted ``jax.value_and_grad`` of the loss;
- ``in_loop``: two gradient steps inside ``lax.fori_loop``, as ``optimize.run``'s compiled chunks
  run them (per evaluation: half the call), where XLA:CPU's autodiff convolutions lose their fast
  path (conv_loop_profile.py).

After one warm-up call each, the implementations are called in turn ``--repeats`` times (so load
from other users of a shared machine falls on all of them alike); the medians of wall and process
CPU seconds are reported with the largest gradient difference from the first implementation.
These numbers justify ``conv_impl="auto"`` picking ``cpu_fast`` on the CPU backend.
Results: a table on stdout and JSON in ``--out`` (default benchmarks/results/conv_impl_cpu.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import conv, image_io, objective, paths, vgg
from nst_jax.slow import artistic

HERE = Path(__file__).resolve().parent


def make_programs(vgg_params, content, style, conv_impl: str) -> dict:
  """{"value_and_grad": f(x) -> grad, "in_loop": f(x) -> x after two steps}, both compiled."""
  cfg = dataclasses.replace(config.gatys().loss, conv_impl=conv_impl)
  targets = objective.make_targets(vgg_params, content, [style], cfg)
  grad_fn = jax.value_and_grad(artistic.make_loss_fn(cfg), has_aux=True)

  def value_and_grad(x, p, t):
    (_, _), g = grad_fn(x, p, t)
    return g

  def in_loop(x, p, t):  # two evaluations, as optimize.run's chunks (a while loop)
    return jax.lax.fori_loop(0, 2, lambda i, y: y - 1e-3 * grad_fn(y, p, t)[1], x)

  return {name: (jax.jit(fn), targets) for name, fn in
          (("value_and_grad", value_and_grad), ("in_loop", in_loop))}


def time_call(fn, *args) -> tuple[float, float]:
  wall, cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--conv-impl", action="append", choices=config.CONV_IMPLS,
                 help="repeatable; default: cpu_fast and xla")
  p.add_argument("--vgg-weights")
  p.add_argument("--out", type=Path, default=HERE / "results" / "conv_impl_cpu.json")
  args = p.parse_args(argv)
  impls = args.conv_impl or ["cpu_fast", "xla"]
  shared = HERE.parent.parent / "shared" / "weights" / paths.VGG_FILENAME  # beside the repo
  params = vgg.load_vgg19(paths.resolve_vgg_weights(
      args.vgg_weights or (str(shared) if shared.is_file() else None)))
  rng = np.random.default_rng(0)
  content, style, x = (jnp.asarray(rng.uniform(size=(1, args.size, args.size, 3)), jnp.float32)
                       for _ in range(3))
  programs = {impl: make_programs(params, content, style, impl) for impl in impls}
  times = {(i, n): [] for i in impls for n in ("value_and_grad", "in_loop")}
  grads, compile_s = {}, {}
  for (impl, name) in times:  # warm-up: compile and run once
    fn, targets = programs[impl][name]
    compile_s[impl, name] = time_call(fn, x, params, targets)[0]
    if name == "value_and_grad":
      grads[impl] = np.asarray(fn(x, params, targets))
  for _ in range(args.repeats):
    for (impl, name), samples in times.items():
      fn, targets = programs[impl][name]
      samples.append(time_call(fn, x, params, targets))
  ref = grads[impls[0]]
  rows = []
  for (impl, name), samples in times.items():
    per_eval = 2 if name == "in_loop" else 1
    rows.append({"conv_impl": impl, "resolved": conv.resolve_impl(impl), "program": name,
                 "wall_s": statistics.median(w for w, _ in samples) / per_eval,
                 "cpu_s": statistics.median(c for _, c in samples) / per_eval,
                 "first_call_s": compile_s[impl, name],
                 "max_grad_diff_rel": float(np.abs(grads[impl] - ref).max() / np.abs(ref).max())})
  print(f"{args.size} px, Gatys loss, seconds per value-and-gradient (median of {args.repeats}):")
  for r in rows:
    print(f"  {r['conv_impl']:8s} {r['program']:14s} wall {r['wall_s']:7.3f}  cpu {r['cpu_s']:7.3f}"
          f"  first call {r['first_call_s']:6.1f}  max |grad diff| / max |grad| "
          f"{r['max_grad_diff_rel']:.1e}")
  result = {"size": args.size, "repeats": args.repeats, "rows": rows,
            "backend": f"jax {jax.__version__} {jax.default_backend()}",
            "load_average": os.getloadavg(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()}}
  image_io.write_text(args.out, json.dumps(result, indent=2))
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
