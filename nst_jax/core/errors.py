"""User-facing errors: one clear line, exit code 2, never a traceback."""

from __future__ import annotations

import importlib.util


class UserError(Exception):
  """A problem with the user's input (file, flag, weights); the CLI prints it on one line."""

  exit_code = 2

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


class MissingExtra(UserError, ModuleNotFoundError):
  """An optional part of the package whose extra is not installed.

  A ``ModuleNotFoundError`` too, so ``pytest.importorskip`` skips with its message and code that
  probes for the part with ``except ImportError`` keeps working; a ``UserError``, so the command
  line prints it on one line with exit code 2.
  """


def require_extra(extra: str, modules: dict[str, str], what: str) -> None:
  """Raises ``MissingExtra`` naming ``pip install -e '.[extra]'`` unless every module imports.

  Args:
    extra: the name of the extra in pyproject.toml (``web``, ``torch``, ...).
    modules: import name -> distribution name, e.g. ``{"multipart": "python-multipart"}``.
    what: what needs them, for the message ("the web application").
  """
  missing = [dist for mod, dist in modules.items() if not _importable(mod)]
  if missing:
    raise MissingExtra(f"{what} needs the {extra!r} extra (missing: {', '.join(missing)}): "
                       f"pip install -e '.[{extra}]'")


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a broken install, or a finder that refuses the name
    return False
