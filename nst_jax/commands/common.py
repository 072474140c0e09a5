"""Flags and helpers shared by the subcommands: weights, loss options, outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_jax import image_io, paths, vgg
from nst_jax.errors import UserError


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
