"""Flags and helpers shared by the subcommands: configs, weights, loss options, outputs.

Every command that runs a config builds it the same way (``resolve_config``), each later source
replacing fields of the earlier ones::

  preset (--preset) < saved config (--config FILE.json) < explicit flags < --set KEY=VALUE

and writes the resolved config next to its output (``write_config``), so ``--config`` reproduces
the run. This module imports no JAX: ``nst-jax COMMAND --help`` stays fast, and the commands import
the library inside ``run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from nst_jax import config
from nst_jax.core import image_io, paths
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
  from nst_jax.core import vgg  # pylint: disable=import-outside-toplevel  (imports JAX)
  return vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))


# How a flag_field's ``type`` is parsed (config.FLAG_TYPES).
FLAG_TYPES = {"non_negative": non_negative_float, "positive": positive_int, "int": int,
              "float": float}


def field_flags(cls, prefix: str = "") -> dict[str, str]:
  """Flag (argparse dest) -> dotted config key, for every ``config.flag_field`` of ``cls``."""
  return {(f.metadata["flag"]["name"] or f.name).replace("-", "_"): prefix + f.name
          for f in dataclasses.fields(cls) if "flag" in f.metadata}


def add_field_flags(group, cls, only: tuple[str, ...] = ()) -> None:
  """Adds one flag per ``config.flag_field`` of the config class ``cls`` to ``group``: its name,
  help, type, choices and metavar from the field; its default None (the config's value applies,
  ``annotate_defaults`` shows it). ``only``: just these fields, in this order."""
  fields = {f.name: f for f in dataclasses.fields(cls) if "flag" in f.metadata}
  for f in [fields[name] for name in only] if only else fields.values():
    spec = f.metadata["flag"]
    names = [f"--{spec['name'] or f.name.replace('_', '-')}", *(f"--{a}" for a in spec["aliases"])]
    kwargs = {"help": spec["help"]}
    if spec["type"] in ("bool", "switch"):
      kwargs["action"] = {"bool": argparse.BooleanOptionalAction, "switch": "store_true"}[
          spec["type"]]
      kwargs["default"] = None
    elif spec["type"]:
      kwargs["type"] = FLAG_TYPES[spec["type"]]
    if spec["const"] is not None:
      kwargs.update(nargs="?", const=spec["const"])
    if spec["choices"]:
      kwargs["choices"] = spec["choices"]
    if spec["metavar"]:
      kwargs["metavar"] = spec["metavar"]
    group.add_argument(*names, **kwargs)


def add_loss_flags(parser: argparse.ArgumentParser) -> None:
  add_field_flags(parser.add_argument_group("loss (neural-style vocabulary)"), config.LossConfig)


def add_optim_flags(parser: argparse.ArgumentParser) -> None:
  add_field_flags(parser.add_argument_group("optimizer"), config.OptimConfig)


# Flag (argparse dest) -> config key, of the loss and optimizer flags above.
LOSS_FLAGS = field_flags(config.LossConfig, "loss.")
OPTIM_FLAGS = field_flags(config.OptimConfig, "optim.")


def flag_overrides(args, flags: dict[str, str]) -> dict:
  """Dotted config overrides from the flags the user gave (None: keep the earlier value).

  ``--content-layers``/``--style-layers`` without their ``--*-layer-weights`` weigh every layer 1.
  """
  out = {key: getattr(args, dest) for dest, key in flags.items()
         if getattr(args, dest, None) is not None}
  for kind in ("content", "style"):
    layers, weights = getattr(args, f"{kind}_layers", None), f"{kind}_layer_weights"
    if layers and weights in flags and getattr(args, weights, None) is None:
      out[flags[weights]] = ",".join(["1"] * len(layers.split(",")))
  return out


# ------------------------------------------------------------------------------- configuration
def describe_presets(presets: dict) -> str:
  """"name: its docstring; ..." for a ``--preset`` help."""
  return "; ".join(f"{name}: {' '.join((fn.__doc__ or '').split())}"
                   for name, fn in sorted(presets.items()))


def add_config_flags(parser: argparse.ArgumentParser, config_name: str, *,
                     presets: dict | None = None, default_preset: str | None = None,
                     preset_help: str | None = None, module: str | None = None,
                     saved: str = "the <out>_config.json every run writes",
                     example: str = "loss.style_weight=1e-2", base: str = "the defaults"):
  """--preset (with ``presets``), --config FILE.json and --set KEY=VALUE; returns the group.

  ``config_name`` is the config's class, defined in ``module`` (default: its module in
  ``nst_jax/config/``).
  """
  module = module or getattr(config, config_name).__module__.replace(".", "/") + ".py"
  g = parser.add_argument_group(
      "configuration", f"a {config_name} ({module}), built as: "
      + ("--preset < " if presets else f"{base} < ")
      + "--config < the flags above < --set")
  if presets:
    g.add_argument("--preset", choices=sorted(presets), default=default_preset,
                   help=preset_help or describe_presets(presets))
  g.add_argument("--config", metavar="FILE.json",
                 help=f"start from a saved config, e.g. {saved} (fields it leaves out keep "
                 "their earlier values; default: none)")
  g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help=f"set any field of the {config_name} (repeatable; keys such as "
                 f"{example}, type-checked; the fields and their meaning: "
                 f"{module}, {config_name}); '--set help' lists every key with its "
                 "value for this command")
  return g


def _flatten(data: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for key, value in data.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def load_config_file(cfg, path: str):
  """``cfg`` with the fields of a saved config (``config.to_json``) replacing its own."""
  try:
    text = Path(path).read_text()
  except OSError as e:
    raise UserError(f"cannot read --config {path}: {e.strerror or e}") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserError(f"--config {path} is not a saved config (bad JSON: {e})") from None
  if not isinstance(data, dict):
    raise UserError(f"--config {path} is not a saved config (not a JSON object)")
  return config.override(cfg, _flatten(data))


def resolve_config(args, base, flags: dict):
  """The command's config: ``base`` (the preset) < ``--config`` < explicit flags < ``--set``.

  Args:
    args: the parsed arguments, with ``config`` and ``overrides`` (``add_config_flags``).
    base: the starting config (the preset's).
    flags: dotted key -> value of the explicit flags the user gave (``flag_overrides``).

  Raises:
    config.ConfigError: for an unknown key (listing the valid ones) or a badly typed value.
  """
  cfg = base
  if getattr(args, "config", None):
    cfg = load_config_file(cfg, args.config)
  cfg = config.override(cfg, flags)
  try:
    assignments = config.parse_assignments(getattr(args, "overrides", ()))
  except config.ConfigError as e:  # its key is the malformed item
    raise UserError(f"--set expects KEY=VALUE, got {e.key!r}") from None
  return config.override(cfg, assignments)


def wants_key_help(args) -> bool:
  """``--set help``: list the keys instead of running."""
  return "help" in (getattr(args, "overrides", None) or ())


def format_keys(cfg) -> str:
  """One ``key = value`` line per config key (what ``--set help`` prints)."""
  lines = []
  for key in config.keys(cfg):
    value = cfg
    for part in key.split("."):
      value = getattr(value, part)
    lines.append(f"{key} = {format_value(value)}")
  return "\n".join(lines)


def format_value(value) -> str:
  """A config value as ``--set`` takes it (tuples comma-joined)."""
  text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
  return text or "''"


def config_path(out: Path) -> Path:
  """Where a run with output ``out`` writes its resolved config: ``<out>_config.json``."""
  return sibling(out, "_config.json")


def write_config(path: Path, cfg) -> Path:
  """Writes ``cfg`` as JSON (atomically: a reader never sees half a file)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(config.to_json(cfg) + "\n")
  os.replace(tmp, path)
  return path


def annotate_defaults(parser: argparse.ArgumentParser, flags: dict[str, str], base,
                      preset: str = "") -> None:
  """Appends "(default: VALUE[, from the preset NAME])" to the help of every flag in ``flags``
  whose default is None (the config's value applies), from the config ``base``."""
  for action in parser._actions:  # pylint: disable=protected-access
    if action.dest in flags and action.default is None:
      value = base
      for part in flags[action.dest].split("."):
        value = getattr(value, part)
      where = f", from the preset {preset}" if preset else ""
      action.help = f"{action.help or ''} (default: {format_value(value)}{where})".strip()


class HelpFormatter(argparse.HelpFormatter):
  """Shows every option's default: "(default: X)" unless its help already says one."""

  def _get_help_string(self, action):
    text = action.help or ""
    if action.default is False and "default" not in text:
      return f"{text} (default: off)".strip()
    if ("default" in text or action.default is None
        or action.default in ([], argparse.SUPPRESS) or not action.option_strings):
      return text
    return f"{text} (default: %(default)s)".strip()


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
  o.add_argument("--no-progress", action="store_true", help="no progress bar")
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
