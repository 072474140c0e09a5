"""Training throughput of the fast-transfer train step (images/s), with data time beside it.

Usage::

  python benchmarks/train_bench.py                         # thesis preset, 256 px, batch 4
  python benchmarks/train_bench.py --preset johnson --set net.width=0.5 --size 128 --steps 5

Measures, on all local devices (a 1-D mesh): the first step (compilation), then the median time
of ``--steps`` steps on an in-memory batch (compute only), the images/s that gives, the time the
data pipeline needs to decode one batch of the shared training photos on this host (synchronous,
so it is the cost prefetching has to hide), and the process' peak memory. Writes
``benchmarks/results/train_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import image_io
from nst_jax.core import data, sharding
from nst_jax.fast import nets, train_state, training


def _peak_memory_mb() -> dict:
  out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return out


def data_time(root, size: int, batch: int, batches: int = 3) -> float:
  """Seconds to decode one batch of the photos under ``root`` synchronously (median)."""
  if not root.is_dir():
    return float("nan")
  ds = data.FolderDataset(root, size=size, seed=0)
  times = []
  for step in range(batches):
    t0 = time.perf_counter()
    ds.get_batch(step, batch)
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=sorted(config.TRAIN_PRESETS), default="thesis")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--batch", type=int, default=4, help="global batch")
  p.add_argument("--steps", type=int, default=3, help="timed steps after the first")
  p.add_argument("--bf16", action="store_true")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="override of the preset (as `nst-jax train --set`); repeatable")
  bc.add_common_args(p, out=bc.RESULTS / "train_bench.json")
  args = p.parse_args(argv)
  cfg = config.TRAIN_PRESETS[args.preset]()
  cfg = config.override(cfg, {"size": args.size, "batch_size": args.batch, "bf16": args.bf16,
                              **config.parse_assignments(args.overrides)})
  mesh = sharding.make_mesh()
  vgg_params = sharding.replicate(mesh, bc.load_vgg(args))
  model, tx = nets.make_model(cfg.net, bf16=cfg.bf16), train_state.make_optimizer(cfg)
  style = image_io.load_image(bc.data_dir(args) / "styles" / "van_gogh_starry_night.jpg",
                              size=cfg.style_size)
  targets = jax.jit(training.make_style_targets, static_argnums=2,
                    out_shardings=sharding.replicated(mesh))(vgg_params, jnp.asarray(style)[None],
                                                             cfg.loss)
  state = train_state.init_train_state(model, tx, train_state.make_key(0), mesh)
  step = training.make_train_step(model, tx, cfg, mesh)
  key = sharding.replicate(mesh, train_state.make_key(0))
  batch = sharding.shard_batch(mesh, np.random.default_rng(0).uniform(
      size=(cfg.batch_size // jax.process_count(), cfg.size, cfg.size, 3)).astype(np.float32))
  t0 = time.perf_counter()
  state, metrics = step(state, batch, vgg_params, targets, key)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, vgg_params, targets, key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))
  report = {"benchmark": "train_step", "preset": args.preset, "size": cfg.size,
            "batch": cfg.batch_size, "bf16": cfg.bf16, "net_width": cfg.net.width,
            "params": nets.count_params({"params": state.params}),
            "style_layers": list(cfg.loss.style_layers), "devices": jax.device_count(),
            "first_step_s": first, "step_s_median": step_s, "step_s_all": times,
            "images_per_s": cfg.batch_size / step_s,
            "data_decode_s_per_batch": data_time(bc.data_dir(args) / "train", cfg.size,
                                                 cfg.batch_size),
            **_peak_memory_mb()}
  print(json.dumps(report, indent=2))
  bc.write_result(args.out, report, args)


if __name__ == "__main__":
  bc.run_main(main)
