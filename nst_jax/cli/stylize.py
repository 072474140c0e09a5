"""``nst-jax stylize``: apply a trained feed-forward style network to photos of any size.

Synopsis::

  nst-jax stylize --model runs/starry --content a.jpg b.png --out out/
  nst-jax stylize --model runs/starry --content a.jpg --out out/ --strength 0.7 \\
      --original-colors yiq --bf16
  nst-jax stylize --model runs/photo_pair1 --content a.jpg --out out/ --matting-budget 1.5
  nst-jax stylize --model starry_small --content a.jpg --out out/     # a shipped model (nst-jax models)
  nst-jax stylize --model zoo8 --style-name great_wave --content a.jpg --out out/
  nst-jax stylize --model zoo8 --mix 0.5:starry,0.5:great_wave --content a.jpg --out out/
  nst-jax stylize --model arbitrary --style-image painting.jpg --content a.jpg --out out/
  nst-jax stylize --model arbitrary --style-image the_scream --strength 0.6 --content a.jpg \\
      --out out/                      # a painting of ../shared/data/styles by its file's stem
  nst-jax stylize --model arbitrary --mix 0.7:a.jpg,0.3:b.jpg --content a.jpg --out out/
  nst-jax stylize --model arbitrary --style-image the_scream --refine 40 --content a.jpg --out o/
  nst-jax stylize --model arbitrary --style-name scream --content a.jpg --out out/  # models refine
  nst-jax stylize --model starry_lite --content 8k.jpg --out out/ --tile 512   # big pictures

Every input is read and checked before anything is written; outputs are ``OUT/<stem>.png``
(written atomically). ``--strength s`` blends ``s * stylized + (1 - s) * photo`` in pixel space;
for the arbitrary-style network (``nst-jax models import magenta``) it is Ghiasi et al.'s
interpolation between the photo's own style embedding and the painting's (``fast.any_style``).
The post-step's settings are a ``config.Smoothing``: the network's own (or the defaults) <
``--config`` < the ``--smooth-*``/``--matting-budget`` flags < ``--set`` (e.g. ``--set
method=guided``); the resolved one is written to ``OUT/smoothing_config.json``. Photos too large
for memory are stylized in tiles with the whole image's normalization statistics
(``fast.tiled``; ``--tile PX`` forces it, ``--tile 0`` refuses them instead).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from nst_jax import config
from nst_jax.cli import common
from nst_jax.core import image_io
from nst_jax.core.errors import UserError

HELP = ("stylize photos with a fast network: a trained one (nst-jax train, shipped models) or "
        "the arbitrary-style one with any painting")
ARBITRARY = "arbitrary"  # inference.ARBITRARY, not imported here (JAX); the model's kind
DEFAULT_BUCKET = 32  # inference.DEFAULT_BUCKET (tests/test_cli_config.py checks), not imported
# here: importing inference imports JAX, and --help should not wait for it.
# Flag (argparse dest) -> Smoothing key.
FLAGS = common.field_flags(config.Smoothing)


def _unit_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
  if not 0.0 <= value <= 1.0:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
  return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--content", required=True, nargs="+", metavar="IMAGE",
                      help="one or more photos")
  parser.add_argument("--out", required=True, help="the output folder")
  parser.add_argument("--format", choices=("png", "jpg"), default="png",
                      help="output image format (default png)")
  add_network_arguments(parser, what="photo",
                        saved="the OUT/smoothing_config.json every run writes")


def add_network_arguments(parser: argparse.ArgumentParser, *, what: str, saved: str,
                          model_required: bool = True) -> None:
  """The network, style and post-processing flags (shared with ``nst-jax video``); ``what`` is
  the thing --size resizes ("photo", "frame"), ``saved`` the file a run writes its resolved
  post-step config to (for --config's help)."""
  parser.add_argument("--model", required=model_required,
                      help="a shipped or installed model's name (`nst-jax models`), a model "
                      ".npz, a training workdir (newest checkpoint) or one checkpoint step folder")
  parser.add_argument("--style-index", type=int, default=None, metavar="I",
                      help="multi-style networks: the style to apply, by index (default 0)")
  parser.add_argument("--style-name", default=None, metavar="NAME",
                      help="multi-style networks: the style to apply, by (part of its) name")
  parser.add_argument("--style-image", default=None, metavar="PAINTING",
                      help="the arbitrary-style network (--model arbitrary): the painting to "
                      "imitate, an image file or the stem of one in ../shared/data/styles")
  parser.add_argument("--refine", type=int, default=0, metavar="STEPS",
                      help="--model arbitrary: first refine the painting's style for STEPS "
                      "L-BFGS loss evaluations under the perceptual loss (24: ~1 CPU minute; "
                      "`nst-jax models refine` keeps the result as a named style)")
  parser.add_argument("--mix", default=None, metavar="W:STYLE,...",
                      help="multi-style networks: blend styles, e.g. 0.5:starry,0.5:great_wave "
                      "(names or indices; the normalization parameters are interpolated); "
                      "--model arbitrary: W:PAINTING pairs (files or stems), embeddings mixed")
  parser.add_argument("--size", type=int, default=None,
                      help=f"resize each {what} so its long side is this many pixels first "
                      "(default: keep their size)")
  parser.add_argument("--strength", type=_unit_float, default=1.0,
                      help="s in [0, 1]: output = s * stylized + (1 - s) * photo (default 1); "
                      "--model arbitrary: the embedding (1 - s) * photo's own + s * painting's")
  parser.add_argument("--original-colors", choices=config.COLOR_MODES, default="",
                      help="keep the photo's colours (luminance-only transfer in YIQ or YUV)")
  parser.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                      help="smooth the output with the photo as guide (Luan et al.'s post-step; "
                      "default: on for photorealistic networks, off otherwise)")
  common.add_field_flags(parser, config.Smoothing)
  parser.add_argument("--bf16", action="store_true", help="bfloat16 compute (default: off)")
  parser.add_argument("--bucket", type=int, default=DEFAULT_BUCKET,
                      help="pad sizes to multiples of this, one compilation per padded shape")
  parser.add_argument("--batch-size", type=int, default=1,
                      help="images per compiled call (default 1; more helps on accelerators)")
  parser.add_argument("--max-pixels", type=int, default=None,
                      help=f"refuse input {what}s with more pixels than this (default 64M)")
  parser.add_argument("--tile", type=int, default=None, metavar="PX",
                      help=f"stylize in PX-pixel tiles with the norms' statistics of the whole "
                      f"{what} (default: only {what}s too large for memory; 0: never)")
  common.add_config_flags(parser, "Smoothing", base="the network's own post-step", saved=saved,
                          example="method=guided")
  common.add_memory_flag(parser)


def output_paths(inputs: list[str], out_dir: Path, fmt: str) -> list[Path]:
  """``OUT/<stem>.<fmt>`` per input; repeated stems get ``_2``, ``_3``..."""
  seen: dict[str, int] = {}
  paths = []
  for name in inputs:
    stem = Path(name).stem
    seen[stem] = seen.get(stem, 0) + 1
    suffix = "" if seen[stem] == 1 else f"_{seen[stem]}"
    paths.append(out_dir / f"{stem}{suffix}.{fmt}")
  return paths


def resolve_config(args: argparse.Namespace,
                   default: config.Smoothing | None = None) -> config.Smoothing:
  """The network's default post-step (or ``Smoothing()``) < --config < the flags < --set."""
  return common.resolve_config(args, default or config.Smoothing(),
                               common.flag_overrides(args, FLAGS))


def run(args: argparse.Namespace) -> int:
  # pylint: disable=import-outside-toplevel  (JAX, only when the command runs)
  from nst_jax.core import memory
  from nst_jax.fast import inference, tiled
  logging.getLogger("absl").setLevel(logging.ERROR)
  if args.size is not None and args.size < 1:
    raise UserError(f"--size must be positive, got {args.size}")
  if args.refine < 0:
    raise UserError(f"--refine takes a number of steps >= 0, got {args.refine}")
  out_dir = Path(args.out)
  if out_dir.exists() and not out_dir.is_dir():
    raise UserError(f"--out must be a folder, got a file: {out_dir}")
  # The post-step flags' values, before any file is read (a network with a post-step of its own
  # changes the base below; with none, that check is check_once's cache).
  resolve_config(args).check()
  memory.check_files_fit("stylize", args.content, args.size,  # before a --size resize
                         memory.budget_bytes(args.max_memory), batch=args.batch_size,
                         tiled_bytes=0 if args.tile == 0 else tiled.SAVE_BYTES)
  stylizer = inference.Stylizer.from_any(args.model, bf16=args.bf16, bucket=args.bucket,
                                         batch_size=args.batch_size)
  # The post-step, checked here once before any input is read (the library's check of the same
  # value is check_once's cache); --strength and --original-colors are argparse's; --tile is
  # checked by the library where it tiles.
  smoothing = resolve_config(args, stylizer.smoothing).check()
  images = [image_io.load_image(p, size=args.size, max_pixels=args.max_pixels)
            for p in args.content]  # every input is checked before any work
  set_style(stylizer, args)
  t0 = time.perf_counter()
  outputs = stylizer.stylize_many(images, strength=args.strength,
                                  original_colors=args.original_colors, smooth=args.smooth,
                                  smoothing=smoothing, max_memory=args.max_memory,
                                  tile=args.tile)
  seconds = time.perf_counter() - t0
  common.write_config(out_dir / "smoothing_config.json", smoothing)
  for path, image in zip(output_paths(args.content, out_dir, args.format), outputs):
    image_io.save_image(path, image)
    print(path)
  step = f"step {stylizer.meta['step']} of " if stylizer.meta.get("step") is not None else ""
  print(f"stylized {len(outputs)} image(s) in {seconds:.2f} s ({step}{args.model}, "
        f"{len(stylizer.compiled_shapes)} compiled shape(s))")
  return 0


def find_painting(name: str) -> Path:
  """An image file, or the stem (whole, else a unique part) of one in the shared styles folder.

  Raises:
    UserError: neither, naming the stems there.
  """
  path = Path(name).expanduser()
  if path.is_file():
    return path
  from nst_jax.core import paths  # pylint: disable=import-outside-toplevel
  folder = paths.data_dir() / "styles"
  known = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
  for matches in ([p for p in known if p.stem == name], [p for p in known if name in p.stem]):
    if len(matches) == 1:
      return matches[0]
  stems = ", ".join(p.stem for p in known) or f"none in {folder}"
  raise UserError(f"no painting {name!r}: not a file, nor the stem of exactly one painting "
                  f"in {folder} ({stems})")


def painting_mix(text: str) -> list[tuple[float, Path]]:
  """``--mix 0.7:a.jpg,0.3:starry`` -> [(0.7, path), (0.3, path)] (the arbitrary network)."""
  pairs = []
  for part in text.split(","):
    weight, sep, name = part.partition(":")
    try:
      pairs.append((float(weight), find_painting(name.strip())))
    except ValueError:
      raise UserError(f"--mix takes W:PAINTING pairs (e.g. 0.7:a.jpg,0.3:starry), got "
                      f"{part!r}") from None
    if not sep:
      raise UserError(f"--mix takes W:PAINTING pairs, got {part!r}")
  return pairs


def set_style(stylizer, args: argparse.Namespace) -> None:
  """The style flags for the stylizer's kind of network (paintings for the arbitrary one)."""
  if stylizer.meta.get("kind") != ARBITRARY:
    if args.style_image is not None or args.refine:
      raise UserError(f"--style-image and --refine need the arbitrary-style network (--model "
                      f"{ARBITRARY}); {args.model!r} has fixed styles (--style-name, "
                      "--style-index, --mix)")
    stylizer.set_style(index=args.style_index, name=args.style_name, mix=args.mix)
    return
  if args.style_index is not None:
    raise UserError(f"--model {ARBITRARY} takes a painting (--style-image), a mix of paintings "
                    "(--mix W:PAINTING,...) or a refined style (--style-name), not --style-index")
  given = [x is not None for x in (args.style_image, args.mix, args.style_name)]
  if sum(given) != 1:
    raise UserError(f"--model {ARBITRARY} needs one painting (--style-image FILE_OR_STEM), a "
                    "mix (--mix W:PAINTING,...) or a refined style (--style-name NAME)")
  if args.refine and args.style_image is None:
    raise UserError("--refine refines one painting's style: give it --style-image")
  from nst_jax.fast import arbitrary_refine  # pylint: disable=import-outside-toplevel (JAX)
  if args.style_name is not None:
    style = arbitrary_refine.load_style(args.style_name)
    stylizer.set_style(embedding=style.embedding, norm_deltas=style.norm_deltas)
  elif args.mix is not None:
    stylizer.set_style(mix=[(w, image_io.load_image(p)) for w, p in painting_mix(args.mix)])
  elif args.refine:
    result = refine_painting(stylizer, image_io.load_image(find_painting(args.style_image)),
                             args.refine)
    stylizer.set_style(embedding=result.embedding, norm_deltas=result.norm_deltas)
  else:
    stylizer.set_style(image=image_io.load_image(find_painting(args.style_image)))


def refine_painting(stylizer, painting, steps: int):
  """``arbitrary_refine.refine_embedding`` of the painting with ``models refine``'s defaults."""
  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm
  from nst_jax.core import paths, vgg
  from nst_jax.fast import arbitrary_refine
  if min(painting.shape[:2]) < 2:
    raise UserError(f"a style image needs at least 2 x 2 pixels, got {painting.shape[0]} x "
                    f"{painting.shape[1]}")
  vgg_params = vgg.load_vgg19(paths.resolve_vgg_weights(None))
  photos = arbitrary_refine.load_photos(arbitrary_refine.default_photo_dir(), count=4, size=128)
  with tqdm(total=steps, desc="refine", unit="step") as bar:
    def on_step(step, loss):
      del step
      bar.update(1)
      bar.set_postfix(loss=f"{loss:.4g}")
    return arbitrary_refine.refine_embedding(stylizer.net, painting, photos, vgg_params=vgg_params,
                                             steps=steps, norms=True, optimizer="lbfgs",
                                             callback=on_step)
