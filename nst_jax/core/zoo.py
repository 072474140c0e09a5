"""The model registry: shipped models, the user cache's installed ones, one resolver for all.

Synopsis::

  from nst_jax.core import zoo
  found = zoo.resolve("starry_small", kind="style")   # Resolved(path, origin, entry)
  found.origin                       # "file", "workdir", "shipped" or "installed"
  entry = zoo.install_model("magenta_arbitrary", variables, config, kind="arbitrary",
                            source="magenta", licence="Apache-2.0", how="converted from ...")
  zoo.list_models(kind="sr")         # shipped then installed manifest entries, with "origin"

Two registries hold model files (``core.model_file``) and a ``MANIFEST.json`` each,
``{"models": [entry, ...]}``: the shipped one, the repository's ``checkpoints/`` (or
``$NST_JAX_MODELS``), and the user cache's, ``<paths.cache_dir()>/models/``, where commands that
import third-party weights install them. Every entry has ``name``, ``kind``, ``file`` (relative
to its manifest), ``bytes``, ``sha256``, ``dtype``, ``source`` and ``licence``, plus whatever its
kind records (a style net's styles, an SR model's scale and metrics). A file's sha256 is checked
against its entry before a named model is used: a corrupt, truncated or replaced file is a
one-line ``UserError``.

``resolve`` reads a model argument in this order: an existing file (a model file), an existing
folder (a training workdir, which the wing that trained it loads), a shipped name, an installed
name. A shipped name cannot be installed over, so a name always means one model.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from nst_jax.core import digest, image_io, model_file, paths
from nst_jax.core.errors import UserError

CHECKPOINTS_DIR = paths.REPO_ROOT / "checkpoints"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST = CHECKPOINTS_DIR / MANIFEST_NAME
SHIPPED_ENV = "NST_JAX_MODELS"  # another folder of shipped models (tests, installs)
USER_SUBDIR = "models"
OWN_SOURCE = "nst_jax"  # the source of the models this project trains
OWN_LICENCE = "Apache-2.0"  # theirs: the project's licence (pyproject.toml)
ORIGINS = ("file", "workdir", "shipped", "installed")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Resolved(NamedTuple):
  """What a model argument names."""
  path: Path  # a model file, or a training workdir / checkpoint folder
  origin: str  # one of ``ORIGINS``
  entry: dict | None  # the manifest entry of a shipped or installed name


def shipped_dir() -> Path:
  """``$NST_JAX_MODELS``, else the repository's ``checkpoints/``."""
  value = os.environ.get(SHIPPED_ENV)
  return Path(value).expanduser() if value else CHECKPOINTS_DIR


def user_dir() -> Path:
  """The user cache's model registry, ``<paths.cache_dir()>/models``."""
  return paths.cache_dir() / USER_SUBDIR


def _manifest_path(where: str | os.PathLike | None) -> Path:
  """A manifest file, or the folder that holds one (None: the shipped)."""
  path = Path(where).expanduser() if where is not None else shipped_dir()
  return path if path.suffix == ".json" else path / MANIFEST_NAME


def read_manifest(where: str | os.PathLike | None = None) -> list[dict]:
  """The entries of a manifest (a file, or a folder's ``MANIFEST.json``; None: the shipped).

  Returns:
    ``[]`` when there is no manifest.

  Raises:
    UserError: a manifest that is not ``{"models": [{"name", "file", ...}, ...]}``.
  """
  path = _manifest_path(where)
  if not path.is_file():
    return []
  try:
    models = json.loads(path.read_text())["models"]
    if not all(isinstance(m, dict) and "name" in m and "file" in m for m in models):
      raise ValueError("an entry without name or file")
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path} is not a model manifest ({e})") from None
  return models


def write_manifest(where: str | os.PathLike | None, entries: list[dict]) -> Path:
  """Writes ``{"models": entries}`` atomically to a manifest (file or folder; None: shipped)."""
  path = _manifest_path(where)
  return image_io.write_text(path, json.dumps({"models": entries}, indent=2) + "\n")


def add_entry(where: str | os.PathLike | None, entry: dict) -> dict:
  """Adds ``entry`` to a manifest, replacing the one of the same name in place. Returns it."""
  entries = read_manifest(where)
  names = [e["name"] for e in entries]
  if entry["name"] in names:
    entries[names.index(entry["name"])] = entry
  else:
    entries.append(entry)
  write_manifest(where, entries)
  return entry


def find_model(name: str, where: str | os.PathLike | None = None) -> dict | None:
  """The entry called ``name`` in a manifest (None: the shipped), or None."""
  return next((e for e in read_manifest(where) if e["name"] == name), None)


def manifest_entry(name: str, path: str | os.PathLike, **fields) -> dict:
  """The common fields of a model file's entry (read from its header), then ``fields``."""
  path = Path(path)
  header = model_file.read_header(path)
  provenance = header.get("provenance", {})
  return {"name": name, "kind": header["kind"], "file": path.name,
          "bytes": path.stat().st_size, "sha256": digest.file_digest(path),
          "dtype": header.get("dtype", "float16"), "source": provenance.get("source", ""),
          "licence": header.get("licence", ""), **fields}


def verify(path: str | os.PathLike, sha256: str) -> None:
  """Raises ``UserError`` unless the file at ``path`` has this sha256."""
  if not Path(path).is_file():
    raise UserError(f"model file {path} is missing (re-clone, or `git lfs pull` if it is a "
                    "pointer)")
  actual = digest.file_digest(path)
  if actual != sha256:
    raise UserError(f"model file {path} is corrupt or replaced: sha256 {actual[:12]}... but the "
                    f"manifest says {str(sha256)[:12]}...")


def list_models(*, kind: str | None = None) -> list[dict]:
  """Every registered model, shipped first, each entry with its ``origin`` and ``path``."""
  out = []
  for origin, folder in (("shipped", shipped_dir()), ("installed", user_dir())):
    for entry in read_manifest(folder):
      if kind in (None, entry.get("kind")):
        out.append({**entry, "origin": origin, "path": str(folder / entry["file"])})
  return out


def resolve(name_or_path: str | os.PathLike, *, kind: str | None = None) -> Resolved:
  """A model argument -> what to load: a file, a training workdir, or a registered name.

  Order: an existing file, an existing folder, a shipped name, an installed name. A name's
  kind (when ``kind`` is given) and its file's sha256 are checked here; a file's kind is
  checked when ``model_file.load`` reads it.

  Raises:
    UserError: none of these, a name of another kind, or a failed sha256 check.
  """
  path = Path(name_or_path).expanduser()
  if path.is_file():
    return Resolved(path, "file", None)
  if path.is_dir():
    return Resolved(path, "workdir", None)
  name = str(name_or_path)
  for origin, folder in (("shipped", shipped_dir()), ("installed", user_dir())):
    entry = find_model(name, folder)
    if entry is not None:
      if kind is not None and entry.get("kind") != kind:
        raise UserError(f"model {name!r} is a {entry.get('kind')!r} model, not {kind!r}")
      verify(folder / entry["file"], entry.get("sha256", ""))
      return Resolved(folder / entry["file"], origin, entry)
  known = ", ".join(e["name"] for e in list_models(kind=kind)) or "none"
  raise UserError(f"model not found: {name!r} is no file, no training workdir and no shipped or "
                  f"installed {kind or 'model'} name (known: {known}; see `nst-jax models`)")


def install_model(name: str, variables: dict, config: dict, *, kind: str, source: str,
                  licence: str, how: str = "", meta: dict | None = None,
                  dtype: str = "float32") -> dict:
  """Installs a model into the user cache's registry (what an import command calls).

  The file is written atomically as ``<user_dir()>/<name>.npz`` and the registry's manifest
  updated with its entry (sha256 included); installing a name again replaces it.

  Args:
    name: the name ``--model`` will take (letters, digits, ``_.-``; not a shipped name).
    variables: ``{"params": nested dict of arrays, ...}``.
    config: what rebuilds the network (``model_file.save``).
    kind: the model family ("arbitrary", "style", "sr", ...).
    source: where the weights come from (e.g. "magenta" and its URL).
    licence: their licence.
    how: how they were converted.
    meta: the kind's extras.
    dtype: "float32" (default: an import keeps its precision) or "float16".

  Returns:
    The manifest entry: the common fields, ``meta``'s (e.g. a style net's ``styles``, which the
    web catalogue shows), ``how`` and an ``installed`` timestamp.

  Raises:
    UserError: a bad or shipped name, or what ``model_file.save`` refuses.
  """
  if not _NAME.fullmatch(name) or name.endswith(".npz"):
    raise UserError(f"bad model name {name!r}: use letters, digits, '_', '.' and '-'")
  if find_model(name, shipped_dir()) is not None:
    raise UserError(f"{name!r} is a shipped model's name; install under another name")
  folder = user_dir()
  path = folder / f"{name}.npz"
  model_file.save(path, variables, config, kind=kind, source=source, licence=licence, how=how,
                  meta=meta, dtype=dtype)
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  entry = manifest_entry(name, path)
  extras = {k: v for k, v in (meta or {}).items() if k not in entry}
  return add_entry(folder, {**entry, **extras, "how": how, "installed": now})
