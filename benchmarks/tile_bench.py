"""Big pictures with the fast networks: tiled against untiled stylization, and 8K peak memory.

Usage::

  PYTHONPATH=. python3 benchmarks/tile_bench.py                     # both parts, all models
  PYTHONPATH=. python3 benchmarks/tile_bench.py --skip-big --repeats 3
  PYTHONPATH=. python3 benchmarks/tile_bench.py --skip-small --models starry_lite

Part 1 (one process, where the untiled run fits): the photo at ``--size`` (long side) stylized
untiled and in ``--tile`` tiles, alternating, ``--repeats`` times each after a warm-up (the
programs compiled); reports seconds per megapixel of each, their ratio and the largest
difference of the outputs in 1/255. Part 2: the photo upscaled (Lanczos) to ``--big`` (default
7680x5120, written to a temporary folder, never committed) and stylized by the real command,
``nst-jax stylize``, under ``/usr/bin/time -v``: its peak RSS, wall time and the stylization time
it prints, beside the tiled path's memory estimate. ``arbitrary`` uses ``--painting``.
Results: benchmarks/results/tile_bench.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc
import numpy as np
from PIL import Image

from nst_jax.core import image_io, memory
from nst_jax.fast import inference

MODELS = ("starry_lite", "zoo8", "arbitrary")


def make_stylizer(name: str, painting: Path):
  stylizer = inference.Stylizer.from_any(name)
  if name == "arbitrary":
    stylizer.set_style(image=image_io.load_image(painting))
  return stylizer


def compare(name: str, stylizer, photo: np.ndarray, tile: int, repeats: int) -> dict:
  """Untiled against tiled on one photo, alternating, in this process."""
  runs = {"untiled": {"tile": 0}, "tiled": {"tile": tile}}
  outs = {k: stylizer(photo, **kw) for k, kw in runs.items()}  # warm-up: compiles
  times = {k: [] for k in runs}
  for _ in range(repeats):
    for k, kw in runs.items():
      start = time.perf_counter()
      stylizer(photo, **kw)
      times[k].append(time.perf_counter() - start)
  mp = photo.shape[0] * photo.shape[1] / 1e6
  per_mp = {k: float(np.median(v)) / mp for k, v in times.items()}
  return {"model": name, "hw": list(photo.shape[:2]), "tile": tile,
          "untiled_s_per_mp": per_mp["untiled"], "tiled_s_per_mp": per_mp["tiled"],
          "ratio": per_mp["tiled"] / per_mp["untiled"],
          "max_abs_diff_255": float(np.abs(outs["tiled"] - outs["untiled"]).max() * 255),
          "load_avg": os.getloadavg()}


def run_cli(name: str, photo: Path, painting: Path, out_dir: Path, tile: int | None) -> dict:
  """``nst-jax stylize`` on the big photo under ``/usr/bin/time -v``."""
  cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "nst_jax.cli", "stylize", "--model", name,
         "--content", str(photo), "--out", str(out_dir)]
  cmd += ["--style-image", str(painting)] if name == "arbitrary" else []
  cmd += ["--tile", str(tile)] if tile else []
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=bc.REPO, check=False)
  wall = time.perf_counter() - start
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
  rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
  user = float(re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr).group(1))
  system = float(re.search(r"System time \(seconds\): ([\d.]+)", proc.stderr).group(1))
  stylize_s = float(re.search(r"stylized 1 image\(s\) in ([\d.]+) s", proc.stdout).group(1))
  return {"command": " ".join(cmd[2:]), "peak_rss_gb": rss * 1024 / memory.GB, "wall_s": wall,
          "stylize_s": stylize_s, "cpu_s": user + system, "load_avg": os.getloadavg()}


def estimate_gb(stylizer, hw, tile: int) -> float:
  """The tiled path's memory estimate for a photo of size ``hw`` (padded to the bucket)."""
  padded = inference.bucket_shape(hw, stylizer.bucket)
  rows = stylizer.style_rows([np.zeros((8, 8, 3), np.float32)], 1.0)
  rows = stylizer.style_weights[None] if rows is None else rows
  tiler = stylizer.tiler(tile)
  plan = tiler.plan(stylizer.variables, padded, np.asarray(rows, np.float32))
  return tiler.estimate_bytes(plan, padded, width=getattr(stylizer.model, "width", 1.0)) / memory.GB


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, out=bc.RESULTS / "tile_bench.json")
  p.add_argument("--photo", default="content/kodak/kodim08.jpg",
                 help="an image file, or a path under the data folder (DATA)")
  p.add_argument("--painting", default=None,
                 help="for arbitrary; default DATA/styles/van_gogh_starry_night.jpg")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--size", type=int, default=2048, help="part 1's long side")
  p.add_argument("--tile", type=int, default=512)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--big", default="7680x5120", help="part 2's size, WxH")
  p.add_argument("--skip-small", action="store_true")
  p.add_argument("--skip-big", action="store_true")
  args = p.parse_args(argv)
  data = bc.data_dir(args)
  photo_path = Path(args.photo) if Path(args.photo).is_file() else data / args.photo
  painting = Path(args.painting or data / "styles" / "van_gogh_starry_night.jpg")
  models = [m for m in args.models.split(",") if m]
  result = {"small": [], "big": []}
  if not args.skip_small:
    photo = image_io.load_image(photo_path, size=args.size)
    for name in models:
      row = compare(name, make_stylizer(name, painting), photo, args.tile, args.repeats)
      result["small"].append(row)
      print(f"{name} {row['hw']}: untiled {row['untiled_s_per_mp']:.3f} s/MP, tiled "
            f"{row['tiled_s_per_mp']:.3f} s/MP (x{row['ratio']:.2f}), max diff "
            f"{row['max_abs_diff_255']:.4f}/255", flush=True)
      bc.write_result(args.out, result, args)
  if not args.skip_big:
    w, h = (int(v) for v in args.big.split("x"))
    with tempfile.TemporaryDirectory(prefix="tile_bench_") as tmp:
      big = Path(tmp) / f"big_{w}x{h}.jpg"
      with Image.open(photo_path) as img:
        img.convert("RGB").resize((w, h), Image.LANCZOS).save(big, quality=92)
      for name in models:
        row = run_cli(name, big, painting, Path(tmp) / name, None)
        row.update(model=name, hw=[h, w],
                   estimate_gb=estimate_gb(make_stylizer(name, painting), (h, w), args.tile))
        result["big"].append(row)
        print(f"{name} {w}x{h}: peak RSS {row['peak_rss_gb']:.2f} GB (estimate "
              f"{row['estimate_gb']:.2f}), stylize {row['stylize_s']:.0f} s, wall "
              f"{row['wall_s']:.0f} s, CPU {row['cpu_s']:.0f} s", flush=True)
        bc.write_result(args.out, result, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
