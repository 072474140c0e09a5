"""Arbitrary style transfer: our int8 emulation against ONNX Runtime, quantization point by point.

Usage (the ``reference`` extra)::

  python3 benchmarks/arbitrary_layers.py                           # both networks, both modes
  python3 benchmarks/arbitrary_layers.py --content content/kodak/kodim23.jpg \
      --style styles/hokusai_great_wave.jpg --network transfer --mode forced

ONNX Runtime runs each released graph unoptimized (ORT_DISABLE_ALL: the graph's own semantics)
with every QuantizeLinear of an activation exposed (``magenta.onnx_points``). Ours
runs the converted network eagerly with a function at every fake-quantization point
(``arbitrary_nets``' diagnostic hook), which compares our int8 codes there with ONNX Runtime's.
Mode ``free``: our network runs on its own (our fake-quantized tensor goes on). Mode ``forced``:
every point hands ONNX Runtime's dequantized tensor on, so each op of ours sees exactly ONNX
Runtime's inputs and any difference is that op's own. Per point: the fraction of equal codes,
the largest code difference, our pre-quantization value's largest distance to ONNX Runtime's (in
quantization steps), and how close ONNX Runtime's value was to a rounding boundary where the
codes differ (a tie: well below a thousandth of a step). Finally, the graph's own sensitivity:
ONNX Runtime's output change when one content pixel moves by 1/255. Writes
``benchmarks/results/arbitrary_layers.json``.
"""

from __future__ import annotations

import argparse

import bench_common as bc
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.fast import arbitrary_nets, magenta

TIE = 1e-3  # a code difference whose reference value lies closer than this (in steps) to a boundary
CONTENT, STYLE = "content/kodak/kodim08.jpg", "styles/van_gogh_starry_night.jpg"
CONTENT_SIZE, STYLE_SIZE = 384, 256  # the released graphs' fixed input sizes


def compare(ref: dict, forced: bool, stats: dict) -> dict:
  """The diagnostic ``quant`` tree: point -> a function recording the comparison in ``stats``."""
  def hook(point):
    def fn(x):
      codes, pre, scale, zero = ref[point]
      x = np.asarray(x)
      codes, pre = codes.reshape(x.shape), pre.reshape(x.shape)
      ours = np.clip(np.round(x / np.float32(scale)) + zero, -128, 127)
      diff = np.abs(ours - codes)
      v = pre.astype(np.float64) / scale
      tie = np.abs(v - np.floor(v) - 0.5)[diff > 0]
      stats[point] = {"equal": float(np.mean(diff == 0)), "max_code": int(diff.max()),
                      "pre_steps": float(np.abs(x - pre).max() / scale),
                      "tie_steps": float(tie.max()) if tie.size else 0.0, "size": int(x.size)}
      used = codes if forced else ours
      return jnp.asarray((used - zero) * np.float32(scale))
    return fn
  return {point: hook(point) for point in ref}


def run_network(network, params, cfg, ref, forced, c, s, emb):
  """Our network, eagerly, with the comparing hooks -> {point: stats}."""
  predictor, transfer = arbitrary_nets.make_networks(cfg)
  stats: dict = {}
  quant = compare(ref, forced, stats)
  if network == "predictor":
    predictor.apply({"params": params["predictor"]}, jnp.asarray(s[None]), quant)
  else:
    transfer.apply({"params": params["transfer"]}, jnp.asarray(c[None]),
                   jnp.asarray(emb.reshape(1, -1)), quant)
  return stats


def sensitivity(sess, c, emb, trials: int = 3) -> list[float]:
  """ONNX Runtime's mean output change (1/255) when one random content pixel moves by 1/255."""
  feeds = {"content_image": c[None], "mobilenet_conv/Conv/BiasAdd": emb}
  base = sess.run(None, feeds)[0]
  rng = np.random.default_rng(0)
  changes = []
  for _ in range(trials):
    c2 = c.copy()
    y, x, ch = rng.integers(0, c.shape[0]), rng.integers(0, c.shape[1]), rng.integers(0, 3)
    c2[y, x, ch] += 1 / 255 if c2[y, x, ch] < 0.5 else -1 / 255
    out = sess.run(None, {**feeds, "content_image": c2[None]})[0]
    changes.append(float(np.abs(out - base).mean() * 255))
  return changes


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, out=bc.RESULTS / "arbitrary_layers.json")
  p.add_argument("--content", default=CONTENT, help="photo, relative to the data dir")
  p.add_argument("--style", default=STYLE, help="painting, relative to the data dir")
  p.add_argument("--network", nargs="+", default=["predictor", "transfer"],
                 choices=["predictor", "transfer"])
  p.add_argument("--mode", nargs="+", default=["free", "forced"], choices=["free", "forced"])
  args = p.parse_args(argv)
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  files = magenta.find_released()
  params, cfg, _, _ = magenta.convert(*files)
  cfg = config.from_dict(config.ArbitraryConfig, cfg)
  data = bc.data_dir(args)
  c = bc.central_square(data / args.content, CONTENT_SIZE)
  s = bc.central_square(data / args.style, STYLE_SIZE)
  opts = ort.SessionOptions()
  opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
  plain = [ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"]) for f in files]
  emb = plain[0].run(None, {"style_image": s[None]})[0]
  result = {"pair": [args.content, args.style], "points": {}}
  for network, path in zip(("predictor", "transfer"), files):
    if network not in args.network:
      continue
    feeds = ({"style_image": s[None]} if network == "predictor" else
             {"content_image": c[None], "mobilenet_conv/Conv/BiasAdd": emb})
    ref = magenta.onnx_points(path, network, feeds)
    for mode in args.mode:
      stats = run_network(network, params, cfg, ref, mode == "forced", c, s, emb)
      result["points"][f"{network}/{mode}"] = stats
      print(f"\n{network}, {mode}: point | equal codes | max code diff | pre-quant diff (steps) "
            "| largest tie distance of a differing code (steps)")
      for point, st in stats.items():
        flag = "  <-- not a tie" if mode == "forced" and st["max_code"] and st["tie_steps"] > TIE \
            else ""
        print(f"{point:30s} {st['equal']:.6f} {st['max_code']:4d} {st['pre_steps']:9.2e} "
              f"{st['tie_steps']:9.2e}{flag}")
      differ = [k for k, st in stats.items() if st["max_code"]]
      not_ties = [k for k in differ if stats[k]["tie_steps"] > TIE]
      print(f"{network}, {mode}: {len(stats)} points, {len(differ)} with a code difference, "
            f"{len(not_ties)} of them beyond a tie (forced: the op's own; free: propagated)")
  result["sensitivity_255"] = sensitivity(plain[1], c, emb)
  print("ONNX Runtime's output change for one content pixel +-1/255 (mean, 1/255):",
        ", ".join(f"{v:.2f}" for v in result["sensitivity_255"]))
  bc.write_result(args.out, result, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
