"""Zoo quality: a style network's loss against 50 L-BFGS-B iterations, per style (issue 20, sec. 3).

Synopsis::

  python3 benchmarks/zoo_quality.py --model starry_small                       # 10 photos, 256 px
  python3 benchmarks/zoo_quality.py --model zoo8 --styles 0 3 --photos 3 --iters 50
  python3 benchmarks/zoo_quality.py --model zoo8 --update-manifest   # metrics into MANIFEST.json
  python3 benchmarks/zoo_quality.py --model arbitrary   # all 13 paintings (arbitrary_quality.py)

For each style of the model and each of ``--photos`` content photos (``SHARED/content``, none in
the training set; ``--size`` px long side), the network's output and the result of ``--iters``
L-BFGS-B iterations started from the photo (``nst_jax.slow.artistic`` with the network's own
``LossConfig`` and its style image at the training ``style_size``) are scored under the same
objective: the network's training loss (content against the photo, Gram style, TV). The goal:
``net / lbfgs <= 1`` (Johnson et al. report their networks equal 50-100 iterations). The result
JSON has one row per (style, photo) and a summary per style.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import bench_common as bc
from nst_jax import config
from nst_jax.core import image_io, zoo
from nst_jax.fast import inference, multistyle, nets, training
from nst_jax.slow import artistic

PHOTOS = bc.QUALITY_PHOTOS
loss_of = bc.quality_loss  # the objective's terms of one output against its photo


def style_image_path(data: Path, entry_style: dict, cfg) -> Path:
  """The style image of one of the model's styles: the training path, else SHARED/styles."""
  for p in multistyle.style_paths(cfg):
    if Path(p).stem == entry_style["name"] and Path(p).is_file():
      return Path(p)
  return data / "styles" / f"{entry_style['name']}.jpg"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=None)
  p.add_argument("--model", required=True, help="a shipped name, .npz or training workdir")
  p.add_argument("--styles", type=int, nargs="*", default=None, help="style indices (default all)")
  p.add_argument("--photos", type=int, default=10, help=f"how many of {len(PHOTOS)} photos")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--iters", type=int, default=50, help="L-BFGS-B iterations")
  p.add_argument("--update-manifest", action="store_true",
                 help="write the per-style summary into the model's MANIFEST.json metrics")
  p.add_argument("--out", default=None, help="JSON results (default benchmarks/results/"
                 "zoo_quality_<model>.json)")
  args = p.parse_args(argv)
  if args.model == "arbitrary":
    return score_arbitrary(args)
  vgg_params, data = bc.load_vgg(args), bc.data_dir(args)
  stylizer = inference.Stylizer.from_any(args.model)
  cfg = nets.config_from_dict(stylizer.meta["config"])
  styles = stylizer.meta.get("styles") or [{"name": n} for n in stylizer.style_names]
  photos = [image_io.load_image(data / "content" / f, size=args.size)
            for f in PHOTOS[:args.photos]]
  slow_cfg = dataclasses.replace(config.gatys(), loss=cfg.loss, size=args.size, init="content",
                                 optim=dataclasses.replace(config.gatys().optim,
                                                           num_iters=args.iters))
  rows, summary = [], {}
  for s in (args.styles if args.styles is not None else range(len(styles))):
    style = image_io.load_image(style_image_path(data, styles[s], cfg), size=cfg.style_size)
    targets = training.make_style_targets(vgg_params, jnp.asarray(style)[None], cfg.loss)
    stylizer.set_style(index=s)
    ratios = []
    for name, photo in zip(PHOTOS, photos):
      t0 = time.perf_counter()
      fast = stylizer(photo)
      t_fast = time.perf_counter() - t0
      t0 = time.perf_counter()
      slow = artistic.stylize(vgg_params, [artistic.Problem(photo, (style,))], slow_cfg,
                              progress=False).images[0]
      t_slow = time.perf_counter() - t0
      net, ref = (loss_of(vgg_params, x, photo, targets, cfg.loss) for x in (fast, slow))
      ratios.append(net["total"] / ref["total"])
      rows.append({"style": styles[s]["name"], "photo": name, "net": net, "lbfgs": ref,
                   "ratio": ratios[-1], "seconds_net": t_fast, "seconds_lbfgs": t_slow})
      print(f"{styles[s]['name']:<34} {name:<28} net {net['total']:10.4g}  "
            f"lbfgs{args.iters} {ref['total']:10.4g}  ratio {ratios[-1]:.2f}", flush=True)
    summary[styles[s]["name"]] = {"ratio_mean": float(np.mean(ratios)),
                                  "ratio_max": float(np.max(ratios)), "photos": len(ratios),
                                  "size": args.size, "lbfgs_iters": args.iters}
  for name, row in summary.items():
    print(f"{name:<34} mean ratio {row['ratio_mean']:.2f} (max {row['ratio_max']:.2f})")
  out = args.out or bc.RESULTS / f"zoo_quality_{Path(str(args.model)).stem}.json"
  bc.write_result(out, {"model": str(args.model), "rows": rows, "summary": summary}, args)
  if args.update_manifest:
    update_metrics(str(args.model), summary)
  return 0


def score_arbitrary(args) -> int:
  """The arbitrary-style network on every shared painting: ``arbitrary_quality.py``'s L-BFGS-B
  references, then the network before and after refinement, then the table (scripts do not
  import each other: each step is a run of that script), with this script's photos, size and
  iterations; ``--styles`` is not used (all paintings)."""
  script = [sys.executable, str(Path(__file__).with_name("arbitrary_quality.py"))]
  common = ["--photos", str(args.photos), "--size", str(args.size), "--iters", str(args.iters)]
  common += [f"--{k.replace('_', '-')}={v}" for k in ("vgg_weights", "data_dir")
             if (v := getattr(args, k, None))]
  out = ["--out", args.out] if args.out else []
  for step in (["refs", *common], ["score", *common, *out, "--norms"],  # BENCHMARKS' settings
               ["report", *common, *out, *(["--update-manifest"] if args.update_manifest else [])]):
    code = subprocess.run(script + step, check=False).returncode
    if code:
      return code
  return 0


def update_metrics(name: str, summary: dict) -> None:
  """Merges ``summary`` (per style) into the manifest entry ``name``'s ``metrics``."""
  import json  # pylint: disable=import-outside-toplevel
  entries = zoo.read_manifest()
  for e in entries:
    if e["name"] == name:
      e["metrics"] = {"loss_ratio_vs_lbfgs": {**e.get("metrics", {}).get(
          "loss_ratio_vs_lbfgs", {}), **summary}}
  zoo.MANIFEST.write_text(json.dumps({"models": entries}, indent=2) + "\n")


if __name__ == "__main__":
  bc.run_main(main)
