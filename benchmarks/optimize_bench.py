"""Seconds per iteration of per-image optimization, nst_jax vs a PyTorch reference, and peak memory.

Synopsis::

  python benchmarks/optimize_bench.py                      # 256 and 512 px, CPU, ~10 minutes
  python benchmarks/optimize_bench.py --sizes 256 512 1024 --chunk 2 1 1 --timed-chunks 5 3 2 \
      --optimizers lbfgsb                                   # + 1024 px: peak RSS side by side
  python benchmarks/optimize_bench.py --sizes 512 1024 --no-torch --timed-chunks 10 10 \
      --chunk 10 10                                         # on a GPU

For each size the Gatys objective (``config.gatys().loss``: relu4_2 content, relu1_1..relu5_1
Gram style, tv, average pooling) of the same content, style and initial image (0.6 noise +
0.4 content, seed 0) is minimized by

- nst_jax: ``optimize.run`` with each optimizer (lbfgsb = the lean free-variable L-BFGS-B of
  slow/lbfgsb.py, lbfgs = projected L-BFGS: optax's direction, a zoom search along the projection
  arc; lbfgsb_jaxopt = jaxopt's L-BFGS-B; adam = optax Adam), i.e. the production loop with its jitted chunks; the L-BFGS
  variants evaluate the loss once per iteration when the line search accepts its first step, as
  torch does;
- PyTorch (``torch_reference.py``, the same loss and weights): ``torch.optim.LBFGS`` with the
  strong Wolfe line search (compared with both L-BFGS variants; torch has no L-BFGS-B) and
  ``torch.optim.Adam`` with clamping to [0, 1].

Every implementation/optimizer runs in its own subprocess (so ``ru_maxrss`` is its own peak
memory), pinned to ``--threads`` cores; torch flushes denormals to zero (as XLA:CPU does) and its
OpenMP threads wait passively (``--omp-wait-policy``). The subprocesses
(``optimize_bench_worker.py``) of one size and optimizer family stay alive together and run their
chunks of iterations in turn (round-robin, the order rotating every round), so load from other
users of a shared machine falls on all of them alike. The first
``--warmup-chunks`` chunks (compilation, allocator warm-up) are not timed; seconds per iteration
is the median over the timed chunks. Loss evaluations are counted (a ``jax.debug.callback`` in
the JAX loss, a counter in the torch closure) to separate "more evaluations per iteration" from
"slower evaluations". Once per size, both implementations also report the loss terms and the
gradient at the initial image (their relative differences are printed) and time one
value-and-gradient evaluation.

Results: a table on stdout and JSON in ``--out`` (default benchmarks/results/optimize_cpu.json);
the reading of the numbers and the profile are in benchmarks/results/optimize_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nst_jax import config  # noqa: E402
from nst_jax.core import image_io, paths  # noqa: E402  (no jax import here)

DEFAULT_CONTENT = Path("content") / "classic_st" / "tubingen.jpg"
DEFAULT_STYLE = Path("styles") / "van_gogh_starry_night.jpg"
FAMILIES = {"lbfgs": ("lbfgsb", "lbfgs", "lbfgsb_jaxopt"), "adam": ("adam",)}  # torch optimizer -> JAX ones


class Worker:
  """A running worker subprocess, driven chunk by chunk."""

  def __init__(self, impl, optimizer, argv, env):
    self.impl, self.optimizer = impl, optimizer
    self.name = f"{impl}:{optimizer}"
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)
    self.chunks: list[dict] = []

  def read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"{self.name} worker exited (code {self.proc.wait()})")
    return json.loads(line)

  def command(self, word: str) -> dict:
    self.proc.stdin.write(word + "\n")
    self.proc.stdin.flush()
    return self.read()


def _spawn(impl, optimizer, size, opts, tmp, check: bool) -> Worker:
  argv = [sys.executable, str(HERE / "optimize_bench_worker.py"), "--impl", impl,
          "--optimizer", optimizer, "--inputs", str(tmp / f"inputs_{size}.npz"),
          "--weights", str(opts["weights"]), "--threads", str(opts["threads"]),
          "--chunk", str(opts["chunk"]), "--chunks", str(opts["chunks"])]
  if check:
    argv += ["--check", str(tmp / f"grad_{impl}_{size}.npy")]
  argv += ["--conv-impl", opts["conv_impl"]]
  env = dict(os.environ, OMP_NUM_THREADS=str(opts["threads"]),
             MKL_NUM_THREADS=str(opts["threads"]), JAX_PLATFORMS=opts["platform"],
             OMP_WAIT_POLICY=opts["omp_wait_policy"])
  return Worker(impl, optimizer, argv, env)


def _prepare_inputs(data: Path, size: int, tmp: Path, content: Path, style: Path) -> None:
  c = image_io.load_image(data / content, size=size)
  s = image_io.load_image(data / style, size=size)
  noise = np.random.default_rng(0).uniform(0.0, 1.0, c.shape).astype(np.float32)
  np.savez(tmp / f"inputs_{size}.npz", content=c, style=s, x0=0.6 * noise + 0.4 * c)


def run_family(workers: list[Worker], warmup: int, timed: int) -> None:
  """Warm-up chunks, then timed chunks round-robin with the order rotating every round."""
  for w in workers:
    for _ in range(warmup):
      w.command("go")
  for r in range(timed):
    k = r % len(workers)
    for w in workers[k:] + workers[:k]:
      w.chunks.append(w.command("go"))


def summarize(w: Worker, size: int, setup: dict, final: dict, chunk: int) -> dict:
  per_iter = [c["seconds"] / c["iters"] for c in w.chunks]
  cpu_per_iter = [c["cpu_seconds"] / c["iters"] for c in w.chunks]
  evals = sum(c["evals"] for c in w.chunks)
  iters = sum(c["iters"] for c in w.chunks)
  return {"size": size, "impl": w.impl, "optimizer": w.optimizer, "chunk": chunk,
          "timed_iters": iters, "s_per_iter": statistics.median(per_iter),
          "s_per_iter_chunks": per_iter, "cpu_s_per_iter": statistics.median(cpu_per_iter),
          "evals_per_iter": evals / iters,
          "s_per_eval": sum(c["seconds"] for c in w.chunks) / max(evals, 1),
          "rss_setup_mb": setup["rss_setup_mb"], "peak_rss_mb": final["peak_rss_mb"],
          "backend": final["backend"]}


def bench_size(size, opts, tmp, impls) -> tuple[list[dict], dict]:
  """All optimizer families at one size; the first worker of each implementation also checks."""
  rows, checked, check = [], set(), {}
  for torch_opt, jax_opts in FAMILIES.items():
    specs = [("jax", o) for o in jax_opts if o in opts["optimizers"]]
    if not specs:
      continue
    specs += [("torch", torch_opt)] if "torch" in impls else []
    workers, setups = [], {}
    for impl, o in specs:  # one at a time: setup and checks are timed too
      workers.append(_spawn(impl, o, size, opts, tmp, check=impl not in checked))
      setups[workers[-1].name] = workers[-1].read()
      checked.add(impl)
    load_before = os.getloadavg()[0]
    check.update({w.impl: setups[w.name] for w in workers if "terms" in setups[w.name]})
    run_family(workers, opts["warmup"], opts["timed"])
    for w in workers:
      final = w.command("stop")
      w.proc.wait()
      rows.append(summarize(w, size, setups[w.name], final, opts["chunk"]))
      rows[-1]["load_avg_1min"] = [load_before, os.getloadavg()[0]]
      print(_row_line(rows[-1]), flush=True)
  return rows, _compare(check, tmp, size)


def _compare(check: dict, tmp: Path, size: int) -> dict:
  if not ("jax" in check and "torch" in check):
    return {}
  j, t = check["jax"], check["torch"]
  gj, gt = np.load(tmp / f"grad_jax_{size}.npy"), np.load(tmp / f"grad_torch_{size}.npy")
  rel = {k: abs(j["terms"][k] - t["terms"][k]) / max(abs(t["terms"][k]), 1e-30)
         for k in t["terms"]}
  return {"size": size, "loss_jax": j["terms"], "loss_torch": t["terms"], "loss_rel_diff": rel,
          "grad_rel_diff": float(np.linalg.norm(gj - gt) / np.linalg.norm(gt)),
          "value_and_grad_s": {"jax": j["value_and_grad_s"], "torch": t["value_and_grad_s"]},
          "value_and_grad_ratio": j["value_and_grad_s"] / t["value_and_grad_s"]}


def _row_line(r: dict) -> str:
  return (f"  {r['size']:>5} {r['impl']:>5} {r['optimizer']:>6}  {r['s_per_iter']:8.3f} s/it  "
          f"(cpu {r['cpu_s_per_iter']:7.3f})  {r['evals_per_iter']:5.2f} evals/it  "
          f"{r['s_per_eval']:7.3f} s/eval  "
          f"peak {r['peak_rss_mb']:7.0f} MB")


def ratios(rows: list[dict]) -> list[dict]:
  """JAX / torch seconds per iteration and per evaluation, per size and JAX optimizer."""
  torch_of = {(r["size"], r["optimizer"]): r for r in rows if r["impl"] == "torch"}
  out = []
  for r in rows:
    if r["impl"] != "jax":
      continue
    family = next(t for t, js in FAMILIES.items() if r["optimizer"] in js)
    t = torch_of.get((r["size"], family))
    if t:
      out.append({"size": r["size"], "jax": r["optimizer"], "torch": family,
                  "ratio_s_per_iter": r["s_per_iter"] / t["s_per_iter"],
                  "ratio_s_per_eval": r["s_per_eval"] / t["s_per_eval"]})
  return out


def format_table(rows, ratio_rows, checks) -> str:
  by_key = {(q["size"], q["jax"]): q for q in ratio_rows}
  lines = ["| size | impl | optimizer | s/iter | CPU s/iter | evals/iter | s/eval | peak RSS MB | "
           "JAX/torch s/iter | JAX/torch s/eval |", "|" + "---|" * 10]
  for r in rows:
    q = by_key.get((r["size"], r["optimizer"])) if r["impl"] == "jax" else None
    extra = (f"{q['ratio_s_per_iter']:.2f} | {q['ratio_s_per_eval']:.2f}" if q else " | ")
    lines.append(f"| {r['size']} | {r['impl']} | {r['optimizer']} | {r['s_per_iter']:.3f} | "
                 f"{r['cpu_s_per_iter']:.3f} | {r['evals_per_iter']:.2f} | {r['s_per_eval']:.3f} | "
                 f"{r['peak_rss_mb']:.0f} | {extra} |")
  for c in checks:
    if c:
      lines.append(
          f"\n{c['size']} px: loss JAX {c['loss_jax']['total']:.6g} vs torch "
          f"{c['loss_torch']['total']:.6g} (rel diff {c['loss_rel_diff']['total']:.1e}; "
          f"content {c['loss_rel_diff']['content']:.1e}, style {c['loss_rel_diff']['style']:.1e},"
          f" tv {c['loss_rel_diff']['tv']:.1e}); gradient rel diff {c['grad_rel_diff']:.1e}; "
          f"one value_and_grad: JAX {c['value_and_grad_s']['jax']:.3f} s, torch "
          f"{c['value_and_grad_s']['torch']:.3f} s (ratio {c['value_and_grad_ratio']:.2f})")
  return "\n".join(lines)


def _shared_weights() -> str | None:
  """The shared development weights beside the repository, unless the environment names some."""
  shared = paths.REPO_ROOT.parent / "shared" / "weights" / paths.VGG_FILENAME
  return None if os.environ.get(paths.WEIGHTS_ENV) or not shared.is_file() else str(shared)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
  p.add_argument("--chunk", type=int, nargs="+", default=[2, 1],
                 help="iterations per chunk, per size")
  p.add_argument("--timed-chunks", type=int, nargs="+", default=[5, 3], help="per size")
  p.add_argument("--warmup-chunks", type=int, default=1)
  p.add_argument("--optimizers", nargs="+", default=["lbfgsb", "lbfgs", "adam"])
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--conv-impl", choices=config.CONV_IMPLS, default="auto",
                 help="VGG's convolutions in the JAX workers (LossConfig.conv_impl); xla: the "
                 "plain autodiff convolution, whose in-loop backward pass is slow on the CPU "
                 "(conv_loop_profile.py)")
  p.add_argument("--jax-autodiff-conv", action="store_true", help="the same as --conv-impl xla")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--platform", default="cpu", help="JAX_PLATFORMS for the JAX workers")
  p.add_argument("--omp-wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE"),
                 help="OMP_WAIT_POLICY of the workers: torch's OpenMP threads spin-waiting on a "
                 "shared, oversubscribed machine made it up to 20x slower")
  p.add_argument("--data-dir")
  p.add_argument("--content", type=Path, default=DEFAULT_CONTENT, help="relative to the data dir")
  p.add_argument("--style", type=Path, default=DEFAULT_STYLE, help="relative to the data dir")
  p.add_argument("--vgg-weights")
  p.add_argument("--out", type=Path, default=HERE / "results" / "optimize_cpu.json")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.jax_autodiff_conv:
    args.conv_impl = "xla"
  n = len(args.sizes)
  if len(args.chunk) != n or len(args.timed_chunks) != n:
    sys.exit("--chunk and --timed-chunks need one value per --sizes entry")
  weights = paths.resolve_vgg_weights(args.vgg_weights or _shared_weights())
  data = paths.data_dir(args.data_dir)
  impls = ("jax",) if args.no_torch else ("jax", "torch")
  rows, checks, t0 = [], [], time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for size, chunk, timed in zip(args.sizes, args.chunk, args.timed_chunks):
      print(f"{size} px: {timed} timed chunks of {chunk} iteration(s) after "
            f"{args.warmup_chunks} warm-up chunk(s)", flush=True)
      _prepare_inputs(data, size, tmp, args.content, args.style)
      opts = {"weights": weights, "threads": args.threads, "platform": args.platform,
              "omp_wait_policy": args.omp_wait_policy, "conv_impl": args.conv_impl,
              "chunk": chunk, "chunks": args.warmup_chunks + timed, "warmup": args.warmup_chunks,
              "timed": timed, "optimizers": args.optimizers}
      size_rows, check = bench_size(size, opts, tmp, impls)
      rows += size_rows
      checks.append(check)
  ratio_rows = ratios(rows)
  print(format_table(rows, ratio_rows, checks))
  result = {"rows": rows, "ratios": ratio_rows, "checks": [c for c in checks if c],
            "seconds_total": time.perf_counter() - t0, "threads": args.threads,
            "omp_wait_policy": args.omp_wait_policy, "conv_impl": args.conv_impl,
            "jax_autodiff_conv": args.conv_impl == "xla",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "content": str(args.content), "style": str(args.style)}
  image_io.write_text(args.out, json.dumps(result, indent=2))
  print(f"wrote {args.out} ({result['seconds_total']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
