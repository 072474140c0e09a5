"""Losses against numpy references, their invariants and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nst_jax.core import losses


def _feats(rng, b=2, h=5, w=7, c=4):
  return rng.normal(size=(b, h, w, c)).astype(np.float32)


def np_gram_unnormalized(f):  # [H, W, C] -> [C, C]
  m = f.reshape(-1, f.shape[-1])
  return m.T @ m


def test_content_loss_matches_numpy(rng):
  f, t = _feats(rng), _feats(rng)
  want = [np.sum((f[i] - t[i]) ** 2) / f[i].size for i in range(2)]
  np.testing.assert_allclose(jax.jit(losses.content_loss)(f, t), want, rtol=1e-5)
  np.testing.assert_allclose(losses.content_loss(f, f), 0.0, atol=1e-7)


def test_gram_matches_numpy_and_is_symmetric_psd(rng):
  f = _feats(rng)
  g = np.asarray(jax.jit(losses.gram_matrix)(f))
  for i in range(2):
    np.testing.assert_allclose(g[i], np_gram_unnormalized(f[i]) / 35, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g[i], g[i].T, atol=1e-6)
    assert np.linalg.eigvalsh(g[i].astype(np.float64)).min() > -1e-5


def test_gram_style_loss_is_gatys_normalization(rng):
  f, s = _feats(rng, b=1), _feats(rng, b=1)
  n, m = 4, 35
  want = np.sum((np_gram_unnormalized(f[0]) - np_gram_unnormalized(s[0])) ** 2) / (4 * n**2 * m**2)
  got = losses.style_loss(f, losses.style_target(s, "gram"), "gram")
  np.testing.assert_allclose(got, [want], rtol=1e-4)


def test_masked_gram_matches_numpy_and_reduces_to_gram(rng):
  f = _feats(rng, b=1)
  masks = rng.uniform(size=(1, 2, 5, 7)).astype(np.float32)
  got = np.asarray(jax.jit(losses.masked_gram)(f, masks))
  fm = f[0].reshape(-1, 4)
  for r in range(2):
    m = masks[0, r].reshape(-1)
    np.testing.assert_allclose(got[0, r], (fm * m[:, None]).T @ fm / m.sum(), rtol=1e-5, atol=1e-6)
  ones = np.ones((1, 1, 5, 7), np.float32)
  np.testing.assert_allclose(losses.masked_gram(f, ones)[:, 0], losses.gram_matrix(f), rtol=1e-5)


def test_masked_style_loss_weights_regions_and_ignores_missing_ones(rng):
  f, s = _feats(rng, b=1), _feats(rng, b=1)
  masks = np.zeros((1, 2, 5, 7), np.float32)
  masks[0, 0, :, :3], masks[0, 1, :, 3:] = 1, 1
  tg = losses.masked_gram(s, masks)
  per_region = np.asarray(losses.gram_style_loss(losses.masked_gram(f, masks), tg))[0]
  share = np.array([15 / 35, 20 / 35])
  both = losses.masked_style_loss(f, masks, tg, np.ones((1, 2), np.float32))
  np.testing.assert_allclose(both, [np.sum(per_region * share)], rtol=1e-5)
  only_first = losses.masked_style_loss(f, masks, tg, np.array([[1.0, 0.0]], np.float32))
  np.testing.assert_allclose(only_first, [per_region[0] * share[0]], rtol=1e-5)


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_losses_are_zero_at_target_and_positive_elsewhere(rng, kind):
  f, s = _feats(rng), _feats(rng)
  np.testing.assert_allclose(losses.style_loss(f, losses.style_target(f, kind), kind), 0, atol=1e-5)
  assert np.all(np.asarray(losses.style_loss(f, losses.style_target(s, kind), kind)) > 1e-4)


def test_mean_and_mean_std_match_numpy(rng):
  f, s = _feats(rng, b=1), _feats(rng, b=1)
  fm, sm = f[0].reshape(-1, 4), s[0].reshape(-1, 4)
  want_mean = np.mean((fm.mean(0) - sm.mean(0)) ** 2)
  want_std = want_mean + np.mean((fm.std(0) - sm.std(0)) ** 2)
  np.testing.assert_allclose(losses.style_loss(f, losses.style_target(s, "mean"), "mean"),
                             [want_mean], rtol=1e-4)
  np.testing.assert_allclose(losses.style_loss(f, losses.style_target(s, "mean_std"), "mean_std"),
                             [want_std], rtol=1e-4)


def test_gram_loss_equals_polynomial_mmd(rng):
  """Li et al. 2017: L_gram = MMD^2 with k(x, y) = (x^T y + 0)^2, divided by 4 N^2."""
  f = _feats(rng, b=1, h=6, w=5, c=3)
  s = _feats(rng, b=1, h=4, w=9, c=3)  # different number of positions too
  x, y = f[0].reshape(-1, 3).astype(np.float64), s[0].reshape(-1, 3).astype(np.float64)
  k = lambda a, b: (a @ b.T) ** 2
  mmd2 = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
  gram = losses.style_loss(f, losses.style_target(s, "gram"), "gram")
  poly = losses.style_loss(f, losses.style_target(s, "mmd_poly"), "mmd_poly")
  np.testing.assert_allclose(gram, [mmd2 / (4 * 3**2)], rtol=1e-4)
  np.testing.assert_allclose(poly, gram, rtol=1e-4)


def test_gauss_mmd_matches_numpy(rng):
  f, s = _feats(rng, b=1, c=3), _feats(rng, b=1, c=3)
  x, y = f[0].reshape(-1, 3).astype(np.float64), s[0].reshape(-1, 3).astype(np.float64)
  d2 = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)
  sigma2 = d2(x, y).mean()
  k = lambda a, b: np.exp(-d2(a, b) / (2 * sigma2))
  want = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
  got = losses.style_loss(f, losses.style_target(s, "mmd_gauss"), "mmd_gauss")
  np.testing.assert_allclose(got, [want], rtol=1e-3)


def test_tv_loss_matches_numpy_and_vanishes_on_constants(rng):
  x = rng.uniform(size=(2, 6, 5, 3)).astype(np.float32)
  want = [np.mean(np.diff(x[i], axis=0) ** 2) + np.mean(np.diff(x[i], axis=1) ** 2) for i in range(2)]
  np.testing.assert_allclose(jax.jit(losses.tv_loss)(x), want, rtol=1e-5)
  np.testing.assert_allclose(losses.tv_loss(np.full((1, 4, 4, 3), 0.3, np.float32)), 0, atol=1e-9)


def test_gradients_match_finite_differences(rng):
  with jax.enable_x64(True):
    f = jnp.asarray(rng.normal(size=(1, 3, 4, 2)))
    s = jnp.asarray(rng.normal(size=(1, 3, 4, 2)))
    masks = jnp.asarray(rng.uniform(size=(1, 2, 3, 4)))
    tg = losses.masked_gram(s, masks)
    # Each function jitted: a few programs rather than one per op and shape (the suite's time).
    for kind in ("gram", "mean_std", "mmd_poly"):  # mmd_gauss stops the gradient of sigma
      check_grads(jax.jit(lambda a, kind=kind: losses.style_loss(a, losses.style_target(s, kind),
                                                                 kind)),
                  (f,), order=1, modes=("rev",))
    check_grads(jax.jit(lambda a: losses.content_loss(a, s)), (f,), order=2, modes=("rev",))
    check_grads(jax.jit(losses.tv_loss), (f,), order=1, modes=("rev", "fwd"))
    check_grads(jax.jit(lambda a: losses.masked_style_loss(a, masks, tg, jnp.ones((1, 2)))), (f,),
                order=1, modes=("rev",))


def test_vgg_conv_custom_vjp_matches_autodiff(rng):
  from nst_jax.core import vgg
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=(2, 7, 6, 4)).astype(np.float32))
  ref = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(vgg.conv3x3(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  got = jax.vjp(vgg.conv3x3, x, k)[1](g)
  want = jax.vjp(ref, x, k)[1](g)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_gram_vjp_is_autodiffs_in_one_product(rng):
  # gram_matrix's custom VJP, F (dG + dG^T) / M, against autodiff of the plain einsum.
  f = jnp.asarray(rng.normal(size=(2, 5, 3, 4)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=(2, 4, 4)).astype(np.float32))  # not symmetric
  plain = lambda a: jnp.einsum("bmc,bmd->bcd", a.reshape(2, 15, 4), a.reshape(2, 15, 4)) / 15
  got_value, vjp = jax.vjp(losses.gram_matrix, f)
  want_value, want_vjp = jax.vjp(plain, f)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(vjp(g)[0], want_vjp(g)[0], rtol=1e-5, atol=1e-6)
