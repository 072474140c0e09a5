"""Warm-started conjugate gradients of the photoreal "affine" parameterization (issue 38, part 3):
the same solutions and gradients as cold solves within tolerance, fewer iterations on a nearby
system, and a warm start carried in the L-BFGS-B state that resumes bit for bit."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from nst_jax import config
from nst_jax.core import image_io, matting, smoothing
from nst_jax.slow import driver, lbfgsb, optimize, photoreal


def _system(guide, weight):
  return scipy.sparse.identity(guide.shape[0] * guide.shape[1]) + weight * (
      matting.build_matting_laplacian(guide, eps=config.EVAL_EPS))


def _flat(a):
  return np.asarray(a, np.float64).reshape(-1, 3)


def test_warm_started_cg_gives_the_cold_solution_in_fewer_iterations(rng):
  # (I + wL) has eigenvalues >= 1, so a relative residual tol bounds the error by tol |b|: warm
  # and cold solutions of the same system are within 2 tol |b| of each other.
  guide = image_io.resize_array(rng.uniform(size=(5, 4, 3)).astype(np.float32), (20, 16))
  coeffs = matting.matting_coefficients(jnp.asarray(guide), eps=config.EVAL_EPS)
  b = jnp.asarray(rng.uniform(size=(1, 20, 16, 3)), jnp.float32)
  near = b + 0.005 * jnp.asarray(rng.normal(size=b.shape), jnp.float32)  # the next evaluation's
  tol, log = 1e-3, []
  with smoothing.recording_cg_iterations(lambda kind, n: log.append(n)):
    solve = jax.jit(functools.partial(smoothing.affine_cg, coeffs, weight=30.0, tol=tol,
                                      scale_start=True))
    first = solve(b, b)
    cold, warm = solve(near, near), solve(near, first)
    from_zero = solve(near, jnp.zeros_like(b))
  jax.effects_barrier()
  system = _system(guide, 30.0)
  for x in (cold, warm, from_zero):
    residual = np.linalg.norm(system @ _flat(x) - _flat(near)) / np.linalg.norm(_flat(near))
    assert residual <= 1.01 * tol
  assert np.linalg.norm(_flat(warm - cold)) <= 2 * tol * np.linalg.norm(_flat(near))
  _, n_cold, n_warm, n_zero = log
  assert n_warm <= 0.6 * n_cold and n_cold > 10, log
  assert abs(n_zero - n_cold) <= 3, log  # a zero start scales to itself: a cold start


def _problem(rng, size=(20, 16)):
  """A penalized "affine" problem whose scored loss is quadratic in the output (cheap, no VGG)."""
  content = image_io.resize_array(rng.uniform(size=(5, 4, 3)).astype(np.float32), size)
  cfg = config.PhotoConfig()
  aux = {"matting": matting.matting_coefficients(jnp.asarray(content)),
         "filter": photoreal.parameterization_step(content, cfg),
         "matting_weight": jnp.float32(1e3), "filtered": jnp.float32(1),
         "target": jnp.asarray(rng.uniform(size=(1,) + size + (3,)), jnp.float32)}
  return content, aux


def _scored(image, shared, aux):
  energy = matting.energy_with_coefficients(aux["matting"], image) / image[0, ..., 0].size  # [1]
  total = jnp.sum(jnp.square(image - aux["target"])) + aux["matting_weight"] * energy
  return jnp.sum(total), {"total": total, "matting": aux["matting_weight"] * energy}


def _warm_loss():
  cold = lambda x, shared, aux: _scored(photoreal.output_image(x, aux), shared, aux)
  return lbfgsb.WarmStartedLoss(
      cold, functools.partial(photoreal.warm_value_and_grad, _scored),
      lambda x, shared, aux: photoreal.WarmStart(x, jnp.zeros_like(x)))


@functools.lru_cache(maxsize=1)
def _toy_loss():  # one object for the whole module: its compiled chunks are cached on it
  return _warm_loss()


def test_warm_gradient_matches_the_cold_path(rng):
  _, aux = _problem(rng)
  loss = _toy_loss()
  x = jnp.asarray(rng.uniform(size=(1, 20, 16, 3)), jnp.float32)
  d = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  warm_vg = jax.jit(loss.value_and_grad)
  cold_vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value0, _), _, start = warm_vg(x, None, aux, loss.init_warm(x, None, aux))
  (value, terms), grad, _ = warm_vg(x + 0.01 * d, None, aux, start)  # a warm second evaluation
  (cold_value, _), cold_grad = cold_vg(x + 0.01 * d, None, aux)
  np.testing.assert_allclose(value, cold_value, rtol=1e-3)
  assert float(terms["matting"][0]) > 0 and float(value) != float(value0)
  scale = float(jnp.abs(cold_grad).max())
  np.testing.assert_allclose(grad, cold_grad, atol=3e-3 * scale)


# Long (a third compilation of the solves): `-m slow`; the test above checks the same gradient
# against the cold path's (``lax.custom_linear_solve``).
@pytest.mark.slow
def test_warm_gradient_matches_finite_differences(rng, monkeypatch):
  # Tight solves: the loss is quadratic in x, so a central difference is exact up to rounding.
  _, aux = _problem(rng)
  x = jnp.asarray(rng.uniform(size=(1, 20, 16, 3)), jnp.float32)
  d = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  monkeypatch.setattr(photoreal, "PARAM_TOL", 1e-6)
  loss = _warm_loss()  # traced anew with the tighter tolerance
  vg = jax.jit(loss.value_and_grad)
  (_, _), _, start = vg(x + 0.01 * d, None, aux, loss.init_warm(x, None, aux))
  (_, _), g, _ = vg(x, None, aux, start)
  f = lambda v: float(vg(v, None, aux, start)[0][0])
  fd = (f(x + 0.05 * d) - f(x - 0.05 * d)) / 0.1
  np.testing.assert_allclose(float(jnp.vdot(g, d)), fd, rtol=2e-3)


def test_the_solver_carries_the_warm_start_and_resumes_bit_exactly(rng):
  # Resumed from a state serialized mid-run (as driver.Checkpointer saves it), the run repeats
  # the same warm-started solves: image, history and the carried solutions bit-identical; later
  # evaluations need fewer CG iterations than the first (cold) one.
  _, aux = _problem(rng)
  x0 = jnp.asarray(rng.uniform(size=(1, 20, 16, 3)), jnp.float32)
  loss, log, saved = _toy_loss(), [], {}
  cfg = config.OptimConfig(num_iters=8, chunk=4)

  def save(it, x, state, history):
    if it == 4:
      saved.update(x=x, blob=flax.serialization.msgpack_serialize(
          flax.serialization.to_state_dict(jax.device_get(state))))

  with smoothing.recording_cg_iterations(lambda kind, n: log.append((kind, n))):
    full = optimize.run(loss, x0, None, aux, cfg, progress=False, on_chunk=save)
    jax.effects_barrier()
    evals = int(full.state.evals)
    template = jax.eval_shape(lambda: optimize.init_state(loss, x0, None, aux, cfg))
    state = driver.restore_state(template, flax.serialization.msgpack_restore(saved["blob"]))
    rest = optimize.run(loss, saved["x"], None, aux, cfg, state=state, start=4, progress=False)
  assert isinstance(full.state.warm, photoreal.WarmStart)
  np.testing.assert_array_equal(rest.image, full.image)
  np.testing.assert_array_equal(rest.history["total"], full.history["total"][4:])
  for a, b in zip(rest.state.warm, full.state.warm):
    np.testing.assert_array_equal(a, b)
  forward = [n for kind, n in log if kind == "forward"][:evals]  # the uninterrupted run's
  assert len(forward) == evals >= 8
  assert max(forward[1:]) < forward[0], forward  # warm starts after the cold first one
  assert full.history["total"][-1, 0] < 0.9 * full.history["total"][0, 0]
