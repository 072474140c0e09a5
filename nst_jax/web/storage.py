"""Content-addressed blob storage for uploads and results, behind one small interface.

Synopsis::

  from nst_jax.web import storage
  store = storage.open_storage(None, Path("data"))      # LocalStorage(data/blobs)
  key = store.put(png_bytes, "png")                      # '<sha256>.png', idempotent
  store.get(key) == png_bytes; store.path(key)           # a local file to serve

Keys are the sha256 of the content plus an extension and are checked against a strict pattern
before any path is built, so a string from a request can never name a file outside the store.
For scale-out, web and worker hosts share one folder (``file:///mnt/nst/blobs``, e.g. NFS).
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

KEY_PATTERN = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,8}")
EXT_PATTERN = re.compile(r"[a-z0-9]{1,8}")


def check_key(key: str) -> str:
  """Returns ``key`` if it is a well-formed blob key ('<64 hex>.<ext>'), else raises ValueError."""
  if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
    raise ValueError(f"invalid storage key: {str(key)[:80]!r}")
  return key


def make_key(data: bytes, ext: str) -> str:
  """The key of ``data``: its sha256 in hex, a dot and the (lower-case) extension."""
  ext = ext.lower().lstrip(".")
  if not EXT_PATTERN.fullmatch(ext):
    raise ValueError(f"invalid storage extension: {ext[:20]!r}")
  return f"{hashlib.sha256(data).hexdigest()}.{ext}"


class Storage(abc.ABC):
  """Blobs addressed by content; implementations must be safe for concurrent writers."""

  @abc.abstractmethod
  def put(self, data: bytes, ext: str) -> str:
    """Stores ``data`` (idempotent) and returns its key '<sha256>.<ext>'."""

  @abc.abstractmethod
  def get(self, key: str) -> bytes:
    """The blob's bytes; KeyError if it is missing."""

  @abc.abstractmethod
  def exists(self, key: str) -> bool:
    """Whether the blob is stored."""

  @abc.abstractmethod
  def delete(self, key: str) -> None:
    """Removes the blob; no error if it is missing."""

  @abc.abstractmethod
  def path(self, key: str) -> Path | None:
    """A local file holding the blob (for serving it directly), or None if there is none."""


class LocalStorage(Storage):
  """A folder of blobs, ``root/<first 2 hex digits>/<key>``, written atomically; uploads are
  personal data: folders 0700, files 0600 (the web server serves them, nobody else reads)."""

  def __init__(self, root: Path):
    self.root = Path(root)

  def __repr__(self) -> str:
    return f"LocalStorage({str(self.root)!r})"

  def _file(self, key: str) -> Path:
    check_key(key)
    return self.root / key[:2] / key

  def put(self, data: bytes, ext: str) -> str:
    key = make_key(data, ext)
    target = self._file(key)
    if target.exists():
      return key
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)  # mode 0600
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, target)  # same content from racing writers: last rename wins, no harm
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    return key

  def get(self, key: str) -> bytes:
    try:
      return self._file(key).read_bytes()
    except FileNotFoundError:
      raise KeyError(key) from None

  def exists(self, key: str) -> bool:
    return self._file(key).is_file()

  def delete(self, key: str) -> None:
    try:
      self._file(key).unlink()
    except FileNotFoundError:
      pass

  def path(self, key: str) -> Path | None:
    file = self._file(key)
    return file if file.is_file() else None


def open_storage(url: str | None, data_dir: Path) -> Storage:
  """The storage named by ``url``.

  Args:
    url: None or '' for ``data_dir/blobs``; 'file:///abs/path' for a folder shared by every host.
    data_dir: the service's data folder.

  Returns:
    A ``Storage``.

  Raises:
    ValueError: for any other URL (one line).
  """
  if not url:
    return LocalStorage(Path(data_dir) / "blobs")
  parsed = urlparse(url)
  if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path.startswith("/"):
    return LocalStorage(Path(unquote(parsed.path)))
  raise ValueError(f"unsupported storage URL {url!r}: use file:///absolute/path "
                   "(a folder shared by the web and worker hosts) or leave it empty")
