"""The Gatys pipeline: coarse-to-fine, original colours, batching, exact resumption."""

import numpy as np
import pytest

from nst_jax import config
from nst_jax.core import checkpoint, colors, image_io
from nst_jax.slow import artistic, driver


@pytest.fixture(scope="module")
def images(data_dir):
  content = image_io.load_image(data_dir / "content/classic_st/tubingen.jpg", size=48)
  style = image_io.load_image(data_dir / "styles/van_gogh_starry_night.jpg", size=48)
  style2 = image_io.load_image(data_dir / "styles/hokusai_great_wave.jpg", size=48)
  return content, style, style2


def _cfg(**kw):
  base = {"size": 48, "optim.optimizer": "adam", "optim.num_iters": 10, "optim.chunk": 5,
          "optim.learning_rate": 0.03}
  base.update(kw)
  return config.override(config.gatys(), base)


def test_level_sizes_double_up_to_the_size():
  assert artistic.level_sizes(512, 3) == [128, 256, 512]
  assert artistic.level_sizes(100, 1) == [100]


def test_coarse_levels_are_raised_to_reach_the_deepest_layer():
  """32 px over 2 scales of a 3:2 image: the 16-px level (16x11) could not reach relu5_1, so it is
  raised to 24 px (24x16), the smallest that can; levels that fit are untouched."""
  cfg = _cfg(size=32, scales=2)
  assert artistic.fitted_level_sizes((512, 768), cfg) == [24, 32]
  hws = [driver.fit_hw((512, 768), s) for s in artistic.fitted_level_sizes((512, 768), cfg)]
  assert min(hws[0]) == 16
  assert artistic.fitted_level_sizes((512, 512), _cfg(size=512, scales=3)) == [128, 256, 512]


def test_initial_images(images):
  content, _, _ = images
  hw = content.shape[:2]
  noise = artistic.initial_image("noise", content, hw, seed=0, noise_ratio=0.6)
  mix = artistic.initial_image("mix", content, hw, seed=0, noise_ratio=0.6)
  np.testing.assert_allclose(mix, 0.6 * noise + 0.4 * content, atol=1e-6)
  assert noise.shape == content.shape and 0 <= noise.min() and noise.max() <= 1
  np.testing.assert_array_equal(artistic.initial_image("content", content, hw, seed=0,
                                                       noise_ratio=0.6), content)


def test_bad_config_values_are_config_errors_naming_the_key():
  for kw, key in (({"init": "nonexistent.png"}, "init"),
                  ({"loss.style_weight": "-1"}, "loss.style_weight"),
                  ({"loss.style_layers": "relu9_9", "loss.style_layer_weights": "1"},
                   "loss.style_layers"),
                  ({"loss.style_layers": "relu1_1"}, "loss.style_layer_weights"),
                  ({"scales": 2, "level_iters": "5"}, "level_iters"),
                  ({"optim.chunk": 0}, "optim.chunk")):
    with pytest.raises(config.ConfigError) as info:
      _cfg(**kw).check()
    assert info.value.key == key, (kw, info.value)


# Long (over 10 s on 2 busy cores): `-m slow`; the CLI level tests cover coarse-to-fine, and
# test_inference.py's original-colours test the same colors.original_colors.
@pytest.mark.slow
@pytest.mark.real_weights
def test_coarse_to_fine_and_original_colors(vgg_params, images):
  content, style, _ = images
  cfg = _cfg(scales=2, original_colors="yiq", level_iters="10,4")
  out = artistic.stylize(vgg_params, [artistic.Problem(content, (style,))], cfg, progress=False)
  img = out.images[0]
  assert img.shape == content.shape and out.level_starts == [0, 10]
  assert len(out.history["total"]) == 14
  # Luminance-only transfer: the chroma (I, Q) is the content's, up to clipping to [0, 1].
  chroma = lambda a: colors.rgb_to(a, "yiq")[..., 1:]
  unclipped = (img > 0.01).all(-1) & (img < 0.99).all(-1)
  np.testing.assert_allclose(chroma(img)[unclipped], chroma(content)[unclipped], atol=0.01)


@pytest.mark.real_weights
def test_batched_problems_give_one_image_each(vgg_params, images):
  content, style, style2 = images
  problems = [artistic.Problem(content, (style,)), artistic.Problem(content, (style2,))]
  out = artistic.stylize(vgg_params, problems, _cfg(), progress=False)
  assert len(out.images) == 2 and out.images[0].shape == content.shape
  assert np.abs(out.images[0] - out.images[1]).mean() > 1e-3  # different styles, different results


@pytest.mark.real_weights
def test_interrupted_run_resumes_exactly(vgg_params, images, tmp_path):
  content, style, _ = images
  cfg = _cfg(scales=2, **{"optim.num_iters": 10})
  problem = [artistic.Problem(content, (style,))]
  full = artistic.stylize(vgg_params, problem, cfg, progress=False)
  ckpt = tmp_path / "run.ckpt"

  def interrupt(level, it, _):
    if level == 1 and it == 5:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    artistic.stylize(vgg_params, problem, cfg, progress=False, checkpoint=ckpt,
                     checkpoint_every=5, on_chunk=interrupt)
  assert checkpoint.complete_steps(ckpt)  # an orbax folder with a whole save
  calls = []
  resumed = artistic.stylize(vgg_params, problem, cfg, progress=False, checkpoint=ckpt,
                             checkpoint_every=5, on_chunk=lambda *a: calls.append(a[:2]))
  assert calls and all(level == 1 and it > 5 for level, it in calls), calls  # resumed, not redone
  np.testing.assert_allclose(resumed.images[0], full.images[0], atol=1e-6)
  np.testing.assert_allclose(resumed.history["total"], full.history["total"], rtol=1e-6)
  assert not ckpt.exists()  # removed once finished


def test_checkpointer_ignores_other_runs_and_old_files_and_keeps_the_config(tmp_path):
  path = tmp_path / ".out.png.ckpt"
  path.write_bytes(b"\x80an old msgpack checkpoint")
  x, state = np.full((1, 4, 4, 3), 0.25, np.float32), {"count": np.int32(3), "mu": np.ones(2)}
  hist = {"total": np.asarray([3.0, 2.5], np.float32)}
  ckpt = driver.Checkpointer(path, 1, "run-a", config=_cfg())
  assert ckpt.load() is None  # the old file is ignored...
  ckpt.save(1, 2, x, state, hist, {"0": {"x": x + 0.5, "history": {}}})
  ckpt.close()
  assert path.is_dir()  # ... and replaced
  assert driver.Checkpointer(path, 1, "run-b").load() is None  # another run's
  saved = driver.Checkpointer(path, 1, "run-a").load()
  assert (saved["stage"], saved["iteration"], saved["done"]["0"]["history"]) == (1, 2, {})
  np.testing.assert_array_equal(saved["x"], x)
  np.testing.assert_array_equal(saved["done"]["0"]["x"], x + 0.5)
  np.testing.assert_array_equal(saved["history"]["total"], hist["total"])
  assert int(saved["state"]["count"]) == 3
  with checkpoint.Checkpoints(None, directory=path, read_only=True) as ckpts:
    assert ckpts.restore_meta(ckpts.latest_step())["config"]["size"] == 48  # the resolved config
  other = driver.Checkpointer(path, 1, "run-b")
  other.load()
  other.save(0, 1, x, state, hist, {})  # the first save replaces another run's steps
  other.remove()
  assert not path.exists()


@pytest.mark.real_weights
def test_style_targets_keep_layer_order_and_ignore_the_loss_weights(vgg_params, rng):
  # One compiled program per style shape and the fields the targets depend on: a loss-weight
  # sweep does not recompile them; the dict keeps the configuration's layer order.
  import dataclasses  # pylint: disable=import-outside-toplevel
  from nst_jax.core import objective  # pylint: disable=import-outside-toplevel
  style = rng.uniform(size=(1, 24, 20, 3)).astype(np.float32)
  cfg = dataclasses.replace(config.LossConfig(), style_layers=("relu2_1", "relu1_1"),
                            style_layer_weights=(1.0, 1.0))
  before = objective._style_targets._cache_size()
  first = objective.make_style_targets(vgg_params, style, cfg)
  other = objective.make_style_targets(vgg_params, style,
                                       dataclasses.replace(cfg, style_weight=7.0))
  assert objective._style_targets._cache_size() == before + 1
  assert list(first) == ["relu2_1", "relu1_1"]
  np.testing.assert_array_equal(first["relu1_1"]["gram"], other["relu1_1"]["gram"])
