"""``nst-jax train``: train a feed-forward style network (Johnson et al. 2016); resumable.

Synopsis::

  nst-jax train --style starry.jpg --data ../shared/data/train --workdir runs/starry
  nst-jax train --style starry.jpg --data DIR --workdir W --preset johnson --set num_steps=2000 \\
      --set net.width=0.5 --set loss.style_weight=5e-5
  nst-jax train --preset photoreal --style tar1.png --data DIR --workdir runs/photo1
  nst-jax train ... --distributed          # on every host of a multi-host run

Re-running the same command resumes from the newest checkpoint in the workdir.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nst_jax import config
from nst_jax.core import checkpoint, paths, vgg
from nst_jax.core.errors import UserError
from nst_jax.fast import models, sharding, training

HELP = "train a fast (feed-forward) style network; re-run to resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--style", required=True, help="the style image")
  parser.add_argument("--data", required=True,
                      help="a folder of training photos (recursive), or tfds:NAME (e.g. "
                      "tfds:coco/2017, needs tensorflow-datasets)")
  parser.add_argument("--workdir", required=True,
                      help="the run's folder: checkpoints, config.json, losses, TensorBoard")
  parser.add_argument("--preset", choices=sorted(config.TRAIN_PRESETS), default="thesis",
                      help="thesis (instance norm, relu4_2 + relu*_1, default), johnson (the "
                      "paper), photoreal (fast photorealistic transfer: affine head, masked "
                      "style over automatic regions, matting-Laplacian loss; --style is a photo), "
                      "smoke (a tiny test run)")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. num_steps=2000, net.width=0.5, "
                      "loss.style_weight=1e-4, bf16=true (repeatable; the keys: nst_jax/config.py, TrainConfig)")
  parser.add_argument("--vgg-weights", metavar="PATH",
                      help=f"VGG19 weights .npz (default: ${paths.WEIGHTS_ENV}, then the cache)")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host: call jax.distributed.initialize() first (set "
                      "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or use "
                      "SLURM / Cloud TPU)")
  parser.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar")


def parse_overrides(items: list[str]) -> dict[str, str]:
  """["a.b=1", ...] -> {"a.b": "1"}; a malformed item is a ``UserError``."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise UserError(f"--set expects KEY=VALUE, got {item!r}")
    out[key.strip()] = value.strip()
  return out


def build_config(args: argparse.Namespace) -> config.TrainConfig:
  """The preset, then ``--style``/``--data``, then the ``--set`` overrides (type-checked)."""
  cfg = config.TRAIN_PRESETS[args.preset]()
  cfg = config.override(cfg, {"style": args.style, "data": args.data})
  cfg = config.override(cfg, parse_overrides(args.overrides))
  models.check_config(cfg)
  return cfg


def run(args: argparse.Namespace) -> int:
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save info lines
  sharding.maybe_initialize_distributed(args.distributed)
  cfg = build_config(args)
  vgg_params = vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))
  start = checkpoint.latest_step(args.workdir)
  if start is not None and sharding.is_main_process():
    print(f"resuming {args.workdir} from step {start}", file=sys.stderr)
  state = training.train_and_evaluate(cfg, args.workdir, vgg_params=vgg_params,
                                      progress=args.progress)
  if sharding.is_main_process():
    print(f"trained {int(state.step)} steps; checkpoints in {args.workdir}/checkpoints "
          f"(stylize with: nst-jax stylize --model {args.workdir} --content IMG --out DIR)")
  return 0
