"""One worker of optimize_bench.py: a JAX or PyTorch optimizer run, driven chunk by chunk.

Synopsis (started by ``optimize_bench.py``, not by hand)::

  python benchmarks/optimize_bench_worker.py --impl jax --optimizer lbfgsb --inputs in.npz \
      --weights vgg19_conv.npz --threads 2 --chunk 2 --chunks 6 [--check grad.npy] \
      [--conv-impl auto|xla|cpu_fast]

Protocol: the worker prints one JSON line when ready (with the loss terms, gradient file and one
timed value-and-gradient when ``--check``), then for every ``go`` line on stdin it runs ``--chunk``
iterations and prints ``{"seconds", "cpu_seconds", "iters", "evals"}``; ``stop`` ends it with
``{"done", "peak_rss_mb", "backend"}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nst_jax import config  # noqa: E402  (jax is imported by the JAX worker only)


def _pin_threads(threads: int) -> None:
  if hasattr(os, "sched_setaffinity"):
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:threads])


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Channel:
  """The worker's side of the protocol: one JSON line out, one command line in."""

  def __init__(self):
    self.start = self.cpu_start = 0.0
    self.evals = 0

  def send(self, obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

  def wait(self) -> str:
    command = sys.stdin.readline().strip()
    self.start, self.cpu_start, self.evals = time.perf_counter(), time.process_time(), 0
    return command

  def chunk_done(self, iters: int) -> bool:
    """Reports a finished chunk; returns False when told to stop."""
    self.send({"seconds": time.perf_counter() - self.start, "iters": iters, "evals": self.evals,
               "cpu_seconds": time.process_time() - self.cpu_start})
    return self.wait() == "go"


class Stop(Exception):
  pass


def _median_time(fn, repeats: int = 2) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def jax_worker(args, inputs, ch: Channel) -> dict:
  import jax
  import jax.numpy as jnp

  from nst_jax.core import objective, vgg
  from nst_jax.slow import artistic, optimize

  # conv_impl="xla": the plain autodiff convolution of before vgg.conv3x3 (conv_loop_profile.py)
  cfg = dataclasses.replace(config.gatys().loss, conv_impl=args.conv_impl)
  params = vgg.load_vgg19(args.weights)
  targets = objective.make_targets(params, jnp.asarray(inputs["content"])[None],
                                   [jnp.asarray(inputs["style"])[None]], cfg)
  base = artistic.make_loss_fn(cfg)

  def count(_):
    ch.evals += 1

  def loss_fn(x, p, t):
    value, terms = base(x, p, t)
    jax.debug.callback(count, value)
    return value, terms

  x0 = jnp.asarray(inputs["x0"])[None]  # [1, H, W, 3]
  setup = {}
  if args.check:
    vg = jax.jit(jax.value_and_grad(base, has_aux=True))
    (_, terms), grad = vg(x0, params, targets)
    np.save(args.check, np.asarray(grad)[0])  # [H, W, 3]
    setup = {"terms": {k: float(v[0]) for k, v in terms.items()},
             "value_and_grad_s": _median_time(lambda: jax.block_until_ready(
                 vg(x0, params, targets)))}
  n_iters = args.chunk * args.chunks
  optim = config.OptimConfig(optimizer=args.optimizer, num_iters=n_iters, chunk=args.chunk)
  ch.send({"ready": True, "rss_setup_mb": _rss_mb(), **setup})
  ch.wait()

  def on_chunk(it, x, state, hist):
    if not ch.chunk_done(args.chunk):
      raise Stop

  try:
    optimize.run(loss_fn, x0, params, targets, optim, progress=False, on_chunk=on_chunk)
  except Stop:
    pass
  return {"backend": f"jax {jax.__version__} {jax.devices()[0].platform}"}


def torch_worker(args, inputs, ch: Channel) -> dict:
  import torch
  import torch_reference as tr

  torch.set_num_threads(args.threads)
  torch.set_flush_denormal(True)  # as XLA:CPU does (flush-to-zero); denormals are slow on x86
  cfg = config.gatys().loss
  params = tr.load_vgg19(args.weights)
  targets = tr.make_targets(params, inputs["content"], [inputs["style"]], cfg)
  x = tr.to_tensor(inputs["x0"]).requires_grad_(True)  # [1, 3, H, W]

  def evaluate():
    x.grad = None
    terms = tr.loss_terms(params, x, targets, cfg)
    terms["total"].sum().backward()
    ch.evals += 1
    return terms

  setup = {}
  if args.check:
    terms = evaluate()
    np.save(args.check, x.grad.detach().numpy()[0].transpose(1, 2, 0))  # [H, W, 3]
    setup = {"terms": {k: float(v.detach()[0]) for k, v in terms.items()},
             "value_and_grad_s": _median_time(evaluate)}
  n_iters = args.chunk * args.chunks
  opt = tr.make_optimizer(args.optimizer, x, max_iter=n_iters)
  ch.send({"ready": True, "rss_setup_mb": _rss_mb(), **setup})
  ch.wait()
  try:
    if args.optimizer == "adam":
      _torch_adam(opt, x, evaluate, n_iters, args.chunk, ch)
    else:
      _torch_lbfgs(opt, x, evaluate, args.chunk, ch)
  except Stop:
    pass
  return {"backend": f"torch {torch.__version__}"}


def _torch_adam(opt, x, evaluate, n_iters, chunk, ch):
  import torch
  for i in range(1, n_iters + 1):
    opt.zero_grad(set_to_none=True)
    evaluate()
    opt.step()
    with torch.no_grad():
      x.clamp_(0.0, 1.0)
    if i % chunk == 0 and not ch.chunk_done(chunk):
      raise Stop


def _torch_lbfgs(opt, x, evaluate, chunk, ch):
  """One ``step`` runs every iteration (no repeated initial evaluation); the closure notices
  when an iteration starts a new chunk and reports the finished one first."""
  state = opt.state[x]
  done = [0]

  def closure():
    n = state.get("n_iter", 0)
    if n > done[0] and (n - 1) % chunk == 0 and n > 1:
      done[0] = n
      if not ch.chunk_done(chunk):
        raise Stop
    return evaluate()["total"].sum()

  opt.step(closure)
  ch.chunk_done(chunk)


def main(argv=None) -> None:
  args = parse_args(argv)
  _pin_threads(args.threads)
  inputs = dict(np.load(args.inputs))
  ch = Channel()
  run = jax_worker if args.impl == "jax" else torch_worker
  info = run(args, inputs, ch)
  ch.send({"done": True, "peak_rss_mb": _peak_mb(), **info})



def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--impl", choices=("jax", "torch"), required=True)
  p.add_argument("--optimizer", required=True)
  p.add_argument("--inputs", required=True, help=".npz with content, style and x0")
  p.add_argument("--weights", required=True)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--chunk", type=int, required=True)
  p.add_argument("--chunks", type=int, required=True)
  p.add_argument("--check", help="write the gradient at x0 here and time one value+grad")
  p.add_argument("--conv-impl", choices=config.CONV_IMPLS, default="auto",
                 help="VGG's convolutions in the JAX worker (LossConfig.conv_impl)")
  p.add_argument("--jax-autodiff-conv", action="store_true", help="the same as --conv-impl xla")
  args = p.parse_args(argv)
  if args.jax_autodiff_conv:
    args.conv_impl = "xla"
  return args


if __name__ == "__main__":
  main()
