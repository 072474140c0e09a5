"""``nst-jax models``: list the shipped models of ``checkpoints/MANIFEST.json``.

Synopsis::

  nst-jax models                 # name, kind, styles, size, training steps
  nst-jax models --kind style    # style networks only (stylize --model NAME)
  nst-jax models --verify        # also check every file's sha256

Each name works wherever a model path is accepted (``nst-jax stylize --model NAME``).
"""

from __future__ import annotations

import argparse

HELP = "list the shipped pretrained models (checkpoints/MANIFEST.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--kind", default=None, help="only models of this kind (style, sr, ...)")
  parser.add_argument("--verify", action="store_true",
                      help="check each file against its manifest sha256 (exit 2 if one fails)")
  parser.add_argument("--manifest", default=None, help="another manifest (default: the shipped)")


def describe(entry: dict) -> str:
  """One line per model: name, kind, styles, file size, steps, training size and device."""
  styles = [s.get("name", "?") for s in entry.get("styles", [])]
  shown = ", ".join(styles[:4]) + (f", ... ({len(styles)} styles)" if len(styles) > 4 else "")
  size = entry.get("bytes")
  crop = entry.get("train_size", entry.get("config", {}).get("size", "?"))  # sr: the HR crop
  scale = f"x{entry['scale']}" if entry.get("scale") else ""
  parts = [f"{entry['name']:<16}", f"{entry.get('kind', '?'):<6}", scale,
           f"{size / 1e6:.2f} MB" if size else "", f"{entry.get('steps', '?')} steps",
           f"@{crop}px", entry.get("device", "")]
  return "  ".join(p for p in parts if p) + (f"  [{shown}]" if shown else "")


def run(args: argparse.Namespace) -> int:
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  entries = [e for e in zoo.read_manifest(args.manifest)
             if args.kind in (None, e.get("kind"))]
  if not entries:
    print("no shipped models" + (f" of kind {args.kind!r}" if args.kind else ""))
    return 0
  for entry in entries:
    if args.verify:
      zoo.resolve_model(entry["name"], manifest=args.manifest)  # UserError -> exit 2
    print(describe(entry))
  return 0
