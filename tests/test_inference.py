"""Tests for nst_jax.inference and ``nst-jax stylize``: any size, buckets, options, bad inputs."""

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, config
from nst_jax.core import checkpoint, colors, metrics, smoothing
from nst_jax.core.errors import UserError
from nst_jax.core import sharding
from nst_jax.fast import inference, nets, train_state, training


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A checkpoint of an untrained tiny network (norm scales perturbed so it is not trivial)."""
  workdir = tmp_path_factory.mktemp("run")
  cfg = dataclasses.replace(config.train_smoke(), style="s.jpg", data="d")
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = train_state.init_train_state(model, tx, train_state.make_key(1), sharding.make_mesh())
  params = jax.tree.map(lambda p: p * 1.5, state.params)
  state = state.replace(params=params)
  with checkpoint.Checkpoints(workdir, every=1, keep=1) as ckpts:
    ckpts.save(7, state, training.run_meta(cfg, "0" * 64))
    ckpts.wait()
  return workdir, model, train_state.variables_of(state)


@pytest.fixture(scope="module")
def stylizer(ckpt):
  return inference.Stylizer.from_checkpoint(ckpt[0], bucket=32, batch_size=4)


def _photo(rng, h, w):
  return rng.uniform(size=(h, w, 3)).astype(np.float32)


def test_loads_the_checkpoint_and_matches_the_network(ckpt, stylizer, rng):
  _, model, variables = ckpt
  assert stylizer.meta["step"] == 7
  x = _photo(rng, 32, 64)
  expected = np.asarray(jax.jit(model.apply)(variables, x[None]))[0]
  np.testing.assert_allclose(stylizer(x), expected, atol=1e-5)


def test_any_size_is_padded_to_the_bucket_and_cropped_back(ckpt, stylizer, rng):
  _, model, variables = ckpt
  x = _photo(rng, 30, 37)
  padded = np.pad(x, ((0, 2), (0, 27), (0, 0)), mode="reflect")  # to 32 x 64
  expected = np.asarray(jax.jit(model.apply)(variables, padded[None]))[0, :30, :37]
  out = stylizer(x)
  assert out.shape == (30, 37, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_one_compilation_per_bucket(ckpt, rng):
  s = inference.Stylizer.from_checkpoint(ckpt[0], bucket=32, batch_size=4)
  sizes = [(30, 40), (31, 33), (32, 64), (50, 50), (64, 60), (3, 5)]
  outs = s.stylize_many([_photo(rng, *hw) for hw in sizes])
  assert [o.shape[:2] for o in outs] == sizes
  assert s.compiled_shapes == {(4, 32, 64, 3), (4, 64, 64, 3), (4, 32, 32, 3)}
  assert s._apply._cache_size() == 3  # pylint: disable=protected-access
  s.stylize_many([_photo(rng, 20, 40), _photo(rng, 1, 60)])  # same buckets: nothing new
  assert s._apply._cache_size() == 3  # pylint: disable=protected-access


def test_batch_members_do_not_influence_each_other(stylizer, rng):
  a, b = _photo(rng, 32, 32), _photo(rng, 32, 32)
  np.testing.assert_allclose(stylizer.stylize_many([a, b])[0], stylizer(a), atol=1e-5)


def test_strength_blends_in_pixel_space(stylizer, rng):
  x = _photo(rng, 24, 24)
  full = stylizer(x)
  np.testing.assert_allclose(stylizer(x, strength=0.0), x, atol=1e-6)
  np.testing.assert_allclose(stylizer(x, strength=0.3), 0.3 * full + 0.7 * x, atol=1e-5)


def test_smoothing_defaults_by_head_and_training(stylizer, rng):
  x = _photo(rng, 40, 40)
  assert stylizer.smoothing is None  # an artistic (rgb head) network: no post-step
  np.testing.assert_allclose(stylizer(x, smooth=True),  # on request: the affine step, budget 2
                             smoothing.affine_smooth(stylizer(x), x, budget=2.0)[0], atol=1e-6)
  guided = config.Smoothing(method="guided", radius=5)
  np.testing.assert_allclose(stylizer(x, smooth=True, smoothing=guided),
                             smoothing.guided_smooth(stylizer(x), x, radius=5), atol=1e-6)
  np.testing.assert_allclose(stylizer(x, smooth=True, smoothing=config.Smoothing("guided")),
                             smoothing.guided_smooth(stylizer(x), x, radius=3),  # 40 / 12
                             atol=1e-6)
  for bad in (dict(method="box"), dict(radius=-1), dict(weight=-1.0), dict(budget=-2.0)):
    with pytest.raises(config.ConfigError) as info:
      stylizer(x, smooth=True, smoothing=config.Smoothing(**bad))
    assert info.value.key == next(iter(bad))
  # Photorealistic ("affine" head) networks: the post-step their training implies.
  net = nets.TinyNet(output="affine")
  variables = nets.init_variables(net, jax.random.key(0))
  affine = inference.Stylizer(net, variables)
  assert affine.smoothing == config.Smoothing(method="affine", weight=0.0, budget=2.0)
  raw = affine(x, smooth=False)
  np.testing.assert_allclose(affine(x), smoothing.affine_smooth(raw, x, budget=2.0)[0],
                             atol=1e-6)
  assert metrics.matting_ratio(x, affine(x)) <= 2.0 < metrics.matting_ratio(x, raw)
  cfg = config.photoreal()
  assert inference.default_smoothing(net, cfg) == config.Smoothing(
      weight=config.PHOTO_AFFINE_OUTPUT)  # the preset trains through the affine step
  for photo, expected in ((dict(affine_output=20.0), config.Smoothing(weight=20.0)),
                          (dict(affine_output=0.0), config.Smoothing()),
                          (dict(guided_output=True, affine_output=0.0),
                           config.Smoothing(method="guided"))):
    c = dataclasses.replace(cfg, photo=dataclasses.replace(cfg.photo, **photo))
    s = inference.Stylizer(net, variables, meta=training.run_meta(c, "0" * 64))
    assert s.smoothing == expected


def test_original_colors_keep_the_photo_chroma(stylizer, rng):
  x = _photo(rng, 24, 24) * 0.5 + 0.25  # away from the clipping range
  out, plain = stylizer(x, original_colors="yiq"), stylizer(x)
  inside = np.all((out > 1e-3) & (out < 1 - 1e-3), axis=-1)  # pixels the clip left alone
  assert inside.mean() > 0.5
  yiq_out, yiq_x, yiq_plain = (colors.rgb_to(a, "yiq") for a in (out, x, plain))
  np.testing.assert_allclose(yiq_out[inside][:, 1:], yiq_x[inside][:, 1:], atol=1e-4)
  np.testing.assert_allclose(yiq_out[inside][:, 0], yiq_plain[inside][:, 0], atol=1e-4)


def test_bf16_is_close_to_float32(ckpt, stylizer, rng):
  s16 = inference.Stylizer.from_checkpoint(ckpt[0], bf16=True)
  x = _photo(rng, 32, 32)
  np.testing.assert_allclose(s16(x), stylizer(x), atol=0.08)


def test_bad_options_and_shapes_are_user_errors(stylizer, rng):
  with pytest.raises(config.ConfigError, match="strength"):
    stylizer(_photo(rng, 8, 8), strength=1.5)
  with pytest.raises(config.ConfigError, match="original_colors"):
    stylizer(_photo(rng, 8, 8), original_colors="lab")
  with pytest.raises(UserError, match="RGB"):
    stylizer(np.zeros((8, 8), np.float32))


@pytest.fixture
def photo_files(tmp_path, rng):
  a, b = tmp_path / "in" / "a.jpg", tmp_path / "in" / "sub" / "a.png"
  b.parent.mkdir(parents=True)
  Image.fromarray((_photo(rng, 21, 30) * 255).astype(np.uint8)).save(a)
  Image.fromarray((_photo(rng, 40, 18) * 255).astype(np.uint8)).save(b)
  return a, b


def test_cli_stylizes_several_images(ckpt, photo_files, tmp_path, capsys):
  out = tmp_path / "out"
  code = cli.main(["stylize", "--model", str(ckpt[0]), "--content", *map(str, photo_files),
                   "--out", str(out), "--strength", "0.5", "--original-colors", "yuv"])
  assert code == 0
  assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_2.png", "smoothing_config.json"]
  assert Image.open(out / "a.png").size == (30, 21) and Image.open(out / "a_2.png").size == (18, 40)
  assert "stylized 2 image(s)" in capsys.readouterr().out


def test_cli_smoothing_flags_replace_the_default(ckpt, stylizer, photo_files, tmp_path):
  from nst_jax.core import image_io  # pylint: disable=import-outside-toplevel
  out = tmp_path / "out"
  assert cli.main(["stylize", "--model", str(ckpt[0]), "--content", str(photo_files[0]),
                   "--out", str(out), "--smooth", "--smooth-method", "guided",
                   "--smooth-radius", "2"]) == 0
  photo = image_io.load_image(photo_files[0])
  expected = stylizer(photo, smooth=True, smoothing=config.Smoothing("guided", radius=2))
  np.testing.assert_allclose(image_io.load_image(out / "a.png"), expected, atol=0.6 / 255)


def _one_line_error(capsys, argv):
  code = cli.main(argv)
  err = capsys.readouterr().err.strip()
  return code, err


@pytest.mark.parametrize("case", ["missing", "corrupt", "no_ckpt", "missing_ckpt", "damaged",
                                  "bad_budget"])
def test_cli_bad_inputs_exit_2_with_one_line_and_no_output(ckpt, photo_files, tmp_path, capsys,
                                                           case):
  model, content, extra = str(ckpt[0]), str(photo_files[0]), []
  if case == "bad_budget":
    extra = ["--smooth", "--matting-budget", "-1"]
  elif case == "missing":
    content = str(tmp_path / "nope.jpg")
  elif case == "corrupt":
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    content = str(tmp_path / "bad.jpg")
  elif case == "no_ckpt":
    (tmp_path / "empty").mkdir()
    model = str(tmp_path / "empty")
  elif case == "missing_ckpt":
    model = str(tmp_path / "no_such_run")
  else:
    damaged = tmp_path / "damaged" / "checkpoints" / "3"
    (damaged / "state").mkdir(parents=True)
    (damaged / "meta").mkdir()
    (damaged / "meta" / "metadata").write_text("{not json")
    model = str(tmp_path / "damaged")
  out = tmp_path / "out"
  code, err = _one_line_error(capsys, ["stylize", "--model", model, "--content", content,
                                       "--out", str(out)] + extra)
  assert code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("nst-jax stylize: error: "), err
  assert not out.exists() or not any(out.iterdir())


def test_bucket_and_batch_validation():
  with pytest.raises(UserError):
    inference.Stylizer(None, {}, bucket=30)
  assert inference.bucket_shape((33, 64), 32) == (64, 64)
