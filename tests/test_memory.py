"""Memory estimates and the refusals built on them: hostile sizes, tiny images."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from nst_jax import cli
from nst_jax.core import memory
from nst_jax.core.errors import UserError

GATYS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vgg_floats_count_every_layer_up_to_the_deepest():
  assert memory.vgg_floats_per_pixel(("relu1_1",)) == 2 * 64
  assert memory.vgg_floats_per_pixel(("conv1_1", "relu1_1")) == 2 * 64
  assert memory.vgg_floats_per_pixel(("pool1",)) == 4 * 64 + 64 / 4
  assert memory.vgg_floats_per_pixel(("conv2_1",)) == 4 * 64 + 64 / 4 + 128 / 4
  block5 = memory.vgg_floats_per_pixel(("relu5_1",))
  assert memory.vgg_floats_per_pixel(GATYS) == block5 and 600 < block5 < 620


@pytest.mark.parametrize("kind", memory.KINDS)
def test_estimate_is_monotone_in_size_batch_and_depth(kind):
  sides = [1, 16, 64, 256, 1024, 4096]
  est = [memory.estimate_peak_bytes(kind, (s, s), layers=GATYS, history=20) for s in sides]
  assert all(a < b for a, b in zip(est, est[1:]))
  one, two = (memory.estimate_peak_bytes(kind, (512, 512), batch=b, layers=GATYS)
              for b in (1, 2))
  assert two > one
  if kind != "stylize":
    assert (memory.estimate_peak_bytes(kind, (512, 512), layers=("relu2_1",))
            < memory.estimate_peak_bytes(kind, (512, 512), layers=("relu5_1",)))


def test_winograd_term_stops_growing_once_block_3_runs_in_strips():
  # Above WINOGRAD_WHOLE_PIXELS the transforms' memory is a constant (vgg.WINOGRAD_STRIP_PIXELS):
  # the estimate's growth per pixel drops by exactly WINOGRAD_FLOATS there, and the 3000 px
  # picture of BENCHMARKS.md ("Big pictures: slow transfer at 3000 px") fits 17.6 GB.
  whole = memory.WINOGRAD_WHOLE_PIXELS
  est = lambda px: memory.estimate_peak_bytes("optimize", (1, px), layers=GATYS, history=20)
  per_px = lambda a, b: (est(b) - est(a)) / (b - a) / 4 / memory.REFITTED_MARGIN
  assert per_px(whole // 4, whole // 2) - per_px(4 * whole, 8 * whole) == pytest.approx(
      memory.WINOGRAD_FLOATS, abs=0.01)
  assert (memory.floats_per_pixel("optimize", layers=("relu2_1",), pixels=10 ** 8)
          == memory.floats_per_pixel("optimize", layers=("relu2_1",)))  # no wide layer
  budget = int(17.6 * memory.GB)
  assert memory.largest_fitting_size("optimize", (1200, 1800), budget, layers=GATYS,
                                     history=20) >= 3000


def test_largest_fitting_size_is_the_boundary():
  budget = 4 * memory.GB
  hw = (768, 1024)
  side = memory.largest_fitting_size("optimize", hw, budget, layers=GATYS, history=20)
  fits = lambda s: memory.estimate_peak_bytes("optimize", memory.scaled_hw(hw, s), layers=GATYS,
                                              history=20) <= budget
  assert 256 < side < 4096 and fits(side) and not fits(side + 1)
  assert memory.largest_fitting_size("optimize", hw, 1, layers=GATYS) == 0


def test_check_fits_names_the_largest_size_on_one_line():
  budget = 4 * memory.GB
  memory.check_fits("optimize", (384, 512), budget, layers=GATYS, history=20)  # fits
  memory.check_fits("optimize", (10 ** 6, 10 ** 6), None, layers=GATYS)  # no budget: no check
  with pytest.raises(UserError) as e:
    memory.check_fits("optimize", (75000, 100000), budget, layers=GATYS, history=20)
  side = memory.largest_fitting_size("optimize", (75000, 100000), budget, layers=GATYS,
                                     history=20)
  assert f"--size {side}" in str(e.value) and "\n" not in str(e.value)


def test_budget_flag_then_env_then_available_memory(monkeypatch):
  monkeypatch.delenv(memory.MEMORY_ENV, raising=False)
  available = memory.available_bytes()
  assert available and 0 < available <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  assert abs(memory.budget_bytes() - 0.8 * available) < 0.05 * available  # memory moves
  monkeypatch.setenv(memory.MEMORY_ENV, "3")
  assert memory.budget_bytes() == 3 * memory.GB
  assert memory.budget_bytes(1.5) == int(1.5 * memory.GB)
  monkeypatch.setenv(memory.MEMORY_ENV, "lots")
  with pytest.raises(UserError, match=memory.MEMORY_ENV):
    memory.budget_bytes()
  with pytest.raises(UserError, match="--max-memory"):
    memory.budget_bytes(0.0)


def test_min_side_follows_the_poolings():
  memory.check_min_side((16, 300), GATYS)
  memory.check_min_side((1, 1), ("relu1_1",))
  with pytest.raises(UserError, match="relu5_1 needs both sides >= 16"):
    memory.check_min_side((15, 300), GATYS)
  with pytest.raises(UserError, match=">= 32"):
    memory.check_min_side((16, 16), ("pool5",))


@pytest.fixture
def images(tmp_path):
  rng = np.random.default_rng(0)
  paths = {}
  for name, hw in {"content": (48, 64), "style": (40, 40), "one": (1, 1), "two": (2, 2),
                   "line": (1, 300)}.items():
    paths[name] = tmp_path / f"{name}.png"
    Image.fromarray(rng.integers(0, 255, hw + (3,), dtype=np.uint8)).save(paths[name])
  return paths


def test_cli_refuses_a_hostile_size_quickly_and_writes_nothing(images, vgg_path, tmp_path):
  out = tmp_path / "out" / "r.png"
  t0 = time.perf_counter()
  proc = subprocess.Popen([sys.executable, "-m", "nst_jax.cli", "optimize", "--content",
                           str(images["content"]), "--style", str(images["style"]),
                           "--vgg-weights", str(vgg_path), "--out", str(out), "--size", "100000",
                           "--iters", "2"], cwd=REPO, stderr=subprocess.PIPE, text=True)
  err = proc.stderr.read()
  _, status, usage = os.wait4(proc.pid, 0)
  wall, cpu = time.perf_counter() - t0, usage.ru_utime + usage.ru_stime
  lines = err.strip().splitlines()
  assert os.waitstatus_to_exitcode(status) == 2 and len(lines) == 1, err
  assert "the largest size that fits is --size" in lines[0]
  assert not out.parent.exists() or not any(out.parent.iterdir())
  # CPU seconds (importing jax is most of it): the wall time depends on the machine's load.
  # (Not its peak RSS: a forked child inherits the pytest worker's resident pages in ru_maxrss.)
  assert cpu < 10, (cpu, wall)


@pytest.mark.parametrize("command", ["texture", "reconstruct", "visualize", "photo"])
def test_every_slow_command_refuses_a_size_beyond_max_memory(command, images, vgg_path,
                                                              tmp_path, capsys):
  out = tmp_path / "o.png"
  args = {"texture": ["--style", images["style"], "--size", "4096"],
          "reconstruct": ["--content", images["content"], "--style", images["style"],
                          "--size", "4096"],
          "visualize": ["--layer", "conv5_1", "--units", "0,1", "--size", "4096"],
          "photo": ["--content", images["content"], "--style", images["style"], "--size", "4096"],
          }[command]
  code = cli.main([command, *map(str, args), "--out", str(out), "--vgg-weights", str(vgg_path),
                   "--max-memory", "1", "--no-progress"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "--size" in err, err
  assert not out.exists()


@pytest.mark.real_weights
def test_optimize_upscales_1x1_and_2x2_contents_to_the_requested_size(images, vgg_path, tmp_path):
  out = tmp_path / "o.png"  # two contents: one batched run, o_one.png and o_two.png
  assert cli.main(["optimize", "--content", str(images["one"]), str(images["two"]), "--style",
                   str(images["two"]), "--vgg-weights", str(vgg_path), "--out", str(out),
                   "--size", "32", "--iters", "2", "--chunk", "2", "--optimizer", "adam",
                   "--no-progress"]) == 0
  for name in ("one", "two"):
    img = np.asarray(Image.open(tmp_path / f"o_{name}.png"))
    assert img.shape == (32, 32, 3) and img.std() > 0  # optimized, not a blank upscale


def test_optimize_refuses_a_content_too_thin_for_vgg(images, vgg_path, tmp_path, capsys):
  out = tmp_path / "o.png"
  code = cli.main(["optimize", "--content", str(images["line"]), "--style", str(images["style"]),
                   "--vgg-weights", str(vgg_path), "--out", str(out), "--size", "64",
                   "--no-progress"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "too small" in err and not out.exists()


def _tiny_stylizer(**kwargs):
  import jax
  from nst_jax.fast import inference, nets
  model = nets.TinyNet()
  return inference.Stylizer(model, nets.init_variables(model, jax.random.PRNGKey(0)), **kwargs)


def test_stylize_processes_1x1_and_2x2_images():
  stylizer = _tiny_stylizer()
  rng = np.random.default_rng(0)
  images = [rng.uniform(size=hw + (3,)).astype(np.float32) for hw in ((1, 1), (2, 2))]
  outs = stylizer.stylize_many(images)
  assert [o.shape for o in outs] == [(1, 1, 3), (2, 2, 3)]
  assert all(np.isfinite(o).all() and o.min() >= 0 and o.max() <= 1 for o in outs)


def test_stylize_refuses_an_image_beyond_max_memory():
  stylizer = _tiny_stylizer()
  with pytest.raises(UserError, match="--size"):
    stylizer.stylize_many([np.zeros((2048, 2048, 3), np.float32)], max_memory=1, tile=0)


def test_stylize_cli_refuses_a_hostile_size_before_resizing(images, tmp_path, capsys):
  out = tmp_path / "out"
  code = cli.main(["stylize", "--model", str(tmp_path / "no_model"), "--content",
                   str(images["content"]), "--out", str(out), "--size", "100000"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "the largest size that fits is --size" in err and not out.exists(), err


def test_a_command_s_peak_rss_is_its_own():
  """A large parent (here 400 MB of touched pages) does not count in the command's peak, as it
  does in the ``ru_maxrss`` of a child started directly (Linux keeps the peak across exec)."""
  ballast = np.ones(100 * 2**20, np.float32)  # 400 MB, resident
  tiny = [sys.executable, "-c", "pass"]
  proc = subprocess.Popen(tiny)
  _, _, usage = os.wait4(proc.pid, 0)
  code, peak = memory.run_with_peak_rss(tiny)
  assert code == 0 and 1e6 < peak < 100e6, peak
  assert usage.ru_maxrss * 1024 > ballast.nbytes > 4 * peak  # what the wrapper avoids
  assert memory.run_with_peak_rss([sys.executable, "-c", "raise SystemExit(3)"])[0] == 3


def _peak_rss_bytes(argv, cache_dir) -> int:
  # The measured process as a user starts it: a clean environment (no XLA_FLAGS or thread
  # limits an earlier in-process benchmark test may have left in this worker), all CPUs, and a
  # private, empty compilation cache, so the program is compiled in it as the estimate was
  # calibrated.
  keep = ("PATH", "HOME", "LANG", "NST_JAX_VGG_WEIGHTS", "NST_JAX_DATA", "NST_JAX_SHARED",
          "JAX_DISABLE_MOST_OPTIMIZATIONS")
  env = {k: os.environ[k] for k in keep if k in os.environ}
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
  cpus = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
  # Measured through memory.run_with_peak_rss: the ru_maxrss of a process started directly from
  # this pytest worker includes the worker's own size (3.7 and 2.5 GB in the slow step, after
  # heavier tests in the same worker; test_a_command_s_peak_rss_is_its_own).
  code, peak = memory.run_with_peak_rss(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=env,
                                        preexec_fn=lambda: os.sched_setaffinity(0, cpus))
  assert code == 0
  return peak


@pytest.mark.slow
@pytest.mark.real_weights
def test_estimate_is_within_20_percent_of_the_measured_peak(images, vgg_path, tmp_path):
  peak = _peak_rss_bytes([sys.executable, "-m", "nst_jax.cli", "optimize", "--content",
                          str(images["content"]), "--style", str(images["style"]),
                          "--vgg-weights", str(vgg_path), "--out", str(tmp_path / "o.png"),
                          "--size", "256", "--iters", "2", "--chunk", "2", "--no-progress"],
                         tmp_path / "xla_cache")
  est = memory.estimate_peak_bytes("optimize", (192, 256), layers=GATYS, history=20)
  assert 0.8 * peak < est < 1.2 * peak, (est, peak)  # BENCHMARKS.md: "Big pictures: slow ..."


def test_the_refitted_estimate_follows_remat_and_keeps_the_old_factor_elsewhere():
  est = {r: memory.estimate_peak_bytes("optimize", (768, 1024), layers=GATYS, history=20,
                                       remat=r) for r in ("none", "masks")}
  assert est["masks"] < est["none"]
  assert (memory.floats_per_pixel("photo", layers=GATYS, history=20, remat="masks")
          == memory.floats_per_pixel("photo", layers=GATYS, history=20, remat="none"))


@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.parametrize("remat", ["none", "masks"])
def test_estimate_follows_the_compiled_programs_memory_analysis(vgg_params, xla_optimized, remat):
  # What XLA plans for the optimizer's compiled chunk (temporaries + arguments: the image, the
  # L-BFGS state, targets, weights) grows with the pixels as the estimate's per-pixel part does.
  # The estimate is fitted to the measured peak RSS, which grows more slowly than XLA's plan
  # (0.8x of it from 512 to 1024 px, BENCHMARKS.md): the stated tolerance is 0.6-1.1x.
  import dataclasses

  import jax
  import jax.numpy as jnp

  from nst_jax import config
  from nst_jax.core import objective
  from nst_jax.slow import artistic, optimize
  cfg = config.gatys()
  loss_cfg = dataclasses.replace(cfg.loss, remat=remat)
  solver = optimize.make_solver(artistic.make_loss_fn(loss_cfg), cfg.optim)
  planned = {}
  for hw in ((96, 128), (192, 256)):
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(1,) + hw + (3,)), jnp.float32)
    targets = objective.make_targets(vgg_params, x, [x], loss_cfg)
    state = optimize.strong(jax.jit(solver.init)(x, vgg_params, targets))
    ma = (optimize.make_chunk_fn(solver, 1).lower(x, state, vgg_params, targets, 1).compile()
          .memory_analysis())
    planned[hw] = ma.temp_size_in_bytes + ma.argument_size_in_bytes
  per_pixel = (planned[(192, 256)] - planned[(96, 128)]) / (192 * 256 - 96 * 128)
  model = 4 * memory.floats_per_pixel("optimize", layers=GATYS, history=20, remat=remat)
  assert 0.6 * per_pixel < model < 1.1 * per_pixel, (model, per_pixel)
