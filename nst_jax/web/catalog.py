"""The style networks the service offers: the shipped zoo and the user-trained ``.npz`` files.

Synopsis::

  catalog.models(cfg)             # [{"name", "label", "source", "styles", "path"}, ...]
  catalog.find(cfg, "zoo8")       # one entry, or None: a request never names a path

Shipped models come from ``checkpoints/MANIFEST.json`` (``core.zoo``); user-trained ones are the
exported ``.npz`` files (``core.zoo.export_params``) in ``cfg.models_dir`` (default
``<data_dir>/models``), named ``user:<file stem>``. Reading a catalogue opens no network (numpy only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nst_jax import config
from nst_jax.core import zoo
from nst_jax.core.errors import UserError


def models_dir(cfg: config.WebConfig) -> Path:
  return Path(cfg.models_dir) if cfg.models_dir else Path(cfg.data_dir) / "models"


def _user_entry(path: Path) -> dict | None:
  try:
    with np.load(path, allow_pickle=False) as data:
      meta = json.loads(bytes(data[zoo.CONFIG_KEY]).decode())
  except (OSError, ValueError, KeyError, EOFError):
    return None  # not a model file: not offered
  styles = [s.get("name", str(i)) for i, s in enumerate(meta.get("styles", []))]
  return {"name": f"user:{path.stem}", "label": f"{path.stem} (user-trained)", "source": "user",
          "styles": styles or ["(one style)"], "path": str(path)}


def models(cfg: config.WebConfig) -> list[dict]:
  """Every style network offered, shipped first."""
  out = []
  try:
    manifest = zoo.read_manifest()
  except UserError:
    manifest = []
  for entry in manifest:
    if entry.get("kind") == "style":
      styles = [s.get("name", str(i)) for i, s in enumerate(entry.get("styles", []))]
      out.append({"name": entry["name"], "label": entry["name"], "source": "shipped",
                  "styles": styles, "path": entry["name"], "steps": entry.get("steps")})
  folder = models_dir(cfg)
  if folder.is_dir():
    for path in sorted(folder.glob("*.npz")):
      entry = _user_entry(path)
      if entry is not None:
        out.append(entry)
  return out


def find(cfg: config.WebConfig, name: str) -> dict | None:
  """The catalogue entry called ``name`` (None if there is none)."""
  return next((m for m in models(cfg) if m["name"] == name), None)


def public(entry: dict) -> dict:
  """An entry without its path (what the API shows)."""
  return {k: v for k, v in entry.items() if k != "path"}
