"""Matting Laplacian: sparse build vs Levin's formula, matrix-free vs sparse, invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import matting
from nst_jax.core.errors import UserError


def levin_dense(image, eps, radius):
  """Levin et al.'s getLaplacian1, one window at a time (E[II^T] - mu mu^T form), dense."""
  h, w, c = image.shape
  size = 2 * radius + 1
  n = size * size
  lap = np.zeros((h * w, h * w))
  for y in range(radius, h - radius):
    for x in range(radius, w - radius):
      idx = np.array([(y + dy) * w + (x + dx) for dy in range(-radius, radius + 1)
                      for dx in range(-radius, radius + 1)])
      win = image.reshape(-1, c)[idx]
      mu = win.mean(0)
      var = np.linalg.inv(win.T @ win / n - np.outer(mu, mu) + eps / n * np.eye(c))
      centred = win - mu
      lap[np.ix_(idx, idx)] += np.eye(n) - (1 + centred @ var @ centred.T) / n
  return lap


def _random(rng, shape):
  return rng.random(shape)


@pytest.mark.parametrize("radius,eps", [(1, 1e-7), (2, 1e-4)])
def test_sparse_build_matches_levin_loop(rng, radius, eps):
  image = _random(rng, (7, 9, 3))
  lap = matting.build_matting_laplacian(image, eps=eps, radius=radius)
  ref = levin_dense(image, eps, radius)
  assert lap.shape == (63, 63)
  np.testing.assert_allclose(lap.toarray(), ref, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("radius", [1, 2])
def test_matrix_free_matches_sparse_float64(rng, radius):
  image, v = _random(rng, (12, 15, 3)), rng.standard_normal((12, 15, 4))
  lap = matting.build_matting_laplacian(image, radius=radius)
  ref = (lap @ v.reshape(-1, 4)).reshape(v.shape)
  with jax.enable_x64(True):
    out = np.asarray(matting.matting_apply(jnp.asarray(image), jnp.asarray(v), radius=radius))
    energy = float(matting.matting_energy(jnp.asarray(image), jnp.asarray(v), radius=radius))
  assert out.dtype == np.float64
  assert np.linalg.norm(out - ref) <= 1e-5 * np.linalg.norm(ref)
  ref_energy = float(np.sum(v.reshape(-1, 4) * (lap @ v.reshape(-1, 4))))
  assert abs(energy - ref_energy) <= 1e-5 * abs(ref_energy)


def test_unrolled_and_stacked_coefficients_agree(rng):
  # The two forms of the same arithmetic (planes per window offset, or arrays with an offset
  # axis) differ only in the order of their sums: to rounding in float64, and in float32 on
  # the ill-conditioned grey-ish image of the next test. Radius 1, the one training unrolls
  # (radius 2 unrolled takes ~6 s to compile; the stacked form is checked at radius 2 above).
  radius = 1
  image = _random(rng, (2, 11, 13, 3))
  with jax.enable_x64(True):
    coeffs = [np.asarray(matting.matting_coefficients(jnp.asarray(image), radius=radius,
                                                      unroll=u).whitened) for u in (True, False)]
  assert coeffs[0].shape == (2, (2 * radius + 1) ** 2, 3, 11 + 2 * radius, 13 + 2 * radius)
  np.testing.assert_allclose(coeffs[1], coeffs[0], atol=1e-12)
  gray = rng.random((12, 15, 1))
  image = np.concatenate([gray, gray + 1e-3 * rng.random((12, 15, 2))], axis=-1)
  v = jnp.asarray(rng.standard_normal((12, 15, 3)), jnp.float32)
  applied = [np.asarray(matting.apply_with_coefficients(matting.matting_coefficients(
      jnp.asarray(image, jnp.float32), radius=radius, unroll=u), v)) for u in (True, False)]
  assert np.linalg.norm(applied[1] - applied[0]) <= 1e-4 * np.linalg.norm(applied[0])


def test_matrix_free_float32_close_to_sparse(rng):
  # float32: the image itself is rounded to ~6e-8 and eps = 1e-7 makes windows ill-conditioned
  # (cond ~ 1e7 on grey-ish windows); the whitened form keeps the error near 1e-6 relative,
  # where forming (Sigma + eps)^-1 in float32 would give O(1) errors. 1e-4 leaves a margin.
  gray = rng.random((12, 15, 1))
  image = np.concatenate([gray, gray + 1e-3 * rng.random((12, 15, 2))], axis=-1)
  v = rng.standard_normal((12, 15, 3))
  lap = matting.build_matting_laplacian(image.astype(np.float32))
  ref = (lap @ v.reshape(-1, 3)).reshape(v.shape)
  out = np.asarray(matting.matting_apply(jnp.asarray(image, jnp.float32),
                                         jnp.asarray(v, jnp.float32)))
  assert out.dtype == np.float32
  assert np.linalg.norm(out - ref) <= 1e-4 * np.linalg.norm(ref)


def test_constants_in_null_space(rng):
  image = jnp.asarray(_random(rng, (12, 15, 3)), jnp.float32)
  lap = matting.build_matting_laplacian(np.asarray(image))
  assert np.abs(lap @ np.ones(12 * 15)).max() < 1e-9
  const = jnp.ones((12, 15, 2)) * jnp.array([1.0, -3.0])
  out = matting.matting_apply(image, const)
  assert float(jnp.abs(out).max()) < 1e-4
  assert abs(float(matting.matting_energy(image, const))) < 1e-4


def test_local_affine_functions_have_tiny_energy(rng):
  # The Laplacian's null space (eps -> 0) holds the functions that are affine in the colours.
  image = jnp.asarray(_random(rng, (12, 15, 3)), jnp.float32)
  affine = image @ jnp.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.0]]) + jnp.array([0.1, 0.2])
  noise = jnp.asarray(rng.standard_normal((12, 15, 2)), jnp.float32) * jnp.std(affine)
  e_affine = float(matting.matting_energy(image, affine))
  e_noise = float(matting.matting_energy(image, noise))
  assert e_noise > 1.0
  assert abs(e_affine) < 1e-4 * e_noise


def test_symmetric(rng):
  image = jnp.asarray(_random(rng, (12, 15, 3)), jnp.float32)
  u, v = (jnp.asarray(rng.standard_normal((12, 15, 3)), jnp.float32) for _ in range(2))
  coeffs = matting.matting_coefficients(image)
  lu = matting.apply_with_coefficients(coeffs, u)
  lv = matting.apply_with_coefficients(coeffs, v)
  np.testing.assert_allclose(float(jnp.vdot(lu, v)), float(jnp.vdot(u, lv)), rtol=1e-5)
  lap = matting.build_matting_laplacian(np.asarray(image))
  assert abs(lap - lap.T).max() < 1e-12


def test_positive_semidefinite(rng):
  image = _random(rng, (8, 9, 3))
  dense = matting.build_matting_laplacian(image).toarray()
  eig = np.linalg.eigvalsh(dense)
  assert eig.min() >= -1e-9 * eig.max()
  # The matrix-free operator in float32, materialised column by column.
  coeffs = matting.matting_coefficients(jnp.asarray(image, jnp.float32))
  basis = jnp.eye(72, dtype=jnp.float32).reshape(72, 8, 9, 1)
  cols = matting.apply_with_coefficients(coeffs, basis).reshape(72, 72)
  eig32 = np.linalg.eigvalsh(np.asarray(cols, np.float64))
  assert eig32.min() >= -1e-5 * eig32.max()
  np.testing.assert_allclose(eig32, eig, atol=1e-4 * eig.max())


def test_energy_gradient_is_twice_apply(rng):
  image = jnp.asarray(_random(rng, (12, 15, 3)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((12, 15, 3)), jnp.float32)
  coeffs = matting.matting_coefficients(image)
  grad = jax.grad(lambda x: matting.energy_with_coefficients(coeffs, x))(v)
  np.testing.assert_allclose(grad, 2 * matting.apply_with_coefficients(coeffs, v),
                             atol=1e-4 * float(jnp.abs(grad).max()))


def test_jit_and_batch_match_per_image(rng):
  images = jnp.asarray(_random(rng, (2, 12, 15, 3)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((2, 12, 15, 2)), jnp.float32)
  per_image = jnp.stack([matting.matting_apply(images[b], v[b]) for b in range(2)])
  energies = jnp.stack([matting.matting_energy(images[b], v[b]) for b in range(2)])
  coeffs = jax.jit(matting.matting_coefficients)(images)
  batched = jax.jit(matting.apply_with_coefficients)(coeffs, v)
  vmapped = jax.vmap(matting.matting_apply)(images, v)
  tol = dict(rtol=1e-5, atol=1e-5 * float(jnp.abs(per_image).max()))
  np.testing.assert_allclose(batched, per_image, **tol)
  np.testing.assert_allclose(vmapped, per_image, **tol)
  np.testing.assert_allclose(jax.jit(matting.energy_with_coefficients)(coeffs, v), energies,
                             rtol=1e-5)
  # One image's coefficients broadcast over a batch of v.
  shared = matting.apply_with_coefficients(matting.matting_coefficients(images[0]), v)
  np.testing.assert_allclose(shared[1], matting.matting_apply(images[0], v[1]), **tol)


def test_too_small_image_is_a_user_error():
  with pytest.raises(UserError):
    matting.build_matting_laplacian(np.zeros((2, 5, 3)))
  with pytest.raises(UserError):
    matting.matting_coefficients(jnp.zeros((5, 4, 3)), radius=2)
