"""Scores several fast photoreal networks per pair against a stored Gatys run, as photo_eval does.

Synopsis::

  python benchmarks/fast_photo_score.py --reference benchmarks/results/photo_eval_fast.json \
      seed0='runs/s0_pair{pair}/checkpoints/300' seed1='runs/s1_pair{pair}/checkpoints/300'

``benchmarks/photo_eval.py`` runs Gatys and the slow method next to one fast network per pair;
comparing training settings (seeds, learning rates, weights) needs only the fast column. Each
``LABEL=TEMPLATE`` names one network per pair (``{pair}`` is replaced by the pair number); every
network stylizes ``inN.png`` with its default post-step and is scored with photo_eval's
measures (``bench_common.score_photo``: matting ratio, gradient correlation, masked Gram loss
with the hand-made masks). The style loss is divided by the Gatys loss of the same pair in
``--reference`` (a photo_eval JSON at the same size). Prints a markdown table of per-pair and mean
values; ``--out`` also writes JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import bench_common as bc
import numpy as np

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.fast import inference


def parse_networks(items: list[str]) -> dict[str, str]:
  """{label: template} from ``LABEL=TEMPLATE`` arguments."""
  out = {}
  for item in items:
    label, sep, template = item.rpartition("=")
    if not sep or not label or "{pair}" not in template:
      raise UserError(f"expected LABEL=TEMPLATE with '{{pair}}' in it, got {item!r}")
    out[label] = template
  return out


def gatys_losses(reference: Path) -> tuple[int, dict[int, float]]:
  """(size, {pair: Gatys style loss}) of a photo_eval JSON."""
  data = json.loads(reference.read_text())
  return data["args"]["size"], {r["pair"]: r["gatys"]["style_loss"] for r in data["rows"]}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("networks", nargs="+", metavar="LABEL=TEMPLATE")
  p.add_argument("--reference", required=True, help="photo_eval JSON with the Gatys rows")
  bc.add_common_args(p)
  p.add_argument("--eval-eps", type=float, default=config.EVAL_EPS)
  p.add_argument("--out", help="also write the results as JSON here")
  args = p.parse_args(argv)
  networks = parse_networks(args.networks)
  size, gatys = gatys_losses(Path(args.reference))
  photo_dir = bc.data_dir(args) / "photo"
  params = bc.load_vgg(args)
  pairs = [n for n in sorted(gatys)
           if all(Path(t.replace("{pair}", str(n))).exists() for t in networks.values())]
  if not pairs:
    raise UserError("no pair of the reference has a network for every label")
  rows = {label: {} for label in networks}
  for n in pairs:
    content, style, cm, sm = bc.load_photo_pair(photo_dir, n, size)
    for label, template in networks.items():
      out = inference.Stylizer.from_checkpoint(template.replace("{pair}", str(n)))(content)
      m = bc.score_photo(params, np.clip(out, 0.0, 1.0), content, style, cm, sm,
                         eps=args.eval_eps)
      m["style_ratio"] = m["style_loss"] / gatys[n]
      rows[label][n] = m
      print(json.dumps({"label": label, "pair": n, **m}), flush=True)
  keys = ("matting_ratio", "grad_corr", "style_ratio")
  means = {label: {k: float(np.mean([r[k] for r in per.values()])) for k in keys}
           for label, per in rows.items()}
  head = " | ".join(f"pair {n}" for n in pairs)
  lines = [f"{size} px; per pair: matting x / grad corr / style / Gatys'",
           "", f"| network | {head} | mean |", "|---" * (len(pairs) + 2) + "|"]
  for label, per in rows.items():
    cells = [" / ".join(f"{per[n][k]:.3g}" for k in keys) for n in pairs]
    lines.append(f"| {label} | " + " | ".join(cells) + " | "
                 + " / ".join(f"{means[label][k]:.3g}" for k in keys) + " |")
  print("\n".join(lines))
  if args.out:
    bc.write_result(args.out, {"pairs": pairs, "rows": rows, "mean": means}, args)


if __name__ == "__main__":
  bc.run_main(main)
