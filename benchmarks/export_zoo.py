"""Export trained style networks to the zoo (checkpoints/), update MANIFEST.json, draw the sheet.

Synopsis::

  python3 benchmarks/export_zoo.py export --workdir runs/starry --name starry_small \\
      --hours 0.35 --device "2-core CPU (shared)"
  python3 benchmarks/export_zoo.py sheet --models starry_small zoo8   # checkpoints/contact_sheet.jpg
  python3 benchmarks/export_zoo.py samples     # checkpoints/samples/<model>_<style>.jpg

``export`` writes ``checkpoints/<name>.npz`` (float16 parameters + the training config and style
names/sha256 and how it was trained, ``core.model_file``) from a training workdir's newest
checkpoint, and adds
or replaces the entry ``NAME`` (kind "style") in ``checkpoints/MANIFEST.json``, keeping every
other entry (e.g. the super-resolution models, kind "sr"). ``sheet`` stylizes three content
photos (not in the training set) with every style of the given models. ``samples`` renders
the web service's built-in synthetic sample picture (``nst_jax.web.catalog.sample_photo``, no
shipped data) with every style of every shipped style network: the small JPEGs the Models page
and the style picker show, so the service never computes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


import bench_common as bc
from nst_jax.core import errors, image_io, model_file, plots, zoo
from nst_jax.fast import inference, nets
from nst_jax.web import catalog

MAX_BYTES = 4_000_000
SHEET_PHOTOS = ("kodak/kodim23.jpg", "classic_st/golden_gate.jpg", "classic_st/tubingen.jpg")


def manifest_entry(name: str, stylizer: inference.Stylizer, path: Path, *, hours: float,
                   device: str) -> dict:
  """The manifest fields of an exported style network (``zoo.manifest_entry``'s, then its own)."""
  cfg = nets.config_from_dict(stylizer.meta["config"])
  return zoo.manifest_entry(name, path, **{
      "styles": stylizer.meta.get("styles", []),
      "preset": ("lite" if cfg.net.pixel_shuffle else
                 "thesis" if cfg.net.upsample == "resize" else "johnson"),
      "net": {"width": cfg.net.width, "num_residual": cfg.net.num_residual,
              "num_styles": cfg.net.num_styles, "pixel_shuffle": cfg.net.pixel_shuffle},
      "loss_network": "vgg19", "steps": int(stylizer.meta.get("step", 0)),
      "train_size": cfg.size, "batch_size": cfg.batch_size,
      "train_hours": hours, "device": device, "metrics": {}})


def update_manifest(entry: dict, path: Path = zoo.MANIFEST) -> None:
  """Adds ``entry`` to the manifest, replacing one of the same name (keeping its metrics)."""
  old = zoo.find_model(entry["name"], path) or {}
  zoo.add_entry(path, {**entry, "metrics": old.get("metrics", {}) or entry.get("metrics", {})})


def how_trained(args) -> str:
  """The provenance line of an exported network: its run, hours and device."""
  return (f"`nst-jax train` run {args.workdir}, exported by benchmarks/export_zoo.py; "
          f"{args.hours} h on {args.device} (checkpoints/README.md has the commands)")


def export(args) -> None:
  stylizer = inference.Stylizer.from_checkpoint(args.workdir)
  styles = stylizer.meta.get("styles") or [  # runs from before multi-style training
      {"name": Path(stylizer.meta["config"]["style"]).stem,
       "sha256": stylizer.meta.get("style_sha256", "")}]
  meta = {"config": stylizer.meta["config"], "styles": styles,
          "step": int(stylizer.meta.get("step", 0))}
  out = zoo.CHECKPOINTS_DIR / f"{args.name}.npz"
  info = model_file.save(out, {"params": stylizer.variables["params"]}, meta.pop("config"),
                         kind=inference.KIND, meta=meta, source=zoo.OWN_SOURCE,
                         licence=zoo.OWN_LICENCE, how=how_trained(args))
  if info["bytes"] > MAX_BYTES:
    raise errors.UserError(f"{out} is {info['bytes']} bytes, over the zoo's {MAX_BYTES}")
  shipped = inference.Stylizer.from_file(out)  # loads back (float32), names its styles
  update_manifest(manifest_entry(args.name, shipped, out, hours=args.hours, device=args.device))
  print(f"{out}: {info['bytes'] / 1e6:.2f} MB, sha256 {info['sha256'][:12]}..., "
        f"{len(meta['styles'])} style(s), step {meta['step']}")


def sheet(args) -> None:
  data = bc.data_dir(args) / "content"
  photos = [image_io.load_image(data / p, size=args.size) for p in SHEET_PHOTOS]
  rows, titles = [[None] + photos], ["photo"]
  for name in args.models:
    stylizer = inference.Stylizer.from_any(name)
    style_dir = bc.data_dir(args) / "styles"
    for i, style in enumerate(stylizer.style_names):
      stylizer.set_style(index=i)
      thumb = style_dir / f"{style}.jpg"
      rows.append([image_io.load_image(thumb, size=args.size) if thumb.is_file() else None]
                  + stylizer.stylize_many(photos))
      titles.append(f"{name}:{i}\n{style[:22]}")
  out = plots.save_image_grid(args.out, rows, row_titles=titles,
                              col_titles=["style"] + [Path(p).stem for p in SHEET_PHOTOS])
  print(out)


def samples(args) -> None:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  photo = catalog.sample_photo(catalog.SAMPLE_SIZE)
  catalog.SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
  for entry in zoo.read_manifest():
    if entry.get("kind") != "style":
      continue
    stylizer = inference.Stylizer.from_any(entry["name"])
    for i in range(len(stylizer.style_names)):
      stylizer.set_style(index=i)
      out = np.clip(stylizer(photo), 0.0, 1.0)
      path = catalog.sample_file(entry["name"], i)
      Image.fromarray(np.round(out * 255).astype(np.uint8)).save(path, "JPEG",
                                                                quality=args.quality,
                                                                optimize=True)
      print(f"{path}: {path.stat().st_size} bytes")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("export")
  e.add_argument("--workdir", required=True)
  e.add_argument("--name", required=True)
  e.add_argument("--hours", type=float, required=True, help="training wall-clock hours")
  e.add_argument("--device", required=True, help="what it was trained on")
  s = sub.add_parser("sheet")
  bc.add_common_args(s, vgg_weights=False, out=zoo.CHECKPOINTS_DIR / "contact_sheet.jpg")
  s.add_argument("--models", nargs="+", required=True)
  s.add_argument("--size", type=int, default=192)
  m = sub.add_parser("samples")
  m.add_argument("--quality", type=int, default=85, help="JPEG quality")
  args = p.parse_args(argv)
  {"export": export, "sheet": sheet, "samples": samples}[args.command](args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
