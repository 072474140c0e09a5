"""File identity: the one helper that hashes a file (shipped models, style images, VGG weights).

Synopsis::

  from nst_jax.core import digest
  digest.file_digest("checkpoints/zoo8.npz")          # hex sha256
  digest.file_digest("vgg19.h5", "md5")               # Keras publishes an MD5 only
"""

from __future__ import annotations

import hashlib
import os

from nst_jax.core.errors import UserError


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
  """The hex digest of a file's bytes (``hashlib.file_digest``: read in blocks, not whole).

  Args:
    path: the file.
    algorithm: a ``hashlib`` name; "md5" is only an identity check here, not security.

  Returns:
    The lower-case hex digest.

  Raises:
    UserError: the file cannot be read (one line).
  """
  factory = ((lambda: hashlib.md5(usedforsecurity=False)) if algorithm == "md5"
             else algorithm)
  try:
    with open(path, "rb") as f:
      return hashlib.file_digest(f, factory).hexdigest()
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror or e}") from None
