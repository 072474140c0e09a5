"""Flags and helpers shared by the subcommands: weights, loss options, outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nst_jax.core import image_io, paths, vgg
from nst_jax.core.errors import UserError


def positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def non_negative_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not value >= 0 or value == float("inf"):
    raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text}")
  return value


def add_weights_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--vgg-weights", metavar="PATH",
                      help=f"VGG19 weights .npz (default: ${paths.WEIGHTS_ENV}, then the cache)")
  parser.add_argument("--max-pixels", type=positive_int, default=None,
                      help="refuse input images with more pixels than this (default 64M)")
  add_memory_flag(parser)


def add_memory_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--max-memory", type=float, default=None, metavar="GB",
                      help="refuse sizes whose estimated peak memory exceeds this (default: "
                      "$NST_JAX_MAX_MEMORY, else 80%% of the available memory)")


def load_vgg(args) -> dict:
  return vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))


def add_loss_flags(parser: argparse.ArgumentParser) -> None:
  g = parser.add_argument_group("loss (neural-style vocabulary)")
  g.add_argument("--content-weight", type=non_negative_float)
  g.add_argument("--style-weight", type=non_negative_float)
  g.add_argument("--tv-weight", type=non_negative_float)
  g.add_argument("--content-layers", metavar="L1,L2", help="e.g. relu4_2 (default)")
  g.add_argument("--content-layer-weights", metavar="W1,W2")
  g.add_argument("--style-layers", metavar="L1,L2", help="default relu1_1,...,relu5_1")
  g.add_argument("--style-layer-weights", metavar="W1,W2")
  g.add_argument("--style-loss", choices=("gram", "mean", "mean_std", "mmd_poly", "mmd_gauss"))
  g.add_argument("--pooling", choices=("avg", "max"))


def add_optim_flags(parser: argparse.ArgumentParser) -> None:
  g = parser.add_argument_group("optimizer")
  g.add_argument("--optimizer", choices=("lbfgsb", "lbfgs", "adam"))
  g.add_argument("--iters", type=int, help="iterations per level")
  g.add_argument("--learning-rate", "--lr", type=non_negative_float, help="Adam step size")
  g.add_argument("--chunk", type=positive_int, help="iterations per compiled chunk")


_LOSS_KEYS = ("content_weight", "style_weight", "tv_weight", "content_layers",
              "content_layer_weights", "style_layers", "style_layer_weights", "style_loss",
              "pooling")
_OPTIM_KEYS = {"optimizer": "optimizer", "iters": "num_iters", "learning_rate": "learning_rate",
               "chunk": "chunk"}


def loss_and_optim_overrides(args, prefix: str = "") -> dict:
  """Dotted config overrides from the flags the user gave (None = keep the preset's value)."""
  out = {}
  for key in _LOSS_KEYS:
    if getattr(args, key, None) is not None:
      out[f"{prefix}loss.{key}"] = getattr(args, key)
  for flag, key in _OPTIM_KEYS.items():
    if getattr(args, flag, None) is not None:
      out[f"{prefix}optim.{key}"] = getattr(args, flag)
  if ("content_layers" in vars(args) and args.content_layers and not args.content_layer_weights):
    out[f"{prefix}loss.content_layer_weights"] = ",".join(["1"] * len(args.content_layers.split(",")))
  if ("style_layers" in vars(args) and args.style_layers and not args.style_layer_weights):
    out[f"{prefix}loss.style_layer_weights"] = ",".join(["1"] * len(args.style_layers.split(",")))
  return out


def check_output_path(path: str | Path, kinds=image_io.IMAGE_SUFFIXES) -> Path:
  """Validates an output path before any work is done."""
  path = Path(path)
  if path.suffix.lower() not in kinds:
    raise UserError(f"unsupported output extension {path.suffix!r} for {path}; use one of "
                    f"{', '.join(kinds)}")
  if path.is_dir():
    raise UserError(f"output path is a directory: {path}")
  return path


def sibling(path: Path, suffix: str) -> Path:
  """out.png + "_losses.png" -> out_losses.png."""
  return path.with_name(path.stem + suffix)


def add_output_flags(parser: argparse.ArgumentParser, *, checkpoint: bool = True):
  """--loss-log, --loss-plot, --checkpoint-every and --no-progress; returns the group."""
  o = parser.add_argument_group("outputs")
  o.add_argument("--loss-log", metavar="PATH", help="loss history .csv or .json "
                 "(default <out>_losses.csv)")
  o.add_argument("--loss-plot", metavar="PATH", help="PNG of the loss curves "
                 "(default <out>_losses.png)")
  if checkpoint:
    o.add_argument("--checkpoint-every", type=positive_int, default=50, metavar="N",
                   help="save progress every N iterations; re-running the command resumes")
  o.add_argument("--no-progress", action="store_true")
  return o


def loss_output_paths(args, out: Path) -> tuple[Path, Path]:
  """The loss log and plot paths (validated before any work)."""
  log_path = Path(args.loss_log) if args.loss_log else sibling(out, "_losses.csv")
  plot_path = check_output_path(args.loss_plot or sibling(out, "_losses.png"), (".png",))
  return log_path, plot_path


def report_run(outs, result, log_path: Path, plot_path: Path, title: str,
               hide: tuple[str, ...] = ()) -> None:
  """Writes the loss history and plot of an optimization, then reports NaN (UserError) or success.

  The images themselves are saved by the caller before this, so that a NaN run keeps them.
  """
  from nst_jax.core import (
    plots,  # matplotlib is imported only when there is something to plot
  )
  if result.history and len(result.history["total"]):
    plots.save_history(log_path, result.history)
    plots.save_loss_plot(plot_path, result.history, boundaries=result.level_starts[1:],
                         title=title)
  if result.nan_at is not None:
    raise UserError(f"the loss became NaN/Inf at iteration {result.nan_at}; stopped and kept the "
                    f"last good image in {outs[0]} (lower the weights or the learning rate)")
  final = {k: float(v[-1]) for k, v in result.history.items() if k not in hide}
  print(f"wrote {', '.join(map(str, outs))} ({result.seconds:.1f}s optimizing; "
        + ", ".join(f"{k}={v:.4g}" for k, v in final.items()) + ")", file=sys.stderr)
