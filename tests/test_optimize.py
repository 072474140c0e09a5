"""The optimizer loop: convergence on real problems, chunking, NaN handling, batching."""

import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config
from nst_jax.core import image_io
from nst_jax.slow import artistic, optimize

OPTIMIZERS = ("lbfgsb", "lbfgs", "adam")


def quadratic(x, shared, aux):
  terms = {"total": jnp.sum(jnp.square(x - aux["target"]) * shared["w"], axis=(1, 2, 3))}
  return jnp.sum(terms["total"]), terms


def _toy(rng, hw=(6, 5)):
  target = rng.uniform(-0.2, 1.2, (1,) + hw + (3,)).astype(np.float32)  # partly outside the box
  return {"w": jnp.float32(3.0)}, {"target": jnp.asarray(target)}, jnp.full((1,) + hw + (3,), 0.5)


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_toy_problem_converges_to_the_box_projection(rng, opt):
  shared, aux, x0 = _toy(rng)
  cfg = config.OptimConfig(optimizer=opt, num_iters=60, chunk=7, learning_rate=0.05)
  res = optimize.run(quadratic, x0, shared, aux, cfg, progress=False)
  np.testing.assert_allclose(res.image, np.clip(aux["target"], 0, 1), atol=2e-2)
  assert res.iterations == 60 and res.history["total"].shape == (60, 1)
  assert res.nan_at is None


def test_chunking_does_not_change_the_result(rng):
  shared, aux, x0 = _toy(rng)
  runs = [optimize.run(quadratic, x0, shared, aux,
                       config.OptimConfig(optimizer="adam", num_iters=12, chunk=c),
                       progress=False)
          for c in (12, 5)]
  np.testing.assert_allclose(runs[0].image, runs[1].image, atol=1e-6)
  np.testing.assert_allclose(runs[0].history["total"], runs[1].history["total"], rtol=1e-5)


def test_nan_stops_and_keeps_the_last_good_image():
  def loss(x, shared, aux):  # NaN once any pixel drops below 0.5
    value = jnp.sum(jnp.square(x)) + 1e-3 * jnp.sum(jnp.sqrt(x - 0.5))
    return value, {"total": value[None]}

  cfg = config.OptimConfig(optimizer="adam", num_iters=100, chunk=4, learning_rate=0.05)
  res = optimize.run(loss, jnp.ones((1, 4, 4, 3)), {}, {}, cfg, progress=False)
  assert res.nan_at is not None and 0 < res.nan_at < 100
  assert np.isfinite(res.history["total"]).all() and len(res.history["total"]) == res.nan_at
  assert np.all(np.asarray(res.image) >= 0.5)


def test_batched_problems_match_separate_runs(rng):
  shared, aux1, x0 = _toy(rng)
  _, aux2, _ = _toy(rng)
  cfg = config.OptimConfig(optimizer="lbfgsb", num_iters=15, chunk=5)
  stacked = {"target": jnp.stack([aux1["target"], aux2["target"]])}
  both = optimize.run(quadratic, jnp.stack([x0, x0]), shared, stacked, cfg, batched=True,
                      progress=False)
  for i, aux in enumerate((aux1, aux2)):
    alone = optimize.run(quadratic, x0, shared, aux, cfg, progress=False)
    np.testing.assert_allclose(both.image[i], alone.image, atol=1e-5)


@pytest.mark.real_weights
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_each_optimizer_lowers_a_real_loss_tenfold_in_50_iterations(vgg_params, data_dir, opt):
  content = image_io.load_image(data_dir / "content/classic_st/tubingen.jpg", size=64)
  style = image_io.load_image(data_dir / "styles/van_gogh_starry_night.jpg", size=64)
  cfg = config.override(config.gatys(), {"size": 64, "init": "noise", "optim.optimizer": opt,
                                         "optim.num_iters": 50, "optim.chunk": 25,
                                         "optim.learning_rate": 0.05})
  out = artistic.stylize(vgg_params, [artistic.Problem(content, (style,))], cfg, progress=False)
  total = out.history["total"]
  assert total[0] / total[-1] >= 10.0, (total[0], total[-1])
  img = out.images[0]
  assert img.shape == content.shape and img.min() >= 0.0 and img.max() <= 1.0
