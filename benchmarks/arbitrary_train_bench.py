"""Fine-tuning the arbitrary-style networks: seconds per step and the loss over a short run.

Usage::

  python benchmarks/arbitrary_train_bench.py                    # batch 2, 128 px, 50 steps
  python benchmarks/arbitrary_train_bench.py --size 256 --batch 8 --steps 20 --init ""

Builds the ``arbitrary`` preset's task (``fast.arbitrary_train``; photos from the shared training
photos, paintings from the shared paintings, both at ``--size``; the predictor takes the
paintings at that size), starts from the imported released networks (``--init magenta``; run
``nst-jax models import magenta`` first) and runs ``--steps`` steps of the jitted engine step on
the dataset's pairs, one new pair batch per step. Reports the first step (compilation included),
the median of the others, and the loss of every step; writes
``benchmarks/results/arbitrary_train_bench.json``.
"""

from __future__ import annotations

import argparse
import time

import bench_common as bc
import jax
import numpy as np

from nst_jax import config
from nst_jax.core import engine, sharding
from nst_jax.fast import arbitrary_train


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "arbitrary_train_bench.json")
  p.add_argument("--size", type=int, default=128, help="photo and painting side")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--init", default="magenta", help="init_from: magenta, '' or a model file")
  p.add_argument("--photos", default="train/coco2017_256", help="under the data dir")
  args = p.parse_args(argv)
  root = bc.data_dir(args)
  base = config.arbitrary_train()
  cfg = config.ArbitraryTrainConfig(
      net=config.ArbitraryConfig(style_size=args.size), loss=base.loss, init_from=args.init,
      data=str(root / args.photos), styles=(str(root / "styles"),), size=args.size,
      style_size=args.size, batch_size=args.batch, num_steps=args.steps,
      learning_rate=args.lr)
  task = arbitrary_train.make_task(cfg, bc.load_vgg(args))
  mesh = sharding.make_mesh()
  start = task.start_variables() if task.start_variables else None
  state = engine.init_train_state(task.init_variables, task.tx, engine.make_key(0), mesh, start)
  step = engine.jit_train_step(task.train_step, mesh, num_consts=1)
  vgg_params = sharding.replicate(mesh, task.make_consts()[0])
  times, losses = [], []
  for i in range(args.steps):
    batch = jax.tree.map(lambda x: sharding.shard_batch(mesh, x),
                         task.dataset.get_batch(i, args.batch))
    t0 = time.perf_counter()
    state, metrics = step(state, batch, vgg_params)
    losses.append({k: float(v) for k, v in metrics.items()})  # waits for the step
    times.append(time.perf_counter() - t0)
    print(f"step {i + 1:3d}  {times[-1]:7.2f} s  total {losses[-1]['total']:.4g}  "
          f"content {losses[-1]['content']:.4g}  style {losses[-1]['style']:.4g}  "
          f"tv {losses[-1]['tv']:.4g}", flush=True)
  total = [x["total"] for x in losses]
  k = max(1, len(total) // 5)
  summary = {"first_step_s": times[0], "median_step_s": float(np.median(times[1:] or times)),
             "loss_first_mean": float(np.mean(total[:k])),
             "loss_last_mean": float(np.mean(total[-k:]))}
  print(" ".join(f"{k}={v:.4g}" for k, v in summary.items()))
  bc.write_result(args.out, {"summary": summary, "step_s": times, "losses": losses,
                             "config": config.to_dict(cfg)}, args)


if __name__ == "__main__":
  bc.run_main(main)
