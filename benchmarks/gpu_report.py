"""Each GPU goal of the issues beside the number `gpu_suite.sh` measured for it.

Usage::

  python3 benchmarks/gpu_report.py benchmarks/results/gpu            # after a GPU run
  python3 benchmarks/gpu_report.py /tmp/gpu --backend cpu            # after SMOKE=1

Reads the suite's JSON results in the folder, prints a Markdown table (goal, number, met) and
writes ``gpu_report.json`` there. Exit code 1 when a result is missing or came from another JAX
backend than ``--backend`` (a GPU run that fell back to the CPU must not pass for a GPU
number); goals that are not met do not change the exit code (they are what the table is for).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

def _near(rows, size, key="size"):
  """The row at ``size``, else the largest (toy sizes under SMOKE=1)."""
  return next((r for r in rows if r[key] == size), None) or max(rows, key=lambda r: r[key])


def _slow(d):
  r = _near([r for r in d["rows"] if r["optimizer"] == "lbfgsb"], 1024)
  return r["s_per_iter"], f"{r['size']} px"


def _largest(d):
  r = d["largest"]
  return r["largest_long_side"], f"{r['hw'][1]}x{r['hw'][0]}, 3 iterations in {r['three_iters_s']:.1f} s"


def _matting(d):
  r = _near(d["results"], 700)
  return 1e3 * r["apply_s"], f"{r['height']}x{r['width']}"


def _latency(d):
  r = _near(d["rows"], 512)
  return r["jax"]["latency_ms"], f"{r['size']} px"


def _throughput(d):
  r = _near(d["rows"], 512)
  return r["jax"]["images_per_s"], f"{r['size']} px, batch {r['jax']['batch']}"


def _train(d):
  return d["images_per_s"], f"{d['size']} px, batch {d['batch']}"


def _photoreal(d):
  t = d["timing"]
  return t["seconds_total"], f"{t['size']} px, 2 x {t['iters_per_stage']}"


def _sr_inference(bf16: bool):
  def get(d):
    r = min((r for r in d["inference"] if r["bf16"] == bf16 and r["scale"] == 4),
            key=lambda r: r["ms_per_image"])
    return r["ms_per_image"], f"{r['model']} {r['lr_size']}->{r['out_size']} px, batch {r['batch']}"
  return get


def _sr_train(preset: str):
  def get(d):
    r = next(r for r in d["train"] if r["preset"] == preset)
    return r["patches_per_s"], f"{r['size']} px, batch {r['batch']}"
  return get


def _arbitrary(d):
  r = _near(d["speed"], 1024)
  return 1e3 * r["seconds"]["ours_xla"], f"{r['size']} px, host array in and out"


def _video(d):
  t = d["throughput"]
  return t["consistent_fps"], f"{t['hw'][1]}x{t['hw'][0]}, {d['model']}, flow included"


def _tile(model: str):
  def get(d):
    r = next(r for r in d["small"] if r["model"] == model)
    mp = r["hw"][0] * r["hw"][1] / 1e6
    return r["tiled_s_per_mp"] * mp, (f"{r['hw'][1]}x{r['hw'][0]}, {r['tile']} px tiles; "
                                      f"untiled {r['untiled_s_per_mp'] * mp:.3g} s")
  return get


# (goal, result file, ("<=" or ">=", bound) or None (reported only), unit,
#  result -> (number, what it was measured on))
GOALS = (
    ("slow transfer, L-BFGS-B s/iteration at 1024 px", "optimize_bench.json", None, "s", _slow),
    ("slow transfer, largest 4:3 size on one device (long side)", "slow_memory.json", None, "px",
     _largest),
    ("matting apply at 700 px", "matting_bench.json", ("<=", 5.0), "ms", _matting),
    ("fast inference latency at 512 px", "inference_bench.json", ("<=", 3.0), "ms", _latency),
    ("fast inference throughput at 512 px", "inference_bench.json", (">=", 1000.0), "images/s",
     _throughput),
    ("fast inference throughput at 512 px, bf16", "inference_bench_bf16.json", (">=", 1000.0),
     "images/s", _throughput),
    ("fast training at 256 px", "train_bench.json", (">=", 1000.0), "images/s", _train),
    ("fast training at 256 px, bf16", "train_bench_bf16.json", (">=", 1000.0), "images/s",
     _train),
    ("slow photoreal run at 512 px, 2 x 300 iterations", "photo_timing.json", ("<=", 15.0), "s",
     _photoreal),
    ("SR x4 to 2048 px, batched, per image", "sr_speed_bench.json", ("<=", 10.0), "ms",
     _sr_inference(False)),
    ("SR x4 to 2048 px, batched, per image, bf16", "sr_speed_bench.json", ("<=", 10.0), "ms",
     _sr_inference(True)),
    ("SR training at 288 px, fast preset", "sr_speed_bench.json", (">=", 500.0), "patches/s",
     _sr_train("fast")),
    ("SR training at 288 px, johnson preset", "sr_speed_bench.json", (">=", 500.0), "patches/s",
     _sr_train("johnson")),
    ("arbitrary style transfer at 1024 px, per image", "arbitrary_bench.json", ("<=", 10.0),
     "ms", _arbitrary),
    ("fast video at 512 px, consistent (flow included)", "video_bench.json", None, "frames/s",
     _video),
    ("fast stylization of a 7680x5120 photo, starry_lite, tiled", "tile_bench.json", None, "s",
     _tile("starry_lite")),
)


def _worker_environment(d: dict) -> dict:
  """optimize_bench's JSON has no ``environment``: its workers name theirs ("jax 0.11.2 gpu")."""
  kinds = {r["backend"].split()[-1] for r in d.get("rows", []) if r.get("impl") == "jax"}
  return {"backend": kinds.pop() if len(kinds) == 1 else None}


def report(folder: Path, backend: str) -> tuple[list[dict], list[str]]:
  rows, problems = [], []
  for name, file, goal, unit, measure in GOALS:
    path = folder / file
    row = {"goal": name, "file": file, "bound": goal, "unit": unit}
    try:
      d = json.loads(path.read_text())
      row["value"], row["measured_on"] = measure(d)
    except (OSError, ValueError, KeyError, StopIteration) as e:  # missing file, row or field
      row["error"] = f"{type(e).__name__}: {e}"
      problems.append(f"{name}: no number ({row['error']})")
      rows.append(row)
      continue
    env = d.get("environment") or _worker_environment(d)
    got = env.get("backend")
    row["backend"], row["device_kind"] = got, env.get("device_kind")
    if got != backend:
      problems.append(f"{name}: measured on backend {got!r}, expected {backend!r}")
    if goal is not None:
      op, bound = goal
      row["met"] = row["value"] <= bound if op == "<=" else row["value"] >= bound
    rows.append(row)
  return rows, problems


def table(rows: list[dict]) -> str:
  lines = ["| goal | bound | measured | on | device | met |", "|---|---|---|---|---|---|"]
  for r in rows:
    bound = f"{r['bound'][0]} {r['bound'][1]:g} {r['unit']}" if r["bound"] else "(report)"
    got = f"{r['value']:.4g} {r['unit']}" if "value" in r else "missing"
    met = {True: "yes", False: "**no**"}.get(r.get("met"), "-")
    lines.append(f"| {r['goal']} | {bound} | {got} | {r.get('measured_on', '')} | "
                 f"{r.get('device_kind') or ''} | {met} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("folder", type=Path, help="the suite's results folder")
  p.add_argument("--backend", default="gpu", help="the JAX backend every result must come from")
  args = p.parse_args(argv)
  rows, problems = report(args.folder, args.backend)
  print(table(rows))
  (args.folder / "gpu_report.json").write_text(
      json.dumps({"backend": args.backend, "rows": rows, "problems": problems}, indent=1) + "\n")
  for line in problems:
    print(f"problem: {line}", file=sys.stderr)
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
