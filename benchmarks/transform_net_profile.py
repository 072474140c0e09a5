"""Per-layer inference times of the ThesisNet transform network: XLA's plain convolutions, the
library's (``conv.conv2d`` / ``conv.upsample_conv2d``) and PyTorch's, on the same shapes.

Usage::

  python benchmarks/transform_net_profile.py --sizes 512 1024 --batch 1

Each layer of ``nets.ThesisNet`` (width 1) is timed on its own input shape: the convolution with
its padding (and the nearest-neighbour upsampling for ``upconv``), and instance norm + ReLU. JAX
functions are jitted and warmed up; times are the median of ``--repeats`` calls (wall clock, and
the process' CPU time, which a busy machine distorts less). The full network is timed last. The
load average is printed with every table. Writes ``benchmarks/results/inference_profile.json``.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import bench_common as bc
import numpy as np


def _median_ms(fn, repeats: int) -> dict:
  fn()
  wall, cpu = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return {"wall_ms": 1e3 * float(np.median(wall)), "cpu_ms": 1e3 * float(np.median(cpu))}


def layer_specs(size: int, batch: int) -> list[tuple]:
  """(name, kind, input shape NHWC, kernel, cin, cout, stride) for each distinct layer."""
  s = size
  return [("conv1", "conv", (batch, s, s, 3), 9, 3, 32, 1),
          ("norm1", "norm", (batch, s, s, 32), 0, 32, 32, 1),
          ("conv2", "conv", (batch, s, s, 32), 3, 32, 64, 2),
          ("conv3", "conv", (batch, s // 2, s // 2, 64), 3, 64, 128, 2),
          ("res_conv (x10)", "conv", (batch, s // 4, s // 4, 128), 3, 128, 128, 1),
          ("upconv1", "up", (batch, s // 4, s // 4, 128), 3, 128, 64, 1),
          ("upconv2", "up", (batch, s // 2, s // 2, 64), 3, 64, 32, 1),
          ("conv_out", "conv", (batch, s, s, 32), 9, 32, 3, 1)]


def jax_layers(size: int, batch: int, repeats: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from nst_jax.core import conv  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import nets  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  rows = {}
  for name, kind, shape, k, cin, cout, stride in layer_specs(size, batch):
    x = jnp.asarray(rng.standard_normal(shape, np.float32))
    if kind == "norm":
      scale, bias = jnp.ones(cin), jnp.zeros(cin)
      fn = jax.jit(lambda x, s=scale, b=bias: jax.nn.relu(
          nets.nn.InstanceNorm(epsilon=1e-5).apply({"params": {"scale": s, "bias": b}}, x)))
      rows[name] = {"library": _median_ms(lambda: fn(x).block_until_ready(), repeats)}
      continue
    w = jnp.asarray(0.05 * rng.standard_normal((k, k, cin, cout), np.float32))
    if kind == "up":
      ref = jax.jit(functools.partial(conv.upsample_conv_reference, padding="reflect"))
      lib = jax.jit(functools.partial(conv.upsample_conv2d, padding="reflect"))
    else:
      ref = jax.jit(functools.partial(conv.conv_reference, stride=stride, padding="reflect"))
      lib = jax.jit(functools.partial(conv.conv2d, stride=stride, padding="reflect"))
    rows[name] = {"xla_conv": _median_ms(lambda: ref(x, w).block_until_ready(), repeats),
                  "library": _median_ms(lambda: lib(x, w).block_until_ready(), repeats)}
  model = nets.ThesisNet()
  variables = nets.init_variables(model, jax.random.key(0))
  images = jnp.asarray(rng.uniform(size=(batch, size, size, 3)).astype(np.float32))
  apply = jax.jit(model.apply)
  rows["network"] = {"library": _median_ms(
      lambda: apply(variables, images).block_until_ready(), repeats)}
  return rows


def torch_layers(size: int, batch: int, repeats: int, threads: int = 0) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  def conv(x, w, stride=1):
    x = F.pad(x, (w.shape[-1] // 2,) * 4, mode="reflect")
    return F.conv2d(x, w, stride=stride)

  rows = {}
  if threads:
    torch.set_num_threads(threads)
  with torch.inference_mode():
    for name, kind, (b, h, w_, c), k, cin, cout, stride in layer_specs(size, batch):
      x = torch.randn(b, c, h, w_)
      w = 0.05 * torch.randn(cout, cin, max(k, 1), max(k, 1))
      if kind == "norm":
        fn = lambda x=x: F.relu(F.instance_norm(x, eps=1e-5))
      elif kind == "up":
        fn = lambda x=x, w=w: conv(F.interpolate(x, scale_factor=2, mode="nearest"), w)
      else:
        fn = lambda x=x, w=w, s=stride: conv(x, w, s)
      rows[name] = {"torch": _median_ms(fn, repeats)}
  return rows


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--backends", nargs="+", default=["jax", "torch"], choices=("jax", "torch"))
  bc.add_common_args(p, vgg_weights=False, data=False,
                     out=bc.RESULTS / "inference_profile.json", threads=True)
  args = p.parse_args(argv)
  os.environ.update(bc.thread_env(args.threads))  # before JAX's first computation
  report = {"benchmark": "inference_profile", "batch": args.batch,
            "threads": args.threads or "default", "sizes": {}}
  for size in args.sizes:
    rows = {}
    for backend, fn in (("jax", jax_layers),
                        ("torch", functools.partial(torch_layers, threads=args.threads))):
      if backend in args.backends:
        for name, times in fn(size, args.batch, args.repeats).items():
          rows.setdefault(name, {}).update(times)
    load = os.getloadavg()
    report["sizes"][str(size)] = {"rows": rows, "load_avg": load}
    print(f"\n{size} px, batch {args.batch}, threads {args.threads or 'default'}, load average "
          f"{load[0]:.1f}; wall ms / CPU ms")
    print("| layer | XLA conv | library | torch |\n|---|---|---|---|")
    for name, times in rows.items():
      cells = [f"{times[k]['wall_ms']:.1f} / {times[k]['cpu_ms']:.0f}" if k in times else "-"
               for k in ("xla_conv", "library", "torch")]
      print(f"| {name} | " + " | ".join(cells) + " |")
  bc.write_result(args.out, report, args)


if __name__ == "__main__":
  bc.run_main(main)
