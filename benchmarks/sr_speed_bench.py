"""SR speed on the default device (a GPU when there is one): batched inference per image and
training patches/s (issue 18, sec. 7 GPU goals: x4 to 2048x2048 <= 10 ms per image batched;
training >= 500 patches/s at 288-px HR patches).

Usage::

  python3 benchmarks/sr_speed_bench.py                                   # GPU goal sizes
  python3 benchmarks/sr_speed_bench.py --lr-size 64 --batch 2 --train-batch 2 --train-size 96 \
      --repeats 2                                                       # a CPU smoke run

Inference: a batch of ``--batch`` LR images of ``--lr-size`` pixels through each ``--models``
network (shipped names, ``.npz`` or workdirs; ``Upscaler``'s network, jitted; float32, and
bfloat16 compute with ``--bf16``), the median of ``--repeats`` calls after a warm-up, reported
per image. Training: ``sr.training.make_train_step`` of each ``--train-presets`` preset at
``--train-size`` HR patches, batch ``--train-batch`` (the preset's loss: ``johnson`` has the
VGG16 feature loss), the median step time after two warm-up steps, as patches/s. Every timing
blocks on its result. Writes its JSON to ``--out`` (under
``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import engine, sharding
from nst_jax.sr import nets, training, upscale


def inference_row(model: str, lr_size: int, batch: int, repeats: int, bf16: bool) -> dict:
  up = upscale.Upscaler.load(model)
  cfg = up.cfg
  net = nets.make_net(cfg.net, cfg.scale)  # computes in the input's dtype
  fn = jax.jit(lambda v, x: nets.apply_net(net, v, x))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, lr_size, lr_size, 3)),
                  jnp.bfloat16 if bf16 else jnp.float32)
  t0 = time.perf_counter()
  jax.block_until_ready(fn(up.variables, x))
  first = time.perf_counter() - t0
  s = bc.time_median(lambda: fn(up.variables, x), repeats, warmup=0)
  return {"model": model, "scale": cfg.scale, "lr_size": lr_size, "out_size": lr_size * cfg.scale,
          "batch": batch, "bf16": bf16, "first_call_s": first, "batch_ms": 1e3 * s,
          "ms_per_image": 1e3 * s / batch}


def train_row(preset: str, size: int, batch: int, repeats: int, vgg_weights) -> dict:
  cfg = dataclasses.replace(config.SR_PRESETS[preset](4), size=size, batch_size=batch)
  mesh = sharding.make_mesh()
  net, tx = nets.make_net(cfg.net, cfg.scale), training.make_optimizer(cfg)
  loss_params = sharding.replicate(mesh, training.load_loss_network(cfg.loss, vgg_weights))
  state = engine.init_train_state(functools.partial(nets.init_variables, net), tx,
                                  engine.make_key(0), mesh)
  step = training.make_train_step(net, tx, cfg, mesh)
  hr = sharding.shard_batch(mesh, np.random.default_rng(1).uniform(
      size=(batch, size, size, 3)).astype(np.float32))
  box = {"state": state}

  def one():
    box["state"], metrics = step(box["state"], hr, loss_params)
    return metrics["total"]

  t0 = time.perf_counter()
  jax.block_until_ready(one())
  first = time.perf_counter() - t0
  s = bc.time_median(one, repeats, warmup=1)
  return {"preset": preset, "size": size, "batch": batch, "devices": len(jax.devices()),
          "first_step_s": first, "step_ms": 1e3 * s, "patches_per_s": batch / s,
          "feature_weight": cfg.loss.feature_weight}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, data=False, out=bc.RESULTS / "sr_speed_bench.json")
  p.add_argument("--models", nargs="+", default=["sr_fast_x4", "sr_pixfeat_x4"])
  p.add_argument("--lr-size", type=int, default=512, help="LR side (x4: 2048-px outputs)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--bf16", action="store_true", help="also bfloat16 compute")
  p.add_argument("--train-presets", nargs="*", default=["fast", "johnson"])
  p.add_argument("--train-size", type=int, default=288)
  p.add_argument("--train-batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args(argv)
  rows = {"inference": [], "train": []}
  for model in args.models:
    for bf16 in (False, True) if args.bf16 else (False,):
      rows["inference"].append(inference_row(model, args.lr_size, args.batch, args.repeats, bf16))
      r = rows["inference"][-1]
      print(f"{model} x{r['scale']} -> {r['out_size']} px, batch {r['batch']}"
            f"{' bf16' if bf16 else ''}: {r['ms_per_image']:.2f} ms per image", flush=True)
  for preset in args.train_presets:
    rows["train"].append(train_row(preset, args.train_size, args.train_batch, args.repeats,
                                   getattr(args, "vgg_weights", None)))
    r = rows["train"][-1]
    print(f"train {preset} {r['size']} px, batch {r['batch']}: {r['patches_per_s']:.1f} "
          f"patches/s ({r['step_ms']:.1f} ms/step)", flush=True)
  bc.write_result(args.out, {"devices": [str(d) for d in jax.devices()], **rows}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
