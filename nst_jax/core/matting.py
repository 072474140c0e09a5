"""The matting Laplacian (Levin et al. 2008): a sparse host reference and a matrix-free JAX apply.

Synopsis::

  from nst_jax.core import matting
  L = matting.build_matting_laplacian(image)               # scipy CSR [N, N], float64, host
  coeffs = matting.matting_coefficients(image)             # once per content image
  lv = matting.apply_with_coefficients(coeffs, v)          # L @ v, [.., H, W, C]; jit it
  e = matting.energy_with_coefficients(coeffs, v)          # sum_c v_c^T L v_c (Luan's L_m)
  d = matting.laplacian_diagonal(coeffs)                   # diag(L), [H, W]: Jacobi

For every (2r+1)x(2r+1) window w_k lying fully inside the image, with centred colours
``D_k = I_w - mu_k`` ([|w|, 3]), the Laplacian restricted to the window is

  L_k = Id - 11^T / |w| - D_k (D_k^T D_k + eps Id)^-1 D_k^T,

which is Levin's ``delta_ij - (1 + (I_i - mu_k)^T (Sigma_k + eps/|w| Id)^-1 (I_j - mu_k)) / |w|``
written with ``Sigma_k = D_k^T D_k / |w|``, and ``L = sum_k S_k^T L_k S_k`` with S_k the window
gather. The matrix-free apply evaluates this sum with shifted slices (box sums).

Numerics. With Luan's ``eps = 1e-7`` the regularised covariance has a condition number near
1e7 at high-contrast, grey-ish windows, so forming ``(Sigma + eps/|w|)^-1`` in float32 loses all
digits. We never form it: per window we store ``Q_k = D_k R_k^-1`` ([|w|, 3], the "whitened"
centred colours), where ``R_k`` is the R factor of ``[D_k; sqrt(eps) Id]``, obtained by
Gram-Schmidt with re-orthogonalisation on that well-conditioned stacked matrix. Then
``D (D^T D + eps)^-1 D^T = Q Q^T`` with ``||Q|| <= 1``, so the apply only involves bounded
numbers, and ``L_k = Id - 11^T/|w| - Q Q^T`` stays symmetric PSD in float32 up to rounding.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from nst_jax.core.errors import UserError

LUAN_EPS = 1e-7  # Luan et al. 2017, deepmatting_seg.lua / gen_laplacian.m


class MattingCoefficients(NamedTuple):
  """Image-only window coefficients of the matting Laplacian (a pytree; pass it through jit).

  Attributes:
    whitened: ``Q_k`` per window, [B, K, c, H + 2r, W + 2r] (or without B for a single image):
      K = (2r + 1)^2 window offsets in row-major order, c colour channels; the H - 2r by W - 2r
      windows padded with 2r zeros on every side, so that ``L v`` reads every pixel's covering
      windows at in-bounds offsets without padding Q at every apply. Planar layout (the long
      spatial axes last) because the per-pixel work is a few dozen multiply-adds of tiny vectors,
      which vectorise along rows, not along a trailing axis of 3.
  """
  whitened: jax.Array


def _offsets(radius: int) -> list[tuple[int, int]]:
  size = 2 * radius + 1
  return [(dy, dx) for dy in range(size) for dx in range(size)]


def _check_size(hw: tuple[int, int], radius: int) -> None:
  if radius < 1 or min(hw) < 2 * radius + 1:
    size = 2 * radius + 1
    raise UserError(f"matting Laplacian needs radius >= 1 and an image of at least {size}x{size} "
                    f"pixels; got {hw[0]}x{hw[1]}, radius {radius}")


def _window_planes(x: jax.Array, radius: int) -> list[jax.Array]:
  """[B, C, H, W] -> K arrays [B, C, H', W']: each window's pixel at one offset (valid slices)."""
  h_out, w_out = x.shape[-2] - 2 * radius, x.shape[-1] - 2 * radius
  return [x[..., dy:dy + h_out, dx:dx + w_out] for dy, dx in _offsets(radius)]


# A column of ``[D; sqrt(eps) Id]`` is a pair (top, bottom) of either K and c planes
# [B, H', W'] ("unrolled": every operation is per plane, so XLA fuses the whole computation into
# a few loops, but the program has ~K times as many operations to compile) or two arrays
# [B, H', W', K] and [B, H', W', c] ("stacked": cheaper to compile, slower to run on a CPU;
# docs/research/implementation_notes.md). The helpers below take either.


def _inner(a, b):
  """Per-window inner product of two plane lists or two stacked arrays: [B, H', W'(, 1)]."""
  if isinstance(a, list):
    return sum(x * y for x, y in zip(a, b))
  return (a * b).sum(-1, keepdims=True)


def _minus(x, p, q):
  """x - p * q, per plane or stacked."""
  if isinstance(x, list):
    return [xi - p * qi for xi, qi in zip(x, q)]
  return x - p * q


def _times(x, s):
  return [xi * s for xi in x] if isinstance(x, list) else x * s


def _centre(x):
  """Plane list or stacked array [..., K] minus its mean over the window offsets K."""
  if isinstance(x, list):
    mean = sum(x) / len(x)
    return [p - mean for p in x]
  return x - x.mean(axis=-1, keepdims=True)


def _whiten(columns: list, eps: float) -> list:
  """Top block of the orthonormal Q factor of ``[D; sqrt(eps) Id]``, per window.

  Args:
    columns: D's c columns (colour j), each K planes [B, H', W'] or one array [B, H', W', K].
    eps: the regulariser.

  Returns:
    Q's columns in the same form, with ``Q Q^T = D (D^T D + eps Id)^-1 D^T`` per window.
  """
  c, stacked = len(columns), not isinstance(columns[0], list)
  zero = jnp.zeros_like(columns[0][..., :1] if stacked else columns[0][0])
  root = jnp.sqrt(jnp.asarray(eps, zero.dtype))
  tops, bots = [], []
  for j in range(c):
    top = columns[j]
    bot = [zero + root if i == j else zero for i in range(c)]
    bot = jnp.concatenate(bot, axis=-1) if stacked else bot
    for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to rounding ("twice is enough")
      for q_top, q_bot in zip(tops, bots):
        proj = _inner(q_top, top) + _inner(q_bot, bot)
        top, bot = _minus(top, proj, q_top), _minus(bot, proj, q_bot)
    inv_norm = jax.lax.rsqrt(_inner(top, top) + _inner(bot, bot))  # norm >= sqrt(eps) > 0
    tops.append(_times(top, inv_norm))
    bots.append(_times(bot, inv_norm))
  return tops


def _as_batch(x: jax.Array, ndim: int) -> tuple[jax.Array, bool]:
  x = jnp.asarray(x)
  if x.ndim == ndim - 1:
    return x[None], True
  if x.ndim != ndim:
    raise ValueError(f"expected a {ndim - 1}-d or batched {ndim}-d array, got shape {x.shape}")
  return x, False


@functools.partial(jax.jit, static_argnames=("radius", "unroll"))  # eps traced: one program
def matting_coefficients(image: jax.Array, *, eps: float = LUAN_EPS, radius: int = 1,
                         unroll: bool = False) -> MattingCoefficients:
  """Precomputes the image-dependent window coefficients of the matting Laplacian.

  Args:
    image: [H, W, c] or [B, H, W, c], colours in [0, 1] (Levin's and Luan's convention; eps
      is relative to that range). Computed in the image's dtype.
    eps: the regulariser of the window covariances (Luan et al.: 1e-7).
    radius: window radius r; windows are (2r+1)x(2r+1) and lie fully inside the image.
    unroll: compute each window offset's plane separately (the same values up to rounding): a
      program faster to run on a CPU and slower to compile (docs/research/
      implementation_notes.md). For callers that run it on every step (training); a one-off
      precomputation is cheaper without.

  Returns:
    ``MattingCoefficients`` for ``apply_with_coefficients`` / ``energy_with_coefficients``.

  References:
    Levin, Lischinski & Weiss, "A Closed-Form Solution to Natural Image Matting", PAMI 2008.
    He, Sun & Tang, "Fast Matting Using Large Kernel Matting Laplacian Matrices", CVPR 2010.
  """
  image_b, single = _as_batch(image, 4)
  _check_size(image_b.shape[1:3], radius)
  c = image_b.shape[-1]
  planes = _window_planes(jnp.moveaxis(image_b, -1, 1), radius)   # K x [B, c, H', W']
  if unroll:
    columns = [[p[:, j] for p in planes] for j in range(c)]       # c x K x [B, H', W']
  else:
    columns = list(jnp.moveaxis(jnp.stack(planes, axis=-1), 1, 0))  # c x [B, H', W', K]
  # Second pass: zero mean to rounding, not to |I| * ulp. Exact Q has zero-mean columns (D
  # does); centring them too makes L annihilate constants exactly.
  columns = [_centre(col) for col in _whiten([_centre(_centre(col)) for col in columns], eps)]
  if unroll:
    whitened = jnp.stack([jnp.stack(col, axis=1) for col in columns], axis=2)
  else:
    whitened = jnp.moveaxis(jnp.stack(columns, axis=1), -1, 1)
  whitened = _pad_windows(whitened, radius)                        # [B, K, c, H+2r, W+2r]
  return MattingCoefficients(whitened[0] if single else whitened)


def _pad_windows(x: jax.Array, radius: int) -> jax.Array:
  """Pads the two trailing (window) axes with 2r zeros on each side."""
  r2 = 2 * radius
  return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(r2, r2), (r2, r2)])


class _Projection(NamedTuple):
  """Intermediates of ``L v`` (planar layout; see ``_project``)."""
  q: jax.Array              # [B, K, c, H + 2r, W + 2r] the whitened window colours, padded
  v: jax.Array              # [B, C, H, W]
  mean: jax.Array           # [B, C, H', W'] window means of v
  centred: list[jax.Array]  # K x [B, C, H', W'] window pixels of v minus their window's mean
  proj: list[jax.Array]     # c x [B, C, H', W'] Q_k^T v_k per colour
  single: bool              # whether both inputs were unbatched
  radius: int


def _project(coeffs: MattingCoefficients, v: jax.Array) -> _Projection:
  """Window pixels of v, centred, and their projections on Q (planar layout)."""
  q, q_single = _as_batch(coeffs.whitened, 5)             # [B, K, c, H + 2r, W + 2r]
  v_b, v_single = _as_batch(v, 4)                         # [B, H, W, C]
  k, c, h_pad, w_pad = q.shape[1:]
  radius = (int(round(np.sqrt(k))) - 1) // 2
  r2 = 2 * radius
  if v_b.shape[1:3] != (h_pad - r2, w_pad - r2):
    raise ValueError(f"v of spatial size {v_b.shape[1:3]} does not match the coefficients, "
                     f"made for {(h_pad - r2, w_pad - r2)}")
  q_windows = q[..., r2:h_pad - r2, r2:w_pad - r2]        # [B, K, c, H', W']
  v_planar = jnp.moveaxis(v_b.astype(q.dtype), -1, 1)
  planes = _window_planes(v_planar, radius)               # K x [B, C, H', W']
  mean = sum(planes) / len(planes)
  centred = [p - mean for p in planes]
  # Q has zero-mean columns, so Q^T v = Q^T (v - mean): use the centred values (less rounding).
  proj = [sum(q_windows[:, i, j, None] * centred[i] for i in range(k)) for j in range(c)]
  return _Projection(q, v_planar, mean, centred, proj, q_single and v_single, radius)


def apply_with_coefficients(coeffs: MattingCoefficients, v: jax.Array) -> jax.Array:
  """Matrix-free ``L @ v`` from precomputed coefficients, per image and per channel of v.

  Args:
    coeffs: from ``matting_coefficients`` (single image or batch of B).
    v: [H, W, C] or [B, H, W, C]; an unbatched side broadcasts against a batched one.

  Returns:
    ``L v`` with the shape of v (batched if either input is; channels independent), in the
    coefficients' dtype.

  References:
    Levin, Lischinski & Weiss, "A Closed-Form Solution to Natural Image Matting", PAMI 2008.
  """
  pr = _project(coeffs, v)
  h, w = pr.v.shape[-2:]
  # L v = sum_k S_k^T (v_k - mean_k - Q_k Q_k^T v_k). The first two terms do not depend on the
  # offset: (windows covering the pixel) * v minus the covering windows' means. Summing them
  # per offset instead would recompute each window mean for every offset (slower on a CPU).
  # Gather form: each output pixel reads its covering windows from arrays padded by 2r.
  r2 = 2 * pr.radius
  pad = lambda x: _pad_windows(x, pr.radius)
  at = lambda x, dy, dx: x[..., r2 - dy:r2 - dy + h, r2 - dx:r2 - dx + w]
  offsets = list(enumerate(_offsets(pr.radius)))
  count = pad(jnp.ones(pr.mean.shape[-2:], pr.q.dtype))
  mean, proj, q = pad(pr.mean), [pad(p) for p in pr.proj], pr.q
  out = (sum(at(count, dy, dx) for _, (dy, dx) in offsets) * pr.v
         - sum(at(mean, dy, dx) for _, (dy, dx) in offsets)
         - sum(at(q[:, i, j, None], dy, dx) * at(p, dy, dx)
               for i, (dy, dx) in offsets for j, p in enumerate(proj)))
  out = jnp.moveaxis(out, 1, -1)                                           # [B, H, W, C]
  return out[0] if pr.single else out


def laplacian_diagonal(coeffs: MattingCoefficients) -> jax.Array:
  """The diagonal of L, [H, W] (or [B, H, W]): per pixel, the sum over the windows covering it
  of ``1 - 1/|w| - |Q_k row|^2`` (``L_k``'s diagonal); the Jacobi preconditioner of
  ``I + weight L``.

  References:
    Levin, Lischinski & Weiss, "A Closed-Form Solution to Natural Image Matting", PAMI 2008.
  """
  q = coeffs.whitened                                     # [(B,) K, c, H + 2r, W + 2r]
  k, h_pad, w_pad = q.shape[-4], q.shape[-2], q.shape[-1]
  radius = (int(round(np.sqrt(k))) - 1) // 2
  r2 = 2 * radius
  h, w = h_pad - r2, w_pad - r2
  norms = jnp.sum(jnp.square(q), axis=-3)                 # [(B,) K, H + 2r, W + 2r]
  count = _pad_windows(jnp.ones((h - r2, w - r2), q.dtype), radius)
  at = lambda x, dy, dx: x[..., r2 - dy:r2 - dy + h, r2 - dx:r2 - dx + w]
  return sum(at(count, dy, dx) * (1.0 - 1.0 / k) - at(norms[..., i, :, :], dy, dx)
             for i, (dy, dx) in enumerate(_offsets(radius)))


def energy_with_coefficients(coeffs: MattingCoefficients, v: jax.Array) -> jax.Array:
  """``sum_c v_c^T L v_c`` per example: Luan et al.'s photorealism regulariser L_m.

  Per window, ``v_k^T L_k v_k = |v_k - mean(v_k)|^2 - |Q_k^T v_k|^2``.

  Args:
    coeffs: from ``matting_coefficients``.
    v: [H, W, C] or [B, H, W, C].

  Returns:
    A scalar for unbatched v, else [B]. Its gradient with respect to v is ``2 L v``.

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017, eq. (2).
  """
  pr = _project(coeffs, v)
  axes = (1, 2, 3)
  energy = (sum(jnp.sum(jnp.square(x), axis=axes) for x in pr.centred)
            - sum(jnp.sum(jnp.square(p), axis=axes) for p in pr.proj))      # [B]
  return energy[0] if pr.single else energy


def matting_apply(image: jax.Array, v: jax.Array, *, eps: float = LUAN_EPS,
                  radius: int = 1) -> jax.Array:
  """``L(image) @ v`` without building L; see ``apply_with_coefficients``.

  Args:
    image: [H, W, c] or [B, H, W, c] in [0, 1].
    v: [H, W, C] or [B, H, W, C].
    eps: covariance regulariser (Luan et al.: 1e-7).
    radius: window radius (1: 3x3 windows).

  Returns:
    ``L v``, shaped like v.
  """
  return apply_with_coefficients(matting_coefficients(image, eps=eps, radius=radius), v)


def matting_energy(image: jax.Array, v: jax.Array, *, eps: float = LUAN_EPS,
                   radius: int = 1) -> jax.Array:
  """``sum_c v_c^T L(image) v_c`` per example; see ``energy_with_coefficients``.

  Args:
    image: [H, W, c] or [B, H, W, c] in [0, 1].
    v: [H, W, C] or [B, H, W, C].
    eps: covariance regulariser (Luan et al.: 1e-7).
    radius: window radius (1: 3x3 windows).

  Returns:
    A scalar for unbatched inputs, else [B].
  """
  return energy_with_coefficients(matting_coefficients(image, eps=eps, radius=radius), v)


def build_matting_laplacian(image: np.ndarray, *, eps: float = LUAN_EPS,
                            radius: int = 1) -> scipy.sparse.csr_matrix:
  """The matting Laplacian as a sparse float64 matrix (host reference, vectorised numpy).

  Pixels are numbered row-major (``index = y * W + x``), as ``image.reshape(-1, c)``.

  Args:
    image: [H, W, c] colours in [0, 1].
    eps: covariance regulariser (Luan et al.: 1e-7).
    radius: window radius; only windows fully inside the image are used (Levin's code).

  Returns:
    ``scipy.sparse.csr_matrix`` [H*W, H*W], symmetric PSD, annihilating constants.

  References:
    Levin, Lischinski & Weiss, "A Closed-Form Solution to Natural Image Matting", PAMI 2008.
  """
  img = np.asarray(image, np.float64)
  if img.ndim != 3:
    raise ValueError(f"expected an [H, W, c] image, got shape {img.shape}")
  h, w, c = img.shape
  _check_size((h, w), radius)
  h_out, w_out = h - 2 * radius, w - 2 * radius
  index_dtype = np.int32 if h * w < 2**31 else np.int64
  pixel = np.arange(h * w, dtype=index_dtype).reshape(h, w)
  win = np.stack([pixel[dy:dy + h_out, dx:dx + w_out].ravel()
                  for dy, dx in _offsets(radius)], axis=1)           # [n, K]
  k = win.shape[1]
  centred = img.reshape(-1, c)[win]                                   # [n, K, c]
  centred -= centred.mean(axis=1, keepdims=True)
  cov = np.matmul(centred.transpose(0, 2, 1), centred) / k            # [n, c, c]
  inv = np.linalg.inv(cov + (eps / k) * np.eye(c))
  block = np.eye(k) - (1.0 + centred @ inv @ centred.transpose(0, 2, 1)) / k  # [n, K, K]
  rows = np.repeat(win, k, axis=1).ravel()
  cols = np.tile(win, (1, k)).ravel()
  lap = scipy.sparse.coo_matrix((block.ravel(), (rows, cols)), shape=(h * w, h * w))
  return lap.tocsr()  # duplicates (overlapping windows) are summed
