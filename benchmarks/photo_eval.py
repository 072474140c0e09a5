"""Evaluates photorealistic transfer against Gatys' artistic transfer on Luan et al.'s pairs.

Synopsis::

  python benchmarks/photo_eval.py                              # all 20 pairs, hand-made masks
  python benchmarks/photo_eval.py --pairs 1,5,9 --masks both   # hand-made and automatic masks
  python benchmarks/photo_eval.py --fast-checkpoint 'runs/photo_pair{pair}'
  python benchmarks/photo_eval.py --time-size 256      # also time one whole photoreal run
  python benchmarks/photo_eval.py --time-only --time-size 512 --time-iters 300   # only that
  python benchmarks/photo_eval.py --set matting_weight=6e9    # a variant of the slow method

For each pair N under ``DATA/photo`` (input/inN.png, style/tarN.png, segmentation/{in,tar}N.png)
at ``--size`` (long side), runs Gatys (``artistic.stylize``, 2 x ``--iters`` iterations, the
same number of evaluations) and slow photoreal (``photoreal.stylize`` with the default
``PhotoConfig``, ``--iters`` per stage, with the hand-made masks, ``--masks auto`` or both;
``--set KEY=VALUE`` overrides a field of that config, as ``nst-jax train --set`` does). When
the config smooths the output (Luan's optional post-step), the unsmoothed result is scored too
("photoreal_raw"; the same run, before ``photoreal.post_smooth``). ``--fast-checkpoint`` adds a
fast photoreal network; a ``{pair}`` in it names one network per style photo, and pairs whose
checkpoint does not exist show "-" and are left out of that column's mean. Measures, on float
outputs:

- photorealism: ``sum_c O_c^T L O_c / sum_c C_c^T L C_c`` with the content's matting Laplacian at
  the evaluation epsilon ``--eval-eps`` (1e-4; see docs/photoreal.md for why not 1e-7);
- structure: Pearson correlation of the Sobel gradient magnitudes of output and content luminance;
- style: the masked Gram loss (conv1_1..conv5_1, unit weights) to the style photo with the
  hand-made masks.

Checks the goals (mean over pairs): photoreal's matting ratio <= 2, Gatys' >= 10, and the mean
per-pair ratio of photoreal's style loss to Gatys' <= 2. Writes ``photo_eval.json`` and
``photo_eval.md`` to ``--results``, the table to ``--docs``/research (a dated result) and a
contact sheet (content | style | Gatys | photoreal [| auto masks] [| fast]; ``--sheet-pairs``, by
default at most 6 evenly spaced pairs) to ``--docs`` (the user guide's picture).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import bench_common as bc
import numpy as np
from PIL import Image

from nst_jax import config
from nst_jax.core import image_io, plots
from nst_jax.slow import photoreal

SHEET_ROWS = 6
GOALS = {"photoreal_matting_max": 2.0, "gatys_matting_min": 10.0, "style_ratio_max": 2.0}


def photo_runs(params, args, content, style, cm, sm) -> dict:
  """{method: (image, seconds)} for slow photoreal with the default config (and ``--set``) at the
  pair's size."""
  pcfg = bc.photo_config(max(content.shape[:2]), args.iters,
                         config.parse_assignments(args.overrides))
  out = {}
  for kind in (("given", "auto") if args.masks == "both" else (args.masks,)):
    given = {"content_masks": cm, "style_masks": sm} if kind == "given" else {}
    suffix = "" if kind == "given" else "_auto"
    t = time.perf_counter()
    # stylize applies the post-step itself when pcfg.smooth; run without it to score both.
    unsmoothed = dataclasses.replace(pcfg, smooth=False)
    raw = photoreal.stylize(params, content, style, unsmoothed, progress=False,
                            **given).images[0]
    seconds = time.perf_counter() - t
    if pcfg.smooth:  # the configured post-step (``--set smooth=true``), scored with and without
      out[f"photoreal{suffix}_raw"] = (raw, seconds)
      raw = photoreal.post_smooth(raw, content, pcfg)
      seconds = time.perf_counter() - t
    out[f"photoreal{suffix}"] = (raw, seconds)
  return out


def run_methods(params, args, content, style, cm, sm, fast) -> dict:
  """{method: (image, seconds)} for one pair; ``fast`` is a Stylizer or None."""
  t = time.perf_counter()
  out = {"gatys": (bc.run_gatys(params, content, style, 2 * args.iters), time.perf_counter() - t)}
  out.update(photo_runs(params, args, content, style, cm, sm))
  if fast is not None:
    t = time.perf_counter()
    out["fast"] = (np.clip(fast(content), 0.0, 1.0), time.perf_counter() - t)
  return out


def fast_checkpoint_for(template: str | None, pair: int) -> str | None:
  """The pair's fast checkpoint: ``template`` with ``{pair}`` filled in, None if it is absent."""
  if not template:
    return None
  path = template.replace("{pair}", str(pair))
  if "{pair}" in template and not os.path.exists(path):
    return None
  return path


def load_fast(template: str | None, pair: int, cache: dict):
  """A Stylizer for the pair's checkpoint (loaded once per path), or None."""
  path = fast_checkpoint_for(template, pair)
  if path is None:
    return None
  if path not in cache:
    from nst_jax.fast import inference  # pylint: disable=import-outside-toplevel
    cache[path] = inference.Stylizer.from_checkpoint(path)
  return cache[path]


def _cells(entry) -> str:
  if entry is None:
    return "- | - | -"
  return (f"{entry['matting_ratio']:.3g} | {entry['grad_corr']:.3f} | "
          f"{entry['style_loss']:.4g}")


def markdown(rows: list[dict], methods: list[str], note: str) -> str:
  head = "| pair | " + " | ".join(f"{m} matting x | {m} grad corr | {m} style" for m in methods)
  lines = [note, "", head + " |", "|" + "---|" * (1 + 3 * len(methods))]
  for r in rows + [mean_row(rows, methods)]:
    lines.append(f"| {r['pair']} | " + " | ".join(_cells(r.get(m)) for m in methods) + " |")
  return "\n".join(lines) + "\n"


def mean_row(rows, methods) -> dict:
  """Per-method means over the pairs that have the method (a fast net may exist for a few)."""
  out = {"pair": "mean"}
  for m in methods:
    have = [r[m] for r in rows if r.get(m) is not None]
    if have:
      out[m] = {k: float(np.mean([e[k] for e in have])) for k in have[0]}
      out[m]["pairs"] = len(have)
  return out


def goal_check(rows: list[dict], methods: list[str]) -> dict:
  """The issue's goals on means over pairs: matting ratios and photoreal/Gatys style ratio."""
  mean = mean_row(rows, methods)
  out = {"gatys_matting": mean["gatys"]["matting_ratio"]}
  out["gatys_ok"] = out["gatys_matting"] >= GOALS["gatys_matting_min"]
  for m in methods[1:]:
    have = [r for r in rows if r.get(m) is not None]
    style = float(np.mean([r[m]["style_loss"] / r["gatys"]["style_loss"] for r in have]))
    out[m] = {"matting": mean[m]["matting_ratio"], "style_vs_gatys": style,
              "matting_ok": mean[m]["matting_ratio"] <= GOALS["photoreal_matting_max"],
              "style_ok": style <= GOALS["style_ratio_max"], "pairs": len(have)}
  return out


def goal_lines(goals: dict) -> str:
  mark = lambda ok: "yes" if ok else "NO"
  lines = [f"Goals (means over pairs): Gatys matting x {goals['gatys_matting']:.3g} >= "
           f"{GOALS['gatys_matting_min']:g}: {mark(goals['gatys_ok'])}."]
  for m, g in goals.items():
    if isinstance(g, dict):
      lines.append(f"{m} ({g['pairs']} pairs): matting x {g['matting']:.3g} <= "
                   f"{GOALS['photoreal_matting_max']:g}: {mark(g['matting_ok'])}; style / Gatys' "
                   f"{g['style_vs_gatys']:.2f} <= {GOALS['style_ratio_max']:g}: "
                   f"{mark(g['style_ok'])}.")
  return "\n".join(lines) + "\n"


def contact_sheet(path: Path, sheet: list[list[np.ndarray]], names: list[str], cols: list[str]):
  """The image grid, re-saved with an adaptive 256-colour palette to stay small."""
  plots.save_image_grid(path, sheet, row_titles=names, col_titles=cols, cell=1.5)
  with Image.open(path) as grid:
    small = grid.convert("RGB").quantize(256)
  image_io.atomic_write(path, lambda tmp: small.save(tmp, format="PNG", optimize=True))


def time_one(params, photo_dir: Path, size: int, iters: int) -> dict:
  """Wall time of one whole photoreal run (automatic masks, 2 stages) at ``size``, pair 1."""
  content, style, _, _ = bc.load_photo_pair(photo_dir, 1, size)
  cfg = bc.photo_config(size, iters)
  t = time.perf_counter()
  out = photoreal.stylize(params, content, style, cfg, progress=False)
  total = time.perf_counter() - t
  return {"size": size, "iters_per_stage": iters, "seconds_total": total,
          "seconds_optimizing": out.seconds, "seconds_per_iteration": out.seconds / (2 * iters)}


def sheet_pairs(text: str, pairs: list[int]) -> list[int]:
  """The contact sheet's pairs: given, or at most SHEET_ROWS evenly spaced ones."""
  if text:
    return [n for n in bc.parse_pairs(text) if n in pairs]
  step = -(-len(pairs) // SHEET_ROWS)
  return pairs[::step]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p)
  p.add_argument("--pairs", default="all", help="'all' or comma-separated pair numbers (1..20)")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--iters", type=int, default=40, help="photoreal iterations per stage")
  p.add_argument("--masks", choices=("given", "auto", "both"), default="given")
  p.add_argument("--eval-eps", type=float, default=config.EVAL_EPS)
  p.add_argument("--fast-checkpoint", metavar="PATH",
                 help="fast photoreal checkpoint for nst_jax.inference; '{pair}' in it is "
                      "replaced by the pair number (pairs without one show '-')")
  p.add_argument("--sheet-pairs", default="", help="pairs on the contact sheet (default: <= 6)")
  p.add_argument("--time-size", type=int, default=0, help="also time one run at this size")
  p.add_argument("--time-iters", type=int, default=100, help="iterations per stage, timed run")
  p.add_argument("--time-only", action="store_true",
                 help="only the timed run (--time-size, default 512): photo_timing.json")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="override of the slow photoreal config (e.g. matting_weight=6e9); repeatable")
  p.add_argument("--results", default=str(bc.RESULTS), help="folder of photo_eval.json/.md")
  p.add_argument("--docs", default=str(bc.REPO / "docs"), help="folder of the table and sheet")
  return p.parse_args(argv)


def evaluate_pair(params, args, photo_dir, n, fast_cache) -> tuple[dict, dict]:
  """(row of metrics, {method: image}) for pair ``n``."""
  content, style, cm, sm = bc.load_photo_pair(photo_dir, n, args.size)
  fast = load_fast(args.fast_checkpoint, n, fast_cache)
  outs = run_methods(params, args, content, style, cm, sm, fast)
  row = {"pair": n}
  for m, (img, sec) in outs.items():
    row[m] = dict(bc.score_photo(params, img, content, style, cm, sm, eps=args.eval_eps),
                  seconds=sec)
  return row, {"content": content, "style": style, **{m: img for m, (img, _) in outs.items()}}


def write_outputs(args, summary: dict, text: str, sheet, names, cols) -> None:
  results, docs = Path(args.results), Path(args.docs)
  bc.write_result(results / "photo_eval.json", summary, args)
  for path in (results / "photo_eval.md", docs / "research" / "photo_eval.md"):
    image_io.write_text(path, text)
  docs.mkdir(parents=True, exist_ok=True)
  contact_sheet(docs / "photo_eval.png", sheet, names, cols)


def main(argv=None):
  args = parse_args(argv)
  pairs = bc.parse_pairs(args.pairs)
  photo_dir = bc.data_dir(args) / "photo"
  params = bc.load_vgg(args)
  if args.time_only:
    timing = time_one(params, photo_dir, args.time_size or 512, args.time_iters)
    print(json.dumps(timing))
    bc.write_result(Path(args.results) / "photo_timing.json", {"timing": timing}, args)
    return
  rows, images, fast_cache, t0 = [], {}, {}, time.perf_counter()
  for n in pairs:
    row, images[n] = evaluate_pair(params, args, photo_dir, n, fast_cache)
    rows.append(row)
    print(json.dumps(row), flush=True)
  methods = [m for m in ("gatys", "photoreal", "photoreal_raw", "photoreal_auto",
                         "photoreal_auto_raw", "fast") if any(m in r for r in rows)]
  wall = time.perf_counter() - t0
  note = (f"Pairs {args.pairs} at {args.size} px (long side), photoreal {args.iters} iterations "
          f"per stage ({args.masks} masks), Gatys {2 * args.iters}; matting ratio at eps "
          f"{args.eval_eps:g}; {wall:.0f} s in all, load average {os.getloadavg()[0]:.1f} at "
          f"the end.")
  goals = goal_check(rows, methods)
  text = markdown(rows, methods, note) + "\n" + goal_lines(goals)
  print(text)
  summary = {"seconds": wall, "rows": rows,
             "mean": mean_row(rows, methods), "goals": goals,
             "defaults": {"photoreal": config.to_dict(config.PhotoConfig())}}
  if args.time_size:
    summary["timing"] = time_one(params, photo_dir, args.time_size, args.time_iters)
    print(json.dumps(summary["timing"]))
  shown = [m for m in ("gatys", "photoreal", "photoreal_auto", "fast") if m in methods]
  chosen = sheet_pairs(args.sheet_pairs, pairs)
  sheet = [[images[n]["content"], images[n]["style"]] + [images[n].get(m) for m in shown]
           for n in chosen]
  write_outputs(args, summary, text, sheet, [f"pair {n}" for n in chosen],
                ["content", "style"] + shown)


if __name__ == "__main__":
  bc.run_main(main)
