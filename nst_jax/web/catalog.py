"""The style networks the service offers: the registered models and the user-trained files.

Synopsis::

  catalog.models(cfg)             # [{"name", "label", "source", "styles", "path"}, ...]
  catalog.find(cfg, "zoo8")       # one entry, or None: a request never names a path

Registered models are ``core.zoo``'s of kind "style": the shipped ones
(``checkpoints/MANIFEST.json``), then those installed in the user cache; both are offered by
name. User-trained ones are the model files (``core.model_file``, any layout) in
``cfg.models_dir`` (default ``<data_dir>/models``), named ``user:<file stem>``. Reading a
catalogue loads no network and reads only the files' headers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nst_jax import config
from nst_jax.core import model_file, zoo
from nst_jax.core.errors import UserError


def models_dir(cfg: config.WebConfig) -> Path:
  return Path(cfg.models_dir) if cfg.models_dir else Path(cfg.data_dir) / "models"


def _user_entry(path: Path) -> dict | None:
  try:
    header = model_file.read_header(path)
  except UserError:
    return None  # not a model file: not offered
  if header["kind"] != "style":
    return None
  meta = header.get("meta", {})
  styles = [s.get("name", str(i)) for i, s in enumerate(meta.get("styles", []))]
  return {"name": f"user:{path.stem}", "label": f"{path.stem} (user-trained)", "source": "user",
          "styles": styles or ["(one style)"], "path": str(path)}


def models(cfg: config.WebConfig) -> list[dict]:
  """Every style network offered, shipped first."""
  out = []
  try:
    registered = zoo.list_models(kind="style")
  except UserError:
    registered = []
  for entry in registered:
    styles = [s.get("name", str(i)) for i, s in enumerate(entry.get("styles", []))]
    out.append({"name": entry["name"], "label": entry["name"], "source": entry["origin"],
                "styles": styles or ["(one style)"], "path": entry["name"],
                "steps": entry.get("steps")})
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


SAMPLE_OWNER = "system:samples"  # the owner of the jobs that render user models' samples
SAMPLE_SIZE = 128
SAMPLES_DIR = zoo.CHECKPOINTS_DIR / "samples"  # the shipped models' samples, precomputed


def sample_file(name: str, index: int) -> Path:
  """Where the shipped model ``name``'s style ``index`` sample is committed (a small JPEG of
  ``sample_photo()`` stylized; ``benchmarks/export_zoo.py samples`` writes them)."""
  return SAMPLES_DIR / f"{name}_{index}.jpg"


def shipped_sample(entry: dict, index: int) -> Path | None:
  """The precomputed sample of a shipped model's style, or None (user-trained models, or a
  sample not exported yet: a worker renders it)."""
  if entry.get("source") != "shipped":
    return None
  path = sample_file(entry["name"], index)
  return path if path.is_file() else None


def sample_photo(size: int = SAMPLE_SIZE) -> np.ndarray:
  """A small synthetic landscape (sky, sun, hills, a house), float [size, size, 3]: the photo
  every model's sample on the Models page and in the picker is rendered from (no data shipped)."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
  sky = np.stack([0.45 + 0.4 * y, 0.65 + 0.3 * y, np.full_like(y, 0.95)], -1)
  image = sky
  sun = (x - 0.72) ** 2 + (y - 0.25) ** 2 < 0.012
  image[sun] = (1.0, 0.85, 0.3)
  hill1 = y > 0.62 + 0.08 * np.sin(6 * x)
  hill2 = y > 0.75 + 0.05 * np.cos(9 * x + 1)
  image[hill1] = np.stack([0.25 + 0.2 * x, 0.55 + 0.1 * y, 0.2 + 0 * x], -1)[hill1]
  image[hill2] = np.stack([0.15 + 0 * x, 0.4 + 0.2 * x, 0.15 + 0 * x], -1)[hill2]
  house = (x > 0.2) & (x < 0.38) & (y > 0.55) & (y < 0.72)
  roof = (y > 0.45) & (y <= 0.55) & (np.abs(x - 0.29) < (y - 0.45) * 1.0)
  image[house] = (0.85, 0.8, 0.7)
  image[roof] = (0.6, 0.15, 0.1)
  image[(x > 0.26) & (x < 0.31) & (y > 0.63) & (y < 0.72)] = (0.35, 0.2, 0.1)
  return np.clip(image, 0.0, 1.0)
