"""The lean box-constrained L-BFGS (slow/lbfgsb.py) against numpy and scipy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from nst_jax import config
from nst_jax.core import image_io, objective
from nst_jax.slow import artistic, lbfgsb, optimize

SHAPE = (1, 4, 4, 3)  # 48 pixels


def _dense_bfgs(pairs, gamma, g):
  """H g with H from H0 = gamma I and the BFGS update per pair, oldest first (N&W eq. 7.16)."""
  n = g.size
  h = gamma * np.eye(n)
  for s, y in pairs:
    rho = 1.0 / (s @ y)
    v = np.eye(n) - rho * np.outer(y, s)
    h = v.T @ h @ v + rho * np.outer(s, s)
  return h @ g


def _memory(rng, m, pairs):
  """A state whose memory received ``pairs`` random pairs (s . y > 0) through ``push_pair``."""
  x = jnp.zeros(SHAPE)
  state = lbfgsb.make(lambda x, s, a: (jnp.sum(x), {}), history_size=m).init(x, None, None)
  kept = []
  for _ in range(pairs):
    s = rng.normal(size=SHAPE).astype(np.float64)
    y = s * rng.uniform(0.5, 20.0, SHAPE) + 0.1 * rng.normal(size=SHAPE)  # s . y > 0
    state = lbfgsb.push_pair(state, jnp.asarray(s, jnp.float32), jnp.asarray(y, jnp.float32))
    kept.append((np.asarray(s, np.float32).ravel().astype(np.float64),
                 np.asarray(y, np.float32).ravel().astype(np.float64)))
  return state, kept[-m:]


@pytest.mark.parametrize("masked", (False, True))
def test_two_loop_is_the_bfgs_inverse_hessian_on_the_free_pixels(rng, masked):
  state, pairs = _memory(rng, m=4, pairs=6)  # the memory wrapped around: the last 4 remain
  g = rng.normal(size=SHAPE)
  free = (rng.uniform(size=SHAPE) < 0.7) if masked else np.ones(SHAPE, bool)
  z = free.ravel().astype(np.float64)
  s_new, y_new = pairs[-1]
  gamma = (s_new @ y_new) / (y_new @ y_new)
  # the reduced problem: vectors restricted to F (Z^T s, Z^T y), rho of the full pair
  expected = np.zeros(g.size)
  idx = np.flatnonzero(z)
  h = gamma * np.eye(idx.size)
  for s, y in pairs:
    rho = 1.0 / (s @ y)
    v = np.eye(idx.size) - rho * np.outer(y[idx], s[idx])
    h = v.T @ h @ v + rho * np.outer(s[idx], s[idx])
  expected[idx] = h @ g.ravel()[idx]
  if not masked:
    np.testing.assert_allclose(expected, _dense_bfgs(pairs, gamma, g.ravel()), rtol=1e-10)
  got = lbfgsb.two_loop(jnp.asarray(g, jnp.float32), state, jnp.asarray(free))
  np.testing.assert_allclose(np.asarray(got).ravel(), expected, rtol=2e-4,
                             atol=2e-4 * np.abs(expected).max())


def test_pairs_without_positive_curvature_are_skipped(rng):
  state, _ = _memory(rng, m=3, pairs=2)
  s = jnp.asarray(rng.normal(size=SHAPE), jnp.float32)
  after = lbfgsb.push_pair(state, s, -s)  # s . y < 0
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  empty = lbfgsb.make(lambda x, s, a: (jnp.sum(x), {}), history_size=3).init(
      jnp.zeros(SHAPE), None, None)
  g = jnp.asarray(rng.normal(size=SHAPE), jnp.float32)  # no memory: a unit step along g
  np.testing.assert_allclose(lbfgsb.two_loop(g, empty, jnp.ones(SHAPE, bool)),
                             g / jnp.linalg.norm(g), rtol=1e-6)


def box_quadratic(x, shared, aux):
  """0.5 x' A x - b' x on the flattened image; A has eigenvalues from 1 to 100."""
  v = x.reshape(-1)
  value = 0.5 * v @ (shared["a"] @ v) - aux["b"] @ v
  return value, {"total": value[None]}


def test_box_quadratic_matches_scipy_lbfgsb(rng):
  n = int(np.prod(SHAPE))
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  a = (q * np.geomspace(1.0, 100.0, n)) @ q.T
  b = a @ rng.uniform(-0.5, 1.5, n)  # the unconstrained minimizer lies partly outside the box
  ref = scipy.optimize.minimize(lambda v: (0.5 * v @ a @ v - b @ v, a @ v - b), np.full(n, 0.5),
                                jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * n,
                                options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
  active = np.sum((ref.x <= 0.0) | (ref.x >= 1.0))
  assert ref.success and 5 <= active <= n - 5, (ref.message, active)  # a real box problem
  images = []
  cfg = config.OptimConfig(optimizer="lbfgsb", num_iters=150, chunk=10, history_size=10)
  res = optimize.run(box_quadratic, jnp.full(SHAPE, 0.5), {"a": jnp.asarray(a, jnp.float32)},
                     {"b": jnp.asarray(b, jnp.float32)}, cfg, progress=False,
                     on_chunk=lambda it, x, state, hist: images.append(np.asarray(x)))
  np.testing.assert_allclose(np.asarray(res.image).ravel(), ref.x, atol=2e-3)
  assert min(x.min() for x in images) >= 0.0 and max(x.max() for x in images) <= 1.0
  assert np.all(np.diff(res.history["total"][:, 0]) <= 1e-3)  # monotone up to float32 rounding


@pytest.mark.real_weights
def test_one_evaluation_per_iteration_on_the_vgg_loss(vgg_params, data_dir):
  content = image_io.load_image(data_dir / "content/classic_st/tubingen.jpg", size=32)
  style = image_io.load_image(data_dir / "styles/van_gogh_starry_night.jpg", size=32)
  loss_cfg = config.gatys().loss
  targets = objective.make_targets(vgg_params, jnp.asarray(content)[None],
                                   [jnp.asarray(style)[None]], loss_cfg)
  noise = np.random.default_rng(0).uniform(0.0, 1.0, content.shape).astype(np.float32)
  x0 = jnp.asarray(0.6 * noise + 0.4 * content)[None]
  cfg = config.OptimConfig(optimizer="lbfgsb", num_iters=40, chunk=20)
  res = optimize.run(artistic.make_loss_fn(loss_cfg), x0, vgg_params, targets, cfg,
                     progress=False)
  evals = int(lbfgsb.evaluations(res.state)) - 1  # the start's evaluation
  assert evals <= 41, evals  # one per iteration, one retry at most (the unit first step)
  total = res.history["total"][:, 0]
  assert total[-1] < 0.2 * total[0]
  assert float(res.image.min()) >= 0.0 and float(res.image.max()) <= 1.0


@jax.custom_vjp
def _uphill_bowl(x):
  """sum((x - 0.5)^2) whose reported gradient has the wrong sign (points uphill), as an inexact
  one may once the decrease left is below its accuracy: no line search can decrease it."""
  return jnp.sum((x - 0.5) ** 2)


_uphill_bowl.defvjp(lambda x: (_uphill_bowl(x), x), lambda x, ct: (-2.0 * ct * (x - 0.5),))


def test_a_failed_search_stays_put_and_a_second_one_stops_the_run():
  # A loss whose reported gradient points uphill (as an inexact one may once the decrease left
  # is below its accuracy): no trial decreases the loss. The first failure keeps x and empties
  # the memory; the second, from steepest descent, stops the run; later steps are free.
  bowl = _uphill_bowl
  solver = lbfgsb.make(lambda x, s, a: (bowl(x), {"bowl": bowl(x)}), history_size=4)
  x0 = jnp.full(SHAPE, 0.2).at[0, 0, 0, 0].set(0.7)
  step = jax.jit(solver.step)
  x, state = x0, solver.init(x0, None, None)
  evals = [int(state.evals)]
  for failures in (1, 2, 2):
    x, state, terms = step(x, state, None, None)
    np.testing.assert_array_equal(x, x0)
    assert int(state.failures) == failures
    assert float(state.gamma) == 0.0 and not np.any(np.asarray(state.rho))
    np.testing.assert_allclose(terms["bowl"], bowl(x0))
    evals.append(int(state.evals))
  assert evals[0] == 0  # init evaluates nothing; the first step evaluates the start too
  assert 1 < evals[1] - 1 <= lbfgsb.MAX_TRIALS  # the search tried, and gave up
  assert evals[3] == evals[2]  # stopped: the third step evaluated nothing


def test_the_loss_is_compiled_once_and_the_first_step_evaluates_the_start(rng):
  # init evaluates nothing (its program holds no sin); the step's program holds the loss once,
  # in the search's trial. The first step's terms are those of the start, as an evaluating init
  # would have given, and a NaN there is returned as it is (the caller stops on it).
  def loss(x, shared, aux):
    value = jnp.sum(jnp.sin(3.0 * x) ** 2 + (x - 0.3) ** 2)
    return value, {"total": value}

  solver = lbfgsb.make(loss, history_size=4)
  x0 = jnp.asarray(rng.uniform(0.0, 1.0, SHAPE), jnp.float32)
  state = solver.init(x0, None, None)

  def count_sin(fn, *args):
    return str(jax.make_jaxpr(fn)(*args)).count(" sin ")

  assert count_sin(solver.init, x0, None, None) == 0
  assert count_sin(solver.step, x0, state, None, None) == 1
  assert int(state.evals) == 0 and np.isinf(float(state.value))
  x1, state1, terms = jax.jit(solver.step)(x0, state, None, None)
  np.testing.assert_allclose(terms["total"], loss(x0, None, None)[0], rtol=1e-6)
  assert float(state1.value) < float(terms["total"]) and int(state1.evals) >= 2
  assert not np.array_equal(np.asarray(x1), np.asarray(x0))
  nan_x = x0.at[0, 0, 0, 0].set(jnp.nan)
  _, _, nan_terms = jax.jit(solver.step)(nan_x, solver.init(nan_x, None, None), None, None)
  assert np.isnan(float(nan_terms["total"]))


def test_a_converged_run_stops_where_it_converged(rng):
  # Descending steps keep the failure count at 0; at the minimum no step decreases the loss
  # (it ties), and two such steps stop the run there.
  target = jnp.asarray(rng.uniform(0.1, 0.9, size=SHAPE), jnp.float32)
  solver = lbfgsb.make(lambda x, s, a: (jnp.sum((x - target) ** 2), {}), history_size=4)
  x = jnp.zeros(SHAPE)
  state = solver.init(x, None, None)
  step = jax.jit(solver.step)
  values = [float(state.value)]
  for _ in range(3):
    x, state, _ = step(x, state, None, None)
    values.append(float(state.value))
    assert int(state.failures) == 0
  assert values[0] > values[1] > values[2] > values[3]
  for _ in range(30):
    x, state, _ = step(x, state, None, None)
  assert int(state.failures) == lbfgsb.STALL_FAILURES
  np.testing.assert_allclose(x, target, atol=1e-5)


def test_a_stopped_run_says_so_once(capsys):
  # optimize.run with the lean solver on a loss whose gradient points uphill: the solver stops
  # in the first chunk; the progress output says so in one line, once, and the rest of the run
  # leaves the image as it was.
  bowl = _uphill_bowl
  x0 = jnp.full(SHAPE, 0.2)
  cfg = config.OptimConfig(optimizer="lbfgsb", num_iters=6, chunk=2, history_size=4)
  out = optimize.run(lambda x, s, a: (bowl(x), {"total": bowl(x)}), x0, None, None, cfg,
                     desc="toy")
  err = capsys.readouterr().err
  assert err.count("toy: stopped by iteration 2: the line search finds no further decrease") == 1
  assert optimize.stopped(out.state) and out.iterations == 6
  np.testing.assert_array_equal(out.image, x0)
