"""Where weights and data are found: flags, then environment variables, then defaults.

Synopsis::

  from nst_jax.core import paths
  weights = paths.resolve_vgg_weights(None)   # NST_JAX_VGG_WEIGHTS, then the user cache
  data = paths.data_dir()                     # NST_JAX_DATA, else ../shared/data
"""

from __future__ import annotations

import os
from pathlib import Path

from nst_jax.core.errors import UserError

WEIGHTS_ENV = "NST_JAX_VGG_WEIGHTS"
DATA_ENV = "NST_JAX_DATA"
CACHE_ENV = "NST_JAX_CACHE"
VGG_FILENAME = "vgg19_conv.npz"
REPO_ROOT = Path(__file__).resolve().parents[2]  # nst_jax/core/paths.py -> the repository


def cache_dir() -> Path:
  """The user cache directory ($NST_JAX_CACHE, else $XDG_CACHE_HOME/nst_jax, else ~/.cache/nst_jax)."""
  if os.environ.get(CACHE_ENV):
    return Path(os.environ[CACHE_ENV]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base).expanduser() / "nst_jax"


def cached_vgg_path() -> Path:
  return cache_dir() / VGG_FILENAME


def resolve_vgg_weights(flag: str | os.PathLike | None = None) -> Path:
  """Finds the VGG19 weights: ``--vgg-weights``, then $NST_JAX_VGG_WEIGHTS, then the cache.

  Raises:
    UserError: naming the command that installs the weights, when none are found.
  """
  for source, value in (("--vgg-weights", flag), (WEIGHTS_ENV, os.environ.get(WEIGHTS_ENV))):
    if value:
      path = Path(value).expanduser()
      if not path.is_file():
        raise UserError(f"VGG19 weights given by {source} not found: {path}")
      return path
  path = cached_vgg_path()
  if path.is_file():
    return path
  raise UserError(
      "VGG19 weights not found; install them with `nst-jax weights download` (or "
      "`nst-jax weights import FILE` for a Keras .h5 / torchvision .pth / .npz you have), "
      f"or pass --vgg-weights PATH or set {WEIGHTS_ENV}")


def data_dir(flag: str | os.PathLike | None = None) -> Path:
  """The shared data folder: ``--data-dir``, then $NST_JAX_DATA, then ../shared/data beside the repo."""
  value = flag or os.environ.get(DATA_ENV)
  return Path(value).expanduser() if value else REPO_ROOT.parent / "shared" / "data"
