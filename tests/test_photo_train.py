"""Tests for nst_jax.photo_train and the photoreal training preset (fast photorealistic transfer).

Losses are compared with numpy/scipy references (the sparse matting Laplacian), the style-anchored
regions with synthetic two-region images, and the preset is trained for a few steps with a tiny
network and a shallow loss so that everything compiles in seconds on a 2-core CPU.
"""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, config
from nst_jax.config import LossConfig
from nst_jax.core import image_io, matting, regions, sharding
from nst_jax.core.errors import UserError
from nst_jax.fast import (
  inference,
  nets,
  photo_train,
  train_state,
  training,
)

SHALLOW = LossConfig(content_layers=("conv2_2",), content_layer_weights=(1.0,),
                     style_layers=("conv1_1", "conv2_1"), style_layer_weights=(1.0, 1.0),
                     content_weight=1.0, style_weight=1e-4, tv_weight=1e2, pooling="avg")


def photo_config(**photo) -> config.TrainConfig:
  base = config.photoreal()
  return dataclasses.replace(
      base, loss=SHALLOW, size=32, style_size=32, batch_size=2, learning_rate=3e-3,
      net=dataclasses.replace(base.net, width=0.125, num_residual=1),
      photo=dataclasses.replace(base.photo, **{"regions": 2, "fit_photos": 4,
                                               "affine_output": 0.0, **photo}))


def two_region_image(h, w, top, bottom, rng, split=0.5):
  """Sky-over-ground test photo: two flat colours plus a little noise."""
  img = np.empty((h, w, 3), np.float32)
  img[:round(h * split)], img[round(h * split):] = top, bottom
  return np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def scenes():
  rng = np.random.default_rng(0)
  style = two_region_image(32, 48, (0.2, 0.4, 0.9), (0.1, 0.6, 0.1), rng)
  photos = np.stack([two_region_image(32, 32, (0.4, 0.6, 1.0), (0.3, 0.5, 0.2), rng, s)
                     for s in (0.4, 0.5, 0.6, 0.45)])
  return style, photos


@pytest.fixture(scope="module")
def region_model(vgg_params, scenes):
  style, photos = scenes
  return photo_train.fit_regions(vgg_params, style, photos, photo_config())


def test_rgb_to_lab_known_values():
  lab = np.asarray(regions.rgb_to_lab(np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], np.float32)))
  np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.05)
  np.testing.assert_allclose(lab[1], [53.24, 80.09, 67.20], atol=0.1)  # sRGB red, D65
  np.testing.assert_allclose(lab[2], [0, 0, 0], atol=1e-4)


def test_regions_separate_sky_from_ground_in_photos_and_style(vgg_params, scenes, region_model):
  style, photos = scenes
  masks_of = jax.jit(lambda x: photo_train.region_masks(  # one program a shape, not one per op
      region_model, photo_train.features(vgg_params, x, SHALLOW, regions.AUTO_LAYERS), x))
  for images in (style[None], photos):
    soft = np.asarray(masks_of(jnp.asarray(images)))                           # [B, R, H, W]
    assert soft.shape == (len(images), 2) + images.shape[1:3]
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    hard = soft.argmax(axis=1)
    # Regions are ordered top to bottom: region 0 is the sky in every image.
    assert np.mean(hard[:, :8] == 0) > 0.9 and np.mean(hard[:, -8:] == 1) > 0.9


def test_one_region_equals_the_plain_gram_loss(vgg_params, scenes):
  style, photos = scenes
  cfg = photo_config(regions=1, affine_weight=0.0)
  targets = training.setup_style_targets(cfg, vgg_params, style,
                                         dataset=_Batches(photos))
  plain_targets = training.make_style_targets(vgg_params, jnp.asarray(style)[None], SHALLOW)
  out = jnp.asarray(photos[::-1])
  masked = training.training_loss_terms(vgg_params, out, jnp.asarray(photos), targets, cfg)
  plain = training.perceptual_loss_terms(vgg_params, out, jnp.asarray(photos), plain_targets,
                                         SHALLOW)
  for k in ("content", "style", "tv", "total"):
    np.testing.assert_allclose(masked[k], plain[k], rtol=2e-4)


@pytest.mark.parametrize("kind", [pytest.param("guided", marks=pytest.mark.slow), "affine"])
def test_smoothed_outputs_are_scored_as_inference_returns_them(vgg_params, scenes, kind,
                                                               monkeypatch):
  # With guided_output / affine_output the losses are those of the outputs after the post-step
  # that inference applies to such a network (training's solve as tight as inference's here).
  monkeypatch.setattr(photo_train, "AFFINE_OUTPUT_TOL", 1e-6)
  style, photos = scenes
  cfg = photo_config(regions=2, affine_weight=1e3)
  option = {"guided": {"guided_output": True}, "affine": {"affine_output": 5.0}}[kind]
  smoothed_cfg = dataclasses.replace(cfg, photo=dataclasses.replace(cfg.photo, **option))
  targets = training.setup_style_targets(cfg, vgg_params, style, dataset=_Batches(photos))
  x = jnp.asarray(photos)
  out = jnp.clip(x[::-1] + 0.1 * jax.random.normal(jax.random.PRNGKey(0), x.shape), 0, 1)
  # Jitted: one program each rather than one per op (the suite's time); a fresh wrapper here,
  # so the tolerance set above is the one traced.
  if kind == "guided":
    smoothed = jax.jit(photo_train.guided_outputs)(out, x)
  else:
    smoothed = jax.jit(photo_train.affine_outputs, static_argnums=2)(out, x, 5.0)
  smoothing = inference.default_smoothing(nets.TinyNet(output="affine"), smoothed_cfg)
  assert smoothing == {"guided": config.Smoothing(method="guided"),
                       "affine": config.Smoothing(weight=5.0)}[kind]
  np.testing.assert_allclose(  # the post-step of inference (at the least weight: no budget)
      smoothed[0], inference.blend(np.asarray(out[0]), photos[0],
                                   smoothing=dataclasses.replace(smoothing, budget=0.0)),
      atol=2e-4)
  terms = jax.jit(training.training_loss_terms, static_argnums=4)
  a = terms(vgg_params, out, x, targets, smoothed_cfg)
  b = terms(vgg_params, smoothed, x, targets, cfg)
  for k in ("content", "style", "tv", "affine", "total"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4)
  assert np.all(np.asarray(a["tv"]) < np.asarray(terms(vgg_params, out, x, targets, cfg)["tv"]))


def test_affine_outputs_solve_the_system_and_differentiate(rng, monkeypatch):
  photos = jnp.asarray(rng.uniform(size=(2, 12, 10, 3)), jnp.float32)
  out = jnp.asarray(rng.uniform(0.3, 0.7, size=(2, 12, 10, 3)), jnp.float32)
  coeffs = matting.matting_coefficients(photos, eps=1e-4)
  residual = lambda o: o + 3.0 * matting.apply_with_coefficients(coeffs, o) - out
  smoothed = photo_train.affine_outputs(out, photos, 3.0)  # to the training tolerance
  assert (float(jnp.linalg.norm(residual(smoothed)))
          <= 1.5 * photo_train.AFFINE_OUTPUT_TOL * float(jnp.linalg.norm(out)))
  monkeypatch.setattr(photo_train, "AFFINE_OUTPUT_TOL", 1e-6)  # exact, and its gradient
  assert float(jnp.abs(residual(photo_train.affine_outputs(out, photos, 3.0))).max()) < 1e-4
  target = jnp.asarray(rng.uniform(size=out.shape), jnp.float32)
  f = lambda o: jnp.sum((photo_train.affine_outputs(o, photos, 3.0) - target) ** 2)
  step = 1e-2 * jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
  numeric = (f(out + step) - f(out - step)) / 2
  np.testing.assert_allclose(float(jnp.vdot(jax.grad(f)(out), step)), float(numeric), rtol=1e-2)


class _Batches:
  """A dataset stand-in for ``setup_style_targets``."""

  def __init__(self, photos):
    self.photos = photos

  def get_batch(self, start, n):
    return self.photos[start:start + n]


@pytest.mark.parametrize("kind", ["residual", "energy"])
def test_affine_loss_against_the_sparse_laplacian(kind):
  rng = np.random.default_rng(1)
  content = rng.uniform(size=(2, 9, 11, 3)).astype(np.float32)
  out = rng.uniform(size=(2, 9, 11, 3)).astype(np.float32)
  got = photo_train.affine_loss(jnp.asarray(out), jnp.asarray(content), kind, eps=1e-4)
  for b in range(2):
    lap = matting.build_matting_laplacian(content[b], eps=1e-4)
    o, c = out[b].reshape(-1, 3).astype(np.float64), content[b].reshape(-1, 3).astype(np.float64)
    if kind == "energy":
      want = np.sum(o * (lap @ o)) / o.shape[0]
    else:
      want = np.sum(np.square(lap @ (o - c))) / o.shape[0]
    np.testing.assert_allclose(got[b], want, rtol=1e-4)


def test_affine_loss_gradient_is_2_L_L_d_over_n():
  rng = np.random.default_rng(2)
  content = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
  out = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
  grad = jax.grad(lambda o: photo_train.affine_loss(o, jnp.asarray(content), eps=1e-4)[0])(
      jnp.asarray(out))
  lap = matting.build_matting_laplacian(content[0], eps=1e-4)
  d = (out[0] - content[0]).reshape(-1, 3).astype(np.float64)
  want = 2 * (lap @ (lap @ d)) / d.shape[0]
  np.testing.assert_allclose(np.asarray(grad[0]).reshape(-1, 3), want, rtol=1e-3, atol=1e-7)


def test_affine_loss_ignores_colour_transforms_and_punishes_texture():
  rng = np.random.default_rng(3)
  content = jnp.asarray(rng.uniform(size=(1, 24, 24, 3)).astype(np.float32))
  recoloured = content @ jnp.array([[0.7, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.1, 0.6]]) + 0.1
  textured = content + 0.05 * jnp.asarray(rng.standard_normal((1, 24, 24, 3)), jnp.float32)
  assert float(photo_train.affine_loss(recoloured, content)[0]) < 1e-3 * float(
      photo_train.affine_loss(textured, content)[0])


@pytest.mark.slow  # beside it: test_training's train step without recompiling
def test_photoreal_preset_steps_lower_the_loss_without_recompiling(vgg_params, scenes):
  style, photos = scenes
  cfg = photo_config()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  assert model.output == "affine"
  targets = training.setup_style_targets(cfg, vgg_params, style, dataset=_Batches(photos))

  @chex.assert_max_traces(n=1)
  def step_fn(state, images, vgg_params, style_targets, key):
    return training.train_step(state, images, vgg_params, style_targets, key, model=model,
                               tx=tx, cfg=cfg)

  mesh = sharding.make_mesh()
  step = training.jit_train_step(step_fn, mesh)
  state = train_state.init_train_state(model, tx, train_state.make_key(0), mesh)
  batch = jnp.asarray(photos[:2])
  totals = []
  for _ in range(8):
    state, metrics = step(state, batch, vgg_params, targets, train_state.make_key(0))
    totals.append(float(metrics["total"]))
  assert set(metrics) == {"content", "style", "tv", "affine", "total"}
  assert all(np.isfinite(totals)) and totals[-1] < 0.8 * totals[0], totals


def test_photo_settings_are_validated_and_part_of_resume_checks(tmp_path):
  for bad in ({"regions": -1}, {"affine_weight": -1.0}, {"affine_loss": "l1"},
              {"mask_pooling": "median"}, {"fit_photos": 0}, {"affine_eps": 0.0}):
    with pytest.raises(config.ConfigError) as info:
      photo_config(**bad).check()
    assert info.value.key == "photo." + next(iter(bad))
  cfg = photo_config()
  meta = training.run_meta(cfg, "abc")
  assert nets.config_from_dict(json.loads(json.dumps(meta["config"]))) == cfg
  with pytest.raises(UserError, match="photo"):
    training.check_resumable(meta, photo_config(affine_weight=1.0), "abc", tmp_path)
  # A config written before the photo section existed still loads (artistic defaults).
  old = json.loads(config.to_json(config.thesis()))
  del old["photo"]
  assert nets.config_from_dict(old).photo == config.PhotoTrainConfig()


# Long (over 10 s on 2 busy cores): `-m slow`;
# test_photoreal_preset_steps_lower_the_loss_without_recompiling covers the step.
@pytest.mark.slow
def test_cli_trains_the_photoreal_preset_and_stylizes(tmp_path, data_dir, vgg_path, capsys):
  photos = tmp_path / "photos"
  photos.mkdir()
  rng = np.random.default_rng(4)
  for i in range(4):
    img = two_region_image(40, 40, (0.5, 0.7, 1.0), (0.3, 0.4, 0.2), rng, 0.3 + 0.1 * i)
    Image.fromarray((img * 255).astype(np.uint8)).save(photos / f"p{i}.png")
  style = data_dir / "photo" / "style" / "tar1.png"
  work, out = tmp_path / "run", tmp_path / "out"
  flags = ["--vgg-weights", str(vgg_path)]
  sets = ["size=32", "style_size=32", "num_steps=2", "batch_size=2", "net.width=0.125",
          "net.num_residual=1", "photo.fit_photos=2", "photo.regions=2", "checkpoint_every=2",
          "num_samples=0", "loss.style_layers=conv1_1", "loss.style_layer_weights=1.0",
          "loss.content_layers=conv2_2"]
  # In this process (cli.main): the commands, not process behaviour, are under test here.
  assert cli.main(["train", "--preset", "photoreal", "--style", str(style), "--data",
                   str(photos), "--workdir", str(work), "--no-progress"] + flags
                  + [a for s in sets for a in ("--set", s)]) == 0, capsys.readouterr().err[-2000:]
  assert "affine" in (work / "losses.csv").read_text().splitlines()[0]
  saved = nets.config_from_json((work / "config.json").read_text())
  assert saved.net.output == "affine" and saved.photo.regions == 2
  assert cli.main(["stylize", "--model", str(work), "--content", str(photos / "p0.png"),
                   "--out", str(out)]) == 0, capsys.readouterr().err[-2000:]
  result = image_io.load_image(out / "p0.png")
  assert result.shape == (40, 40, 3)
