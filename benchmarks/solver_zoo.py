"""The L-BFGS solvers on the Gatys objective: the loss each reaches after a fixed CPU-time budget.

Synopsis::

  python benchmarks/solver_zoo.py --size 256 --budgets 10 20 \
      --vgg-weights ../shared/weights/vgg19_conv.npz --data-dir ../shared/data

For every content/style pair (``--pairs``, Kodak photos and paintings of the shared data) the
Gatys objective (``config.gatys()``: content init, relu4_2 content, relu*_1 Gram styles, tv) at
``--size`` px is minimized by each solver of ``--solvers`` in the production loop
(``optimize.make_chunk_fn``, chunks of ``--chunk`` iterations), until its CPU time (process
time, all threads: the machine is shared, so wall time says little) passes the largest budget.
"lbfgsb_jaxopt_public" is "lbfgsb_jaxopt" with jaxopt's own ``ZoomLineSearch`` in place of
``optimize._ZoomKeepingAux`` (``make_lbfgsb(keep_aux=False)``): the same iterates, one more
forward pass per iteration; "lbfgsb_jaxopt_backtracking" (not run by default) is jaxopt's
L-BFGS-B with its public backtracking search instead. Compilation is excluded (one discarded warm-up chunk per solver).
Iterations inside a chunk are taken to cost the same CPU time, so the loss at budget B is that
of the last iterate reached by B. Loss evaluations (forward passes) are counted with a
``jax.debug.callback`` in the loss; evaluations per iteration are those after the first chunk
(which holds the start's evaluation and the first, searched steps). Results: a table on stdout, JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import image_io, objective
from nst_jax.slow import artistic, optimize

DEFAULT_PAIRS = ("kodim01:van_gogh_starry_night", "kodim08:hokusai_great_wave",
                 "kodim23:picabia_udnie")
SOLVERS = ("lbfgsb", "lbfgs", "lbfgsb_jaxopt", "lbfgsb_jaxopt_public",
           "lbfgsb_jaxopt_backtracking")


def make_solver(name: str, loss_fn, cfg: config.OptimConfig) -> optimize.Solver:
  if name == "lbfgsb_jaxopt_public":
    return optimize.make_lbfgsb(loss_fn, cfg, keep_aux=False)
  if name == "lbfgsb_jaxopt_backtracking":
    return backtracking_lbfgsb(loss_fn, cfg)
  return optimize.make_solver(loss_fn, dataclasses.replace(cfg, optimizer=name))


def backtracking_lbfgsb(loss_fn, cfg: config.OptimConfig) -> optimize.Solver:
  """jaxopt's L-BFGS-B with its public backtracking search (strong Wolfe, steps <= 1, t = 1
  first): no extra forward pass, but no step extension or interpolation either."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import jaxopt  # pylint: disable=import-outside-toplevel
  solver = jaxopt.LBFGSB(fun=loss_fn, has_aux=True, maxiter=cfg.num_iters,
                         history_size=cfg.history_size, linesearch="backtracking", maxls=30,
                         max_stepsize=1.0, linesearch_init="max")
  box = lambda x: (jnp.zeros_like(x), jnp.ones_like(x))

  def step(x, state, shared, aux):
    terms = state.aux
    x, state = solver.update(x, state, box(x), shared, aux)
    return jnp.clip(x, 0.0, 1.0), state, terms

  return optimize.Solver(lambda x, shared, aux: solver.init_state(x, box(x), shared, aux), step)


def load_pair(data, pair: str, size: int, loss_cfg, params):
  """(x0, targets) of ``content:style``: the content at ``size`` px as the start."""
  content_name, style_name = pair.split(":")
  content = image_io.load_image(data / "content" / "kodak" / f"{content_name}.jpg", size=size)
  style = image_io.load_image(data / "styles" / f"{style_name}.jpg", size=size)
  targets = objective.make_targets(params, jnp.asarray(content)[None],
                                   [jnp.asarray(style)[None]], loss_cfg)
  x0 = artistic.initial_image("content", content, content.shape[:2], seed=0, noise_ratio=0.6)
  return optimize.strong(jnp.asarray(x0)[None]), targets


def solve(chunk_fn, init_fn, x0, params, targets, counter: list, chunk: int, cpu_limit: float):
  """Runs chunks until the CPU time passes ``cpu_limit``; per-iteration losses and CPU ends."""
  x, state = x0, optimize.strong(init_fn(x0, params, targets))
  totals, cpu_ends, evals, cpu = [], [], [], 0.0
  while not cpu_ends or cpu_ends[-1] <= cpu_limit:
    before, c0 = len(counter), time.process_time()
    x, state, hist = chunk_fn(x, state, params, targets, chunk)
    jax.block_until_ready(x)
    jax.effects_barrier()
    spent = time.process_time() - c0
    totals += [float(v) for v in np.asarray(hist["total"]).reshape(chunk)]
    cpu_ends += [cpu + spent * (i + 1) / chunk for i in range(chunk)]
    evals.append((len(counter) - before) / chunk)
    cpu += spent
  return np.asarray(totals), np.asarray(cpu_ends), float(np.mean(evals[1:] or evals))


def loss_at(totals, cpu_ends, budget: float) -> tuple[float, int]:
  """(loss of the last iterate reached within ``budget`` CPU seconds, its index)."""
  n = int(np.searchsorted(cpu_ends, budget, side="right"))  # iterations done by the budget
  return float(totals[min(n, len(totals) - 1)]), n


def bench_solver(name, pairs_inputs, params, args) -> list[dict]:
  counter: list = []
  loss_fn = artistic.make_loss_fn(config.gatys().loss)

  def counted(x, params, targets):
    value, terms = loss_fn(x, params, targets)
    jax.debug.callback(lambda _: counter.append(1), value)
    return value, terms

  cfg = dataclasses.replace(config.gatys().optim, chunk=args.chunk)
  solver = make_solver(name, counted, cfg)
  chunk_fn, init_fn = optimize.make_chunk_fn(solver, args.chunk), jax.jit(solver.init)
  x0, targets = pairs_inputs[0][1]
  c0 = time.process_time()
  state = init_fn(x0, params, targets)
  jax.block_until_ready(chunk_fn(x0, optimize.strong(state), params, targets, args.chunk))
  compile_cpu = time.process_time() - c0
  rows = []
  for pair, (x0, targets) in pairs_inputs:
    totals, cpu_ends, evals = solve(chunk_fn, init_fn, x0, params, targets, counter,
                                    args.chunk, max(args.budgets))
    row = {"solver": name, "pair": pair, "start_loss": float(totals[0]),
           "cpu_s_per_iter": float(cpu_ends[-1] / len(cpu_ends)), "evals_per_iter": evals,
           "warmup_cpu_s": compile_cpu, "totals": totals.tolist(), "cpu_ends": cpu_ends.tolist()}
    for b in args.budgets:
      row[f"loss_at_{b:g}s"], row[f"iters_at_{b:g}s"] = loss_at(totals, cpu_ends, b)
    print(f"{name:>21} {pair:>32}: {row['cpu_s_per_iter']:.3f} CPU s/iter, "
          f"{evals:.2f} evals/iter, " + ", ".join(
              f"{row[f'loss_at_{b:g}s']:.4g} at {b:g} s" for b in args.budgets), flush=True)
    rows.append(row)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "solver_zoo.json")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS),
                 help="content:style names (content/kodak/*.jpg, styles/*.jpg)")
  p.add_argument("--solvers", nargs="+", default=list(SOLVERS[:4]), choices=SOLVERS)
  p.add_argument("--budgets", type=float, nargs="+", default=[10.0, 20.0],
                 help="CPU seconds (process time) after which the loss is read")
  p.add_argument("--chunk", type=int, default=5)
  args = p.parse_args(argv)
  params, data = bc.load_vgg(args), bc.data_dir(args)
  loss_cfg = config.gatys().loss
  pairs_inputs = [(pair, load_pair(data, pair, args.size, loss_cfg, params))
                  for pair in args.pairs]
  rows = []
  for name in args.solvers:
    rows += bench_solver(name, pairs_inputs, params, args)
    bc.write_result(args.out, {"rows": rows}, args)  # after each solver: a partial run counts
  return 0


if __name__ == "__main__":
  bc.run_main(main)
