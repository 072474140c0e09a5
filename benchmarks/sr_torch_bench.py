"""The shipped SR network on the CPU: JAX beside a PyTorch twin (same weights, same input).

Usage::

  python benchmarks/sr_torch_bench.py                           # sr_fast_x4, 256 -> 1024 px
  python benchmarks/sr_torch_bench.py --lr-size 128 --repeats 3 --threads 1
  python benchmarks/sr_torch_bench.py --conv-impl xla   # XLA's own convolutions throughout

The twin is the ``fast`` preset's network written with ``torch.nn.functional`` (issue 18, Sec. 7):
a 5x5 convolution, ReLU 3x3 convolutions at LR resolution, a 3x3 convolution to 3 s^2 channels,
``pixel_shuffle`` (the same channel order as ``sr.nets.pixel_shuffle``), plus the bicubic
upsample of the input computed with the same MATLAB ``imresize`` matrices as
``sr.degrade.resize_bicubic``. Weights are the shipped ``.npz``'s (float16 on disk, float32 in
both). Two measurements, interleaved round-robin in one process so both see the same load:

* inference: one LR image of ``--lr-size`` pixels -> its SR image (``Upscaler``'s jitted call);
* a training step: one HR image of ``--lr-size * scale`` pixels is degraded in the step (bicubic,
  8-bit rounding), upscaled, the pixel (MSE) loss differentiated and Adam (lr 1e-3) applied:
  ``sr.training.make_train_step`` against the same in PyTorch (``torch.optim.Adam``).

Each is the median of ``--repeats`` calls after one warm-up (compilation), in wall and process
CPU seconds; ratio = JAX / PyTorch (below 1: JAX is faster). Agreement checks: the largest
difference of the SR outputs, of the first step's losses and of the parameters after it.
Results go to ``benchmarks/results/sr_torch_bench.json``.
"""

from __future__ import annotations

import argparse
import time

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import model_file, sharding
from nst_jax.core.state import TrainState
from nst_jax.sr import degrade, nets, training, upscale


def torch_twin(flat: dict, scale: int):
  """A torch SubPixelSR (``residual_bicubic``, no normalisation) from flattened Flax params.

  Returns:
    ``(params, forward)``: the parameters as leaf tensors (``requires_grad``), and
    ``forward(params, lr [B, 3, h, w]) -> [B, 3, s h, s w]``.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  names = sorted({k.rsplit("/", 1)[0] for k in flat}, key=lambda n: int(n.rsplit("_", 1)[1]))
  params = []
  for n in names:  # HWIO -> OIHW
    params.append(torch.tensor(np.ascontiguousarray(flat[n + "/kernel"].transpose(3, 2, 0, 1)),
                               requires_grad=True))
    params.append(torch.tensor(flat[n + "/bias"], requires_grad=True))
  mats = {}

  def bicubic(x):  # [B, C, h, w] -> [B, C, s h, s w], MATLAB imresize
    h, w = x.shape[-2:]
    if (h, w) not in mats:
      mats[h, w] = (torch.from_numpy(degrade.resize_matrix(h, h * scale)),
                    torch.from_numpy(degrade.resize_matrix(w, w * scale)).T.contiguous())
    mh, mwt = mats[h, w]
    return torch.matmul(torch.matmul(mh, x), mwt)

  def forward(p, lr):
    x = lr
    for i in range(0, len(p) - 2, 2):
      pad = p[i].shape[-1] // 2
      x = F.relu(F.conv2d(x, p[i], p[i + 1], padding=pad))
    x = F.pixel_shuffle(F.conv2d(x, p[-2], p[-1], padding=p[-2].shape[-1] // 2), scale)
    return bicubic(lr) + x

  return params, forward


def torch_degrade(hr, scale: int, mats: dict):
  """``training.make_lr`` (bicubic, antialiased, rounded to 8 bits) of [B, 3, H, W]."""
  import torch  # pylint: disable=import-outside-toplevel
  h, w = hr.shape[-2:]
  if (h, w) not in mats:
    mats[h, w] = (torch.from_numpy(degrade.resize_matrix(h, h // scale)),
                  torch.from_numpy(degrade.resize_matrix(w, w // scale)).T.contiguous())
  mh, mwt = mats[h, w]
  lr = torch.matmul(torch.matmul(mh, hr), mwt)
  return torch.round(torch.clamp(lr, 0.0, 1.0) * 255.0) / 255.0


def timed(fn):
  """(wall s, process CPU s) of ``fn()``, blocking on a JAX result."""
  w0, c0 = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn())
  return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, data=False, out=bc.RESULTS / "sr_torch_bench.json",
                     threads=True)
  p.add_argument("--model", default="sr_fast_x4", help="a shipped SR model or exported .npz "
                 "(the fast preset's network; default: %(default)s)")
  p.add_argument("--lr-size", type=int, default=256, help="LR input side (default: %(default)s)")
  p.add_argument("--repeats", type=int, default=5, help="timed calls each (default: %(default)s)")
  p.add_argument("--conv-impl", default="auto", help="the JAX network's net.conv_impl: auto, xla "
                 "or cpu_fast (default: %(default)s)")
  args = p.parse_args(argv)
  import torch  # pylint: disable=import-outside-toplevel
  bc.limit_threads(args.threads)

  up = upscale.Upscaler.load(args.model)
  cfg, s = up.cfg, up.scale
  if cfg is not None:
    cfg = config.override(cfg, {"net.conv_impl": args.conv_impl}).check()
  if cfg is None or cfg.net.arch != "subpixel" or cfg.net.normalization != "none":
    raise config.ConfigError("model", "the twin is the fast preset's network (subpixel, no "
                             "normalisation)")
  flat = {k[len("params/"):]: np.asarray(v, np.float32)
          for k, v in model_file.flatten(dict(up.variables)).items() if k.startswith("params/")}
  rng = np.random.default_rng(0)
  n = args.lr_size
  lr = rng.random((1, n, n, 3), np.float32)  # [1, n, n, 3]
  hr = rng.random((1, n * s, n * s, 3), np.float32)  # [1, N, N, 3]
  to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

  # Inference.
  t_params, t_forward = torch_twin(flat, s)
  lr_j, lr_t = jnp.asarray(lr), to_t(lr)

  net = nets.make_net(cfg.net, s)
  infer = jax.jit(lambda x: nets.apply_net(net, up.variables, x))  # what Upscaler calls

  def jax_infer():
    return infer(lr_j)

  def torch_infer():
    with torch.inference_mode():
      return t_forward(t_params, lr_t)

  out_j, out_t = np.asarray(jax_infer()), torch_infer().numpy().transpose(0, 2, 3, 1)
  infer_diff = float(np.abs(out_j - out_t).max())

  # A training step (pixel loss, Adam at a constant 1e-3).
  step_cfg = config.override(cfg, {"batch_size": "1", "schedule": "constant",
                                   "learning_rate": "1e-3", "size": str(n * s)})
  tx = training.make_optimizer(step_cfg)
  mesh = sharding.make_mesh(jax.devices()[:1])
  step = training.make_train_step(net, tx, step_cfg, mesh)
  params = jax.tree.map(jnp.asarray, up.variables["params"])
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                     opt_state=tx.init(params))
  hr_j, hr_t = jnp.asarray(hr), to_t(hr)
  tp, _ = torch_twin(flat, s)
  opt = torch.optim.Adam(tp, lr=1e-3)
  mats = {}

  def torch_step():
    opt.zero_grad(set_to_none=True)
    sr = t_forward(tp, torch_degrade(hr_t, s, mats))
    loss = torch.mean(torch.square(sr - hr_t))
    loss.backward()
    opt.step()
    return loss.detach()

  state, metrics = step(state, hr_j, {})
  loss_t = torch_step()
  loss_diff = abs(float(metrics["pixel"]) - float(loss_t))
  new_j = {k[len("params/"):]: np.asarray(v)
           for k, v in model_file.flatten({"params": state.params}).items()}
  names = sorted({k.rsplit("/", 1)[0] for k in new_j}, key=lambda m: int(m.rsplit("_", 1)[1]))
  param_diff = max(
      max(float(np.abs(new_j[m + "/kernel"].transpose(3, 2, 0, 1) - tp[2 * i].detach().numpy())
                .max()),
          float(np.abs(new_j[m + "/bias"] - tp[2 * i + 1].detach().numpy()).max()))
      for i, m in enumerate(names))

  def jax_step():
    nonlocal state
    state, m = step(state, hr_j, {})
    return m["total"]

  # Warm-up done above (one call each); time round-robin.
  times = {k: [] for k in ("jax_infer", "torch_infer", "jax_step", "torch_step")}
  fns = {"jax_infer": jax_infer, "torch_infer": torch_infer, "jax_step": jax_step,
         "torch_step": torch_step}
  for _ in range(args.repeats):
    for k, fn in fns.items():
      times[k].append(timed(fn))
  med = {k: (float(np.median([t[0] for t in v])), float(np.median([t[1] for t in v])))
         for k, v in times.items()}
  rows = []
  for what in ("infer", "step"):
    (jw, jc), (tw, tc) = med["jax_" + what], med["torch_" + what]
    rows.append({"what": what, "jax_wall_s": jw, "torch_wall_s": tw, "ratio_wall": jw / tw,
                 "jax_cpu_s": jc, "torch_cpu_s": tc, "ratio_cpu": jc / tc})
  checks = {"infer_max_abs_diff": infer_diff, "step_loss_abs_diff": loss_diff,
            "step_param_max_abs_diff": param_diff}
  print(f"{args.model}: LR {n}x{n} -> {n * s}x{n * s}, median of {args.repeats}, "
        f"torch {torch.get_num_threads()} threads, conv_impl {args.conv_impl}")
  print("| what | JAX ms | PyTorch ms | ratio (wall) | JAX CPU ms | PyTorch CPU ms | ratio (CPU) |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['what']} | {1e3 * r['jax_wall_s']:.1f} | {1e3 * r['torch_wall_s']:.1f} | "
          f"{r['ratio_wall']:.2f} | {1e3 * r['jax_cpu_s']:.1f} | {1e3 * r['torch_cpu_s']:.1f} | "
          f"{r['ratio_cpu']:.2f} |")
  print("agreement:", ", ".join(f"{k} {v:.2e}" for k, v in checks.items()))
  bc.write_result(args.out, {"rows": rows, "checks": checks, "times": times,
                             "torch_threads": torch.get_num_threads()}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
