"""A lean L-BFGS for the [0, 1] pixel box: projected quasi-Newton steps, one evaluation per step.

Synopsis::

  from nst_jax.slow import lbfgsb
  solver = lbfgsb.make(loss_fn, history_size=20)          # free-variable L-BFGS-B
  state = solver.init(x, shared, aux)                     # nothing evaluated yet (cheap)
  x, state, terms_at_old_x = solver.step(x, state, shared, aux)

An iteration:

1. The free set F: every pixel except those at a bound whose gradient pushes outward (at 0
   with g > 0, at 1 with g < 0).
2. The direction d = -H_F g_F: the L-BFGS two-loop recursion (Nocedal & Wright, algorithm 7.4)
   on the gradient restricted to F, its vectors masked to F, so d is 0 on the fixed pixels and
   d . g = -g_F . H_F g_F < 0. Should d not descend along the projection arc (pixels of F at a
   bound that d pushes outward are clipped), projected steepest descent replaces it. The first
   direction has unit length (no curvature is known yet), later ones are scaled by
   gamma = s . y / y . y.
3. A backtracking search along the arc x(t) = P(x + t d), P the projection onto [0, 1], from
   t = 1 (the quasi-Newton step), with the Armijo test f(x(t)) <= f(x) + c1 g . (x(t) - x)
   (Bertsekas 1982) and safeguarded quadratic interpolation. Every trial returns the value,
   gradient and loss terms at x(t), so the accepted point's start the next iteration: one loss
   evaluation per iteration when t = 1 is accepted, which is the rule after the first steps.
4. The pair (s, y) = (x+ - x, g+ - g) enters the circular memory when s . y > eps y . y; empty
   slots have rho = 0 and drop out of the recursion, so the state has fixed shapes.
5. A search that finds no sufficient decrease in ``max_trials`` evaluations, or ends on a value
   that merely ties f(x), means the loss is flat along d within its accuracy (float32 rounding,
   or the inexact solves of the photoreal "affine" parameterization late in a run). It leaves
   x where it was and empties the memory, so the next direction is steepest descent; a second
   failure in a row ends the run, and later steps are free no-ops that return x (as scipy's
   L-BFGS-B stops on a failed line search; ``optimize.run`` says so once). Before this, such
   searches spent up to 20 evaluations each on steps too small to matter
   (docs/research/implementation_notes.md; ``benchmarks/photo_resume_bench.py``).

Warm starts. A loss whose evaluation runs inner iterative solves (the photoreal "affine"
parameterization: two conjugate-gradient solves per evaluation) may come as a
``WarmStartedLoss``: it also returns a pytree ``warm`` (e.g. the solves' solutions), which the
state carries from the accepted point to the next evaluations as their starts. It is part of
the state, so a checkpoint holds it and a resumed run repeats the same solves bit for bit. A
plain loss carries ``()``.

The loss is evaluated in one place only, the search's trial, so its forward and backward
passes are compiled once. ``init`` evaluates nothing: its state has f = +inf and no memory, and
the first ``step`` starts with a start step, d = 0, whose one trial is x itself and is accepted
as it is (even a NaN, which the caller then sees in the returned terms), before the iteration
proper. A separate evaluating ``init`` would compile the loss a second time, ~35 % of the compile
time of a whole run.

This skips what makes jaxopt's L-BFGS-B heavy per iteration (the generalized Cauchy point's
breakpoint sort and the subspace minimization over the compact matrices, Byrd et al. 1995) and
the zoom search's bookkeeping; the state is a NamedTuple of arrays, so checkpoints hold it as is.

References:
  Nocedal & Wright, "Numerical Optimization", 2nd ed. 2006, sections 7.2 (L-BFGS), 3.5 (step
  length selection by interpolation). Bertsekas, "Projected Newton methods for optimization
  problems with simple constraints", SIAM J. Control Optim. 20(2), 1982. Kim, Sra & Dhillon,
  "Tackling box-constrained optimization via a new projected quasi-Newton approach", SIAM J.
  Sci. Comput. 32(6), 2010 (the free-variable two-loop).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

ARMIJO_C1 = 1e-4
MAX_TRIALS = 20  # evaluations per iteration at most (t >= 0.1 ** 19 by then)
STALL_FAILURES = 2  # failed searches in a row that end the run
CURVATURE_EPS = 1e-10  # a pair enters the memory when s . y > eps y . y


class State(NamedTuple):
  """The memory and the loss, gradient and terms at the current iterate (all arrays)."""
  s: jax.Array  # [m, *x.shape] steps, circular
  y: jax.Array  # [m, *x.shape] gradient differences
  rho: jax.Array  # [m] 1 / s . y, 0 for an empty slot
  newest: jax.Array  # int32 [] slot of the newest pair
  gamma: jax.Array  # [] s . y / y . y of the newest pair, 0 while the memory is empty
  value: jax.Array  # [] loss at x
  grad: jax.Array  # gradient at x
  terms: dict  # loss terms at x
  evals: jax.Array  # int32 [] loss evaluations so far (the start's included; 0: fresh)
  failures: jax.Array  # int32 [] failed line searches in a row; >= STALL_FAILURES: stopped
  warm: Any = ()  # a WarmStartedLoss's starts for its next evaluations (from x); () otherwise


@dataclasses.dataclass(frozen=True)
class WarmStartedLoss:
  """A loss that starts its inner solves from the previous evaluation's solutions.

  Called as ``loss(x, shared, aux) -> (value, terms)`` it is the plain loss (for other solvers,
  ``jax.grad`` and tools); ``make`` uses ``value_and_grad`` instead and keeps ``warm`` in the
  state. Hashable (its fields are), so compiled programs are cached per loss as for a function.

  Attributes:
    loss: ``(x, shared, aux) -> (value, terms)``, cold: its solves start from fixed guesses.
    value_and_grad: ``(x, shared, aux, warm) -> ((value, terms), gradient, warm at x)``, its
      solves started from ``warm``; the same value and gradient as ``loss`` within the solves'
      tolerance. The returned ``warm`` must have the structure, shapes and dtypes of its input.
    init_warm: ``(x, shared, aux) -> warm`` for the first evaluation (the cold path's guesses).
  """
  loss: Callable
  value_and_grad: Callable
  init_warm: Callable

  def __call__(self, x, shared, aux):
    return self.loss(x, shared, aux)


class Solver(NamedTuple):
  """``init(x, shared, aux) -> state``; ``step(x, state, shared, aux) -> (x, state, old terms)``."""
  init: Callable
  step: Callable


def free_mask(x: jax.Array, g: jax.Array) -> jax.Array:
  """True where a pixel may move: not at a bound with the gradient pushing it outward."""
  return ~(((x <= 0.0) & (g > 0.0)) | ((x >= 1.0) & (g < 0.0)))


def arc_mask(x: jax.Array, d: jax.Array) -> jax.Array:
  """Where P(x + t d) moves with t at t = 0+ (inside the box, or leaving a bound inwards)."""
  return ((x > 0.0) | (d > 0.0)) & ((x < 1.0) | (d < 0.0))


def two_loop(g: jax.Array, state: State, free: jax.Array) -> jax.Array:
  """H_F g: the L-BFGS inverse Hessian on the free pixels (``free``, bool) applied to g.

  With an empty memory (gamma = 0) the result is g / ||g||, a unit first step.
  """
  m = state.rho.shape[0]
  q, alphas = jnp.where(free, g, 0.0), []  # a bool mask: a quarter of a float mask's traffic
  for i in range(m):  # newest to oldest; empty slots have rho = 0 and change nothing
    k = (state.newest - i) % m
    alpha = state.rho[k] * jnp.vdot(state.s[k], q)  # q is 0 off F: s . q = s_F . q
    q = jnp.where(free, q - alpha * state.y[k], 0.0)
    alphas.append((k, alpha))
  norm = jnp.sqrt(jnp.vdot(q, q))
  r = q * jnp.where(state.gamma > 0.0, state.gamma, jnp.minimum(1.0, 1.0 / norm))
  for k, alpha in reversed(alphas):  # oldest to newest
    beta = state.rho[k] * jnp.vdot(state.y[k], r)
    r = jnp.where(free, r + (alpha - beta) * state.s[k], 0.0)
  return r


def new_pair(state: State, s: jax.Array, y: jax.Array):
  """``push_pair`` without its two history writes: (slot, s row, y row, the state's other fields
  updated). The writes can then happen outside a ``lax.cond`` whose other branch returns the
  memory unchanged: a history written inside the branch is copied whole by XLA first (two
  arrays of ``m`` images, live through the loss's evaluation)."""
  sy, yy = jnp.vdot(s, y), jnp.vdot(y, y)
  ok = sy > CURVATURE_EPS * yy
  k = jnp.where(ok, (state.newest + 1) % state.rho.shape[0], state.newest)
  return k, jnp.where(ok, s, state.s[k]), jnp.where(ok, y, state.y[k]), state._replace(
      rho=state.rho.at[k].set(jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), state.rho[k])),
      newest=k, gamma=jnp.where(ok, sy / jnp.where(ok, yy, 1.0), state.gamma))


def push_pair(state: State, s: jax.Array, y: jax.Array) -> State:
  """The memory with (s, y) as its newest pair, or unchanged when s . y <= eps y . y."""
  k, s_row, y_row, new = new_pair(state, s, y)
  return new._replace(s=new.s.at[k].set(s_row), y=new.y.at[k].set(y_row))


def make(loss_fn: Callable, *, history_size: int = 20, c1: float = ARMIJO_C1,
         max_trials: int = MAX_TRIALS) -> Solver:
  """The solver for ``loss_fn(x, shared, aux) -> (scalar, terms)`` over x in [0, 1].

  Args:
    loss_fn: the objective; its gradient comes from ``jax.value_and_grad``.
    history_size: pairs kept in the memory (m).
    c1: the Armijo constant.
    max_trials: evaluations per iteration at most; after that the last trial is taken.

  Returns:
    A ``Solver``; ``step`` returns the new iterate, its state and the terms at the old iterate.
  """
  if isinstance(loss_fn, WarmStartedLoss):
    value_and_grad, init_warm = loss_fn.value_and_grad, loss_fn.init_warm
  else:
    plain = jax.value_and_grad(loss_fn, has_aux=True)
    value_and_grad = lambda x, shared, aux, warm: plain(x, shared, aux) + (warm,)
    init_warm = lambda x, shared, aux: ()

  def init(x, shared, aux):
    value, terms = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                                jax.eval_shape(loss_fn, x, shared, aux))
    m = history_size
    zeros = jnp.zeros((m,) + x.shape, x.dtype)
    return State(zeros, zeros, jnp.zeros((m,), x.dtype), jnp.int32(m - 1),
                 jnp.zeros((), x.dtype), value + jnp.inf, jnp.zeros_like(x), terms,
                 jnp.int32(0), jnp.int32(0), init_warm(x, shared, aux))

  def direction(x, state):
    g = state.grad
    free = free_mask(x, g)
    d = -two_loop(g, state, free)
    slope = jnp.vdot(jnp.where(arc_mask(x, d), g, 0.0), d)  # d/dt f(P(x + t d)) at 0+
    steepest = jnp.where(free, -g, 0.0)
    steepest = steepest * jnp.minimum(1.0, 1.0 / jnp.sqrt(jnp.vdot(steepest, steepest)))
    return jnp.where(slope < 0.0, d, steepest)

  def search(x, d, state, shared, aux):
    """Backtracking along P(x + t d) from t = 1; returns the accepted trial. From a fresh
    state (no evaluation yet, d = 0) its one trial is x, accepted as it is."""
    fresh = state.evals == 0
    def trial(t):  # every trial's solves start from x's (the accepted point's) solutions
      xt = jnp.clip(x + t * d, 0.0, 1.0)
      (value, terms), grad, warm = value_and_grad(xt, shared, aux, state.warm)
      return xt, value, grad, terms, warm

    def armijo(xt, value):
      return value <= state.value + c1 * jnp.vdot(state.grad, xt - x)

    def cond(c):
      n, _, xt, value, *_ = c
      return (n == 0) | ((n < max_trials) & ~armijo(xt, value) & ~fresh)

    def body(c):
      n, t, xt, value, *_ = c
      # quadratic through f(0), the slope along the step taken, f(t); kept in [0.1 t, 0.5 t]
      lin = jnp.vdot(state.grad, xt - x)
      curv = value - state.value - lin
      t_q = 0.5 * t * -lin / jnp.where(curv > 0.0, curv, 1.0)
      t_new = jnp.where((n == 0), 1.0,
                        jnp.where((curv > 0.0) & jnp.isfinite(t_q),
                                  jnp.clip(t_q, 0.1 * t, 0.5 * t), 0.5 * t))
      return (n + 1, t_new) + trial(t_new)

    shape = jax.eval_shape(trial, 1.0)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shape)
    n, _, xt, value, grad, terms, warm = jax.lax.while_loop(
        cond, body, (jnp.int32(0), jnp.ones((), x.dtype)) + tuple(zeros))
    # Success needs a real decrease: with t ~ 1e-19 the Armijo test can pass on a value that
    # only rounds to f(x) (a tie), which is no progress.
    ok = fresh | (armijo(xt, value) & (value < state.value))
    return n, xt, value, grad, terms, warm, ok

  def advance(x, state, shared, aux):
    d = direction(x, state)
    n, xt, value, grad, terms, warm, ok = search(x, d, state, shared, aux)
    # A failed search (not ok): stay at x, empty the memory (rho = 0, gamma = 0), count it.
    k, s_row, y_row, new = new_pair(state, jnp.where(ok, xt - x, 0.0),
                                    jnp.where(ok, grad - state.grad, 0.0))
    keep = lambda a, b: jnp.where(ok, a, b)
    new = new._replace(rho=keep(new.rho, 0.0), gamma=keep(new.gamma, 0.0),
                       value=keep(value, state.value), grad=keep(grad, state.grad),
                       terms=jax.tree.map(keep, terms, state.terms), evals=state.evals + n,
                       failures=jnp.where(ok, 0, state.failures + 1),
                       warm=jax.tree.map(keep, warm, state.warm))
    return keep(xt, x), new._replace(s=None, y=None), state.terms, (k, s_row, y_row)

  def iterate(x, state, shared, aux):
    newest = (state.newest, state.s[state.newest], state.y[state.newest])
    x, new, terms, (k, s_row, y_row) = jax.lax.cond(
        state.failures >= STALL_FAILURES,
        lambda: (x, state._replace(s=None, y=None), state.terms, newest),  # stopped: a no-op
        lambda: advance(x, state, shared, aux))
    # The memory is written here, outside the cond (``new_pair``): in place, no copy.
    return x, new._replace(s=state.s.at[k].set(s_row), y=state.y.at[k].set(y_row)), terms

  def step(x, state, shared, aux):
    # From a fresh state: the start step (it evaluates f at x), then the iteration; the loop
    # keeps one copy of the loss in the program.
    rounds = 1 + (state.evals == 0).astype(jnp.int32)
    _, x, state, terms = jax.lax.while_loop(
        lambda c: c[0] < rounds, lambda c: (c[0] + 1,) + iterate(*c[1:3], shared, aux),
        (jnp.int32(0), x, state, state.terms))
    return x, state, terms

  return Solver(init, step)


def evaluations(state: Any) -> jax.Array:
  """Loss evaluations the solver has made (the start's included)."""
  return state.evals
