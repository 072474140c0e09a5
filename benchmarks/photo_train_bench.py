"""Cost of a photorealistic training step against an artistic one, side by side in one process.

Usage::

  python benchmarks/photo_train_bench.py                     # 256 px, batch 4, full-width nets
  python benchmarks/photo_train_bench.py --size 128 --batch 2 --rounds 5 --set net.width=0.5

Three train steps are compiled on the same batch of shared training photos:

- ``artistic``: the thesis preset (rgb head; relu4_2 content, relu*_1 Gram style losses);
- ``photoreal_rgb``: the photoreal losses (content conv4_2, masked Grams at conv*_1 over 3
  automatic regions, the matting-Laplacian affine loss with the per-image Laplacian coefficients
  computed in the step) on the *same* rgb network: the extra cost of the losses alone;
- ``photoreal``: the photoreal preset as shipped (its "affine" head has no upsampling layers;
  the losses score the outputs after the smooth local affine step, ``photo.affine_output``);
- ``photoreal_raw_output``: the same, scoring the raw outputs (the preset before 2026-11-29).

With ``--ablation``, also the rgb network with the photoreal losses but no regions
(``photoreal_rgb_plain``) and with regions but no affine loss (``photoreal_rgb_masked``), to see
which piece costs what.

Then ``--rounds`` rounds each time ``--steps`` steps of every variant in turn (interleaved, so a
change in machine load hits all of them), and the median seconds per step are reported with the
ratios to ``artistic``. Writes ``benchmarks/results/photo_train_bench.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import bench_common as bc
import jax
import numpy as np

from nst_jax import config
from nst_jax.core import image_io
from nst_jax.core import data, sharding
from nst_jax.fast import nets, train_state, training


def variants(args) -> dict[str, config.TrainConfig]:
  common = {"size": args.size, "batch_size": args.batch, "style_size": args.size,
            **config.parse_assignments(args.overrides)}
  photo = config.override(config.photoreal(), common)
  rgb = dataclasses.replace(photo, net=dataclasses.replace(photo.net, output="rgb"))
  out = {"artistic": config.override(config.thesis(), common), "photoreal_rgb": rgb,
         "photoreal": photo,
         "photoreal_raw_output": dataclasses.replace(
             photo, photo=dataclasses.replace(photo.photo, affine_output=0.0))}
  if args.ablation:
    out["photoreal_rgb_plain"] = dataclasses.replace(
        rgb, photo=dataclasses.replace(rgb.photo, regions=0, affine_weight=0.0))
    out["photoreal_rgb_masked"] = dataclasses.replace(
        rgb, photo=dataclasses.replace(rgb.photo, affine_weight=0.0))
  return out


def build(cfg, mesh, vgg_params, style, dataset):
  """A zero-argument callable running one train step of ``cfg`` on a fixed batch."""
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  targets = sharding.replicate(mesh, training.setup_style_targets(cfg, vgg_params, style, dataset))
  step = training.make_train_step(model, tx, cfg, mesh)
  key = sharding.replicate(mesh, train_state.make_key(0))
  batch = sharding.shard_batch(mesh, dataset.get_batch(1, cfg.batch_size))
  box = {"state": train_state.init_train_state(model, tx, train_state.make_key(0), mesh)}

  def run():
    box["state"], metrics = step(box["state"], batch, vgg_params, targets, key)
    jax.block_until_ready(metrics)

  return run


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--ablation", action="store_true", help="also time the losses' pieces")
  p.add_argument("--style", default=None, help="style photo (default: photo/style/tar1.png)")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="override of every variant's config (as `nst-jax train --set`); repeatable")
  bc.add_common_args(p, out=bc.RESULTS / "photo_train_bench.json")
  args = p.parse_args(argv)
  mesh = sharding.make_mesh()
  vgg_params = sharding.replicate(mesh, bc.load_vgg(args))
  style = image_io.load_image(args.style or bc.data_dir(args) / "photo" / "style" / "tar1.png",
                              size=args.size)
  dataset = data.FolderDataset(bc.data_dir(args) / "train", size=args.size, seed=0)
  runs, first = {}, {}
  for name, cfg in variants(args).items():
    runs[name] = build(cfg, mesh, vgg_params, style, dataset)
    t0 = time.perf_counter()
    runs[name]()
    first[name] = time.perf_counter() - t0
  times = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      for _ in range(args.steps):
        t0 = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - t0)
  median = {k: float(np.median(v)) for k, v in times.items()}
  report = {"benchmark": "photo_train_step", "size": args.size, "batch": args.batch,
            "overrides": args.overrides, "first_step_s": first, "step_s_median": median,
            "step_s_all": times, "ratio_to_artistic": {k: v / median["artistic"]
                                                       for k, v in median.items()},
            "devices": jax.device_count()}
  print(json.dumps({k: report[k] for k in ("size", "batch", "step_s_median",
                                           "ratio_to_artistic")}, indent=2))
  bc.write_result(args.out, report, args)


if __name__ == "__main__":
  bc.run_main(main)
