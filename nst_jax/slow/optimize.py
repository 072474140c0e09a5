"""Per-image optimization (L-BFGS-B, L-BFGS, Adam) with the iteration loop inside one compiled program.

Synopsis::

  from nst_jax import config
  from nst_jax.slow import optimize
  def loss_fn(x, shared, aux):      # x: [1, H, W, 3] in [0, 1]; shared: e.g. VGG params;
    terms = ...                     # aux: this problem's targets. terms: {"total": [1], ...}
    return jnp.sum(terms["total"]), terms
  result = optimize.run(loss_fn, x0, shared, aux, config.OptimConfig(num_iters=100))
  result.image, result.history["total"]       # [1, H, W, 3], [100]

The loop runs in chunks of ``cfg.chunk`` iterations; each chunk is a jitted ``fori_loop`` that
records every iteration's loss terms: row i of the history holds the terms of iterate i, the
image iteration i starts from (row 0: ``x0``; the final image's terms are those the next
iteration would record). The L-BFGS solvers get them with the value and gradient their line
search evaluates, so an iteration costs one loss evaluation when the first trial step is taken. Between chunks the host updates the progress bar, checks
for NaN/Inf (keeping the last good image), and may save a checkpoint. ``batched=True`` vmaps
the whole solver over a leading problem axis of ``x0`` and ``aux``: several independent
problems in one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from nst_jax.config import OPTIMIZERS, OptimConfig
from nst_jax.core import memory
from nst_jax.core.errors import UserError
from nst_jax.slow import lbfgsb

with warnings.catch_warnings():  # "JAXopt is no longer maintained": we know, L-BFGS-B is still used
  warnings.simplefilter("ignore", DeprecationWarning)
  import jaxopt

LossFn = Callable[[jax.Array, Any, Any], tuple[jax.Array, dict]]


class Solver(NamedTuple):
  """``init(x, shared, aux) -> state``; ``step(x, state, shared, aux) -> (x, state, old terms)``."""
  init: Callable
  step: Callable


def _box(x):
  return jnp.zeros_like(x), jnp.ones_like(x)


class _ZoomKeepingAux(jaxopt.ZoomLineSearch):
  """jaxopt's zoom line search (strong Wolfe) without its forward pass for the start's aux.

  Given the start point's value and gradient but not its aux, ``ZoomLineSearch.init_state``
  re-runs ``fun`` there just to fill ``state.aux`` (jaxopt's own TODO): one forward pass per
  iteration. That aux is never returned: the search always evaluates at least one trial point
  and returns the params, value, gradient and aux of the point it accepts (or of its safe step
  when it fails), so a zero placeholder of the right shape is enough.

  Why a private attribute: no public option avoids that pass (``init_state`` takes no aux;
  LBFGSB's ``linesearch``, ``linesearch_init``, ``maxls`` and the search's own options leave it),
  and "lbfgs" runs this search itself along the projection arc. Should jaxopt rename
  ``_fun_with_aux``, a test fails (``tests/test_optimize.py``).
  """

  # Checked against jaxopt 0.8.5 (no longer maintained). Measured (BENCHMARKS.md, "The solver
  # zoo", 2026-12-07): Gatys loss at 256 px, "lbfgsb_jaxopt" makes 2 loss evaluations per
  # iteration with jaxopt's own ZoomLineSearch (one of them forward only) against 1 with this
  # one, 1.21 against 0.91 CPU s per iteration on the shared 2-core CPU.
  # jaxopt's public searches without the pass cost more elsewhere: "backtracking" only shrinks
  # the step (with Wolfe conditions a failed search burns ``maxls`` evaluations; 2.2x the loss
  # of "lbfgsb" at a fixed time against 1.8x; with Armijo's it evaluates the gradient
  # separately), Hager-Zhang ignores ``max_stepsize`` and leaves the box.

  def __post_init__(self):
    super().__post_init__()
    fun = self._fun_with_aux
    self._fun_with_aux = lambda *args, **kwargs: jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fun, *args, **kwargs))


def make_lbfgsb(loss_fn: LossFn, cfg: OptimConfig, *, keep_aux: bool = True) -> Solver:
  """L-BFGS-B with the [0, 1] pixel box (jaxopt; Byrd, Lu, Nocedal & Zhu 1995): "lbfgsb_jaxopt".

  Kept for comparison: "lbfgsb" is the leaner ``lbfgsb.make`` (no Cauchy point or subspace
  minimization, less CPU per iteration; BENCHMARKS.md).

  One loss evaluation per iteration when the line search accepts its first step: the loss
  terms of the new iterate come with its value and gradient from the line search
  (``_ZoomKeepingAux``), which tries t = 1 first (jaxopt's default starts at 1.5 times the last
  step, so after a short step it needs several trials to get back to 1). Steps are at most 1
  along the direction to the subspace minimizer, which lies in the box; the clip only removes
  rounding (an ulp) from ``x + t (x* - x)``. ``keep_aux=False`` uses jaxopt's public
  ``ZoomLineSearch`` as it is: the same iterates, and one more forward pass per iteration.
  """
  search = (_ZoomKeepingAux if keep_aux else jaxopt.ZoomLineSearch)(
      fun=loss_fn, has_aux=True, maxiter=30, max_stepsize=1.0)
  solver = jaxopt.LBFGSB(fun=loss_fn, has_aux=True, maxiter=cfg.num_iters,
                         history_size=cfg.history_size, linesearch=search,
                         linesearch_init="max")  # try the quasi-Newton step t = 1 first

  def step(x, state, shared, aux):
    terms = state.aux  # at x, from the previous line search (or init_state)
    x, state = solver.update(x, state, _box(x), shared, aux)
    return jnp.clip(x, 0.0, 1.0), state, terms

  return Solver(lambda x, shared, aux: solver.init_state(x, _box(x), shared, aux), step)


def _arc_mask(y: jax.Array, d: jax.Array) -> jax.Array:
  """Where the projection P(y + s d) onto [0, 1] moves with s at s = 0+ (inside, or leaving a bound)."""
  return ((y > 0.0) | (d > 0.0)) & ((y < 1.0) | (d < 0.0))


class ProjectedLbfgsState(NamedTuple):
  """optax's L-BFGS memory, and the loss, its gradient and its terms at the current iterate."""
  memory: Any  # optax.ScaleByLBFGSState
  value: jax.Array
  grad: jax.Array
  terms: dict


def make_projected_lbfgs(loss_fn: LossFn, cfg: OptimConfig) -> Solver:
  """L-BFGS (optax's two-loop direction d) with a zoom line search along the projection arc.

  The search minimizes phi(t) = f(P(x + t d)), P the projection onto the [0, 1] box: its trial
  points are evaluated where the next iterate will be, and its slopes are phi's (the gradient
  masked where P does not move, ``_arc_mask``). Each evaluation also returns the full gradient
  and the loss terms at P(x + t d), so the accepted point's value, gradient and terms start
  the next iteration: one evaluation per iteration when the first step (t = 1) is accepted.
  The memory pairs (s, y) are differences of projected iterates and of their full gradients.
  Should d not descend along the arc (its slope >= 0), the step falls back to projected
  steepest descent. The first direction has unit length (optax's ``scale_init_precond``).

  References:
    Nocedal & Wright, "Numerical Optimization", 2nd ed. 2006, algorithms 7.4 (L-BFGS) and
    3.5-3.6 (zoom); Bertsekas, "Projected Newton methods for optimization problems with simple
    constraints", SIAM J. Control Optim. 1982 (search along the projection arc).
  """
  direction = optax.scale_by_lbfgs(memory_size=cfg.history_size)
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def arc_fn(y, d, shared, aux):  # ((phi, (terms, full gradient)), phi's gradient) at P(y)
    (value, terms), grad = value_and_grad(jnp.clip(y, 0.0, 1.0), shared, aux)
    return (value, (terms, grad)), jnp.where(_arc_mask(y, d), grad, 0.0)

  search = _ZoomKeepingAux(fun=arc_fn, value_and_grad=True, has_aux=True, maxiter=20)

  def init(x, shared, aux):
    (value, terms), grad = value_and_grad(x, shared, aux)
    return ProjectedLbfgsState(direction.init(x), value, grad, terms)

  def step(x, state, shared, aux):
    h_g, memory = direction.update(state.grad, state.memory, x)  # [1, H, W, 3], H g
    steepest = -state.grad * jnp.minimum(1.0, 1.0 / optax.tree.norm(state.grad))
    descends = jnp.vdot(jnp.where(_arc_mask(x, -h_g), state.grad, 0.0), -h_g) < 0.0
    d = jnp.where(descends, -h_g, steepest)
    grad0 = jnp.where(_arc_mask(x, d), state.grad, 0.0)
    found = search.run(1.0, x, state.value, grad0, d, fun_args=(d, shared, aux)).state
    terms, grad = found.aux
    new_state = ProjectedLbfgsState(memory, found.value, grad, terms)
    return jnp.clip(found.params, 0.0, 1.0), new_state, state.terms

  return Solver(init, step)


def _gradient_solver(loss_fn: LossFn, opt: optax.GradientTransformation) -> Solver:
  """An optax transformation (no line search), followed by projection onto the [0, 1] box."""

  def step(x, state, shared, aux):
    (_, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(x, shared, aux)
    updates, state = opt.update(grad, state, x)
    x = optax.projections.projection_box(optax.apply_updates(x, updates), 0.0, 1.0)
    return x, state, terms

  return Solver(lambda x, shared, aux: opt.init(x), step)


def make_solver(loss_fn: LossFn, cfg: OptimConfig) -> Solver:
  """The solver named by ``cfg.optimizer`` (``config.OPTIMIZERS``).

  "lbfgsb": the lean free-variable L-BFGS-B (``lbfgsb.make``); "lbfgs": projected L-BFGS
  (optax's direction, zoom search along the projection arc); "lbfgsb_jaxopt": jaxopt's
  L-BFGS-B; "adam": optax Adam.

  Every solver's ``step`` returns the loss terms at the iterate it starts from, so a history
  row i holds the terms of iterate i (row 0: the initial image).
  """
  if cfg.optimizer == "lbfgsb":
    return Solver(*lbfgsb.make(loss_fn, history_size=cfg.history_size))
  if cfg.optimizer == "lbfgsb_jaxopt":
    return make_lbfgsb(loss_fn, cfg)
  if cfg.optimizer == "lbfgs":
    return make_projected_lbfgs(loss_fn, cfg)
  if cfg.optimizer == "adam":
    return _gradient_solver(loss_fn, optax.adam(cfg.learning_rate))
  raise UserError(f"unknown optimizer {cfg.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")


@functools.lru_cache(maxsize=32)
def compiled_chunk_fn(loss_fn: LossFn, cfg: OptimConfig, batched: bool):
  """``make_chunk_fn`` cached per (loss function, config), so repeated runs reuse compilations."""
  return make_chunk_fn(make_solver(loss_fn, cfg), cfg.chunk, batched=batched)


def make_chunk_fn(solver: Solver, chunk: int, *, batched: bool = False):
  """A jitted ``(x, state, shared, aux, n) -> (x, state, history)`` running n <= chunk iterations.

  ``history`` holds, per iteration, the terms of the iterate it starts from (``Solver.step``'s
  third output) in a buffer of ``chunk`` rows (rows >= n are zero);
  ``n`` is a traced argument, so the last, shorter chunk does not recompile.
  """

  def run(x, state, shared, aux, n):
    _, _, terms0 = jax.eval_shape(solver.step, x, state, shared, aux)
    buf = jax.tree.map(lambda t: jnp.zeros((chunk,) + t.shape, t.dtype), terms0)

    def body(i, carry):
      x, state, buf = carry
      x, state, terms = solver.step(x, state, shared, aux)
      buf = jax.tree.map(lambda b, t: b.at[i].set(t), buf, terms)
      return x, state, buf

    return jax.lax.fori_loop(0, n, body, (x, state, buf))

  if batched:
    run = jax.vmap(run, in_axes=(0, 0, None, 0, None), out_axes=(0, 0, 1))
  return jax.jit(run, donate_argnums=(1,))


@dataclasses.dataclass
class Result:
  """What ``run`` returns: the image, the loss history per iteration, and how it ended."""
  image: jax.Array
  history: dict[str, np.ndarray]  # name -> [iters] (or [iters, B] when batched)
  state: Any
  iterations: int
  nan_at: int | None = None  # first iteration whose loss was NaN/Inf, if any
  seconds: float = 0.0


def _summary(terms: dict[str, np.ndarray]) -> dict[str, str]:
  return {k: f"{float(np.sum(v)):.4g}" for k, v in terms.items()}


def init_state(loss_fn: LossFn, x0: jax.Array, shared: Any, aux: Any, cfg: OptimConfig, *,
               batched: bool = False):
  """The solver's initial state (also the template for restoring a saved state)."""
  return _compiled_init(loss_fn, cfg, batched)(x0, shared, aux)


def strong(tree: Any) -> Any:
  """``tree`` with weakly typed arrays (from Python scalars: ``jnp.full(s, 0.5)``) made strong.

  A jitted function is traced again when an argument's weak type changes, and a chunk returns
  strong types: without this the first chunk compiles one program and the rest another.
  """
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.asarray(a).dtype), tree)


@functools.lru_cache(maxsize=32)
def _compiled_init(loss_fn: LossFn, cfg: OptimConfig, batched: bool):
  solver = make_solver(loss_fn, cfg)
  return jax.jit(jax.vmap(solver.init, in_axes=(0, None, 0)) if batched else solver.init)


def run(loss_fn: LossFn, x0: jax.Array, shared: Any, aux: Any, cfg: OptimConfig, *,
        batched: bool = False,
        state: Any = None, start: int = 0, progress: bool = True, desc: str = "optimize",
        on_chunk: Callable[[int, jax.Array, Any, dict], None] | None = None) -> Result:
  """Minimizes ``loss_fn(x, shared, aux)`` over x in [0, 1], starting from ``x0``.

  Args:
    loss_fn: ``(x, shared, aux) -> (scalar loss, {name: per-example terms})``.
    x0: the initial image(s) [1, H, W, 3] (or [P, 1, H, W, 3] with ``batched``).
    shared: arrays common to all problems (VGG parameters), passed, never closed over.
    aux: targets and other arrays the loss needs (leading axis P with ``batched``).
    cfg: optimizer configuration (``num_iters`` is the total, including ``start``).
    batched: solve P independent problems at once (vmap of the whole solver).
    state: a solver state to resume from (with ``start`` iterations already done).
    start: iterations already done.
    progress: show a progress bar with the loss terms and iterations/s.
    desc: the progress bar's label.
    on_chunk: ``(iteration, x, state, history_so_far)`` called after every chunk (checkpoints,
      intermediate images).

  Returns:
    A ``Result``; with a NaN/Inf loss the run stops and keeps the last good image.
  """
  chunk_fn = compiled_chunk_fn(loss_fn, cfg, batched)
  x = x0 = strong(x0)
  state = strong(init_state(loss_fn, x0, shared, aux, cfg, batched=batched)
                 if state is None else state)
  pieces: list[dict] = []
  t0, it, nan_at, told = time.perf_counter(), start, None, False
  with tqdm(total=cfg.num_iters, initial=start, desc=desc, disable=not progress,
            unit="it", dynamic_ncols=True) as bar:
    if it < cfg.num_iters:
      bar.set_postfix_str("compiling...")  # the first chunk compiles (tens of seconds on CPU)
      # Compiled ahead (the call below reuses it), so that the compiler's freed heap goes back
      # to the system before the program's buffers are allocated: a lower peak memory.
      chunk_fn.lower(x, state, shared, aux, min(cfg.chunk, cfg.num_iters - it)).compile()
      memory.release_free_memory()
    while it < cfg.num_iters:
      n = min(cfg.chunk, cfg.num_iters - it)
      x_new, state, hist = chunk_fn(x, state, shared, aux, n)
      hist = jax.tree.map(lambda h: np.asarray(h)[:n], hist)
      bad = ~np.isfinite(hist["total"].reshape(n, -1)).all(axis=1)
      if bad.any() or not np.isfinite(np.asarray(x_new)).all():
        first = int(np.argmax(bad)) if bad.any() else n - 1
        pieces.append(jax.tree.map(lambda h: h[:first], hist))
        nan_at = it + first  # x stays the last good image, from iteration `it`
        break
      x, it = x_new, it + n
      pieces.append(hist)
      show_progress(bar, n, _summary(jax.tree.map(lambda h: h[-1], hist)),
                    last=it >= cfg.num_iters)
      if progress and not told and it < cfg.num_iters and stopped(state):
        told = True
        bar.write(f"{desc}: stopped by iteration {it}: the line search finds no further decrease "
                  "(the loss is flat within its accuracy); the remaining iterations do nothing",
                  file=sys.stderr)
      if on_chunk is not None:
        on_chunk(it, x, state, concat_history(pieces))
  history = concat_history(pieces)
  return Result(x, history, state, it, nan_at, time.perf_counter() - t0)


def stopped(state: Any) -> bool:
  """Whether an "lbfgsb" solver state has stopped (``lbfgsb`` rule 5: two failed line searches
  in a row; for a batch, every problem); False for the other solvers."""
  failures = getattr(state, "failures", None)
  return failures is not None and bool(np.all(np.asarray(failures) >= lbfgsb.STALL_FAILURES))


def show_progress(bar, n: int, terms: dict[str, str], *, last: bool) -> None:
  """Advances ``bar`` by ``n`` iterations showing ``terms`` (the chunk's last recorded row).

  The terms are set before the bar moves, so the line drawn shows this chunk's values, not the
  previous one's; the last chunk only moves the counter, and closing the bar draws the level's
  one final line.
  """
  bar.set_postfix(terms, refresh=False)
  if last:
    bar.n += n  # drawn once, by bar.close()
  else:
    bar.update(n)


def concat_history(pieces: list[dict]) -> dict[str, np.ndarray]:
  """Joins per-chunk histories along the iteration axis."""
  if not pieces:
    return {}
  return {k: np.concatenate([p[k] for p in pieces], axis=0) for k in pieces[0]}
