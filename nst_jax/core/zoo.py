"""Shipped models: float16 parameter files and the ``checkpoints/MANIFEST.json`` that names them.

Synopsis::

  from nst_jax.core import zoo
  info = zoo.export_params("checkpoints/starry.npz", params, {"net": {...}, ...})
  params, cfg = zoo.load_params("checkpoints/starry.npz")   # float32 arrays, the config dict
  zoo.read_manifest()                       # [{"name", "kind", "file", "sha256", ...}, ...]
  path, entry = zoo.resolve_model("starry") # a shipped name (sha256 verified) or a path

A model file is an ``.npz`` holding every parameter leaf as float16 under its "/"-joined path
(``params/conv1/kernel``) and, under ``__config__``, the JSON of the dict that rebuilds the model
(for a style network: its training config and style names). Loading needs no training code,
optimizer or orbax. The manifest is ``{"models": [entry, ...]}``; each entry has at least
``name``, ``kind`` ("style", "sr", ...), ``file`` (relative to the manifest) and ``sha256``, which
is checked before a named model is used: a corrupt, truncated or foreign file is a ``UserError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nst_jax.core import paths
from nst_jax.core.errors import UserError

CHECKPOINTS_DIR = paths.REPO_ROOT / "checkpoints"
MANIFEST = CHECKPOINTS_DIR / "MANIFEST.json"
CONFIG_KEY = "__config__"
FORMAT = "nst_jax.zoo/1"


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """A nested dict of arrays -> ``{"a/b/c": array}``."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(flatten(value, name + "/"))
    else:
      out[name] = value
  return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  """``{"a/b/c": array}`` -> a nested dict of arrays (``flatten``'s inverse)."""
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def sha256_of(path: str | os.PathLike) -> str:
  """The hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def export_params(path: str | os.PathLike, params: Any, config_dict: dict, *,
                  dtype: Any = np.float16) -> dict:
  """Writes ``params`` (a nested dict of float arrays) as float16 and ``config_dict`` to ``path``.

  Args:
    path: the ``.npz`` to write (atomically: a temporary file, then a rename).
    params: e.g. a network's ``variables["params"]``.
    config_dict: JSON-serializable; whatever rebuilds the model (returned by ``load_params``).
    dtype: the stored dtype (float16 for shipped models; float32 where float16 would lose what
      matters, e.g. dequantized int8 weights kept in the user cache).

  Returns:
    ``{"file": name, "bytes": size, "sha256": hex}`` of the written file (manifest fields).
  """
  path = Path(path)
  arrays = {k: np.asarray(v).astype(dtype) for k, v in flatten(params).items()}
  text = json.dumps({"format": FORMAT, **config_dict}, sort_keys=True)
  arrays[CONFIG_KEY] = np.frombuffer(text.encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_bytes(buffer.getvalue())
  os.replace(tmp, path)
  return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def load_params(path: str | os.PathLike) -> tuple[dict, dict]:
  """Reads a file of ``export_params``: (float32 parameters as a nested dict, the config dict).

  Raises:
    UserError: a missing, truncated, corrupt or foreign file (one line).
  """
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      if CONFIG_KEY not in data.files:
        raise UserError(f"{path} is not an nst_jax model file (no {CONFIG_KEY})")
      cfg = json.loads(bytes(data[CONFIG_KEY]).decode())
      flat = {k: data[k].astype(np.float32) for k in data.files if k != CONFIG_KEY}
  except UserError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, KeyError) as e:
    raise UserError(f"{path} is not a readable nst_jax model file ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else 'damaged'})") from None
  if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
    raise UserError(f"{path} is not an nst_jax model file (format {cfg.get('format')!r})")
  return unflatten(flat), {k: v for k, v in cfg.items() if k != "format"}


def read_manifest(path: str | os.PathLike | None = None) -> list[dict]:
  """The entries of ``checkpoints/MANIFEST.json`` (``[]`` when there is none).

  Raises:
    UserError: a manifest that is not ``{"models": [{"name", "file", ...}, ...]}``.
  """
  path = Path(path) if path is not None else MANIFEST
  if not path.is_file():
    return []
  try:
    models = json.loads(path.read_text())["models"]
    if not all(isinstance(m, dict) and "name" in m and "file" in m for m in models):
      raise ValueError("an entry without name or file")
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path} is not a model manifest ({e})") from None
  return models


def find_model(name: str, manifest: str | os.PathLike | None = None) -> dict | None:
  """The manifest entry called ``name``, or None."""
  for entry in read_manifest(manifest):
    if entry["name"] == name:
      return entry
  return None


def verify(path: str | os.PathLike, sha256: str) -> None:
  """Raises ``UserError`` unless the file at ``path`` has this sha256."""
  if not Path(path).is_file():
    raise UserError(f"model file {path} is missing (re-clone, or `git lfs pull` if it is a "
                    "pointer)")
  actual = sha256_of(path)
  if actual != sha256:
    raise UserError(f"model file {path} is corrupt or replaced: sha256 {actual[:12]}... but the "
                    f"manifest says {sha256[:12]}...")


def resolve_model(name_or_path: str | os.PathLike, *, kind: str | None = None,
                  manifest: str | os.PathLike | None = None) -> tuple[Path, dict | None]:
  """A model argument -> (the path to load, its manifest entry or None).

  An existing path wins; otherwise ``name_or_path`` is a manifest name, whose file is verified
  against its sha256 (and ``kind``, when given) before it is returned.

  Raises:
    UserError: neither an existing path nor a known name, a wrong kind, or a failed check.
  """
  path = Path(name_or_path).expanduser()
  if path.exists():
    return path, None
  entry = find_model(str(name_or_path), manifest)
  if entry is None:
    names = [m["name"] for m in read_manifest(manifest) if kind in (None, m.get("kind"))]
    raise UserError(f"no model file or folder {str(name_or_path)!r}, and no shipped model of "
                    f"that name (shipped: {', '.join(names) or 'none'}; see `nst-jax models`)")
  if kind is not None and entry.get("kind") != kind:
    raise UserError(f"model {entry['name']!r} is a {entry.get('kind')!r} model, not {kind!r}")
  folder = Path(manifest).parent if manifest is not None else CHECKPOINTS_DIR
  file = folder / entry["file"]
  verify(file, entry.get("sha256", ""))
  return file, entry
