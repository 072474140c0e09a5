"""A trained fast network against per-image optimization of the same loss (Johnson et al., Fig. 5).

Usage::

  python benchmarks/fast_vs_optimize.py --model runs/starry --size 128 --photos 2
  python benchmarks/fast_vs_optimize.py --model W --content a.jpg b.jpg --iters 50 100 300 500

For held-out photos (default: the first ``--photos`` Kodak images, which are not in the training
set) it computes the perceptual loss of the network's output (the loss it was trained with,
read from the checkpoint's config) and the loss of L-BFGS-B on the pixels, started from the
photo, after each of ``--iters`` iterations. Johnson et al. report their network matching about
50-100 iterations of optimization. Writes ``benchmarks/results/fast_vs_optimize.json`` and prints
a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import image_io
from nst_jax.fast import inference, nets, training
from nst_jax.slow import optimize


def make_loss_fn(loss_cfg):
  """``(x [1, H, W, 3], vgg_params, aux) -> (total, terms)``, the training loss of one image."""

  def loss_fn(x, vgg_params, aux):
    terms = training.perceptual_loss_terms(vgg_params, x, aux["photo"], aux["style"], loss_cfg)
    return jnp.sum(terms["total"]), terms

  return loss_fn


def compare_one(photo: np.ndarray, stylizer, vgg_params, style_targets, cfg, iters) -> dict:
  """The network's loss and the optimizer's loss after each count in ``iters`` for one photo."""
  loss_fn = make_loss_fn(cfg.loss)
  aux = {"photo": jnp.asarray(photo)[None], "style": style_targets}
  t0 = time.perf_counter()
  fast = stylizer(photo)
  fast_s = time.perf_counter() - t0
  net_loss = float(jax.jit(loss_fn)(jnp.asarray(fast)[None], vgg_params, aux)[0])
  opt_cfg = config.OptimConfig(optimizer="lbfgsb", num_iters=max(iters) + 1, chunk=25)
  t0 = time.perf_counter()
  result = optimize.run(loss_fn, aux["photo"], vgg_params, aux, opt_cfg, progress=False)
  opt_s = time.perf_counter() - t0
  total = np.asarray(result.history["total"]).reshape(-1)  # [iterations]: loss of iterate i
  return {"hw": list(photo.shape[:2]), "net_loss": net_loss, "net_seconds": fast_s,
          "photo_loss": float(total[0]),
          "lbfgs_loss": {str(n): float(total[min(n, len(total) - 1)]) for n in iters},
          "lbfgs_seconds_total": opt_s, "lbfgs_iterations_run": int(result.iterations),
          "matched_at": next((n for n in range(len(total)) if total[n] <= net_loss), None)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", required=True, help="a training workdir")
  p.add_argument("--content", nargs="*", help="held-out photos (default: Kodak images)")
  p.add_argument("--photos", type=int, default=2, help="how many Kodak photos by default")
  p.add_argument("--size", type=int, default=128, help="long side of the photos")
  p.add_argument("--iters", type=int, nargs="+", default=[50, 100, 300, 500])
  bc.add_common_args(p, out=bc.RESULTS / "fast_vs_optimize.json")
  args = p.parse_args(argv)
  stylizer = inference.Stylizer.from_checkpoint(args.model)
  cfg = nets.config_from_dict(stylizer.meta["config"])
  vgg_params = bc.load_vgg(args)
  style = image_io.load_image(cfg.style, size=cfg.style_size)
  style_targets = training.make_style_targets(vgg_params, jnp.asarray(style)[None], cfg.loss)
  files = args.content or sorted(
      str(f) for f in (bc.data_dir(args) / "content" / "kodak").glob("*.jpg"))[:args.photos]
  rows = []
  for f in files:
    photo = image_io.load_image(f, size=args.size)
    rows.append(dict(compare_one(photo, stylizer, vgg_params, style_targets, cfg, args.iters),
                     photo=Path(f).name))
    print(f"{Path(f).name}: net {rows[-1]['net_loss']:.4g}, "
          f"L-BFGS {rows[-1]['lbfgs_loss']}", flush=True)
  report = {"benchmark": "fast_vs_optimize", "model": args.model, "step": stylizer.meta["step"],
            "loss": dataclasses.asdict(cfg.loss), "size": args.size, "rows": rows}
  bc.write_result(args.out, report, args)
  print("| photo | photo itself | fast net | " + " | ".join(f"L-BFGS {n}" for n in args.iters)
        + " | L-BFGS matches the net at |")
  print("|---" * (4 + len(args.iters)) + "|")
  for r in rows:
    print(f"| {r['photo']} | {r['photo_loss']:.4g} | {r['net_loss']:.4g} | "
          + " | ".join(f"{r['lbfgs_loss'][str(n)]:.4g}" for n in args.iters)
          + f" | {r['matched_at']} |")


if __name__ == "__main__":
  bc.run_main(main)
