"""Why nst_jax's optimizer loop is slower than one jitted value-and-gradient on the CPU.

Synopsis::

  python benchmarks/conv_loop_profile.py --size 256 --layer relu5_1

Times one gradient step on the VGG19 features (``mean(F^2)`` at ``--layer``), compiled three ways:

- ``autodiff, no loop``: two steps unrolled in one jitted function;
- ``autodiff, fori_loop``: the same two steps in ``lax.fori_loop`` (as ``optimize.run`` does);
- ``custom_vjp, fori_loop``: the loop, with a convolution whose backward pass uses a kernel
  flipped and transposed once, outside the loop (``kernel_t`` = HWIO of the transposed conv).

and counts the ``dim_labels`` of the compiled convolutions. With XLA:CPU (jaxlib 0.10), autodiff
inside a while loop leaves the 13 input-gradient convolutions in the non-canonical ``01oi``
kernel layout, computed from an in-loop ``reverse``; they miss the fast convolution path and the
backward pass becomes several times slower. Outside a loop, XLA transposes the kernels to ``01io``.
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
from nst_jax import paths, vgg  # noqa: E402

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_pre_flipped(x, kernel, kernel_t):
  """3x3 SAME convolution whose input gradient uses ``kernel_t`` (flipped, I/O swapped)."""
  return _conv(x, kernel)


def _fwd(x, kernel, kernel_t):
  return _conv(x, kernel), (kernel, kernel_t)


def _bwd(res, g):
  kernel, kernel_t = res
  return _conv(g, kernel_t), jnp.zeros_like(kernel), jnp.zeros_like(kernel_t)


conv_pre_flipped.defvjp(_fwd, _bwd)


def with_flipped_kernels(params: dict) -> dict:
  out = dict(params)
  for name in vgg.CONV_LAYERS:
    k = params[name]["kernel"]  # [3, 3, I, O]
    out[name] = dict(params[name], kernel_t=jnp.transpose(k[::-1, ::-1], (0, 1, 3, 2)))
  return out


def features_pre_flipped(params, images, layer: str):
  """``vgg.vgg_features(..., pooling="avg")[layer]`` with ``conv_pre_flipped``."""
  x = vgg.preprocess(params, images)
  for name in vgg.VGG19_LAYERS:
    if name.startswith("conv"):
      p = params[name]
      x = conv_pre_flipped(x, p["kernel"], p["kernel_t"]) + p["bias"]
    elif name.startswith("relu"):
      x = jax.nn.relu(x)
    else:
      x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") * 0.25
    if name == layer:
      return x
  raise ValueError(layer)


def make_step(feature_fn, layer):
  def step(x, params):
    grad = jax.grad(lambda y: jnp.mean(jnp.square(feature_fn(params, y, layer))))(x)
    return x - 1e-3 * grad
  return step


def variants(layer):
  auto = make_step(lambda p, x, l: vgg.vgg_features(p, x, (l,), "avg")[l], layer)
  flipped = make_step(features_pre_flipped, layer)
  loop = lambda step: (lambda x, p: jax.lax.fori_loop(0, 2, lambda i, y: step(y, p), x))
  return {"autodiff, no loop": (lambda x, p: auto(auto(x, p), p), False),
          "autodiff, fori_loop": (loop(auto), False),
          "custom_vjp, fori_loop": (loop(flipped), True)}


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
  args = p.parse_args(argv)
  params = vgg.load_vgg19(paths.resolve_vgg_weights(args.vgg_weights))
  flipped = with_flipped_kernels(params)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, args.size, args.size, 3)),
                  jnp.float32)
  ref = None
  print(f"{args.size} px, gradient of mean({args.layer}^2), seconds per step (median of "
        f"{args.repeats}):")
  for name, (fn, needs_flip) in variants(args.layer).items():
    out, wall, cpu, labels = measure(fn, x, flipped if needs_flip else params, args.repeats)
    ref = out if ref is None else ref
    diff = float(jnp.max(jnp.abs(out - ref)))
    print(f"  {name:24s} wall {wall:7.3f}  cpu {cpu:7.3f}  conv dim_labels {labels}  "
          f"max |diff| {diff:.1e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
