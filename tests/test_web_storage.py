"""The content-addressed blob store: keys, idempotence, atomic writes, hostile keys."""

import hashlib
import os
import threading
from pathlib import Path

import pytest

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command

from nst_jax.web import storage
from nst_jax.web.storage import LocalStorage, open_storage


def test_put_returns_sha256_key_and_round_trips(tmp_path):
  store = LocalStorage(tmp_path)
  data = b"\x89PNG not really"
  key = store.put(data, "png")
  assert key == hashlib.sha256(data).hexdigest() + ".png"
  assert store.get(key) == data
  assert store.exists(key)
  assert store.path(key) == tmp_path / key[:2] / key
  assert store.path(key).read_bytes() == data


def test_put_is_idempotent_and_extension_is_part_of_the_key(tmp_path):
  store = LocalStorage(tmp_path)
  k1 = store.put(b"abc", "png")
  mtime = store.path(k1).stat().st_mtime_ns
  assert store.put(b"abc", ".PNG") == k1
  assert store.path(k1).stat().st_mtime_ns == mtime  # not rewritten
  k2 = store.put(b"abc", "jpg")
  assert k2 != k1 and k2[:64] == k1[:64]
  files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
  assert files == sorted([k1, k2])  # no temporary file left behind


def test_missing_key_and_delete(tmp_path):
  store = LocalStorage(tmp_path)
  missing = "0" * 64 + ".png"
  with pytest.raises(KeyError):
    store.get(missing)
  assert not store.exists(missing)
  assert store.path(missing) is None
  store.delete(missing)  # no error
  key = store.put(b"x", "png")
  store.delete(key)
  assert not store.exists(key) and store.path(key) is None
  with pytest.raises(KeyError):
    store.get(key)


@pytest.mark.parametrize("bad", [
    "../etc/passwd", "/etc/passwd", "a" * 64, "A" * 64 + ".png", "g" * 64 + ".png",
    "a" * 63 + ".png", "a" * 64 + ".png/../../x", "a" * 64 + ".PNG", "a" * 64 + ".p/g",
    "a" * 64 + ".png\n", "", "a" * 64 + ".toolongext", None,
])
def test_hostile_keys_are_refused_before_any_path(tmp_path, bad):
  store = LocalStorage(tmp_path / "store")
  for op in (store.get, store.exists, store.delete, store.path):
    with pytest.raises(ValueError, match="invalid storage key"):
      op(bad)


@pytest.mark.parametrize("ext", ["", "p/g", "../x", "png\n", "toolongext"])
def test_bad_extensions_are_refused(tmp_path, ext):
  with pytest.raises(ValueError, match="invalid storage extension"):
    LocalStorage(tmp_path).put(b"x", ext)
  assert not any(tmp_path.iterdir())


def test_concurrent_writers_of_the_same_blob(tmp_path):
  store = LocalStorage(tmp_path)
  data = os.urandom(200_000)
  keys = []
  threads = [threading.Thread(target=lambda: keys.append(store.put(data, "bin")))
             for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(set(keys)) == 1
  assert store.get(keys[0]) == data
  assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [keys[0]]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
  store = LocalStorage(tmp_path)

  def boom(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(storage.os, "replace", boom)
  with pytest.raises(OSError, match="disk full"):
    store.put(b"data", "png")
  assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_open_storage(tmp_path):
  default = open_storage(None, tmp_path)
  assert isinstance(default, LocalStorage) and default.root == tmp_path / "blobs"
  assert open_storage("", tmp_path).root == tmp_path / "blobs"
  shared = open_storage(f"file://{tmp_path}/shared%20dir", tmp_path / "data")
  assert shared.root == Path(f"{tmp_path}/shared dir")
  key = shared.put(b"hello", "txt")
  assert (tmp_path / "shared dir" / key[:2] / key).read_bytes() == b"hello"


@pytest.mark.parametrize("url", ["s3://bucket/x", "file://host/path", "file:relative",
                                 "/abs/path", "http://x"])
def test_open_storage_refuses_other_urls(tmp_path, url):
  with pytest.raises(ValueError, match="unsupported storage URL") as e:
    open_storage(url, tmp_path)
  assert "\n" not in str(e.value)


def test_the_data_folder_and_its_files_are_private(tmp_path):
  """E-mail addresses (nst.db) and uploads (blobs) are personal data: 0700 folders, 0600 files,
  whatever the umask."""
  import os  # pylint: disable=import-outside-toplevel
  pytest.importorskip("fastapi")
  from nst_jax import config  # pylint: disable=import-outside-toplevel
  from nst_jax.web import app as web_app  # pylint: disable=import-outside-toplevel
  old = os.umask(0o022)
  try:
    data = tmp_path / "data"
    app = web_app.create_app(config.WebConfig(data_dir=str(data)), enqueue=lambda job_id: None)
    key = app.state.service.store.put(b"a photo", "png")
  finally:
    os.umask(old)
  mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
  assert mode(data) == 0o700 and mode(data / "nst.db") == 0o600
  blob = app.state.service.store.path(key)
  assert mode(blob) == 0o600 and mode(blob.parent) == 0o700
