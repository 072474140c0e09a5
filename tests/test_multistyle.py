"""Tests for conditional instance norm (nets), multi-style training (multistyle, training),
adding a style, and a multi-style network through its model file (core.model_file; the format
and the registry themselves: test_model_file, test_zoo).

Tiny nets and 32-px images; the training tests use a shallow VGG loss (as test_training does).
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config
from nst_jax.config import LossConfig
from nst_jax.core import digest, image_io, model_file
from nst_jax.core.errors import UserError
from nst_jax.core import data, sharding
from nst_jax.fast import inference, multistyle, nets, train_state, training

SHALLOW = LossConfig(content_layers=("relu2_2",), content_layer_weights=(1.0,),
                     style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 1.0),
                     content_weight=1.0, style_weight=1e-4, tv_weight=1e3, pooling="avg")
STYLES = ("van_gogh_starry_night.jpg", "hokusai_great_wave.jpg")


def _images(seed=1, batch=2):
  return jax.random.uniform(jax.random.key(seed), (batch, 32, 32, 3))


def _random_norm_rows(params, key):
  """Every norm scale/bias [S, C] replaced by random rows (so styles really differ)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, x) in enumerate(leaves):
    if multistyle.is_norm_leaf(path):
      x = x + 0.5 * jax.random.normal(jax.random.fold_in(key, i), x.shape)
    out.append(x)
  return jax.tree_util.tree_unflatten(treedef, out)


def _row(params, pick):
  """A one-style network's parameters: each norm leaf [S, C] -> pick(leaf) [C]."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: pick(x) if multistyle.is_norm_leaf(p) else x,
      params)


@pytest.fixture(scope="module")
def multi():
  model = nets.TinyNet(num_styles=3)
  params = nets.init_variables(model, jax.random.key(0), size=32)["params"]
  return model, _random_norm_rows(params, jax.random.key(5))


def test_one_style_network_is_unchanged():
  model = nets.TinyNet()
  variables = nets.init_variables(model, jax.random.key(0), size=32)
  assert variables["params"]["norm1"]["scale"].shape == (4,)  # [C], as before
  x = _images()
  apply = jax.jit(model.apply)  # one program per call form, not one per op (the suite's time)
  np.testing.assert_array_equal(apply(variables, x), apply(variables, x, jnp.ones((2, 1))))


@pytest.mark.parametrize("style", [0, 2])
def test_one_hot_picks_that_styles_parameters(multi, style):
  model, params = multi
  x = _images()
  out = model.apply({"params": params}, x, jax.nn.one_hot(jnp.full((2,), style), 3))
  single = nets.TinyNet().apply({"params": _row(params, lambda r: r[style])}, x)
  np.testing.assert_allclose(out, single, atol=1e-5)
  other = nets.TinyNet().apply({"params": _row(params, lambda r: r[1])}, x)
  assert float(jnp.max(jnp.abs(out - other))) > 1e-3


def test_mix_equals_averaged_gamma_beta(multi):
  model, params = multi
  x = _images()
  out = model.apply({"params": params}, x, jnp.array([[0.5, 0.0, 0.5]] * 2))
  single = nets.TinyNet().apply({"params": _row(params, lambda r: 0.5 * (r[0] + r[2]))}, x)
  np.testing.assert_allclose(out, single, atol=1e-5)


def test_per_example_weights_and_bad_shapes(multi):
  model, params = multi
  x = _images()
  w = jax.nn.one_hot(jnp.array([0, 2]), 3)
  both = model.apply({"params": params}, x, w)
  for i in range(2):
    alone = model.apply({"params": params}, x[i:i + 1], w[i:i + 1])
    np.testing.assert_allclose(both[i:i + 1], alone, atol=1e-5)
  with pytest.raises(ValueError, match="style_weights"):
    model.apply({"params": params}, x, jnp.ones((2, 2)))
  with pytest.raises(UserError, match="num_styles"):
    nets.TransformNet(normalization="batch", num_styles=2).init(jax.random.key(0), x)


def test_style_vector_choices():
  names = ["van_gogh_starry_night", "hokusai_great_wave", "munch_the_scream"]
  np.testing.assert_array_equal(nets.style_vector(names), [1, 0, 0])
  np.testing.assert_array_equal(nets.style_vector(names, index=2), [0, 0, 1])
  np.testing.assert_array_equal(nets.style_vector(names, name="great_wave"), [0, 1, 0])
  np.testing.assert_allclose(nets.style_vector(names, mix="1:starry,3:scream"),
                             [0.25, 0, 0.75])
  for kwargs in ({"index": 3}, {"name": "monet"}, {"mix": "x:starry"}, {"mix": "0:starry"},
                 {"index": 1, "name": "scream"}):
    with pytest.raises(UserError):
      nets.style_vector(names, **kwargs)


def test_stack_and_gather_targets():
  a = {"styles": ({"relu1_1": {"gram": jnp.ones((1, 2, 2))}},), "blend": jnp.ones(1)}
  b = {"styles": ({"relu1_1": {"gram": 2 * jnp.ones((1, 2, 2))}},), "blend": jnp.ones(1)}
  stacked = multistyle.stack_style_targets([a, b])
  assert multistyle.num_targets(stacked) == 2
  got = multistyle.gather_style_targets(stacked, jnp.array([1, 0, 1]))
  np.testing.assert_array_equal(got["styles"][0]["relu1_1"]["gram"][:, 0, 0], [2, 1, 2])
  idx, w = multistyle.draw_styles(jax.random.key(0), 64, 2, 5)  # the last 2 of 5 styles
  assert set(np.asarray(idx).tolist()) == {0, 1}
  np.testing.assert_array_equal(np.argmax(w, -1), np.asarray(idx) + 3)


@pytest.fixture(scope="module")
def two_styles(data_dir, vgg_params):
  imgs = [jnp.asarray(image_io.load_image(data_dir / "styles" / s, size=64))[None]
          for s in STYLES]
  return multistyle.stack_style_targets(
      [training.make_style_targets(vgg_params, s, SHALLOW) for s in imgs])


@pytest.fixture(scope="module")
def photos(data_dir):
  return data.FolderDataset(data_dir / "train" / "bsds500_train", size=32, seed=0).get_batch(0, 8)


def _tiny_cfg(**changes):
  cfg = dataclasses.replace(config.train_smoke(), loss=SHALLOW, learning_rate=3e-3,
                            batch_size=4)
  cfg = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, num_styles=2))
  return dataclasses.replace(cfg, **changes)


def _per_style_loss(model, params, vgg_params, targets, images):
  out = []
  for s in range(2):
    w = jax.nn.one_hot(jnp.full((len(images),), s), model.num_styles)
    outputs = model.apply({"params": params}, images, w)
    t = multistyle.gather_style_targets(targets, jnp.full((len(images),), s))
    out.append(float(jnp.mean(training.perceptual_loss_terms(vgg_params, outputs, images, t,
                                                             SHALLOW)["total"])))
  return out


def _step_fn(model, tx, cfg):
  @chex.assert_max_traces(n=1)
  def step_fn(state, images, vgg_params, style_targets, key):
    return training.train_step(state, images, vgg_params, style_targets, key, model=model,
                               tx=tx, cfg=cfg)
  return training.jit_train_step(step_fn, sharding.make_mesh())


# Long (over 10 s on 2 busy cores): `-m slow`; the one-style and add-style tests cover the
# conditional network.
@pytest.mark.slow
def test_multi_style_steps_lower_each_styles_loss_without_recompiling(vgg_params, two_styles,
                                                                      photos):
  cfg = _tiny_cfg()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = train_state.init_train_state(model, tx, train_state.make_key(0), sharding.make_mesh())
  before = _per_style_loss(model, state.params, vgg_params, two_styles, photos[:4])
  step, key = _step_fn(model, tx, cfg), train_state.make_key(0)
  for i in range(12):
    state, _ = step(state, photos[4 * (i % 2):4 * (i % 2) + 4], vgg_params, two_styles, key)
  after = _per_style_loss(model, state.params, vgg_params, two_styles, photos[:4])
  assert after[0] < before[0] and after[1] < before[1], (before, after)
  rows = np.asarray(state.params["norm1"]["scale"])
  assert not np.allclose(rows[0], rows[1])  # each style learned its own row


def test_add_style_changes_only_the_new_rows(vgg_params, two_styles, photos):
  cfg = _tiny_cfg(base_model="base", styles=("new.jpg",))
  base = nets.make_model(dataclasses.replace(cfg.net, num_styles=1))
  base_params = nets.init_variables(base, jax.random.key(0), size=32)["params"]
  params = multistyle.add_style_rows(base_params, 1)  # scale/bias [C] -> [2, C]
  np.testing.assert_array_equal(params["norm1"]["scale"][0], base_params["norm1"]["scale"])
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = train_state.init_from_params(params, tx, sharding.make_mesh())
  one_target = multistyle.gather_style_targets(two_styles, jnp.array([1]))
  step, key = _step_fn(model, tx, cfg), train_state.make_key(0)
  for _ in range(3):
    state, _ = step(state, photos[:4], vgg_params, one_target, key)
  moved = jax.tree.map(lambda a, b: np.asarray(a != b), state.params, params)
  mask = multistyle.new_rows_mask(params, 1)
  for changed, m in zip(jax.tree.leaves(moved), jax.tree.leaves(mask)):
    assert not np.any(changed & (np.asarray(m) == 0))  # nothing outside the new rows moved
  assert np.any(moved["norm1"]["scale"][1])


def test_zoo_export_load_roundtrip(tmp_path, multi):
  model, params = multi
  net = config.NetConfig(normalization="instance", upsample="transpose", padding="reflect",
                         width=0.125, num_residual=1, num_styles=3)  # nets.TinyNet(num_styles=3)
  cfg = dataclasses.replace(config.train_smoke(), net=net)
  meta = {"styles": [{"name": n} for n in "abc"], "step": 3}
  info = model_file.save(tmp_path / "m.npz", {"params": params}, config.to_dict(cfg),
                         kind=inference.KIND, meta=meta, source="test", licence="CC0-1.0")
  saved = model_file.load(tmp_path / "m.npz", kind=inference.KIND)
  loaded = saved.variables["params"]
  assert saved.meta == meta and info["sha256"] == digest.file_digest(tmp_path / "m.npz")
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float16 storage
  stylizer = inference.Stylizer.from_file(tmp_path / "m.npz", bucket=32)
  stylizer.set_style(name="c")
  x = np.asarray(_images(batch=1)[0])
  want = model.apply({"params": loaded}, x[None], jax.nn.one_hot(jnp.array([2]), 3))[0]
  np.testing.assert_allclose(stylizer(x), want, atol=1e-5)


def test_train_flags_one_and_several_styles():
  from nst_jax import cli  # pylint: disable=import-outside-toplevel
  from nst_jax.cli import train  # pylint: disable=import-outside-toplevel
  parse = cli.build_parser().parse_args
  one = train.resolve_config(parse(["train", "--style", "a.jpg", "--data", "d", "--workdir", "w"]))
  assert (one.style, one.styles, one.net.num_styles) == ("a.jpg", (), 1)
  two = train.resolve_config(parse(["train", "--style", "a.jpg", "b.jpg", "--data", "d",
                                    "--workdir", "w"]))
  assert (two.style, two.styles, two.net.num_styles) == ("", ("a.jpg", "b.jpg"), 2)
  old = config.from_json(config.TrainConfig, config.to_json(one).replace('"styles": [],', ""))
  assert old.styles == () and multistyle.style_paths(old) == ("a.jpg",)  # an old config.json
  with pytest.raises(config.ConfigError, match="num_styles"):
    dataclasses.replace(two, net=dataclasses.replace(two.net, num_styles=3)).check_styles()
