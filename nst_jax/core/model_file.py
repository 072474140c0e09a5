"""The one model file format: a network's variables, what it is, where it came from, its licence.

Synopsis::

  from nst_jax.core import model_file
  info = model_file.save("runs/starry.npz", {"params": params}, train_cfg_dict,
                         kind="style", source="nst_jax", how="nst-jax train ...",
                         licence="Apache-2.0", meta={"styles": [...], "step": 400})
  model = model_file.load("runs/starry.npz", kind="style")   # a ``Model``, float32
  model_file.read_header("runs/starry.npz")   # the JSON header alone, no arrays read

A model file is an ``.npz`` (a zip of ``.npy`` members, no pickles) holding

- ``__model__``: the UTF-8 JSON header, ``{"format", "kind", "config", "meta", "provenance",
  "licence", "dtype"}``: ``kind`` names the family ("style", "sr", "arbitrary", ...);
  ``config`` is the dict that rebuilds the network (a training config for the project's own
  nets); ``meta`` the kind's extras (a style net's style names and training step);
  ``provenance`` is ``{"source", "how"}``: who made the weights and how (trained by a command,
  converted from a third-party file); ``dtype`` the storage type of every array;
- one member per leaf of the variables tree (``{"params": ..., "batch_stats"?: ...}``) under its
  "/"-joined path, e.g. ``params/conv1/kernel``: float16 for shipped models, float32 allowed for
  the user cache's imports. Loading always gives float32.

Members are written in sorted order with a fixed zip timestamp, so the same weights give the same
bytes and the same sha256 (which the manifests of ``core.zoo`` carry, not the file). The two
earlier layouts (``nst_jax.zoo/1``: ``__config__`` JSON and bare parameter paths; the first SR
export: ``kind`` / ``config`` strings and ``variables/...``) are still read, since users may hold
files exported before this format.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nst_jax.core import digest, image_io
from nst_jax.core.errors import UserError

FORMAT = "nst_jax.model/2"
HEADER_KEY = "__model__"
DTYPES = ("float16", "float32")
LEGACY_ZOO_KEY, LEGACY_ZOO_FORMAT = "__config__", "nst_jax.zoo/1"
LEGACY_SR_PREFIX, LEGACY_SR_FORMAT = "variables/", "nst_jax.sr/0"  # the second: our name for it
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: reproducible bytes
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, UnicodeDecodeError, zipfile.BadZipFile,
                zlib.error)


class Model(NamedTuple):
  """A loaded model file: float32 variables and the header's fields."""
  kind: str
  variables: dict  # {"params": nested dict of float32 arrays, other collections?}
  config: dict
  meta: dict
  provenance: dict  # {"source", "how", ...}
  licence: str
  dtype: str  # how the arrays were stored
  format: str  # FORMAT, or the earlier layout the file was read from


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


def save(path: str | os.PathLike, variables: dict, config: dict, *, kind: str, source: str,
         licence: str, how: str = "", meta: dict | None = None,
         dtype: str = "float16") -> dict:
  """Writes a model file atomically (a temporary file, then a rename).

  Args:
    path: the ``.npz`` to write.
    variables: ``{"params": nested dict of float arrays, ...}`` (flax's variables).
    config: JSON-serializable; what rebuilds the network (returned by ``load``).
    kind: the model family ("style", "sr", "arbitrary", ...).
    source: who made the weights ("nst_jax" for the project's training, else the upstream).
    licence: the weights' licence (an SPDX name where there is one).
    how: how they were made: the training command, or what was converted from where.
    meta: the kind's extras (a style network's style names and training step).
    dtype: "float16" (shipped models) or "float32".

  Returns:
    ``{"file", "bytes", "sha256", "dtype"}`` of the written file (manifest fields).

  Raises:
    UserError: a bad dtype or kind, or variables without parameters.
  """
  if dtype not in DTYPES or not kind or "params" not in variables:
    raise UserError(f"cannot save a model of kind {kind!r}, dtype {dtype!r} and collections "
                    f"{sorted(variables)} (need a kind, one of {DTYPES}, and params)")
  header = {"format": FORMAT, "kind": kind, "config": config, "meta": meta or {},
            "provenance": {"source": source, "how": how}, "licence": licence, "dtype": dtype}
  arrays = {k: np.asarray(v).astype(dtype) for k, v in flatten(dict(variables)).items()}
  arrays[HEADER_KEY] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
  image_io.atomic_write(path, lambda tmp: _write_npz(tmp, arrays))
  path = Path(path)
  return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.file_digest(path),
          "dtype": dtype}


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """``np.savez_compressed`` with sorted members and a fixed timestamp."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(arrays):
      buffer = io.BytesIO()
      np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
      info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
      info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
      zf.writestr(info, buffer.getvalue())


def read_header(path: str | os.PathLike) -> dict:
  """A model file's header (the layout's fields for the earlier layouts); no array is read.

  Raises:
    UserError: a missing, truncated, corrupt or foreign file (one line).
  """
  return _read(path, arrays=False).header


def load(path: str | os.PathLike, *, kind: str | None = None) -> Model:
  """Reads a model file of any layout: float32 variables and its header's fields.

  Args:
    path: the ``.npz``.
    kind: when given, the kind the caller needs.

  Raises:
    UserError: a missing, truncated, corrupt or foreign file, or another kind (one line).
  """
  raw = _read(path, arrays=True)
  h = raw.header
  if kind is not None and h["kind"] != kind:
    raise UserError(f"{path} is a {h['kind']!r} model, not {kind!r}")
  flat = {k: v.astype(np.float32) for k, v in raw.arrays.items()}
  variables = unflatten(flat)
  if "params" not in variables:
    raise UserError(f"{path} holds no parameters")
  return Model(h["kind"], variables, h["config"], h.get("meta", {}), h.get("provenance", {}),
               h.get("licence", ""), h.get("dtype", "float16"), h["format"])


class _Raw(NamedTuple):
  header: dict
  arrays: dict  # "/"-joined variable paths -> stored arrays


def _read(path: str | os.PathLike, *, arrays: bool) -> _Raw:
  try:
    with np.load(path, allow_pickle=False) as data:
      names = set(data.files)
      if HEADER_KEY in names:
        header = json.loads(bytes(data[HEADER_KEY]).decode())
        members = {k: k for k in names - {HEADER_KEY}}
      elif LEGACY_ZOO_KEY in names:
        header = _legacy_zoo_header(json.loads(bytes(data[LEGACY_ZOO_KEY]).decode()))
        members = {"params/" + k: k for k in names - {LEGACY_ZOO_KEY}}
      elif "kind" in names and "config" in names:
        header = _legacy_sr_header(str(data["kind"]), str(data["config"]))
        members = {k[len(LEGACY_SR_PREFIX):]: k for k in names
                   if k.startswith(LEGACY_SR_PREFIX)}
      else:
        raise UserError(f"{path} is not an nst_jax model file (no {HEADER_KEY} header)")
      _check_header(path, header)
      stored = {k: data[m] for k, m in members.items()} if arrays else {}
  except UserError:
    raise
  except _READ_ERRORS as e:
    text = str(e).splitlines()
    raise UserError(f"{path} is not a readable nst_jax model file ({type(e).__name__}: "
                    f"{text[0] if text else 'damaged'})") from None
  if any(not np.issubdtype(a.dtype, np.floating) for a in stored.values()):
    raise UserError(f"{path} holds non-float arrays: not an nst_jax model file")
  return _Raw(header, stored)


def _check_header(path, header) -> None:
  if not isinstance(header, dict) or header.get("format") not in (
      FORMAT, LEGACY_ZOO_FORMAT, LEGACY_SR_FORMAT):
    found = header.get("format") if isinstance(header, dict) else header
    raise UserError(f"{path} is not an nst_jax model file (format {found!r})")
  if not isinstance(header.get("kind"), str) or not isinstance(header.get("config"), dict):
    raise UserError(f"{path} is a damaged nst_jax model file (no kind or config)")


def _legacy_zoo_header(saved: dict) -> dict:
  """The header of an ``nst_jax.zoo/1`` file: a style network, config and meta in one dict."""
  if not isinstance(saved, dict) or saved.get("format") != LEGACY_ZOO_FORMAT:
    return {"format": saved.get("format") if isinstance(saved, dict) else None}
  rest = {k: v for k, v in saved.items() if k not in ("format", "config")}
  return {"format": LEGACY_ZOO_FORMAT, "kind": "style", "config": saved.get("config", {}),
          "meta": rest, "provenance": {}, "licence": "", "dtype": "float16"}


def _legacy_sr_header(kind: str, config_json: str) -> dict:
  """The header of a first-layout SR export (``kind`` and ``config`` string members)."""
  return {"format": LEGACY_SR_FORMAT, "kind": kind, "config": json.loads(config_json), "meta": {},
          "provenance": {}, "licence": "", "dtype": "float16"}
