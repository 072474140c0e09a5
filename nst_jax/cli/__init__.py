"""The ``nst-jax`` command: argument parsing -> one library call per subcommand.

Each subcommand lives in ``nst_jax/cli/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; a command that runs a config also exposes
``FLAGS`` (flag dest -> config key) and ``resolve_config(args)`` (``common.resolve_config``).
Command modules import the library (and so JAX) inside ``run``, so ``--help`` is fast. User
errors (``UserError``, ``config.ConfigError``) become one line on stderr and exit code 2; Ctrl-C
exits with 130 after the command has saved what it can.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nst_jax import config
from nst_jax.cli import common
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
    "video": "video",
    "sr": "sr",
    "upscale": "upscale",
    "models": "models",
    "serve": "serve",
    "worker": "worker",
}


class _Parser(argparse.ArgumentParser):
  """argparse that reports bad flags on one line with exit code 2 (its own convention too)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="nst-jax", description="Neural style transfer in JAX. "
                   "'nst-jax COMMAND --help' describes a command, its presets and defaults.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  for name, module_name in COMMANDS.items():
    try:
      module = importlib.import_module(f"nst_jax.cli.{module_name}")
    except ModuleNotFoundError as e:
      if e.name == f"nst_jax.cli.{module_name}":
        continue  # not built yet
      raise
    p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                       formatter_class=common.HelpFormatter)
    module.add_arguments(p)
    p.set_defaults(_run=module.run, _parser=p, _flags=getattr(module, "FLAGS", {}),
                   _resolve=getattr(module, "resolve_config", None))
  return parser


def describe_config_error(e: config.ConfigError, parser: argparse.ArgumentParser,
                          flags: dict[str, str] | None = None) -> str:
  """A library ``ConfigError`` (which names a config key) in terms of the command's flags: the
  flag that sets the key when there is one (``flags``: dest -> key, else the key's last part),
  else ``--set KEY``."""
  actions = parser._actions  # pylint: disable=protected-access
  dests = [d for d, k in (flags or {}).items() if k == e.key]
  named = [a.option_strings[0] for a in actions if a.dest in dests and a.option_strings]
  flag = named[0] if named else "--" + e.key.split(".")[-1].replace("_", "-")
  known = {s for action in actions for s in action.option_strings}
  where = f"{flag} ({e.key})" if flag in known else f"--set {e.key}"
  return " ".join(f"{where}: {e.message}".split())


def _asks_key_help(argv: list[str]) -> bool:
  """``--set help`` (or ``--set=help``) anywhere in ``argv``."""
  pairs = zip(argv, argv[1:] + [""])
  return any((a == "--set" and b == "help") or a == "--set=help" for a, b in pairs)


def _parse_for_key_help(parser: argparse.ArgumentParser, argv: list[str]):
  """Parses ``argv`` with no option required, so ``--set help`` needs no input files."""
  # pylint: disable=protected-access
  sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
  command = sub.choices.get(argv[0]) if argv else None
  for action in getattr(command, "_actions", ()):
    action.required = False
  return parser.parse_args(argv)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  key_help = _asks_key_help(argv)
  args = _parse_for_key_help(parser, argv) if key_help else parser.parse_args(argv)
  try:
    if key_help and args._resolve is not None:
      args.overrides = [o for o in args.overrides if o != "help"]
      print(common.format_keys(args._resolve(args)))
      return 0
    return int(args._run(args) or 0)
  except UserError as e:
    print(f"nst-jax {args.command}: error: {e}", file=sys.stderr)
    return e.exit_code
  except config.ConfigError as e:
    print(f"nst-jax {args.command}: error: {describe_config_error(e, args._parser, args._flags)}",
          file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"nst-jax {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
