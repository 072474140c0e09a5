"""Shipping SR models: float16 ``.npz`` files (parameters + config) and a manifest.

Synopsis::

  from nst_jax.sr import export
  path = export.export_npz(cfg, variables, "checkpoints/sr_fast_x4.npz")   # float16 storage
  cfg, variables = export.load_npz(path)                                    # float32 again
  export.update_manifest("checkpoints", "sr_fast_x4", path, cfg, metrics={...}, steps=12000)
  export.resolve_shipped("sr_fast_x4")   # checkpoints/sr_fast_x4.npz, sha256-checked
  cfg, variables = export.load_model("sr_fast_x4")   # a name, an .npz or a training run

A shipped file holds ``variables/<collection>/<module>/.../<name>`` arrays in float16, a
``config`` entry (the ``SRConfig`` JSON) and ``kind = "sr"``. ``checkpoints/MANIFEST.json`` maps
each model's name to its file, sha256, scale, preset, loss, steps, metrics and how it was
trained; ``resolve_shipped`` refuses a file whose sha256 differs from its entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from nst_jax import config
from nst_jax.core import checkpoint, image_io, zoo
from nst_jax.core.errors import UserError
from nst_jax.sr import nets

KIND = "sr"  # a file's (and a checkpoint meta's) "kind": what tells an SR model from a style net
MANIFEST = "MANIFEST.json"
PREFIX = "variables/"
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"  # the repository's checkpoints/
SHIPPED_ENV = "NST_JAX_SR_MODELS"  # another folder of shipped models (tests, installs)


def shipped_dir() -> Path:
  """``$NST_JAX_SR_MODELS``, else the repository's top-level ``checkpoints/``."""
  value = os.environ.get(SHIPPED_ENV)
  return Path(value).expanduser() if value else SHIPPED_DIR


def export_npz(cfg: config.SRConfig, variables: dict, path: str | os.PathLike) -> Path:
  """Writes ``variables`` (``{"params", "batch_stats"?}``) in float16 with the config.

  Returns:
    The written path.
  """
  arrays = {PREFIX + k: v.astype(np.float16) for k, v in zoo.flatten(dict(variables)).items()}
  buf = io.BytesIO()
  np.savez_compressed(buf, kind=np.array(KIND), config=np.array(config.to_json(cfg)), **arrays)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  return path


def load_npz(path: str | os.PathLike) -> tuple[config.SRConfig, dict]:
  """An exported model: its config and its variables in float32.

  Raises:
    UserError: the file is missing, not an npz, not an SR model, or its config is bad.
  """
  try:
    with np.load(path, allow_pickle=False) as f:
      entries = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # missing, truncated, no zip
    raise UserError(f"cannot read SR model {path}: {e}") from None
  if str(entries.pop("kind", "")) != KIND or "config" not in entries:
    raise UserError(f"{path} is not an exported super-resolution model")
  try:
    cfg = config.check(config.from_json(config.SRConfig, str(entries.pop("config"))))
  except config.ConfigError as e:
    raise UserError(f"{path} has a bad SR config: {e}") from None
  flat = {k[len(PREFIX):]: v.astype(np.float32) for k, v in entries.items()
          if k.startswith(PREFIX)}
  variables = zoo.unflatten(flat)
  if "params" not in variables:
    raise UserError(f"{path} holds no parameters")
  return cfg, variables


def config_of_meta(meta: dict, where) -> config.SRConfig:
  """The ``SRConfig`` of a training checkpoint's meta; UserError if it is not an SR model's."""
  if not isinstance(meta, dict) or meta.get("kind") != KIND:
    raise UserError(f"{where} is not a super-resolution model (a style-transfer network's "
                    "checkpoint?): train one with `nst-jax sr train`")
  try:
    return config.check(config.from_dict(config.SRConfig, meta.get("config")))
  except config.ConfigError as e:
    raise UserError(f"{where} has a bad SR config: {e}") from None


def load_checkpoint(path) -> tuple[config.SRConfig, dict]:
  """The config and variables of a training run (workdir, its ``checkpoints`` folder or one step
  folder): only the parameters (and batch statistics) are read, no optimizer is built.

  Raises:
    UserError: missing or damaged checkpoint, or not an SR model's.
  """
  ckpts, step = checkpoint.open_checkpoint(path)
  with ckpts:
    cfg = config_of_meta(ckpts.restore_meta(step), path)
    net = nets.make_net(cfg.net, cfg.scale)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            jax.eval_shape(lambda: nets.init_variables(net, jax.random.key(0))))
    return cfg, ckpts.restore_partial(step, abstract)


def load_model(model: str) -> tuple[config.SRConfig, dict]:
  """What ``--model`` names: a checkpoint folder (``load_checkpoint``), an exported ``.npz``
  (``load_npz``), or the name of a shipped model in ``checkpoints/MANIFEST.json``."""
  path = Path(model).expanduser()
  if path.is_dir():
    return load_checkpoint(path)
  if path.is_file():
    return load_npz(path)
  shipped = resolve_shipped(model) if "/" not in model else None
  if shipped is None:
    names = ", ".join(["bicubic", *shipped_names()])
    raise UserError(f"SR model not found: {model} (expected a training workdir, a checkpoint "
                    f"folder, an exported .npz, or one of: {names})")
  return load_npz(shipped)


def read_manifest(folder: str | os.PathLike) -> dict:
  """The manifest of a folder of shipped models ({} when there is none)."""
  path = Path(folder) / MANIFEST
  if not path.is_file():
    return {}
  # One manifest for every shipped model (``core.zoo``'s list format); SR entries by name.
  return {m["name"]: m for m in zoo.read_manifest(path) if m.get("kind", "sr") == "sr"}


def update_manifest(folder: str | os.PathLike, name: str, path: str | os.PathLike,
                    cfg: config.SRConfig, **info) -> dict:
  """Adds (or replaces) ``name``'s entry: file, sha256, bytes, scale, arch, loss weights, config
  and ``info`` (steps, metrics, training time and device, ...). Returns the entry."""
  path = Path(path)
  loss = {k: v for k, v in config.to_dict(cfg.loss).items()}
  entry = {"name": name, "kind": "sr", "file": path.name, "sha256": checkpoint.sha256_file(path),
           "bytes": path.stat().st_size, "dtype": "float16", "scale": cfg.scale,
           "arch": cfg.net.arch, "loss": loss, "config": config.to_dict(cfg), **info}
  others = [m for m in zoo.read_manifest(Path(folder) / MANIFEST) if m["name"] != name]
  models = sorted(others + [entry], key=lambda m: m["name"])
  text = json.dumps({"models": models}, indent=2, sort_keys=True) + "\n"
  image_io.write_text(Path(folder) / MANIFEST, text)
  return entry


def resolve_shipped(name: str, folder: str | os.PathLike | None = None) -> Path | None:
  """The file of the shipped model ``name`` (sha256-checked), or None when no entry has it."""
  folder = Path(folder) if folder else shipped_dir()
  entry = read_manifest(folder).get(name)
  if entry is None:
    return None
  path = folder / entry["file"]
  if not path.is_file():
    raise UserError(f"shipped model {name} is missing its file {path}")
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  if digest != entry.get("sha256"):
    raise UserError(f"shipped model {path} is corrupt (sha256 {digest[:12]}... differs from "
                    f"{MANIFEST})")
  return path


def shipped_names(folder: str | os.PathLike | None = None) -> list[str]:
  return sorted(read_manifest(folder or shipped_dir()))
