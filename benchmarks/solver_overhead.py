"""CPU time per iteration that each L-BFGS solver spends beyond the loss evaluation.

Synopsis::

  python benchmarks/solver_overhead.py --sizes 256 512 --iters 40 --repeats 3

Every solver of ``optimize.make_solver`` runs ``--iters`` iterations (one jitted chunk, the
production loop) on a loss that costs almost nothing at the image size of the real problem:
sum_i w_i (x_i - t_i)^2 with curvatures w from 1 to 100 and targets partly outside the [0, 1]
box, so the bounds are active. What the iteration costs then is the solver's own work: the
direction (two-loop recursion or jaxopt's Cauchy point and subspace step), the line search, the
memory update and the history rows. Median CPU seconds (process time, all threads) per iteration
over ``--repeats`` runs after a compiling one; results in ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.slow import optimize


def cheap_loss(x, shared, aux):
  total = jnp.sum(shared["w"] * jnp.square(x - aux["target"]), axis=(1, 2, 3))
  return jnp.sum(total), {"total": total}


def measure(size: int, optimizer: str, iters: int, repeats: int) -> dict:
  shape = (1, size, size, 3)
  rng = np.random.default_rng(0)
  shared = {"w": jnp.asarray(np.geomspace(1.0, 100.0, np.prod(shape)).reshape(shape),
                             jnp.float32)}
  aux = {"target": jnp.asarray(rng.uniform(-0.3, 1.3, shape), jnp.float32)}
  cfg = config.OptimConfig(optimizer=optimizer, num_iters=iters, chunk=iters)
  x0 = jnp.full(shape, 0.5)
  cpu, wall = [], []
  for _ in range(repeats + 1):  # the first compiles
    c0, t0 = time.process_time(), time.perf_counter()
    res = optimize.run(cheap_loss, x0, shared, aux, cfg, progress=False)
    jax.block_until_ready(res.image)
    cpu.append((time.process_time() - c0) / iters)
    wall.append((time.perf_counter() - t0) / iters)
  return {"size": size, "optimizer": optimizer, "cpu_ms_per_iter": 1e3 * statistics.median(cpu[1:]),
          "wall_ms_per_iter": 1e3 * statistics.median(wall[1:])}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, data=False, threads=True,
                     out=bc.RESULTS / "solver_overhead.json")
  p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
  p.add_argument("--optimizers", nargs="+", default=["lbfgsb", "lbfgs", "lbfgsb_jaxopt"])
  p.add_argument("--iters", type=int, default=40)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  bc.limit_threads(args.threads)
  rows = []
  for size in args.sizes:
    for opt in args.optimizers:
      rows.append(measure(size, opt, args.iters, args.repeats))
      print(f"{size:>5} px {opt:>14}: {rows[-1]['cpu_ms_per_iter']:7.1f} ms CPU / iteration "
            f"({rows[-1]['wall_ms_per_iter']:.1f} ms wall)", flush=True)
  bc.write_result(args.out, {"rows": rows}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
