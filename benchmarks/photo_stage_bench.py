"""Cost of the slow photoreal method's penalized stage against a Gatys iteration, side by side.

Usage::

  python benchmarks/photo_stage_bench.py                        # 256 px
  python benchmarks/photo_stage_bench.py --size 512 --iters 5 --rounds 2 \\
      --out benchmarks/results/photo_stage_bench_512.json

For one of the shared photo pairs (hand-made masks) at ``--size``, in one process:

- ``gatys``: Gatys' artistic transfer (the ``gatys`` preset, L-BFGS-B) from the content;
- ``stage1``: the photoreal objective without the matting penalty (stage 1);
- ``stage2``: the penalized stage (the default ``affine`` parameterization: every loss
  evaluation solves ``(I + affine_weight L) O = x`` by conjugate gradients, forward and
  backward), started from stage 1's result after ``--start-iters`` iterations, as
  ``photoreal.stylize`` runs it: both solves start from the previous evaluation's solutions
  (``lbfgsb.WarmStartedLoss``);
- ``stage2_cold`` (unless ``--no-cold``): the same stage from the same start with every solve
  started cold (from x, and from 0 for the gradient's), as before warm starts: the before/after
  comparison, side by side.

Each runs its compiled chunk once (compile and warm-up), then ``--rounds`` rounds of the three in
turn (interleaved, so a change in machine load hits all of them) of ``--iters`` L-BFGS-B
iterations each, continuing from where the previous chunk stopped. Reports the median seconds
per iteration, the ratios to Gatys, and, for stage 2 (each variant), the loss evaluations per iteration and the
conjugate-gradient iterations per evaluation (forward and adjoint solves, counted on the host
with ``smoothing.recording_cg_iterations``). JSON via ``bench_common``. On a shared machine the
absolute times move with the load; the ratios, measured side by side, are what to compare.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.config import EVAL_EPS
from nst_jax.core import matting, objective, smoothing
from nst_jax.slow import artistic, lbfgsb, optimize, photoreal


class Timed:
  """One optimization continued chunk by chunk: its compiled chunk, x and solver state."""

  def __init__(self, loss_fn, x0, params, aux, optim_cfg):
    self.chunk_fn = optimize.compiled_chunk_fn(loss_fn, optim_cfg, False)
    self.x, self.params, self.aux, self.n = x0, params, aux, optim_cfg.chunk
    self.state = optimize.init_state(loss_fn, x0, params, aux, optim_cfg)
    self.times: list[float] = []

  def step(self, record: bool = True) -> None:
    t = time.perf_counter()
    self.x, self.state, hist = self.chunk_fn(self.x, self.state, self.params, self.aux, self.n)
    jax.block_until_ready(hist)
    if record:
      self.times.append((time.perf_counter() - t) / self.n)


def counting(loss_fn, counts, name: str, *, warm: bool = True):
  """``loss_fn`` that appends to ``counts[name]`` on the host whenever it is evaluated; a
  ``lbfgsb.WarmStartedLoss`` stays one (``warm``) or becomes its plain, cold function."""

  def counted(x, shared, aux):
    jax.debug.callback(lambda: counts[name].append(1))
    return loss_fn(x, shared, aux)

  if not (warm and isinstance(loss_fn, lbfgsb.WarmStartedLoss)):
    return counted

  def counted_warm(x, shared, aux, start):
    jax.debug.callback(lambda: counts[name].append(1))
    return loss_fn.value_and_grad(x, shared, aux, start)

  return lbfgsb.WarmStartedLoss(counted, counted_warm, loss_fn.init_warm)


def gatys_problem(params, content, style, size: int):
  """(loss, x0, targets) of Gatys' transfer of ``style`` onto ``content`` at ``size``."""
  cfg = config.override(config.gatys(), {"size": size})
  targets = objective.make_targets(params, jnp.asarray(content)[None],
                                   [jnp.asarray(style)[None]], cfg.loss, None)
  return artistic.make_loss_fn(cfg.loss), jnp.asarray(content)[None], targets


def photo_aux(params, content, style, cm, sm, cfg, stage: int) -> dict:
  """The photoreal loss's aux for stage 1 (no penalty) or 2, as ``photoreal.stylize`` builds it."""
  penalized = stage == 2
  scalars = {"matting_weight": jnp.float32(cfg.matting_weight if penalized else 0.0),
             "filtered": jnp.float32(penalized and cfg.parameterization != "pixels")}
  return dict({"targets": photoreal.make_targets(params, content, style, cm, sm, cfg),
               "matting": matting.matting_coefficients(jnp.asarray(content)),
               "filter": photoreal.parameterization_step(content, cfg)}, **scalars)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bc.add_common_args(p, out=bc.RESULTS / "photo_stage_bench.json")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--pair", type=int, default=1)
  p.add_argument("--iters", type=int, default=10, help="iterations per timed chunk")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--start-iters", type=int, default=20, help="stage-1 iterations before stage 2")
  p.add_argument("--no-cold", action="store_true", help="skip the cold-started stage 2")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override of the photoreal config; repeatable")
  args = p.parse_args(argv)
  params = bc.load_vgg(args)
  content, style, cm, sm = bc.load_photo_pair(bc.data_dir(args) / "photo", args.pair, args.size)
  cfg = config.override(bc.photo_config(args.size, args.iters), config.parse_assignments(args.set))
  optim_cfg = dataclasses.replace(cfg.optim, num_iters=10**6, chunk=args.iters)
  counts = collections.defaultdict(list)
  with smoothing.recording_cg_iterations(lambda kind, n: counts[kind].append(n)):
    loss = counting(photoreal.make_loss_fn(cfg.loss), counts, "photo")
    cold = counting(photoreal.make_loss_fn(cfg.loss), counts, "photo", warm=False)
    aux1 = photo_aux(params, content, style, cm, sm, cfg, 1)
    x1 = Timed(loss, jnp.asarray(content)[None], params, aux1, optim_cfg)
    for _ in range(max(1, args.start_iters // args.iters)):
      x1.step(record=False)
    aux2 = photo_aux(params, content, style, cm, sm, cfg, 2)
    loss_g, x0_g, targets_g = gatys_problem(params, content, style, args.size)
    runs = {"gatys": Timed(counting(loss_g, counts, "gatys"), x0_g, params, targets_g, optim_cfg),
            "stage1": x1, "stage2": Timed(loss, x1.x, params, aux2, optim_cfg)}
    if not args.no_cold:
      runs["stage2_cold"] = Timed(cold, x1.x, params, aux2, optim_cfg)
    for run in runs.values():
      run.step(record=False)  # compile / warm up
  evals, cg = {}, {name: collections.defaultdict(list) for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      counts.clear()
      run.step()
      jax.effects_barrier()
      evals.setdefault(name, []).append(len(counts["gatys" if name == "gatys" else "photo"]))
      for kind in ("forward", "adjoint"):
        cg[name][kind].extend(counts[kind])
  iters = args.rounds * args.iters
  rows = {name: {"s_per_iter": float(np.median(run.times)), "times": run.times,
                 "evaluations_per_iter": sum(evals[name]) / iters} for name, run in runs.items()}
  gatys = rows["gatys"]["s_per_iter"]
  for row in rows.values():
    row["ratio_to_gatys"] = row["s_per_iter"] / gatys
    row["s_per_evaluation"] = row["s_per_iter"] / max(row["evaluations_per_iter"], 1e-9)
  # The profile: one matrix-free Laplacian apply (a CG iteration's main cost) timed alone, so
  # the solves' share of a stage-2 evaluation is CG iterations x this.
  step = aux2["filter"]
  apply = jax.jit(lambda v: matting.apply_with_coefficients(step.coeffs, v))
  v = jnp.asarray(runs["stage2"].x)
  apply_s = bc.time_median(lambda: jax.block_until_ready(apply(v)), 20, warmup=2)
  ratio = lambda x: float(matting.matting_energy(
      jnp.asarray(content), photoreal.output_image(x, aux2)[0], eps=EVAL_EPS)
      / matting.matting_energy(jnp.asarray(content), jnp.asarray(content), eps=EVAL_EPS))
  for name in [n for n in runs if n.startswith("stage2")]:
    per_eval = {kind: float(np.mean(cg[name][kind] or [0])) for kind in ("forward", "adjoint")}
    rows[name].update(laplacian_apply_s=apply_s,
                      cg_s_per_eval_estimate=sum(per_eval.values()) * apply_s,
                      cg_forward_per_eval=per_eval["forward"],
                      cg_adjoint_per_eval=per_eval["adjoint"], matting_ratio=ratio(runs[name].x))
  print(f"{args.size} px, pair {args.pair}, {args.rounds} x {args.iters} iterations each")
  for name, row in rows.items():
    extra = (f"  evals/iter {row['evaluations_per_iter']:.2f} "
             f"({row['s_per_evaluation']:.3f} s/eval)")
    if name.startswith("stage2"):
      extra += (f", CG/eval forward "
               f"{row['cg_forward_per_eval']:.1f} adjoint {row['cg_adjoint_per_eval']:.1f}"
                f", Laplacian apply {row['laplacian_apply_s'] * 1e3:.1f} ms"
                f" (CG ~{row['cg_s_per_eval_estimate']:.3f} s/eval)")
    print(f"{name:11s} {row['s_per_iter']:.3f} s/iter  x{row['ratio_to_gatys']:.2f} Gatys{extra}")
  bc.write_result(args.out, {"size": args.size, "pair": args.pair, "rows": rows}, args)


if __name__ == "__main__":
  bc.run_main(main)
