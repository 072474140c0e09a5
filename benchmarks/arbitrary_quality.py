"""Arbitrary-style quality: the imported network, before and after style refinement, against 50
L-BFGS-B iterations (issue 35, sec. 5 and 6), on zoo_quality's photos and objective.

Synopsis::

  python3 benchmarks/arbitrary_quality.py refs                       # the L-BFGS-B references
  python3 benchmarks/arbitrary_quality.py refs --reverse             # a second process beside it
  python3 benchmarks/arbitrary_quality.py score --norms              # network before / after
  python3 benchmarks/arbitrary_quality.py report                     # tables from the two JSONs
  python3 benchmarks/arbitrary_quality.py net-images --styles ...    # the network alone, cheap
  python3 benchmarks/arbitrary_quality.py sheet                      # docs/arbitrary_sheet.jpg

Same measure as ``zoo_quality.py``: each output's loss under the zoo's objective (the ``thesis``
preset: VGG19 avg-pool, relu4_2 content, relu1_1..relu5_1 Gram style, TV; the painting at 256 px
long side) divided by the loss of ``--iters`` L-BFGS-B iterations started from the photo; the 10
photos of ``zoo_quality.PHOTOS`` at ``--size`` px. The references are the expensive part: ``refs``
computes each (painting, photo) once and keeps it in ``results/arbitrary_lbfgs_refs.json``
(``--seed`` first copies those ``zoo_quality`` already measured for the zoo8 paintings, same
objective and settings); ``score`` only reads them. ``refs`` does the sheet's photos of every
painting first. Images for the sheet go under ``<cache>/bench/arbitrary_quality/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import time
from pathlib import Path

import numpy as np

import bench_common as bc
from nst_jax import config
from nst_jax.core import image_io, paths, zoo
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary, arbitrary_refine as refine, magenta, training
from nst_jax.slow import artistic

STYLES = ("van_gogh_starry_night", "hokusai_great_wave", "munch_the_scream", "picabia_udnie",
          "kandinsky_composition_vii", "picabia_edtaonisl", "turner_shipwreck_of_the_minotaur",
          "van_gogh_wheat_field_with_cypresses", "mondrian_composition_1913", "van_gogh_houses",
          "van_gogh_night_cafe", "van_gogh_self_portrait", "watteau_woman_in_peasant_dress")
SHEET_PHOTOS = ("kodak/kodim23.jpg", "classic_st/tubingen.jpg", "classic_st/chicago.jpg")
REFS = bc.RESULTS / "arbitrary_lbfgs_refs.json"
SCORES = bc.RESULTS / "arbitrary_quality.json"
SUMMARY = bc.RESULTS / "arbitrary_quality_summary.json"


def image_dir() -> Path:
  return paths.cache_dir() / "bench" / "arbitrary_quality"


def read_json(path: Path) -> dict:
  return json.loads(path.read_text()) if path.is_file() else {}


def seed_refs(refs: dict, zoo_json: Path) -> None:
  """Copies zoo_quality's L-BFGS-B terms (same objective, photos, size, iterations)."""
  for row in read_json(zoo_json).get("rows", []):
    refs.setdefault(row["style"], {}).setdefault(
        row["photo"], dict(row["lbfgs"], source=zoo_json.name))


def _have(refs: dict, s: str, p: str) -> bool:
  have = refs.get(s, {}).get(p)
  return bool(have) and (p not in SHEET_PHOTOS or have.get("source") == "computed")


@contextlib.contextmanager
def _refs_locked():
  """The references file's contents, read under an exclusive lock (so that several ``refs``
  processes, e.g. one with ``--reverse``, share the work and merge what they write)."""
  image_dir().mkdir(parents=True, exist_ok=True)
  with open(image_dir() / "refs.lock", "w") as lock:  # in the cache, not the repository
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield read_json(REFS).get("refs", {})
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def run_refs(args, vgg_params, data: Path) -> None:
  if args.seed:
    with _refs_locked() as refs:
      seed_refs(refs, bc.RESULTS / "zoo_quality_zoo8.json")
      bc.write_result(REFS, {"refs": refs, "iters": args.iters, "size": args.size}, args)
  loss_cfg = refine.default_loss_config()
  slow_cfg = dataclasses.replace(config.gatys(), loss=loss_cfg, size=args.size, init="content",
                                 optim=dataclasses.replace(config.gatys().optim,
                                                           num_iters=args.iters))
  photos = bc.QUALITY_PHOTOS[:args.photos]
  todo = [(s, p) for p in SHEET_PHOTOS for s in args.styles]  # the sheet's first
  todo += [(s, p) for s in args.styles for p in photos if p not in SHEET_PHOTOS]
  for s, p in (todo[::-1] if args.reverse else todo):
    with _refs_locked() as refs:
      if _have(refs, s, p):  # done before, or by another refs process
        continue
    photo = image_io.load_image(data / "content" / p, size=args.size)
    style = image_io.load_image(data / "styles" / f"{s}.jpg", size=256)
    t0 = time.process_time()
    out = artistic.stylize(vgg_params, [artistic.Problem(photo, (style,))], slow_cfg,
                           progress=False).images[0]
    targets = training.make_style_targets(vgg_params, np.asarray(style)[None], loss_cfg)
    terms = bc.quality_loss(vgg_params, out, photo, targets, loss_cfg)
    with _refs_locked() as refs:
      refs.setdefault(s, {})[p] = dict(terms, source="computed", cpu_s=time.process_time() - t0)
      bc.write_result(REFS, {"refs": refs, "iters": args.iters, "size": args.size}, args)
    if p in SHEET_PHOTOS:
      image_io.save_image(image_dir() / f"lbfgs_{s}_{Path(p).stem}.png", out)
    print(f"{s:<36} {p:<28} lbfgs{args.iters} {terms['total']:10.4g}", flush=True)


def run_score(args, vgg_params, data: Path) -> None:
  model = arbitrary.load_arbitrary()
  loss_cfg = refine.default_loss_config()
  train = refine.load_photos(args.train_photos or refine.default_photo_dir(),
                             count=args.refine_photos, size=args.refine_size)
  photos = {p: image_io.load_image(data / "content" / p, size=args.size)
            for p in bc.QUALITY_PHOTOS[:args.photos]}
  old = read_json(Path(args.out))
  known = {(r["style"], r["photo"]): r["net"] for f in args.reuse_net
           for r in read_json(Path(f)).get("rows", [])}  # the network's own terms: deterministic
  rows = [r for r in old.get("rows", []) if r["style"] not in args.styles]
  refinements = {k: v for k, v in old.get("refinements", {}).items() if k not in args.styles}
  for s in args.styles:
    style = image_io.load_image(data / "styles" / f"{s}.jpg", size=256)
    if args.net_only:  # no refinement: the network's terms alone
      _score_net(args, model, style, s, photos, vgg_params, loss_cfg, rows)
      bc.write_result(args.out, {"rows": rows, "refinements": refinements}, args)
      continue
    res = refine.refine_embedding(model, style, train, vgg_params=vgg_params,
                                  steps=args.refine_steps, learning_rate=args.lr,
                                  norms=args.norms, loss_cfg=loss_cfg,
                                  batch=args.refine_batch, optimizer=args.optimizer)
    refinements[s] = {"cpu_s": res.seconds, "steps": res.steps, "train_loss":
                      [res.losses[0], res.losses[-1]], **res.settings}
    targets = training.make_style_targets(vgg_params, np.asarray(style)[None], loss_cfg)
    for p, photo in photos.items():
      net_png = image_dir() / f"net_{s}_{Path(p).stem}.png"
      row = {"style": s, "photo": p}
      outs = {"refined": refine.stylize(model, photo, res.embedding, res.norm_deltas)}
      if (s, p) in known and (p not in SHEET_PHOTOS or net_png.is_file()):
        row["net"] = known[(s, p)]
      else:
        outs["net"] = model.stylize(photo, res.initial_embedding)
      for k, out in outs.items():
        row[k] = bc.quality_loss(vgg_params, np.asarray(out), photo, targets, loss_cfg)
        if p in SHEET_PHOTOS:
          image_io.save_image(image_dir() / f"{k}_{s}_{Path(p).stem}.png", np.asarray(out))
      rows.append(row)
    print(f"{s:<36} refined in {res.seconds:.1f} CPU s; train loss {res.losses[0]:.4g} -> "
          f"{res.losses[-1]:.4g}", flush=True)
    bc.write_result(args.out, {"rows": rows, "refinements": refinements}, args)


def _score_net(args, model, style, s, photos, vgg_params, loss_cfg, rows) -> None:
  emb = model.embed(style)
  targets = training.make_style_targets(vgg_params, np.asarray(style)[None], loss_cfg)
  for p, photo in photos.items():
    out = np.asarray(model.stylize(photo, emb))
    rows.append({"style": s, "photo": p,
                 "net": bc.quality_loss(vgg_params, out, photo, targets, loss_cfg)})
  print(f"{s:<36} network scored", flush=True)


def run_net_images(args, data: Path) -> None:
  """Only the imported network's sheet images (no refinement, no scores): cheap, for paintings
  that ``score`` has not reached."""
  model = arbitrary.load_arbitrary()
  for s in args.styles:
    emb = model.embed(image_io.load_image(data / "styles" / f"{s}.jpg", size=256))
    for p in SHEET_PHOTOS:
      photo = image_io.load_image(data / "content" / p, size=args.size)
      image_io.save_image(image_dir() / f"net_{s}_{Path(p).stem}.png", model.stylize(photo, emb))
    print(f"{s}: network images", flush=True)


def summarize(scores: dict, refs: dict) -> dict:
  """Per painting: mean ratios (network, refined) to L-BFGS-B and the mean terms of each."""
  out = {}
  for s in dict.fromkeys(r["style"] for r in scores.get("rows", [])):
    rows = [r for r in scores["rows"] if r["style"] == s and r["photo"] in refs.get(s, {})]
    if not rows:
      continue
    ref = [refs[s][r["photo"]] for r in rows]
    entry = {"photos": len(rows), **{f"lbfgs_{t}": float(np.mean([x[t] for x in ref]))
                                     for t in ("content", "style", "total")}}
    for k in ("net", "refined") if all("refined" in r for r in rows) else ("net",):
      entry[f"{k}_ratio"] = float(np.mean([r[k]["total"] / x["total"] for r, x in zip(rows, ref)]))
      for t in ("content", "style"):
        entry[f"{k}_{t}"] = float(np.mean([r[k][t] for r in rows]))
    if "refined_ratio" in entry:
      entry["drop_pct"] = 100.0 * (1.0 - entry["refined_ratio"] / entry["net_ratio"])
    entry["cpu_s"] = scores.get("refinements", {}).get(s, {}).get("cpu_s")
    out[s] = entry
  return out


def print_report(summary: dict) -> None:
  print("| painting | photos | ratio net | ratio refined | drop % | refine CPU s | content net / "
        "refined / L-BFGS | style net / refined / L-BFGS |")
  print("|---|---|---|---|---|---|---|---|")
  for s, e in summary.items():
    g = lambda k, e=e: f"{e[k]:.4g}" if k in e else "-"  # no refined terms: --net-only
    print(f"| {s} | {e['photos']} | {e['net_ratio']:.2f} | {g('refined_ratio')} | "
          f"{g('drop_pct')} | {e['cpu_s'] or float('nan'):.1f} | {g('net_content')} / "
          f"{g('refined_content')} / {g('lbfgs_content')} | {g('net_style')} / "
          f"{g('refined_style')} / {g('lbfgs_style')} |")
  both = [e for e in summary.values() if "refined_ratio" in e]
  if summary:
    print(f"mean over {len(summary)} paintings: net "
          f"{np.mean([e['net_ratio'] for e in summary.values()]):.2f}")
  if both:
    mean = {k: np.mean([e[k] for e in both]) for k in ("net_ratio", "refined_ratio")}
    print(f"mean over the {len(both)} refined: net {mean['net_ratio']:.2f}, refined "
          f"{mean['refined_ratio']:.2f} ({100 * (1 - mean['refined_ratio'] / mean['net_ratio']):.0f}"
          " % lower)")


def update_metrics(summary: dict, args) -> Path:
  """Merges the per-painting ratios into the installed ``arbitrary`` entry's ``metrics`` (the
  user registry's manifest, where ``nst-jax models import magenta`` put it), as
  ``zoo_quality.py --update-manifest`` does for the shipped networks."""
  entry = zoo.find_model(magenta.MODEL_NAME, zoo.user_dir())
  if entry is None:
    raise UserError("no installed arbitrary model to record metrics for; run "
                    "`nst-jax models import magenta` first")
  ratios = entry.setdefault("metrics", {}).setdefault("loss_ratio_vs_lbfgs", {})
  for s, e in summary.items():
    ratios[s] = {"ratio_mean": e["net_ratio"], "refined_ratio_mean": e.get("refined_ratio"),
                 "photos": e["photos"], "size": args.size, "lbfgs_iters": args.iters}
  zoo.add_entry(zoo.user_dir(), entry)
  return zoo.user_dir() / zoo.MANIFEST_NAME


def _tile(image: np.ndarray | None, side: int):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if image is None:  # not computed (yet): a grey tile
    return Image.new("RGB", (side, side), (200, 200, 200))
  h, w = image.shape[:2]
  s = min(h, w)
  crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
  return Image.fromarray(image_io.to_uint8(crop)).resize((side, side), Image.Resampling.LANCZOS)


def make_sheet(data: Path, styles, out: Path, side: int = 96) -> Path:
  """Rows: paintings; columns: the painting, then per sheet photo the imported network, the
  refined style and L-BFGS-B (images saved by ``score`` and ``refs``; grey where missing)."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  label, gap = 14, 2
  cols = ["painting"] + [f"{k} {Path(p).stem}" for p in SHEET_PHOTOS
                         for k in ("net", "refined", "lbfgs")]
  sheet = Image.new("RGB", (len(cols) * (side + gap) + gap, label + len(styles) * (side + gap)),
                    "white")
  draw = ImageDraw.Draw(sheet)
  for c, name in enumerate(cols):
    draw.text((gap + c * (side + gap) + 2, 1), name, fill="black")
  for r, s in enumerate(styles):
    images = [image_io.load_image(data / "styles" / f"{s}.jpg", size=2 * side)]
    for p in SHEET_PHOTOS:
      for k in ("net", "refined", "lbfgs"):
        f = image_dir() / f"{k}_{s}_{Path(p).stem}.png"
        images.append(image_io.load_image(f) if f.is_file() else None)
    for c, img in enumerate(images):
      sheet.paste(_tile(img, side), (gap + c * (side + gap), label + r * (side + gap)))
  out.parent.mkdir(parents=True, exist_ok=True)
  sheet.save(out, quality=85)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=SCORES)
  p.add_argument("action", choices=("refs", "score", "report", "sheet", "net-images"))
  p.add_argument("--styles", nargs="*", default=list(STYLES), help="painting names (SHARED/styles)")
  p.add_argument("--photos", type=int, default=10, help=f"how many of {len(bc.QUALITY_PHOTOS)} photos")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--iters", type=int, default=50, help="L-BFGS-B iterations")
  p.add_argument("--seed", action="store_true", help="refs: start from zoo_quality_zoo8.json")
  p.add_argument("--reverse", action="store_true", help="refs: take the list from its end (a "
                 "second refs process beside a first shares the work)")
  p.add_argument("--optimizer", choices=refine.OPTIMIZERS, default="lbfgs")
  p.add_argument("--refine-steps", type=int, default=24, help="Adam steps or L-BFGS evaluations")
  p.add_argument("--refine-photos", type=int, default=4)
  p.add_argument("--refine-size", type=int, default=128)
  p.add_argument("--refine-batch", type=int, default=None,
                 help="photos per refinement step (default: all --refine-photos at every step)")
  p.add_argument("--lr", type=float, default=0.1, help="Adam's learning rate")
  p.add_argument("--norms", action="store_true", help="also refine the instance-norm offsets")
  p.add_argument("--net-only", action="store_true", help="score: the network alone, no refinement")
  p.add_argument("--reuse-net", nargs="*", default=[], help="score: earlier score JSONs whose "
                 "network terms (deterministic) are taken as they are, not computed again")
  p.add_argument("--train-photos", default=None, help="refinement photos (default: COCO crops)")
  p.add_argument("--scores", nargs="*", default=None, help="report: score JSONs (default --out)")
  p.add_argument("--sheet", default=str(bc.REPO / "docs" / "arbitrary_sheet.jpg"))
  p.add_argument("--update-manifest", action="store_true", help="report: write the ratios into "
                 "the installed model's entry (the user cache's models/MANIFEST.json)")
  args = p.parse_args(argv)
  if args.action == "sheet":
    print(f"wrote {make_sheet(bc.data_dir(args), args.styles, Path(args.sheet))}")
    return 0
  if args.action == "report":
    scores = {"rows": [], "refinements": {}}
    for f in args.scores or [args.out]:  # several score runs (e.g. run side by side) merge
      part = read_json(Path(f))
      scores["rows"] += part.get("rows", [])
      scores["refinements"].update(part.get("refinements", {}))
    summary = summarize(scores, read_json(REFS).get("refs", {}))
    print_report(summary)
    bc.write_result(SUMMARY, {"summary": summary, "refinements": scores["refinements"]}, args)
    if args.update_manifest:
      print(f"metrics of {len(summary)} paintings -> {update_metrics(summary, args)}")
    return 0
  if args.action == "net-images":
    run_net_images(args, bc.data_dir(args))
    return 0
  vgg_params, data = bc.load_vgg(args), bc.data_dir(args)
  (run_refs if args.action == "refs" else run_score)(args, vgg_params, data)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
