"""``nst-jax train``: train a feed-forward style network (Johnson et al. 2016); resumable.

Synopsis::

  nst-jax train --style starry.jpg --data ../shared/data/train --workdir runs/starry
  nst-jax train --style a.jpg b.jpg c.jpg --data DIR --workdir runs/abc   # one multi-style net
  nst-jax train --add-style d.jpg --from runs/abc --data DIR --workdir runs/abcd --set \
      num_steps=500       # fit only the new style's normalization rows (Dumoulin et al. 2017)
  nst-jax train --style starry.jpg --data DIR --workdir W --preset johnson --set num_steps=2000 \\
      --set net.width=0.5 --set loss.style_weight=5e-5
  nst-jax train --preset photoreal --style tar1.png --data DIR --workdir runs/photo1
  nst-jax train ... --distributed          # on every host of a multi-host run
  nst-jax train --config runs/starry/config.json --workdir runs/starry2   # the same run again
  nst-jax train --preset johnson --set help --workdir W   # every key with its value
  nst-jax train --preset arbitrary --style PAINTINGS/ --data PHOTOS/ --workdir runs/any \
      --set num_steps=2000    # fine-tune Ghiasi et al.'s networks (after `models import magenta`)
  nst-jax stylize --model runs/any --style-image PAINTING --content IMG --out DIR

Re-running the same command resumes from the newest checkpoint in the workdir. An arbitrary-style
run also exports WORKDIR/arbitrary.npz at the end (a model file: ``stylize --model FILE``); its
``--config WORKDIR/config.json`` needs ``--preset arbitrary`` (another config class).
"""

from __future__ import annotations

import argparse
import logging
import sys

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import paths

HELP = "train a fast (feed-forward) style network; re-run to resume"
DEFAULT_PRESET = "thesis"
ARBITRARY = "arbitrary"  # the preset whose config is an ArbitraryTrainConfig
# Flag (argparse dest) -> TrainConfig key.
FLAGS = common.field_flags(config.TrainConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--style", nargs="+", metavar="IMAGE",
                      help="the style image, or several for one multi-style network "
                      "(conditional instance norm); with --preset arbitrary, folders of "
                      "paintings and/or paintings; required unless --config or --add-style")
  parser.add_argument("--add-style", nargs="+", metavar="IMAGE",
                      help="add these styles to the trained network --from (fits only their "
                      "normalization parameters; the rest is frozen)")
  parser.add_argument("--from", dest="base_model", metavar="MODEL",
                      help="with --add-style: a training workdir, model file or shipped name")
  common.add_field_flags(parser, config.TrainConfig)
  parser.add_argument("--workdir", required=True,
                      help="the run's folder: checkpoints, config.json, losses, TensorBoard")
  parser.add_argument("--vgg-weights", metavar="PATH",
                      help=f"the loss network's weights .npz: VGG19 (default: "
                      f"${paths.WEIGHTS_ENV}, then the cache), or VGG16 with "
                      "--set loss.loss_network=vgg16 (default: the cache of `nst-jax weights "
                      "import`)")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host: call jax.distributed.initialize() first (set "
                      "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or use "
                      "SLURM / Cloud TPU)")
  parser.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar")
  common.add_config_flags(
      parser, "TrainConfig", presets=config.TRAIN_PRESETS, default_preset=DEFAULT_PRESET,
      preset_help="thesis (instance norm, relu4_2 + relu*_1), johnson (the paper), photoreal "
      "(fast photorealistic transfer: affine head, masked style over automatic regions, "
      "matting-Laplacian loss; --style is a photo), arbitrary (Ghiasi et al.'s any-painting "
      "networks on (photo, painting) pairs, fine-tuned from `models import magenta`; --style: "
      "painting folders), smoke (a tiny test run); e.g. --set "
      "num_steps=2000 --set net.width=0.5 --set bf16=true",
      saved="the WORKDIR/config.json every run writes", example="num_steps=2000, net.width=0.5")


def style_overrides(args: argparse.Namespace) -> dict:
  """``--style``: one image -> ``style``; several -> ``styles`` and ``net.num_styles``; with
  ``--preset arbitrary``, the painting folders and files -> ``styles``."""
  images = getattr(args, "style", None)
  if not images:
    return {}
  if args.preset == ARBITRARY:
    return {"styles": tuple(images)}
  if len(images) == 1:
    return {"style": images[0], "styles": ()}
  return {"style": "", "styles": tuple(images), "net.num_styles": len(images)}


def resolve_config(args: argparse.Namespace) -> config.TrainConfig:
  """The preset (or, with ``--add-style``, the ``--from`` network's config) < --config <
  ``--style``/``--data`` < ``--set`` (unchecked)."""
  base = config.TRAIN_PRESETS[args.preset]()
  flags = {**style_overrides(args), **common.flag_overrides(args, FLAGS)}
  if getattr(args, "add_style", None):
    base, flags = add_style_config(args, flags)
  return common.resolve_config(args, base, flags)


def add_style_config(args: argparse.Namespace, flags: dict) -> tuple[config.TrainConfig, dict]:
  """The base network's own training config, and overrides that add ``--add-style``'s images."""
  # pylint: disable=import-outside-toplevel  (JAX only when the command runs)
  from nst_jax.core.errors import UserError
  from nst_jax.fast import inference, nets
  if not args.base_model or getattr(args, "style", None):
    raise UserError("--add-style needs --from MODEL (and no --style)")
  base = inference.Stylizer.from_any(args.base_model)
  if "config" not in base.meta:
    raise UserError(f"{args.base_model} has no training config to continue from")
  cfg = nets.config_from_dict(base.meta["config"])
  new = tuple(args.add_style)
  return cfg, {**flags, "style": "", "styles": new, "base_model": str(args.base_model),
               "net.num_styles": cfg.net.num_styles + len(new),
               "data": flags.get("data", cfg.data)}


def build_config(args: argparse.Namespace) -> config.TrainConfig | config.ArbitraryTrainConfig:
  """``resolve_config``, validated (``config.ConfigError`` naming the key; ``UserError`` for an
  arbitrary-style run without photos or paintings)."""
  from nst_jax.fast import multistyle  # pylint: disable=import-outside-toplevel
  cfg = resolve_config(args)
  if isinstance(cfg, config.ArbitraryTrainConfig):
    from nst_jax.fast import arbitrary_train  # pylint: disable=import-outside-toplevel
    arbitrary_train.check_config(cfg)
    return cfg
  if not multistyle.style_paths(cfg):
    raise config.ConfigError("style", "is required (give it, or a --config that has it)")
  if not cfg.data:
    raise config.ConfigError("data", "is required (give it, or a --config that has it)")
  return cfg.check()


def run(args: argparse.Namespace) -> int:
  # pylint: disable=import-outside-toplevel  (JAX only when the command runs)
  from nst_jax.core import checkpoint, vgg16_weights
  from nst_jax.core import sharding
  from nst_jax.fast import arbitrary_train, training
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save info lines
  sharding.maybe_initialize_distributed(args.distributed)
  cfg = build_config(args)
  vgg_params = vgg16_weights.load_loss_network(cfg.loss.loss_network, args.vgg_weights)
  start = checkpoint.latest_step(args.workdir)
  if start is not None and sharding.is_main_process():
    print(f"resuming {args.workdir} from step {start}", file=sys.stderr)
  arbitrary = isinstance(cfg, config.ArbitraryTrainConfig)
  trainer = arbitrary_train if arbitrary else training
  state = trainer.train_and_evaluate(cfg, args.workdir, vgg_params=vgg_params,
                                     progress=args.progress)
  if sharding.is_main_process() and arbitrary:
    print(f"trained {int(state.step)} steps; model file {args.workdir}/arbitrary.npz (stylize "
          f"with: nst-jax stylize --model {args.workdir} --style-image PAINTING --content IMG "
          "--out DIR)")
  elif sharding.is_main_process():
    print(f"trained {int(state.step)} steps; checkpoints in {args.workdir}/checkpoints "
          f"(stylize with: nst-jax stylize --model {args.workdir} --content IMG --out DIR)")
  return 0
