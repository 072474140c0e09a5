"""Each VGG19 3x3 convolution as XLA's convolution and as Winograd F(2x2, 3x3), side by side.

Synopsis::

  python benchmarks/vgg_conv_bench.py                  # 256 px
  python benchmarks/vgg_conv_bench.py --size 512 --repeats 7
  python benchmarks/vgg_conv_bench.py --narrow         # images narrower than the kernel

For every distinct layer shape of VGG19 at ``--size`` (block b at size / 2^(b-1), its real
channel counts) one program per implementation computes the convolution and its input gradient
(a VJP with a fixed cotangent) through ``vgg.conv3x3`` (cpu_fast), as the slow methods' loss does
in every evaluation, once with XLA's convolutions and once with Winograd. After one
warm-up call each, the two are called in turn ``--repeats`` times (load from other users of a
shared machine falls on both alike); medians in ms and the ratio Winograd / XLA. These numbers
set ``vgg.WINOGRAD_MIN_CHANNELS`` and ``WINOGRAD_MIN_PIXELS``: the layers where Winograd wins (the whole network's
time in the optimizer, ``optimize_bench.py``, decides: layer by layer the numbers are noisier). Results: a table on stdout and
JSON in ``--out``.

``--narrow``: the shapes where a side is below 3 pixels (conv4 and conv5 of 16-48 px images)
and 4x6 beside them, ``vgg.conv3x3`` with impl "xla" (XLA's convolution, differentiated by JAX)
against "cpu_fast" (one matmul there, ``vgg.NARROW``), forward and input gradient.
"""

from __future__ import annotations

import argparse
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import vgg

WIDTHS = (64, 128, 256, 512, 512)  # per block


def layer_shapes(size: int) -> list[tuple[int, int, int]]:
  """(side, in, out) of VGG19's distinct 3x3 convolutions for a ``size`` px square input."""
  shapes, prev = [], 3
  for block, width in enumerate(WIDTHS):
    side = size // 2 ** block
    shapes += [(side, prev, width), (side, width, width)]
    prev = width
  return list(dict.fromkeys(shapes))


def program(winograd: bool, probe):
  """``vgg.conv3x3`` (cpu_fast) and its input gradient, with Winograd on or off for every layer
  (``vgg.WINOGRAD_MIN_CHANNELS`` is read when the program is traced). The kernel is an argument,
  as the optimizer's VGG parameters are."""
  def run(x, kernel):
    y, vjp = jax.vjp(lambda a: vgg.conv3x3(a, kernel, impl="cpu_fast"), x)
    return y, vjp(probe)[0]

  def traced(x, kernel):
    saved = vgg.WINOGRAD_MIN_CHANNELS, vgg.WINOGRAD_MIN_PIXELS
    vgg.WINOGRAD_MIN_CHANNELS = vgg.WINOGRAD_MIN_PIXELS = 0 if winograd else 10 ** 9
    try:
      return jax.jit(run).lower(x, kernel).compile()
    finally:
      vgg.WINOGRAD_MIN_CHANNELS, vgg.WINOGRAD_MIN_PIXELS = saved
  return traced


def timed(progs: dict, args_: tuple, repeats: int) -> tuple[dict, float]:
  """Median ms of each compiled program (called in turn), and their largest relative
  difference from the first."""
  outs = {name: jax.block_until_ready(f(*args_)) for name, f in progs.items()}
  ref = outs[next(iter(progs))]
  err = max(float(jnp.abs(a - b).max() / jnp.abs(b).max())
            for out in outs.values() for a, b in zip(out, ref))
  times = {name: [] for name in progs}
  for _ in range(repeats):
    for name, f in progs.items():
      start = time.perf_counter()
      jax.block_until_ready(f(*args_))
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * float(np.median(t)) for name, t in times.items()}, err


def narrow(args, rng) -> list[dict]:
  """XLA's convolution against ``vgg.conv3x3``'s matmul on images narrower than the kernel."""
  rows = []
  print("| H x W | in -> out | XLA ms | cpu_fast ms | cpu_fast / XLA |")
  print("| --- | --- | --- | --- | --- |")
  for (h, w), (cin, cout) in [(hw, ch) for ch in ((256, 512), (512, 512))
                              for hw in ((1, 1), (1, 2), (2, 3), (4, 6))]:
    x = jnp.asarray(rng.normal(size=(1, h, w, cin)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.05, jnp.float32)
    probe = jnp.asarray(rng.normal(size=(1, h, w, cout)), jnp.float32)

    def prog(impl):
      def run(x, kernel):
        y, vjp = jax.vjp(lambda a: vgg.conv3x3(a, kernel, impl=impl), x)
        return y, vjp(probe)[0]
      return jax.jit(run).lower(x, kernel).compile()

    ms, err = timed({"xla": prog("xla"), "cpu_fast": prog("cpu_fast")}, (x, kernel), args.repeats)
    rows.append({"h": h, "w": w, "in": cin, "out": cout, "xla_ms": ms["xla"],
                 "cpu_fast_ms": ms["cpu_fast"], "ratio": ms["cpu_fast"] / ms["xla"],
                 "max_rel_diff": err})
    print(f"| {h} x {w} | {cin} -> {cout} | {ms['xla']:.2f} | {ms['cpu_fast']:.2f} | "
          f"{ms['cpu_fast'] / ms['xla']:.2f} |")
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, data=False, out=bc.RESULTS / "vgg_conv_bench.json")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--narrow", action="store_true",
                 help="images narrower than the kernel: XLA against cpu_fast's matmul")
  args = p.parse_args(argv)
  rng = np.random.default_rng(0)
  if args.narrow:
    bc.write_result(args.out, {"narrow": narrow(args, rng)}, args)
    return 0
  rows = []
  print("| side | in -> out | XLA ms | Winograd ms | Winograd / XLA | vgg.conv3x3 runs |")
  print("| --- | --- | --- | --- | --- | --- |")
  for side, cin, cout in layer_shapes(args.size):
    x = jnp.asarray(rng.normal(size=(1, side, side, cin)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.05, jnp.float32)
    probe = jnp.asarray(rng.normal(size=(1, side, side, cout)), jnp.float32)
    progs = {"xla": program(False, probe)(x, kernel), "winograd": program(True, probe)(x, kernel)}
    ms, err = timed(progs, (x, kernel), args.repeats)
    rows.append({"side": side, "in": cin, "out": cout, "xla_ms": ms["xla"],
                 "winograd_ms": ms["winograd"], "ratio": ms["winograd"] / ms["xla"],
                 "max_rel_diff": err, "winograd_in_vgg": max(cin, cout) >= vgg.WINOGRAD_MIN_CHANNELS
                 and side * side >= vgg.WINOGRAD_MIN_PIXELS})
    print(f"| {side} | {cin} -> {cout} | {ms['xla']:.1f} | {ms['winograd']:.1f} | "
          f"{ms['winograd'] / ms['xla']:.2f} | {'Winograd' if rows[-1]['winograd_in_vgg'] else 'XLA'} |")
  bc.write_result(args.out, {"size": args.size, "rows": rows}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
