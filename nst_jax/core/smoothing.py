"""Edge-aware smoothing with an image as guide: the guided filter and the smooth local affine step.

Synopsis::

  from nst_jax.core import smoothing
  out = smoothing.guided_smooth(stylized, content)                 # He et al.'s guided filter
  out, w = smoothing.affine_smooth(stylized, content, budget=2.0)  # Luan et al.'s post-step
  gf = smoothing.guided_filter_for(content, radius=4, eps=1e-4)    # linear in src: fits in a loss
  y = smoothing.apply_guided_filter(gf, src)

Both post-steps make an output locally affine in the guide's colours. The slow photorealistic
method uses them as its optional post-step and as parameterizations; fast photorealistic networks
use them at inference (and, differentiably, in training).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.config import AFFINE_WEIGHT, EVAL_EPS
from nst_jax.core import matting
from nst_jax.core.errors import UserError

SMOOTH_RADIUS_DIVISOR = 24  # default guided-filter radius: long side / 24 (3 px at 64, 21 at 512)
# The post-step of feed-forward photorealistic networks (``inference``): long side / 12, twice
# the slow method's, whose optimizer already leaves little texture (docs/fast_photoreal.md).
FAST_SMOOTH_RADIUS_DIVISOR = 12
AFFINE_MAX_ITERS = 1000  # conjugate-gradient iterations of the smooth local affine step
AFFINE_MIN_WEIGHT, AFFINE_MAX_WEIGHT = 1 / 64, 1e4  # the weights a matting budget may pick


def box_mean(x: jax.Array, radius: int) -> jax.Array:
  """Mean over (2 radius + 1)^2 windows of [H, W, ...] (scipy's ``uniform_filter`` with mode
  "reflect": the border is mirrored including the edge pixel), as two 1-D window sums."""
  k = 2 * radius + 1
  rest = ((0, 0),) * (x.ndim - 2)
  x = jnp.pad(x, ((radius, radius), (radius, radius)) + rest, mode="symmetric")
  ones = (1,) * (x.ndim - 2)
  x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (k, 1) + ones, (1, 1) + ones, "VALID")
  x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, k) + ones, (1, 1) + ones, "VALID")
  return x / (k * k)


@flax.struct.dataclass
class GuidedFilter:
  """A colour guided filter with its guide's statistics precomputed (``guided_filter_for``):
  ``apply_guided_filter(gf, src)`` is then linear in ``src``, so it can sit inside a loss."""
  guide: jax.Array          # [H, W, 3]
  mean: jax.Array           # [H, W, 3] window means of the guide
  inverse: jax.Array        # [H, W, 3, 3] (window covariance + eps I)^-1
  radius: int = flax.struct.field(pytree_node=False)


@functools.partial(jax.jit, static_argnames="radius")  # eps traced: one program for any eps
def guided_filter_for(guide: jax.Array, *, radius: int, eps: float) -> GuidedFilter:
  """The guided filter of ``guide`` [H, W, 3] (box radius ``radius``, regulariser ``eps``)."""
  guide = jnp.asarray(guide, jnp.float32)
  mean = box_mean(guide, radius)
  var = box_mean(guide[..., :, None] * guide[..., None, :], radius)
  var = var - mean[..., :, None] * mean[..., None, :]
  return GuidedFilter(guide, mean, jnp.linalg.inv(var + eps * jnp.eye(3, dtype=jnp.float32)),
                      radius)


def apply_guided_filter(gf: GuidedFilter, src: jax.Array) -> jax.Array:
  """``src`` [H, W, R] smoothed along the guide's edges: per window the least-squares affine
  function of the guide's colours (a, b), then q = mean(a) I + mean(b) over the windows."""
  r = gf.radius
  mean_p = box_mean(src, r)                                              # [H, W, R]
  cov = box_mean(gf.guide[..., :, None] * src[..., None, :], r)          # [H, W, 3, R]
  a = jnp.einsum("hwij,hwjr->hwir", gf.inverse, cov - gf.mean[..., :, None] * mean_p[..., None, :])
  b = mean_p - jnp.einsum("hwc,hwcr->hwr", gf.mean, a)
  return jnp.einsum("hwc,hwcr->hwr", gf.guide, box_mean(a, r)) + box_mean(b, r)


def guided_filter(guide: np.ndarray, src: np.ndarray, *, radius: int, eps: float) -> np.ndarray:
  """Colour-guided filter: ``src`` [H, W, R] smoothed along the edges of ``guide`` [H, W, 3].

  References:
    He, Sun & Tang, "Guided Image Filtering", PAMI 2013.
  """
  gf = guided_filter_for(guide, radius=radius, eps=eps)
  return np.asarray(apply_guided_filter(gf, jnp.asarray(src, jnp.float32)))


def default_radius(hw: tuple[int, int], divisor: int = SMOOTH_RADIUS_DIVISOR) -> int:
  """The guided filter's default box radius for an image of size ``hw``: long side / divisor."""
  return max(1, round(max(hw) / divisor))


def guided_smooth(image: np.ndarray, guide: np.ndarray, *, radius: int = 0,
                  eps: float = 1e-4) -> np.ndarray:
  """Edge-preserving smoothing of ``image`` guided by the content (Luan's optional post-step).

  Args:
    image: [H, W, 3] stylized output in [0, 1].
    guide: [H, W, 3] the content at the same size.
    radius: box radius; 0 picks max(1, round(long side / ``SMOOTH_RADIUS_DIVISOR``)).
    eps: regulariser; smaller keeps more of the image's detail.

  Returns:
    [H, W, 3] float32 in [0, 1]: locally an affine function of the content's colours.

  References:
    He, Sun & Tang, "Guided Image Filtering", ECCV 2010 / PAMI 2013.
  """
  radius = radius or default_radius(image.shape[:2])
  out = guided_filter(np.asarray(guide, np.float32), np.asarray(image, np.float32),
                            radius=radius, eps=eps)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def conjugate_gradients(matvec, b: jax.Array, x0: jax.Array, *, tol: float, maxiter: int,
                        inverse_diagonal: jax.Array | None = None,
                        scale_start: bool = False) -> tuple[jax.Array, jax.Array]:
  """(Jacobi-preconditioned) conjugate gradients for SPD ``matvec`` on arrays of any shape.

  Stops when ``|b - A x| <= tol |b|`` (``jax.scipy.sparse.linalg.cg``'s criterion) or after
  ``maxiter`` iterations.

  Args:
    matvec: ``v -> A v``, A symmetric positive definite.
    b: the right-hand side.
    x0: the initial guess (same shape as b).
    tol: the residual relative to ``|b|``.
    maxiter: the most iterations.
    inverse_diagonal: 1 / diag(A), broadcastable to b (None: no preconditioner).
    scale_start: start from ``a x0`` with ``a = x0.b / x0.A x0``, the multiple of x0 nearest
      the solution in the A-norm (a one-dimensional Galerkin step, no extra product): never
      worse than starting from 0 or from x0 in that norm. For a warm start from a solution
      of a nearby system (the previous evaluation's), which may be larger or smaller than b
      wants, or of the wrong sign.

  Returns:
    (x, the iterations done, an int32 scalar).

  References:
    Hestenes & Stiefel, "Methods of Conjugate Gradients for Solving Linear Systems", 1952;
    Saad, "Iterative Methods for Sparse Linear Systems", 2003, Alg. 9.1 (preconditioned CG).
  """
  dot = lambda u, v: jnp.vdot(u, v).real
  precond = (lambda r: r) if inverse_diagonal is None else (lambda r: inverse_diagonal * r)
  bound = jnp.square(tol) * dot(b, b)
  ax0 = matvec(x0)
  if scale_start:
    curvature = dot(x0, ax0)  # > 0 unless x0 = 0; then a = 0 (a cold start)
    a = jnp.where(curvature > 0.0, dot(x0, b) / jnp.where(curvature > 0.0, curvature, 1.0), 0.0)
    x0, ax0 = a * x0, a * ax0
  r = b - ax0
  z = precond(r)

  def cond(carry):
    _, r, _, _, k = carry
    return (dot(r, r) > bound) & (k < maxiter)

  def body(carry):
    x, r, p, gamma, k = carry
    q = matvec(p)
    alpha = gamma / dot(p, q)
    x, r = x + alpha * p, r - alpha * q
    z = precond(r)
    gamma_new = dot(r, z)
    return x, r, z + (gamma_new / gamma) * p, gamma_new, k + 1

  x, *_, k = jax.lax.while_loop(cond, body, (x0, r, z, dot(r, z), jnp.int32(0)))
  return x, k


_RECORDERS: list = []  # see ``recording_cg_iterations``


@contextlib.contextmanager
def recording_cg_iterations(record: Callable[[str, int], None]):
  """Programs traced inside this block call ``record(kind, iterations)`` on the host after each
  of their ``affine_system_solve`` solves (kind "forward" or "adjoint"), whenever they run.

  Synopsis::

    counts = []
    with smoothing.recording_cg_iterations(lambda kind, n: counts.append((kind, n))):
      out = jax.jit(f)(x)      # traced (compiled) here
    out = jax.jit(f)(x)        # the cached program still records
  """
  _RECORDERS.append(record)
  try:
    yield
  finally:
    _RECORDERS.remove(record)


def _record(kind: str, iterations: jax.Array) -> None:
  for record in list(_RECORDERS):
    jax.debug.callback(functools.partial(_report, record, kind), iterations)


def _report(record, kind, iterations) -> None:
  record(kind, int(iterations))


def affine_cg(coeffs: matting.MattingCoefficients, b: jax.Array, x0: jax.Array,
              weight: jax.Array | float, *, tol: float, kind: str = "forward",
              precondition: bool = False, scale_start: bool = False) -> jax.Array:
  """One solve of ``(I + weight L) x = b`` by conjugate gradients from ``x0``, not
  differentiable (``affine_system_solve`` is); its iterations are recorded as ``kind``
  (``recording_cg_iterations``). For callers that differentiate through the solve themselves
  (the adjoint is a solve with the same symmetric system) and carry their own starts.

  Args:
    coeffs: the guide's ``matting.MattingCoefficients``.
    b: the right-hand side [(B,) H, W, C].
    x0: the initial guess, shaped like b.
    weight: the Laplacian's weight.
    tol: the residual relative to ``|b|``.
    kind: the label its iteration count is recorded under ("forward", "adjoint").
    precondition: Jacobi preconditioning with ``1 / (1 + weight diag L)``.
    scale_start: start from the best multiple of x0 (``conjugate_gradients``).

  Returns:
    The solution, shaped like b.
  """
  op = lambda v: v + weight * matting.apply_with_coefficients(coeffs, v)
  inverse = None
  if precondition:
    inverse = 1.0 / (1.0 + weight * matting.laplacian_diagonal(coeffs))[..., None]  # [(B,) H, W, 1]
  x, k = conjugate_gradients(op, jax.lax.stop_gradient(b), jax.lax.stop_gradient(x0), tol=tol,
                             maxiter=AFFINE_MAX_ITERS, inverse_diagonal=inverse,
                             scale_start=scale_start)
  _record(kind, k)
  return x


def affine_system_solve(coeffs: matting.MattingCoefficients, image: jax.Array, x0: jax.Array,
                        weight: jax.Array | float, *, tol: float = 1e-6,
                        precondition: bool = False,
                        adjoint_x0: jax.Array | None = None) -> jax.Array:
  """Solves ``(I + weight L) x = image`` per channel (and image of a batch) by conjugate
  gradients (I + wL is SPD), L applied matrix-free from ``coeffs``, to a residual of ``tol``
  relative to ``image``; differentiable in ``image`` (``lax.custom_linear_solve``: the backward
  pass is one more solve), not in ``x0``.

  Args:
    coeffs: the guide's ``matting.MattingCoefficients``.
    image: the right-hand side [(B,) H, W, C].
    x0: the forward solve's initial guess (e.g. the previous solution; ``image`` itself).
    weight: the Laplacian's weight.
    tol: the residual of both solves, relative to their right-hand sides.
    precondition: Jacobi preconditioning with ``1 / (1 + weight diag L)``.
    adjoint_x0: the backward solve's initial guess (e.g. the previous evaluation's gradient);
      None: zero. (Not ``x0``: a cotangent is rough, and from itself the initial residual
      ``weight L g`` would be far larger than ``g``.)

  Returns:
    The solution, shaped like ``image``.
  """
  op = lambda v: v + weight * matting.apply_with_coefficients(coeffs, v)
  inverse = None
  if precondition:
    inverse = 1.0 / (1.0 + weight * matting.laplacian_diagonal(coeffs))[..., None]  # [(B,) H, W, 1]

  def cg(kind, start, matvec, b):
    x, k = conjugate_gradients(matvec, b, start, tol=tol, maxiter=AFFINE_MAX_ITERS,
                               inverse_diagonal=inverse)
    _record(kind, k)
    return x

  start = jax.lax.stop_gradient(x0)
  adjoint = None if adjoint_x0 is None else jax.lax.stop_gradient(adjoint_x0)
  return jax.lax.custom_linear_solve(
      op, image, functools.partial(cg, "forward", start),
      lambda matvec, b: cg("adjoint", jnp.zeros_like(b) if adjoint is None else adjoint,
                           matvec, b), symmetric=True)


_affine_solve = jax.jit(affine_system_solve)


def affine_smooth(image: np.ndarray, guide: np.ndarray, *, weight: float = AFFINE_WEIGHT,
                  budget: float = 0.0, min_weight: float = 0.0,
                  eps: float = EVAL_EPS) -> tuple[np.ndarray, float]:
  """Smooth local affine post-step: the image nearest ``image`` that is locally affine in the
  guide's colours.

  Minimizes ``|O - image|^2 + weight * sum_c O_c^T L O_c`` with L the guide's matting Laplacian
  (3x3 windows, ``eps``), i.e. solves ``(I + weight L) O = image`` per channel with the
  matrix-free ``L`` and conjugate gradients; O(pixels) memory, jit-compiled, on any device.
  Unlike the guided filter it changes only what the matting energy penalizes, so at the same
  matting energy it keeps more of the style (docs/photoreal.md, fourth calibration).

  Args:
    image: [H, W, 3] stylized output in [0, 1].
    guide: [H, W, 3] the content at the same size.
    weight: the penalty's weight (> 0); larger: closer to locally affine, further from ``image``.
    budget: if > 0, ``weight`` is ignored and chosen per image instead: 0 (``image`` unchanged)
      if its matting ratio (under the same Laplacian) is at most ``budget``, else the smallest
      weight in [``AFFINE_MIN_WEIGHT``, ``AFFINE_MAX_WEIGHT``], to within a factor 1.1, that
      brings it within (the largest if none does).
    min_weight: with a budget, the weight is at least this (for networks trained through the
      post-step at that weight, ``PhotoTrainConfig.affine_output``); 0: none (``image`` itself
      when within budget).
    eps: the Laplacian's regulariser (``matting_ratio``'s by default).

  Returns:
    (the image [H, W, 3] float32 clipped to [0, 1], the weight used).

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017 (its "smooth local
    affine" post-processing); Levin, Lischinski & Weiss, PAMI 2008 (the Laplacian).
  """
  if not (weight > 0 and budget >= 0 and min_weight >= 0):
    raise UserError(f"need a smoothing weight > 0 and a matting budget and least weight >= 0, "
                    f"got {weight}, {budget}, {min_weight}")
  coeffs = matting.matting_coefficients(jnp.asarray(guide, jnp.float32), eps=eps)
  b = jnp.asarray(np.clip(image, 0.0, 1.0), jnp.float32)
  solve = lambda w, x0: np.clip(np.asarray(_affine_solve(coeffs, b, x0, jnp.float32(w))),
                                0.0, 1.0)
  if budget <= 0:
    return solve(weight, b), float(weight)
  energy = lambda v: float(matting.energy_with_coefficients(coeffs, jnp.asarray(v)))
  target = budget * max(energy(guide), 1e-12)
  lo = float(min_weight)
  out = solve(lo, b) if lo > 0 else np.asarray(b)
  if energy(out) <= target:
    return out, lo
  # Grow hi until within budget, then bisect (in log).
  hi = min(max(AFFINE_MIN_WEIGHT, 4 * lo), AFFINE_MAX_WEIGHT)
  out = solve(hi, out)
  while energy(out) > target and hi < AFFINE_MAX_WEIGHT:
    lo, hi = hi, min(4 * hi, AFFINE_MAX_WEIGHT)
    out = solve(hi, out)
  while lo > 0 and hi / lo > 1.1:
    mid = float(np.sqrt(lo * hi))
    trial = solve(mid, out)
    if energy(trial) > target:
      lo = mid
    else:
      hi, out = mid, trial
  return out, hi
