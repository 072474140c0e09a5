"""Why nst_jax's optimizer loop was slower than one jitted value-and-gradient on the CPU.

Synopsis::

  python benchmarks/conv_loop_profile.py --size 256 --layer relu5_1
  python benchmarks/conv_loop_profile.py --conv-impl xla     # one implementation only

Times one gradient step on the VGG19 features (``mean(F^2)`` at ``--layer``) for each
``--conv-impl`` (``vgg_features(..., conv_impl=...)``; default: xla and cpu_fast), compiled two
ways:

- ``no loop``: two steps unrolled in one jitted function;
- ``fori_loop``: the same two steps in ``lax.fori_loop`` (as ``optimize.run`` does);

and counts the ``dim_labels`` of the compiled convolutions. ``xla`` is a plain convolution
differentiated by JAX; ``cpu_fast`` is ``vgg.conv3x3``'s custom VJP, which convolves with the
explicitly flipped, I/O-transposed kernel (HWIO). With XLA:CPU (jaxlib 0.10.2), autodiff inside
a while loop leaves the 13 input-gradient convolutions in the non-canonical ``01oi`` kernel
layout, computed from an in-loop ``reverse``; they miss the fast convolution path and the
backward pass becomes 3-4x slower. Outside a loop, XLA transposes the kernels to ``01io``. The
custom VJP (adopted after this profile, and what ``conv_impl="auto"`` picks on the CPU) gives the
same numbers at the speed of the loop-free program; ``optimize_bench.py --conv-impl xla``
reproduces the old behaviour.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nst_jax import config  # noqa: E402
from nst_jax.core import paths, vgg  # noqa: E402


def make_step(layer, conv_impl):
  def step(x, params):
    feats = lambda y: vgg.vgg_features(params, y, (layer,), "avg", conv_impl=conv_impl)[layer]
    return x - 1e-3 * jax.grad(lambda y: jnp.mean(jnp.square(feats(y))))(x)
  return step


def variants(layer, conv_impls):
  """{name: fn(x, params)}: two steps unrolled and in a fori_loop, per implementation."""
  out = {}
  for impl in conv_impls:
    step = make_step(layer, impl)
    out[f"{impl}, no loop"] = lambda x, p, step=step: step(step(x, p), p)
    out[f"{impl}, fori_loop"] = lambda x, p, step=step: jax.lax.fori_loop(
        0, 2, lambda i, y: step(y, p), x)
  return out


def measure(fn, x, params, repeats):
  compiled = jax.jit(fn).lower(x, params).compile()
  labels = collections.Counter(re.findall(r"dim_labels=(\S+?)[,\s]", compiled.as_text()))
  out = jax.block_until_ready(compiled(x, params))
  walls, cpus = [], []
  for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(x, params))
    walls.append((time.perf_counter() - w) / 2)
    cpus.append((time.process_time() - c) / 2)
  return out, float(np.median(walls)), float(np.median(cpus)), dict(labels)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--layer", default="relu5_1")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--vgg-weights")
  p.add_argument("--conv-impl", action="append", choices=config.CONV_IMPLS,
                 help="VGG's convolutions (repeatable; default: xla and cpu_fast)")
  args = p.parse_args(argv)
  params = vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, args.size, args.size, 3)),
                  jnp.float32)
  ref = None
  print(f"{args.size} px, gradient of mean({args.layer}^2), seconds per step (median of "
        f"{args.repeats}):")
  for name, fn in variants(args.layer, args.conv_impl or ("xla", "cpu_fast")).items():
    out, wall, cpu, labels = measure(fn, x, params, args.repeats)
    ref = out if ref is None else ref
    diff = float(jnp.max(jnp.abs(out - ref)))
    print(f"  {name:24s} wall {wall:7.3f}  cpu {cpu:7.3f}  conv dim_labels {labels}  "
          f"max |diff| {diff:.1e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
