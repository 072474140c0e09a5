"""Tests for nst_jax.checkpoint and resuming: save/restore, keep-N, locating, errors, and a run
killed with SIGKILL that resumes to exactly the parameters of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import cli, config
from nst_jax.core import checkpoint, digest
from nst_jax.core.errors import UserError
from nst_jax.core import sharding
from nst_jax.fast import inference, nets, train_state, training

REPO = Path(__file__).resolve().parent.parent
STEPS, EVERY = 12, 3
# The smoke preset with a shallow loss (fast to compile) and no sample images.
TRAIN_SETTINGS = [f"num_steps={STEPS}", f"checkpoint_every={EVERY}", "num_samples=0",
                  "log_every=1", "loss.content_layers=relu2_2",
                  "loss.style_layers=relu1_1,relu2_1", "loss.style_layer_weights=1,1",
                  "loss.style_weight=1e-4", "learning_rate=3e-3", "keep_checkpoints=10"]
# Slows the data pipeline in the child (a test-only patch), so the kill lands mid-run.
SLOW_CHILD = ("import sys, time\n"
              "from nst_jax import cli\n"
              "from nst_jax.core import data\n"
              "orig = data.IndexedDataset.example\n"
              "def slow(self, i):\n"
              "  time.sleep(0.4)\n"
              "  return orig(self, i)\n"
              "data.IndexedDataset.example = slow\n"
              "sys.exit(cli.main(sys.argv[1:]))\n")


def _tiny_state(seed=0):
  cfg = config.train_smoke()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  return model, tx, train_state.init_train_state(model, tx, train_state.make_key(seed),
                                              sharding.make_mesh())


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_round_trip_keeps_the_newest_and_the_meta(tmp_path):
  model, tx, state = _tiny_state()
  meta = {"config": {"a": 1}, "style_sha256": "abc"}
  with checkpoint.Checkpoints(tmp_path, every=2, keep=2) as ckpts:
    for step in range(1, 7):
      state = state.replace(step=jnp.asarray(step, jnp.int32),
                            params=jax.tree.map(lambda p: p + 1.0, state.params))
      ckpts.save(step, state, meta)  # due at 2, 4, 6
    ckpts.wait()
    assert ckpts.all_steps() == [4, 6] and ckpts.latest_step() == 6
    restored, got = ckpts.restore(6, train_state.abstract_train_state(model, tx))
  _assert_trees_equal(restored, state)
  assert got == dict(meta, step=6)
  assert checkpoint.latest_step(tmp_path) == 6
  assert checkpoint.locate(tmp_path) == (checkpoint.checkpoint_dir(tmp_path), 6)
  assert checkpoint.locate(tmp_path / "checkpoints" / "4")[1] == 4


def test_bad_checkpoint_paths_are_one_line_user_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "file.txt").write_text("x")
  for path, match in ((tmp_path / "missing", "not found"), (tmp_path / "empty", "no complete"),
                      (tmp_path / "file.txt", "got a file")):
    with pytest.raises(UserError, match=match):
      checkpoint.locate(path)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoint_restore_is_a_user_error(tmp_path):
  # Issue 21: handed to orbax, a damaged checkpoint's reads still in flight after the first
  # failure completed onto orbax's closed event loop ("Event loop is closed" warnings).
  model, tx, state = _tiny_state()
  with checkpoint.Checkpoints(tmp_path, every=1, keep=1) as ckpts:
    ckpts.save(1, state, {"config": {}})
    ckpts.wait()
  for f in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "manifest" in f.name:
      f.write_bytes(b"garbage")
  with checkpoint.Checkpoints(tmp_path, read_only=True) as ckpts, \
       pytest.raises(UserError, match="cannot restore checkpoint"):
    ckpts.restore(1, train_state.abstract_train_state(model, tx))
  time.sleep(0.5)   # reads left in flight would land now, within this test


def _train_argv(style, data, workdir):
  argv = ["train", "--preset", "smoke", "--style", str(style), "--data", str(data),
          "--workdir", str(workdir), "--no-progress"]
  for item in TRAIN_SETTINGS:
    argv += ["--set", item]
  return argv


def _env(vgg_path):
  # The run's compilation cache (conftest.py) is inherited: the victim compiles the train step
  # once, and the uninterrupted and resumed runs in this process read it from there. The victim
  # is killed only after its first checkpoint, long after it wrote that cache entry.
  env = dict(os.environ, NST_JAX_VGG_WEIGHTS=str(vgg_path), JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return env


def _final_state(workdir):
  cfg = config.train_smoke()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
    return ckpts.restore(STEPS, train_state.abstract_train_state(model, tx))


# Long (over 10 s on 2 busy cores): `-m slow`; test_sr_training.py's resumed run equals the
# uninterrupted one (the same orbax checkpoints), test_data.py resumes the data order, and the
# round-trip tests here cover the format.
@pytest.mark.slow
def test_sigkilled_run_resumes_to_exactly_the_uninterrupted_parameters(tmp_path, vgg_path,
                                                                       data_dir, monkeypatch,
                                                                       capsys):
  # Only the victim needs a process of its own (SIGKILL is the point); the uninterrupted run and
  # the resumed one run in this process, through the same command line (cli.main).
  style = data_dir / "styles" / "hokusai_great_wave.jpg"
  photos = data_dir / "train" / "t91"
  killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
  victim = subprocess.Popen([sys.executable, "-c", SLOW_CHILD,
                             *_train_argv(style, photos, killed_dir)], env=_env(vgg_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 240
  try:
    while checkpoint.latest_step(killed_dir) is None:
      assert victim.poll() is None, victim.stdout.read().decode()[-2000:]
      assert time.monotonic() < deadline, "no checkpoint was written"
      time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
  finally:
    if victim.poll() is None:
      victim.kill()
  assert victim.wait() == -signal.SIGKILL
  victim.stdout.close()
  killed_at = checkpoint.latest_step(killed_dir)
  assert killed_at is not None and killed_at < STEPS  # the run really was cut short

  monkeypatch.setenv("NST_JAX_VGG_WEIGHTS", str(vgg_path))
  assert cli.main(_train_argv(style, photos, clean_dir)) == 0, capsys.readouterr().err[-2000:]
  capsys.readouterr()
  assert cli.main(_train_argv(style, photos, killed_dir)) == 0, capsys.readouterr().err[-2000:]
  assert f"resuming {killed_dir} from step {killed_at}" in capsys.readouterr().err

  (state_a, meta_a), (state_b, meta_b) = _final_state(clean_dir), _final_state(killed_dir)
  assert int(state_a.step) == int(state_b.step) == STEPS
  _assert_trees_equal(state_b.params, state_a.params)  # bit for bit
  _assert_trees_equal(state_b.opt_state, state_a.opt_state)
  assert meta_a["style_sha256"] == meta_b["style_sha256"] == digest.file_digest(style)
  assert nets.config_from_dict(meta_b["config"]).num_steps == STEPS
  rows = (killed_dir / "losses.csv").read_text().splitlines()
  assert len(rows) == STEPS + 1  # the loss history survives the kill, one row per step
  assert (killed_dir / "losses.csv").read_text() == (clean_dir / "losses.csv").read_text()

  cfg = nets.config_from_dict(meta_b["config"])
  with pytest.raises(UserError, match="another style image"):
    training.train_and_evaluate(config.override(cfg, {"style": str(photos / "t1.jpg")}),
                                killed_dir, vgg_params={})
  with pytest.raises(UserError, match="different net"):
    training.train_and_evaluate(config.override(cfg, {"net.width": "0.25"}), killed_dir,
                                vgg_params={})


def test_parameter_average_round_trips_and_cannot_be_toggled_on_resume(tmp_path):
  cfg = config.override(config.train_smoke(), {"ema_decay": "0.99"})
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = train_state.init_train_state(model, tx, train_state.make_key(0), sharding.make_mesh())
  adam_state, average = state.opt_state
  state = state.replace(opt_state=(adam_state, average._replace(
      ema_params=jax.tree.map(lambda p: p + 0.5, average.ema_params))))
  with checkpoint.Checkpoints(tmp_path, every=1, keep=1) as ckpts:
    ckpts.save(1, state, training.run_meta(cfg, "abc"))
    ckpts.wait()
  with checkpoint.Checkpoints(tmp_path, read_only=True) as ckpts:
    restored, meta = ckpts.restore(1, train_state.abstract_train_state(model, tx))
  _assert_trees_equal(restored, state)
  _assert_trees_equal(train_state.variables_of(restored)["params"],
                      jax.tree.map(lambda p: p + 0.5, state.params))  # the average stylizes
  stylizer = inference.Stylizer.from_checkpoint(tmp_path)  # parameters only, the average's
  _assert_trees_equal(stylizer.variables["params"], jax.tree.map(lambda p: p + 0.5, state.params))
  training.check_resumable(meta, cfg, "abc", tmp_path)  # another nonzero decay would do too
  with pytest.raises(UserError, match="ema_decay=0.99"):
    training.check_resumable(meta, config.train_smoke(), "abc", tmp_path)


def test_partial_restore_reads_only_the_chosen_leaves(tmp_path):
  model, tx, state = _tiny_state()
  state = state.replace(params=jax.tree.map(lambda p: p + 2.0, state.params))
  with checkpoint.Checkpoints(tmp_path, every=1, keep=1) as ckpts:
    ckpts.save(3, state, {"config": {}})
    ckpts.wait()
  with checkpoint.Checkpoints(tmp_path, read_only=True) as ckpts:
    tree = ckpts.restore_leaves(3, lambda path: path[0] == "params")
  _assert_trees_equal(tree["params"], state.params)
  assert tree["step"] is None  # not read
  assert jax.tree.leaves(tree["opt_state"]) == []  # all None: no optimizer state is read
  # Closed before the test ends: an unclosed manager's threads later call into a closed asyncio
  # loop when it is collected (an "Event loop is closed" unraisable warning in a later test).
  with checkpoint.Checkpoints(tmp_path, read_only=True) as ckpts, \
       pytest.raises(UserError, match="cannot restore"):
    ckpts.restore_leaves(4, lambda path: True)
