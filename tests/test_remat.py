"""What VGG's backward pass keeps (``LossConfig.remat``): the gradients do not depend on it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config
from nst_jax.core import objective, vgg

# A VGG19 with 4-16 channels: the real layer names and shapes of the graph, tiny convolutions.
WIDTH = {1: 4, 2: 8, 3: 8, 4: 16, 5: 16}


def _tiny_params(rng) -> dict:
  arrays, c_in = {}, 3
  for name in vgg.CONV_LAYERS:
    c_out = WIDTH[int(name[4])]
    arrays[f"{name}/kernel"] = rng.normal(0, (2.0 / (9 * c_in)) ** 0.5, (3, 3, c_in, c_out))
    arrays[f"{name}/bias"] = rng.normal(0, 0.1, (c_out,))
    c_in = c_out
  return vgg.params_from_arrays(arrays, "torch_rgb")


def test_relu_matches_jax_nn_relu_values_and_gradients_at_and_around_zero():
  x = jnp.asarray([[-1.0, 0.0, 2.0], [3.0, -0.5, 0.0]])[None, None]  # [1, 1, 2, 3]: 3 channels
  assert jnp.array_equal(vgg.relu(x), jax.nn.relu(x))
  g = jnp.arange(6.0).reshape(x.shape) + 1.0
  mine = jax.vjp(vgg.relu, x)[1](g)[0]
  assert jnp.array_equal(mine, jax.vjp(jax.nn.relu, x)[1](g)[0])
  assert jnp.array_equal(mine, jnp.where(x > 0, g, 0.0))


@pytest.mark.parametrize("conv_impl", ["cpu_fast", pytest.param("xla", marks=pytest.mark.slow)])
def test_rematerialized_gradients_equal_the_plain_ones(rng, conv_impl):
  params = _tiny_params(rng)
  image = jnp.asarray(rng.uniform(size=(1, 36, 28, 3)), jnp.float32)  # conv5 at 2x1: narrow
  style = jnp.asarray(rng.uniform(size=(1, 32, 32, 3)), jnp.float32)
  cfg = dataclasses.replace(config.gatys().loss, pooling="max", conv_impl=conv_impl,
                            style_weight=1.0, tv_weight=1.0)
  targets = objective.make_targets(params, image[:, ::-1], [style], cfg)

  def grad(remat):
    c = dataclasses.replace(cfg, remat=remat)
    f = lambda x: objective.loss_terms(params, x, targets, c)["total"][0]
    return jax.jit(jax.value_and_grad(f))(image)

  (v0, g0), (v1, g1), (v2, g2) = grad("none"), grad("masks"), grad("blocks")
  assert float(jnp.abs(g0).max()) > 0
  np.testing.assert_array_equal(v1, v0)  # the same operations
  np.testing.assert_array_equal(g1, g0)
  np.testing.assert_allclose(v2, v0, rtol=1e-6)  # recomputed: XLA may order sums differently
  np.testing.assert_allclose(g2, g0, rtol=1e-5, atol=1e-6 * float(jnp.abs(g0).max()))


def test_an_unknown_remat_is_refused():
  with pytest.raises(config.ConfigError, match="remat"):
    dataclasses.replace(config.LossConfig(), remat="all").check()
