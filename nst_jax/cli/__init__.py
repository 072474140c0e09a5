"""The ``nst-jax`` command: argument parsing -> one library call per subcommand.

Each subcommand lives in ``nst_jax/cli/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. User errors (``UserError``) become one line on
stderr and exit code 2; Ctrl-C exits with 130 after the command has saved what it can.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nst_jax import config
from nst_jax.core.errors import UserError

# Subcommand name -> module under nst_jax.cli.
COMMANDS = {
    "optimize": "optimize",
    "texture": "texture",
    "reconstruct": "reconstruct",
    "visualize": "visualize",
    "weights": "weights",
    "train": "train",
    "stylize": "stylize",
    "photo": "photo",
    "sr": "sr",
    "upscale": "upscale",
}


class _Parser(argparse.ArgumentParser):
  """argparse that reports bad flags on one line with exit code 2 (its own convention too)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="nst-jax", description="Neural style transfer in JAX.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  for name, module_name in COMMANDS.items():
    try:
      module = importlib.import_module(f"nst_jax.cli.{module_name}")
    except ModuleNotFoundError as e:
      if e.name == f"nst_jax.cli.{module_name}":
        continue  # not built yet
      raise
    p = sub.add_parser(name, help=module.HELP, description=module.HELP)
    module.add_arguments(p)
    p.set_defaults(_run=module.run, _parser=p)
  return parser


def describe_config_error(e: config.ConfigError, parser: argparse.ArgumentParser) -> str:
  """A library ``ConfigError`` (which names a config key) in terms of the command's flags: the
  flag that sets the key when there is one, else ``--set KEY``."""
  flag = "--" + e.key.split(".")[-1].replace("_", "-")
  known = {s for action in parser._actions for s in action.option_strings}  # pylint: disable=protected-access
  where = f"{flag} ({e.key})" if flag in known else f"--set {e.key}"
  return " ".join(f"{where}: {e.message}".split())


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return int(args._run(args) or 0)
  except UserError as e:
    print(f"nst-jax {args.command}: error: {e}", file=sys.stderr)
    return e.exit_code
  except config.ConfigError as e:
    print(f"nst-jax {args.command}: error: {describe_config_error(e, args._parser)}",
          file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"nst-jax {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
