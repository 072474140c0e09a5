"""Photorealistic transfer (Luan et al. 2017): targets, the matting penalty, smoothing, the CLI."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from PIL import Image

from nst_jax import cli, config
from nst_jax.cli import photo as photo_command
from nst_jax.core import (checkpoint, image_io, matting, metrics, objective, regions,
                           smoothing, vgg)
from nst_jax.core.errors import UserError
from nst_jax.slow import photoreal

# The conjugate-gradient solves make these tests' run time outweigh their compile time: XLA's
# optimizations stay on here (conftest turns them off elsewhere).
pytestmark = pytest.mark.usefixtures("xla_optimized")


def _pair(data_dir, n=1):
  root = data_dir / "photo"
  return {"content": root / f"input/in{n}.png", "style": root / f"style/tar{n}.png",
          "content_mask": root / f"segmentation/in{n}.png",
          "style_mask": root / f"segmentation/tar{n}.png"}


def _cfg(size, iters, **kw):
  base = config.PhotoConfig()
  return dataclasses.replace(base, size=size,
                             optim=dataclasses.replace(base.optim, num_iters=iters, chunk=iters),
                             **kw)


@pytest.mark.real_weights
def test_masked_targets_match_feature_shapes_and_ignore_missing_regions(vgg_params, rng):
  content = rng.uniform(size=(40, 32, 3)).astype(np.float32)
  style = rng.uniform(size=(32, 48, 3)).astype(np.float32)
  cm = np.zeros((3, 40, 32), np.float32)
  cm[0, :20], cm[1, 20:] = 1.0, 1.0                      # regions 0, 1 in the content
  sm = np.zeros((3, 32, 48), np.float32)
  sm[0, :, :24], sm[2, :, 24:] = 1.0, 1.0                # regions 0, 2 in the style
  cfg = config.PhotoConfig()
  targets = photoreal.make_targets(vgg_params, content, style, cm, sm, cfg)
  feats = jax.eval_shape(  # the shapes alone: nothing compiled or run
      lambda c: vgg.vgg_features(vgg_params, c, cfg.loss.style_layers), content[None])
  for layer in cfg.loss.style_layers:
    _, h, w, c = feats[layer].shape
    # Only region 0 is in both images; the others are dropped (they would add nothing).
    assert targets["masks"][layer].shape == (1, 1, h, w)
    assert targets["styles"][0][layer]["gram"].shape == (1, 1, c, c)
    np.testing.assert_array_equal(targets["styles"][0][layer]["present"], [[1.0]])
  assert targets["content"]["conv4_2"].shape[-1] == 512


def test_masks_sharing_no_region_are_refused(vgg_params):
  cm = np.zeros((2, 16, 16), np.float32)
  sm = np.zeros((2, 16, 16), np.float32)
  cm[0], sm[1] = 1.0, 1.0
  img = np.zeros((16, 16, 3), np.float32)
  with pytest.raises(UserError, match="share no region"):
    photoreal.make_targets(vgg_params, img, img, cm, sm, config.PhotoConfig())


# Long (over 10 s on 2 busy cores): `-m slow`; test_cli_end_to_end[True] runs both stages (its
# loss log: 12 rows with the matting term) and the guided-parameterization test checks the
# matting term that the stage-2 penalty lowers.
@pytest.mark.slow
@pytest.mark.real_weights
def test_two_stage_penalty_lowers_matting_energy_without_freezing(vgg_params, data_dir):
  paths = _pair(data_dir)
  content, style = image_io.load_image(paths["content"]), image_io.load_image(paths["style"])
  cm = regions.load_color_mask(paths["content_mask"], size_hw=content.shape[:2])
  sm = regions.load_color_mask(paths["style_mask"], size_hw=style.shape[:2])
  run = lambda weight, param="guided": photoreal.stylize(
      vgg_params, content, style,
      _cfg(64, 6, matting_weight=weight, smooth=False, parameterization=param),
      content_masks=cm, style_masks=sm, progress=False)
  with_penalty, without = run(config.PhotoConfig().matting_weight), run(0.0)
  pixels = run(config.PhotoConfig().matting_weight, "pixels")   # Luan's parameterization
  small = image_io.resize_array(content, with_penalty.images[0].shape[:2])
  ratio = lambda out: metrics.matting_ratio(small, out.images[0], eps=1e-4)
  assert ratio(with_penalty) < 0.7 * ratio(without)
  assert ratio(pixels) < 0.7 * ratio(without)
  np.testing.assert_array_equal(pixels.history["total"][:6], with_penalty.history["total"][:6])
  assert with_penalty.level_starts == [0, 6] and len(with_penalty.history["matting"]) == 12
  assert np.all(with_penalty.history["matting"][:6] == 0) and with_penalty.history["matting"][6] > 0
  # The style still moved the image away from the content, and stage 2 lowered its objective.
  assert np.mean(np.abs(with_penalty.images[0] - small)) > 0.02
  assert with_penalty.history["total"][-1] < with_penalty.history["total"][6]


@pytest.mark.real_weights
def test_guided_parameterization_scores_the_filtered_image(vgg_params, rng):
  # With aux["filtered"] = 1 the loss of x is the loss of the guided filter of x (content as
  # guide), so every iterate of that stage is locally affine in the content's colours.
  content = image_io.resize_array(rng.uniform(size=(6, 5, 3)).astype(np.float32), (36, 30))
  style = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  cfg = config.PhotoConfig()
  one = np.ones((1, 36, 30), np.float32)
  aux = {"targets": photoreal.make_targets(vgg_params, content, style, one,
                                           np.ones((1, 32, 32), np.float32), cfg),
         "matting": matting.matting_coefficients(jnp.asarray(content)),
         "filter": smoothing.guided_filter_for(content, radius=2, eps=1e-4),
         "matting_weight": jnp.asarray(3e9, jnp.float32)}
  x = jnp.asarray(rng.uniform(size=(1, 36, 30, 3)), jnp.float32)
  loss_fn = jax.jit(photoreal.make_loss_fn(cfg.loss))
  filtered = smoothing.apply_guided_filter(aux["filter"], x[0])[None]
  on, off = dict(aux, filtered=jnp.float32(1)), dict(aux, filtered=jnp.float32(0))
  np.testing.assert_array_equal(photoreal.output_image(x, off), x)
  # (a few ulps apart: output_image runs the filter compiled, inside lax.cond)
  np.testing.assert_allclose(photoreal.output_image(x, on), filtered, atol=3e-6)
  np.testing.assert_allclose(loss_fn(x, vgg_params, on)[0], loss_fn(filtered, vgg_params, off)[0],
                             rtol=1e-4)
  assert loss_fn(x, vgg_params, on)[1]["matting"][0] < 0.2 * loss_fn(x, vgg_params, off)[1][
      "matting"][0]


# Long (over 10 s on 2 busy cores): `-m slow`; the guided parameterization test and the affine-solve
# tests cover the same path.
@pytest.mark.slow
@pytest.mark.real_weights
def test_affine_parameterization_scores_the_solved_image(vgg_params, rng, monkeypatch):
  # "affine": the output O of x solves (I + w L) O = x (L the content's matting Laplacian at
  # EVAL_EPS) to PARAM_TOL; the loss of x is the loss of O, and its gradient is (I + w L)^-1
  # times O's (checked with tight solves).
  content = image_io.resize_array(rng.uniform(size=(6, 5, 3)).astype(np.float32), (24, 20))
  style = rng.uniform(size=(24, 24, 3)).astype(np.float32)
  cfg = dataclasses.replace(config.PhotoConfig(), parameterization="affine", affine_weight=3.0)
  step = photoreal.parameterization_step(content, cfg)
  assert isinstance(step, photoreal.AffineStep)
  aux = {"targets": photoreal.make_targets(vgg_params, content, style,
                                           np.ones((1, 24, 20), np.float32),
                                           np.ones((1, 24, 24), np.float32), cfg),
         "matting": matting.matting_coefficients(jnp.asarray(content)),
         "filter": step, "matting_weight": jnp.asarray(3e9, jnp.float32)}
  on, off = dict(aux, filtered=jnp.float32(1)), dict(aux, filtered=jnp.float32(0))
  x = jnp.asarray(rng.uniform(size=(1, 24, 20, 3)), jnp.float32)
  system = scipy.sparse.identity(24 * 20) + 3.0 * matting.build_matting_laplacian(
      content, eps=config.EVAL_EPS)
  flat = lambda a: np.asarray(a, np.float64).reshape(-1, 3)
  np.testing.assert_array_equal(photoreal.output_image(x, off), x)
  residual = lambda o: np.linalg.norm(system @ flat(o) - flat(x)) / np.linalg.norm(flat(x))
  assert residual(photoreal.output_image(x, on)) <= 1.01 * photoreal.PARAM_TOL
  monkeypatch.setattr(photoreal, "PARAM_TOL", 1e-6)
  out = photoreal.output_image(x, on)
  np.testing.assert_allclose(system @ flat(out), flat(x), atol=1e-4)
  assert np.mean(np.abs(np.asarray(out - x))) > 0.05     # the step did smooth the noise
  loss_fn = jax.jit(photoreal.make_loss_fn(cfg.loss))
  np.testing.assert_allclose(loss_fn(x, vgg_params, on)[0], loss_fn(out, vgg_params, off)[0],
                             rtol=1e-4)
  grad = lambda v, a: jax.grad(lambda v: loss_fn(v, vgg_params, a)[0])(v)
  g_on, g_out = flat(grad(x, on)), flat(grad(out, off))
  np.testing.assert_allclose(system @ g_on, g_out, atol=1e-3 * np.abs(g_out).max())


def _counting(counts, name, fn):
  """``fn`` that adds 1 to ``counts[name]`` whenever it runs, traced or not (one host callback)."""
  def wrapped(*args, **kwargs):
    jax.debug.callback(lambda: counts.__setitem__(name, counts[name] + 1))
    return fn(*args, **kwargs)
  return wrapped


# Long (over 10 s on 2 busy cores): `-m slow`; test_artistic.py's interrupted run covers the same
# resumable driver.
@pytest.mark.slow
@pytest.mark.real_weights
def test_interrupted_run_resumes_to_the_same_result_at_the_same_cost(vgg_params, rng, tmp_path,
                                                                     monkeypatch, request):
  # Interrupted inside stage 2 (the "affine" parameterization: a CG solve per loss and gradient),
  # re-run with the same checkpoint: the same image and loss history as a run that was never
  # interrupted, and the resumed chunk costs what it cost there: as many loss evaluations (the
  # line search) and CG iterations (issue 23: a resumed 256-px run was reported 6-10x slower).
  counts = {"evals": 0, "matvecs": 0}
  monkeypatch.setattr(objective, "loss_terms", _counting(counts, "evals", objective.loss_terms))
  monkeypatch.setattr(matting, "apply_with_coefficients",
                      _counting(counts, "matvecs", matting.apply_with_coefficients))
  photoreal.make_loss_fn.cache_clear()  # traced anew, with the counters
  request.addfinalizer(photoreal.make_loss_fn.cache_clear)
  content = image_io.resize_array(rng.uniform(size=(6, 5, 3)).astype(np.float32), (40, 32))
  style = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  cm, sm = np.ones((1, 40, 32), np.float32), np.ones((1, 32, 32), np.float32)
  base = _cfg(40, 4, stage_iters=(4, 6))
  cfg = dataclasses.replace(base, optim=dataclasses.replace(base.optim, chunk=2))

  def run(log, stop=None, **kw):  # log: (stage, iteration, evals, matvecs) after each chunk
    def on_chunk(stage, iteration, images):
      jax.effects_barrier()
      log.append((stage, iteration, counts["evals"], counts["matvecs"]))
      if (stage, iteration) == stop:
        raise KeyboardInterrupt
    counts.update(evals=0, matvecs=0)
    return photoreal.stylize(vgg_params, content, style, cfg, content_masks=cm, style_masks=sm,
                             progress=False, on_chunk=on_chunk, **kw)

  full, interrupted, resumed = [], [], []
  reference = run(full)
  ckpt = tmp_path / "run.ckpt"
  with pytest.raises(KeyboardInterrupt):
    run(interrupted, stop=(1, 4), checkpoint=ckpt, checkpoint_every=1)
  with checkpoint.Checkpoints(None, directory=ckpt, read_only=True) as saved:
    meta = saved.restore_meta(saved.latest_step())
  assert (meta["stage"], meta["iteration"], meta["config"]["size"]) == (1, 4, 40)
  out = run(resumed, checkpoint=ckpt, checkpoint_every=1)
  assert [c[:2] for c in resumed] == [(1, 6)]  # only the last chunk of stage 2 ran again
  # Resuming evaluates nothing before that chunk, which then costs what it cost uninterrupted.
  assert resumed[0][2:] == tuple(np.subtract(full[-1][2:], full[-2][2:])), (full, resumed)
  assert full[-1][3] > full[-1][2] > 0  # the counters see the evaluations and the solves
  np.testing.assert_array_equal(out.images[0], reference.images[0])
  for key in reference.history:
    np.testing.assert_array_equal(out.history[key], reference.history[key])
  assert not ckpt.exists()


def test_guided_smooth_keeps_locally_affine_images_and_flattens_noise(rng):
  guide = image_io.resize_array(rng.uniform(size=(8, 8, 3)).astype(np.float32), (48, 48))
  affine = np.clip(guide @ np.array([[0.5, 0.1, 0], [0, 0.6, 0], [0.1, 0, 0.7]], np.float32)
                   + 0.1, 0, 1)
  out = smoothing.guided_smooth(affine, guide, radius=2, eps=1e-6)
  np.testing.assert_allclose(out[3:-3, 3:-3], affine[3:-3, 3:-3], atol=2e-3)
  noisy = np.clip(affine + rng.normal(0, 0.05, affine.shape).astype(np.float32), 0, 1)
  smoothed = smoothing.guided_smooth(noisy, guide, radius=2, eps=1e-4)
  assert np.abs(smoothed - affine).mean() < 0.5 * np.abs(noisy - affine).mean()


def test_post_steps_make_a_textured_result_nearly_locally_affine(rng):
  # The defaults (calibrated in docs/photoreal.md): the affine parameterization, the stronger
  # penalty and no post-step. The post-step, when on: smooth local affine (weight 1.2); the
  # guided filter (the "guided" parameterization's and post-step) has radius long side / 24.
  # Both bring the matting energy of a colour-transformed content with texture on top close to
  # the content's own.
  cfg = config.PhotoConfig()
  assert (cfg.parameterization, cfg.affine_weight, cfg.matting_weight) == ("affine", 30.0, 3e9)
  assert not cfg.smooth and cfg.smooth_radius == 0
  assert (cfg.smooth_method, cfg.smooth_weight) == ("affine", config.AFFINE_WEIGHT) == (
      "affine", 1.2)
  cfg = dataclasses.replace(cfg, smooth=True)
  content, graded, textured = _graded_and_textured(rng, hw=(96, 72))
  guided = smoothing.guided_smooth(textured, content, eps=cfg.smooth_eps)
  np.testing.assert_allclose(guided, smoothing.guided_smooth(textured, content, radius=4,
                                                             eps=cfg.smooth_eps))
  affine = photoreal.post_smooth(textured, content, cfg)
  error = lambda x: np.abs(x - graded).mean()
  assert metrics.matting_ratio(content, textured) > 20.0
  assert metrics.matting_ratio(content, affine) < 2.0
  assert metrics.matting_ratio(content, guided) < 1.0
  assert error(affine) < 0.4 * error(textured) and error(guided) < 0.3 * error(textured)


def _graded_and_textured(rng, hw=(48, 40)):
  content = image_io.resize_array(rng.uniform(size=(hw[0] // 8, hw[1] // 8, 3)).astype(
      np.float32), hw)
  graded = np.clip(content @ np.array([[0.8, 0.1, 0], [0, 0.9, 0.1], [0.1, 0, 0.7]], np.float32)
                   + 0.05, 0, 1)
  textured = np.clip(graded + rng.normal(0, 0.03, graded.shape).astype(np.float32), 0, 1)
  return content, graded, textured


def test_affine_smooth_solves_the_regularised_system_of_the_host_laplacian(rng):
  # The nearest locally affine image: (I + w L) O = image per channel, L the guide's Laplacian.
  content, _, _ = _graded_and_textured(rng, hw=(20, 16))
  image = rng.uniform(0.3, 0.7, size=content.shape).astype(np.float32)   # no clipping
  lap = matting.build_matting_laplacian(content, eps=config.EVAL_EPS)
  system = scipy.sparse.identity(lap.shape[0], format="csr") + 0.7 * lap
  out, used = smoothing.affine_smooth(image, content, weight=0.7)
  expected = np.stack([scipy.sparse.linalg.spsolve(system, image[..., c].ravel().astype(
      np.float64)) for c in range(3)], axis=-1).reshape(image.shape)
  assert used == 0.7 and out.dtype == np.float32
  assert np.abs(expected - image).max() > 0.05                  # a real change
  np.testing.assert_allclose(out, expected, atol=2e-4)


def test_affine_smooth_trades_change_for_matting_energy_and_meets_a_budget(rng):
  content, _, textured = _graded_and_textured(rng)
  start = metrics.matting_ratio(content, textured)
  ratios, changes = [], []
  for weight in (0.3, 1.0, 3.0, 10.0):
    out, _ = smoothing.affine_smooth(textured, content, weight=weight)
    assert 0.0 <= out.min() and out.max() <= 1.0
    ratios.append(metrics.matting_ratio(content, out))
    changes.append(np.abs(out - textured).mean())
  assert start > ratios[0] and np.all(np.diff(ratios) < 0) and np.all(np.diff(changes) > 0)
  for budget in (start / 2, start / 8):
    out, weight = smoothing.affine_smooth(textured, content, budget=budget)
    # Within budget, by the least weight to a factor 1.1: 10 % less smoothing breaks it.
    assert metrics.matting_ratio(content, out) <= budget
    less, _ = smoothing.affine_smooth(textured, content, weight=weight / 1.1)
    assert metrics.matting_ratio(content, less) > budget
  same, zero = smoothing.affine_smooth(textured, content, budget=1.01 * start)
  np.testing.assert_array_equal(same, textured)                 # within budget: unchanged
  assert zero == 0.0
  # A least weight: applied even within budget, exceeded (by the least weight) when needed.
  floor, used = smoothing.affine_smooth(textured, content, budget=1.01 * start, min_weight=2.0)
  np.testing.assert_array_equal(floor, smoothing.affine_smooth(textured, content, weight=2.0)[0])
  assert used == 2.0
  _, at_least = smoothing.affine_smooth(textured, content, budget=start / 8, min_weight=0.1)
  np.testing.assert_allclose(at_least, smoothing.affine_smooth(textured, content,
                                                               budget=start / 8)[1], rtol=0.25)
  with pytest.raises(UserError, match="budget"):
    smoothing.affine_smooth(textured, content, budget=-1.0)
  with pytest.raises(UserError, match="least weight"):
    smoothing.affine_smooth(textured, content, budget=2.0, min_weight=-1.0)


@pytest.mark.parametrize("flag,expected", [([], False), (["--smooth"], True),
                                           (["--no-smooth"], False)])
def test_cli_smoothing_is_off_by_default_and_can_be_turned_on(flag, expected):
  args = cli.build_parser().parse_args(["photo", "--content", "a.png", "--style", "b.png",
                                        "--out", "o.png", *flag])
  assert photo_command.build_config(args).smooth is expected


def test_post_step_follows_the_config(rng):
  content, _, textured = _graded_and_textured(rng)
  over = textured + 0.01                                       # above 1 somewhere: clipped
  clipped = np.clip(over, 0, 1)
  base = config.PhotoConfig(smooth=True, smooth_radius=2)
  assert base.smooth_method == "affine" and base.matting_budget == 0.0
  post = lambda **kw: photoreal.post_smooth(over, content, dataclasses.replace(base, **kw))
  np.testing.assert_array_equal(post(smooth=False), clipped)
  np.testing.assert_array_equal(post(), smoothing.affine_smooth(clipped, content, weight=1.2)[0])
  np.testing.assert_array_equal(post(smooth_method="guided"),
                                smoothing.guided_smooth(clipped, content, radius=2))
  np.testing.assert_array_equal(post(matting_budget=3.0),
                                smoothing.affine_smooth(clipped, content, budget=3.0)[0])
  args = cli.build_parser().parse_args(
      ["photo", "--content", "a.png", "--style", "b.png", "--out", "o.png", "--matting-budget",
       "1.5", "--smooth-method", "guided", "--smooth-weight", "2", "--parameterization",
       "affine", "--affine-weight", "7"])
  cfg = photo_command.build_config(args)
  assert (cfg.matting_budget, cfg.smooth_method, cfg.smooth_weight) == (1.5, "guided", 2.0)
  assert (cfg.parameterization, cfg.affine_weight) == ("affine", 7.0)
  assert cfg.smooth  # a post-step option turns the post-step on


@pytest.mark.parametrize("kw,key", [({"stages": 3}, "stages"), ({"stage_iters": (1,)}, "stage_iters"),
                                    ({"matting_weight": -1.0}, "matting_weight"),
                                    ({"matting_budget": -1.0}, "matting_budget"),
                                    ({"smooth_weight": 0.0}, "smooth_weight"),
                                    ({"affine_weight": 0.0}, "affine_weight"),
                                    ({"smooth_method": "median"}, "smooth_method"),
                                    ({"parameterization": "rgb"}, "parameterization"),
                                    ({"mask_pooling": "median"}, "mask_pooling"),
                                    ({"size": 8}, "size"), ({"num_regions": 0}, "num_regions")])
def test_bad_configs(kw, key):
  with pytest.raises(config.ConfigError) as info:
    dataclasses.replace(config.PhotoConfig(), **kw).check()
  assert info.value.key == key


def _args(inp, out, *extra):
  # The command's mechanics at 32 px (32 x 20: conv5_1 needs both sides >= 16), in 12
  # iterations; the CLI runs share their compiled programs (the same shapes and settings).
  return ["photo", "--content", str(inp["content"]), "--style", str(inp["style"]),
          "--vgg-weights", str(inp["weights"]), "--out", str(out), "--size", "32",
          "--stage-iters", "6,6", "--chunk", "6", "--no-progress", *extra]


@pytest.fixture
def inputs(data_dir, vgg_path):
  return dict(_pair(data_dir), weights=vgg_path)


@pytest.mark.real_weights
@pytest.mark.parametrize("with_masks", [
    # Long (over 20 s on 2 busy cores): `-m slow`; [True] runs the same command with mask files,
    # and test_masks.py covers the automatic regions.
    pytest.param(False, marks=pytest.mark.slow), pytest.param(True, marks=pytest.mark.slow)])
def test_cli_end_to_end(inputs, tmp_path, capsys, with_masks):
  out = tmp_path / "out" / "result.png"
  extra = (["--content-mask", str(inputs["content_mask"]), "--style-mask",
            str(inputs["style_mask"])] if with_masks else ["--regions", "3"])
  assert cli.main(_args(inputs, out, *extra)) == 0, capsys.readouterr().err
  w, h = Image.open(out).size
  assert max(w, h) == 32
  rows = (out.parent / "result_losses.csv").read_text().splitlines()
  assert set(rows[0].split(",")) == {"iteration", "content", "style", "tv", "total", "matting"}
  assert len(rows) == 1 + 12
  assert Image.open(out.parent / "result_losses.png").format == "PNG"
  assert sorted(p.name for p in out.parent.iterdir()) == [
      "result.png", "result_config.json", "result_losses.csv",
      "result_losses.png"]  # no checkpoint left behind
  saved = config.from_json(config.PhotoConfig, (out.parent / "result_config.json").read_text())
  assert saved == photo_command.build_config(cli.build_parser().parse_args(_args(inputs, out,
                                                                                 *extra)))
  assert "wrote" in capsys.readouterr().err


@pytest.mark.real_weights
@pytest.mark.parametrize("stage_iters, rows", [
    # Long (~19 s: it compiles the masked matting stage alone now that test_cli_end_to_end is
    # slow): `-m slow`; ("0,0") runs the same skip of stage 1 in the default run.
    pytest.param("0,6", 6, marks=pytest.mark.slow), ("0,0", 0)])
def test_cli_stages_without_iterations_run_cleanly(inputs, tmp_path, capsys, stage_iters, rows):
  # Issue 23: skipping stage 1 ended in KeyError: 'total'. A stage with no iterations passes its
  # image on; with none at all the output is the content at the size, and no loss log is written.
  out = tmp_path / "out" / "result.png"
  masks = ["--content-mask", str(inputs["content_mask"]), "--style-mask", str(inputs["style_mask"])]
  # The mask files of test_cli_end_to_end[True]: its compiled programs serve here too.
  assert cli.main(_args(inputs, out, *masks, "--stage-iters", stage_iters)) == 0, \
      capsys.readouterr().err
  assert max(Image.open(out).size) == 32
  log = out.parent / "result_losses.csv"
  assert (len(log.read_text().splitlines()) - 1 if rows else log.exists()) == rows
  assert not (out.parent / ".result.png.ckpt").exists()


def _expect_error(capsys, argv, match, out):
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
  assert not out.parent.exists()


@pytest.mark.parametrize("bad", ["missing_mask", "one_mask", "mask_shape", "corrupt_image",
                                 "corrupt_mask"])
def test_cli_bad_inputs(inputs, tmp_path, capsys, bad):
  out = tmp_path / "out" / "result.png"
  broken = tmp_path / "broken.png"
  broken.write_bytes(inputs["content"].read_bytes()[:3000])
  wrong = tmp_path / "wrong.png"
  Image.open(inputs["content_mask"]).resize((300, 40)).save(wrong)
  masks_of = {"missing_mask": (tmp_path / "none.png", inputs["style_mask"]),
              "one_mask": (inputs["content_mask"], None),
              "mask_shape": (wrong, inputs["style_mask"]),
              "corrupt_image": (inputs["content_mask"], inputs["style_mask"]),
              "corrupt_mask": (inputs["content_mask"], broken)}[bad]
  argv = _args(dict(inputs, content=broken) if bad == "corrupt_image" else inputs, out,
               "--content-mask", str(masks_of[0]))
  if masks_of[1] is not None:
    argv += ["--style-mask", str(masks_of[1])]
  match = {"missing_mask": "not found", "one_mask": "both", "mask_shape": "aspect ratio",
           "corrupt_image": "corrupt or truncated", "corrupt_mask": "corrupt or truncated"}[bad]
  _expect_error(capsys, argv, match, out)


def test_laplacian_diagonal_matches_the_host_laplacian(rng):
  image = rng.uniform(size=(9, 11, 3)).astype(np.float32)
  lap = matting.build_matting_laplacian(image, eps=config.EVAL_EPS)
  diag = matting.laplacian_diagonal(matting.matting_coefficients(jnp.asarray(image),
                                                                 eps=config.EVAL_EPS))
  np.testing.assert_allclose(diag, lap.diagonal().reshape(9, 11), atol=1e-5)


@pytest.mark.parametrize("precondition", [pytest.param(False, marks=pytest.mark.slow), True])
def test_affine_solve_matches_a_direct_solve_and_reports_its_iterations(rng, precondition):
  # Plain and Jacobi-preconditioned CG reach the requested residual; recorded iteration counts
  # equal jax's CG for the plain solve (same criterion); a start at the solution costs nothing.
  guide = rng.uniform(size=(14, 12, 3)).astype(np.float32)
  b = jnp.asarray(rng.uniform(size=(1, 14, 12, 3)), jnp.float32)
  coeffs = matting.matting_coefficients(jnp.asarray(guide), eps=config.EVAL_EPS)
  system = scipy.sparse.identity(14 * 12) + 3.0 * matting.build_matting_laplacian(
      guide, eps=config.EVAL_EPS)
  exact = scipy.sparse.linalg.spsolve(system.tocsc(), np.asarray(b, np.float64).reshape(-1, 3))
  log = []
  with smoothing.recording_cg_iterations(lambda kind, n: log.append((kind, n))):
    solve = jax.jit(lambda b, x0: smoothing.affine_system_solve(
        coeffs, b, x0, 3.0, tol=1e-5, precondition=precondition))
    out = solve(b, b)
    again = solve(b, out)
  jax.effects_barrier()
  np.testing.assert_allclose(np.asarray(out).reshape(-1, 3), exact, atol=1e-4)
  assert log[0][0] == "forward" and log[0][1] > 5 and log[1][1] <= 1, log
  if not precondition:
    op = lambda v: v + 3.0 * matting.apply_with_coefficients(coeffs, v)
    ref = jax.scipy.sparse.linalg.cg(op, b, x0=b, tol=1e-5, maxiter=1000)[0]
    np.testing.assert_allclose(out, ref, atol=1e-6)
  del again


def test_expected_time_extrapolates_the_first_timed_chunk_once(capsys):
  # Stages of 30 and 20 iterations, the second 1.5x as costly: chunks of 10 at 2 s/iteration
  # after a first, compiling chunk; the estimate comes from the second chunk of stage 1:
  # 10 iterations left there at 2 s, 20 in stage 2 at 3 s: 80 s, printed once.
  assert photoreal.expected_seconds(2.0, 0, 20, [30, 20], [1.0, 1.5]) == 80.0
  assert photoreal.expected_seconds(3.0, 1, 10, [30, 20], [1.0, 1.5]) == 30.0
  times = iter([100.0, 120.0, 140.0, 170.0])
  clock = photoreal.ExpectedTime([30, 20], [1.0, 1.5], clock=lambda: next(times))
  for stage, it in [(0, 10), (0, 20), (0, 30), (1, 10)]:
    clock.tick(stage, it)
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("expected ~80 s more (2.00 s/iteration"), lines
  assert photoreal.stage_costs(_cfg(32, 4)) == [1.0, photoreal.PENALIZED_COST]


def test_regions_missing_from_either_image_are_dropped_without_changing_the_loss(vgg_params, rng):
  # Three regions, the last absent from the style: the targets keep two, and the loss is the
  # one of the masks without it (a missing region contributes nothing, at a Gram's cost).
  content = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  style = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  cm = np.zeros((3, 32, 32), np.float32)
  cm[0, :16], cm[1, 16:24], cm[2, 24:] = 1, 1, 1
  sm = np.zeros((3, 32, 32), np.float32)
  sm[0, :, :20], sm[1, :, 20:] = 1, 1
  cfg = _cfg(32, 1)
  full = photoreal.make_targets(vgg_params, content, style, cm, sm, cfg)
  ref = photoreal.make_targets(vgg_params, content, style, cm[:2], sm[:2], cfg)
  assert all(m.shape[1] == 2 for m in full["masks"].values())
  x = jnp.asarray(rng.uniform(size=(1, 32, 32, 3)), jnp.float32)
  terms = jax.jit(objective.loss_terms, static_argnums=3)  # one program, not one per op
  a = terms(vgg_params, x, full, cfg.loss)["style"]
  b = terms(vgg_params, x, ref, cfg.loss)["style"]
  np.testing.assert_allclose(a, b, rtol=1e-6)
  assert float(a[0]) > 0
