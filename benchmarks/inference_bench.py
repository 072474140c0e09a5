"""Inference speed of the transform network: JAX (jit, XLA) beside a PyTorch implementation of the
same architecture with the same weights.

Usage::

  python benchmarks/inference_bench.py                      # ThesisNet, width 1, 256/512/1024 px
  python benchmarks/inference_bench.py --model runs/starry --sizes 256 512 --batch 4
  python benchmarks/inference_bench.py --no-torch --batch 16     # on a GPU: JAX alone

For each size and backend a fresh subprocess (so its peak memory is its own) measures: the first
call (compilation for JAX), the latency of one image (median of ``--repeats`` calls), and the
throughput of a batch of ``--batch`` images. JAX runs on its default device (a GPU when there is
one), PyTorch on the CPU. Both backends get the same weights and input; the report gives the
largest output difference as a check that the two networks are the same function. Results go
to ``benchmarks/results/inference_bench.json`` and a Markdown table is printed. The ratio
is JAX time / PyTorch time (below 1: JAX is faster). ``--no-torch`` leaves PyTorch out (on a GPU
machine its CPU twin would only cost time); the rows then have no ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc
import numpy as np

from nst_jax.fast import train_state


# --- PyTorch: the ThesisNet architecture (instance norm, reflect padding, resize-convolution) ----

def torch_net(weights: dict, meta: dict):
  """A torch forward function equal to ``nets.TransformNet`` (instance norm, "resize" upsampling,
  reflect padding) given its flattened Flax parameters."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  w = {k: torch.from_numpy(v) for k, v in weights.items()}
  conv_w = {k[:-len("/kernel")]: w[k].permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            for k in w if k.endswith("/kernel")}

  def conv(x, name, stride=1):
    k = conv_w[name].shape[-1]
    x = F.pad(x, (k // 2,) * 4, mode="reflect")
    return F.conv2d(x, conv_w[name], w[name + "/bias"], stride=stride)

  def norm(x, name):
    return F.instance_norm(x, weight=w[name + "/scale"], bias=w[name + "/bias"], eps=1e-5)

  def forward(images):  # [B, 3, H, W] in [0, 1]
    x = images * 2.0 - 1.0
    x = F.relu(norm(conv(x, "conv1"), "norm1"))
    x = F.relu(norm(conv(x, "conv2", 2), "norm2"))
    x = F.relu(norm(conv(x, "conv3", 2), "norm3"))
    for i in range(1, meta["num_residual"] + 1):
      y = F.relu(norm(conv(x, f"res{i}/conv1"), f"res{i}/norm1"))
      x = x + norm(conv(y, f"res{i}/conv2"), f"res{i}/norm2")
    for i in (1, 2):
      x = F.interpolate(x, scale_factor=2, mode="nearest")
      x = F.relu(norm(conv(x, f"upconv{i}"), f"norm{3 + i}"))
    return (torch.tanh(conv(x, "conv_out")) + 1.0) * 0.5

  return forward


def _time_calls(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def worker(args) -> dict:
  """Measures one backend at one size; prints nothing but its JSON result."""
  weights = dict(np.load(args.weights))
  meta = json.loads(str(weights.pop("__meta__")))
  x1 = np.load(args.input)[:1]  # [1, S, S, 3]
  xb = np.load(args.input)[:args.batch]  # [B, S, S, 3]
  if args.worker == "torch":
    import torch  # pylint: disable=import-outside-toplevel
    if args.threads:
      torch.set_num_threads(args.threads)
    fwd = torch_net(weights, meta)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    t1, tb = to_t(x1), to_t(xb)
    with torch.inference_mode():
      t0 = time.perf_counter()
      out = fwd(t1).numpy().transpose(0, 2, 3, 1)
      first = time.perf_counter() - t0
      lat = _time_calls(lambda: fwd(t1), args.repeats)
      thr = _time_calls(lambda: fwd(tb), max(2, args.repeats // 2))
    threads, version = torch.get_num_threads(), torch.__version__
  else:
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from flax.traverse_util import unflatten_dict  # pylint: disable=import-outside-toplevel

    from nst_jax.fast import nets  # pylint: disable=import-outside-toplevel
    model = nets.TransformNet(width=meta["width"], num_residual=meta["num_residual"],
                              upsample="resize", normalization="instance", padding="reflect",
                              dtype=jnp.bfloat16 if args.bf16 else jnp.float32)
    params = unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in weights.items()})
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
    j1, jb = jnp.asarray(x1), jnp.asarray(xb)
    t0 = time.perf_counter()
    out = np.asarray(apply(params, j1))
    first = time.perf_counter() - t0
    apply(params, jb).block_until_ready()  # compile the batched shape outside the timing
    lat = _time_calls(lambda: apply(params, j1).block_until_ready(), args.repeats)
    thr = _time_calls(lambda: apply(params, jb).block_until_ready(), max(2, args.repeats // 2))
    threads, version = args.threads or os.cpu_count(), jax.__version__
  np.save(args.output, out)
  return {"backend": args.worker, "size": int(x1.shape[1]), "first_call_s": first,
          "latency_ms": 1e3 * float(np.median(lat)), "batch": int(xb.shape[0]),
          "images_per_s": xb.shape[0] / float(np.median(thr)),
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "threads": threads, "version": version}


def export_weights(model_path: str | None, path: Path) -> dict:
  """Flattened float32 parameters (a trained checkpoint's, or a fresh ThesisNet's) to ``path``."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax.traverse_util import flatten_dict  # pylint: disable=import-outside-toplevel

  from nst_jax.fast import inference, nets  # pylint: disable=import-outside-toplevel
  if model_path:
    s = inference.Stylizer.from_checkpoint(model_path)
    model, params = s.model, s.variables["params"]
  else:
    model = nets.ThesisNet()
    params = jax.jit(lambda k: nets.init_variables(model, k))(train_state.make_key(0))["params"]
  if model.normalization != "instance" or model.upsample != "resize" or model.input_blend:
    raise SystemExit("the PyTorch twin implements the thesis architecture only")
  meta = {"width": model.width, "num_residual": model.num_residual,
          "params": nets.count_params({"params": params})}
  flat = {"/".join(k): np.asarray(v, np.float32)
          for k, v in flatten_dict(jax.device_get(params)).items()}
  np.savez(path, __meta__=json.dumps(meta), **flat)
  return meta


def run_worker(backend: str, size: int, args, tmp: Path) -> dict:
  rng = np.random.default_rng(size)
  inp = tmp / f"in_{size}.npy"
  if not inp.exists():
    np.save(inp, rng.uniform(size=(args.batch, size, size, 3)).astype(np.float32))
  cmd = [sys.executable, __file__, "--worker", backend, "--weights", str(tmp / "w.npz"),
         "--input", str(inp), "--output", str(tmp / f"out_{backend}_{size}.npy"),
         "--repeats", str(args.repeats), "--batch", str(args.batch)]
  env = dict(os.environ, **bc.thread_env(args.threads))
  cmd += ["--threads", str(args.threads)] if args.threads else []
  cpus = sorted(os.sched_getaffinity(0))[:args.threads] if args.threads else None
  # Pinned to that many cores as well: XLA's YNNPACK fusions have their own thread pool.
  pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
  proc = subprocess.run(cmd + (["--bf16"] if args.bf16 else []), capture_output=True, text=True,
                        env=env, check=False, preexec_fn=pin)
  if proc.returncode:
    raise SystemExit(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", help="a training workdir (default: a fresh full-width ThesisNet)")
  p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--bf16", action="store_true", help="JAX in bfloat16 (PyTorch stays float32)")
  p.add_argument("--no-torch", action="store_true", help="JAX alone (no PyTorch twin, no ratios)")
  bc.add_common_args(p, vgg_weights=False, data=False, out=bc.RESULTS / "inference_bench.json",
                     threads=True)
  p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  for hidden in ("--weights", "--input", "--output"):
    p.add_argument(hidden, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)))
    return
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    meta = export_weights(args.model, tmp / "w.npz")
    for size in args.sizes:
      r_jax = run_worker("jax", size, args, tmp)
      if args.no_torch:
        rows.append({"size": size, "jax": r_jax})
        print(f"{size}px: {r_jax['latency_ms']:.2f} ms latency, {r_jax['images_per_s']:.1f} "
              f"images/s at batch {r_jax['batch']}", file=sys.stderr)
        continue
      r_torch = run_worker("torch", size, args, tmp)
      diff = float(np.max(np.abs(np.load(tmp / f"out_jax_{size}.npy")
                                 - np.load(tmp / f"out_torch_{size}.npy"))))
      rows.append({"size": size, "jax": r_jax, "torch": r_torch, "max_abs_diff": diff,
                   "latency_ratio": r_jax["latency_ms"] / r_torch["latency_ms"],
                   "throughput_ratio": r_torch["images_per_s"] / r_jax["images_per_s"]})
      print(f"{size}px done", file=sys.stderr)
  report = {"benchmark": "inference", "model": args.model or "ThesisNet (random init)",
            "threads": args.threads or "default", "net": meta, "bf16": args.bf16,
            "torch_device": None if args.no_torch else "cpu", "rows": rows}
  bc.write_result(args.out, report, args)
  if args.no_torch:
    return
  print(f"threads: {args.threads or 'default'}; ratio = JAX time / PyTorch time")
  print(f"| size | JAX latency ms | torch latency ms | ratio | JAX img/s (batch {args.batch}) | "
        "torch img/s | ratio | JAX peak MB | torch peak MB | max diff |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    j, t = r["jax"], r["torch"]
    print(f"| {r['size']} | {j['latency_ms']:.1f} | {t['latency_ms']:.1f} | "
          f"{r['latency_ratio']:.2f} | {j['images_per_s']:.2f} | {t['images_per_s']:.2f} | "
          f"{r['throughput_ratio']:.2f} | {j['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} | "
          f"{r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
  main()
