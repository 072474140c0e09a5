"""Tiled inference (``fast.tiled``): tiled == untiled for each network family, the norms'
statistics over tiles equal numpy's over the whole activation, and the automatic choice."""

import itertools

import jax
import numpy as np
import pytest

from nst_jax import config
from nst_jax.core import memory
from nst_jax.core.errors import UserError
from nst_jax.fast import any_style, arbitrary, arbitrary_nets, inference, nets, tiled

HW = (40, 56)  # multiples of 4, not of the tile step: the last tiles overlap more
TILE, HALO = 32, 12  # tiny tiles: 2 x 4 of them


@pytest.fixture(scope="module")
def photo():
  return np.random.default_rng(0).uniform(size=HW + (3,)).astype(np.float32)


def _stylizer(**net):
  model = nets.TinyNet(conv_impl="xla", **net)
  return inference.Stylizer(model, nets.init_variables(model, jax.random.key(1)), bucket=4)


@pytest.fixture(scope="module")
def johnson():
  return _stylizer(num_residual=1)


def _tiled(stylizer, photo, rows):
  tiler = stylizer.tilers[TILE] = tiled.Tiler(stylizer.forward, tile=TILE, halo=HALO)  # reused
  out = tiled.stylize_image(tiler, stylizer.variables, photo, HW, np.asarray(rows, np.float32),
                            lambda band, _: band, progress=False)
  return out, tiler


def test_spans_partition_the_image_and_keep_the_halo_inside():
  for n, length, halo in ((40, 32, 12), (56, 32, 12), (5120, 512, 16), (7680, 512, 16), (28, 32, 4)):
    tiles = tiled.spans(n, length, halo)
    assert tiles[0][1] == 0 and tiles[-1][2] == n
    assert all(a[2] == b[1] for a, b in itertools.pairwise(tiles))  # a partition, in order
    for start, lo, hi in tiles:
      end = start + min(n, length)
      assert start % 4 == 0 and 0 <= start and end <= n and lo < hi
      assert lo - start >= (halo if start else 0) and end - hi >= (halo if end < n else 0)


def test_fit_covers_the_side_in_as_many_tiles_with_the_least_overlap():
  for n, tile, halo in ((1376, 512, 16), (2048, 512, 16), (5120, 512, 16), (56, 32, 12), (28, 32, 4)):
    length = tiled.fit(n, tile, halo)
    count = len(tiled.spans(n, tile, halo))
    assert length % 4 == 0 and length <= min(n, tile)
    assert len(tiled.spans(n, length, halo)) == count  # as many tiles, no longer
    assert count * (length - 2 * halo) + 2 * halo >= n > count * (length - 4 - 2 * halo) + 2 * halo
  assert tiled.fit(1376, 512) == 480  # 3 tiles of 480, not of 512


def test_reflect_indices_pad_as_numpy_does():
  for n, padded in ((5, 32), (1, 4), (2, 9), (37, 64)):
    x = np.arange(n)
    np.testing.assert_array_equal(x[tiled.reflect_indices(padded, n)],
                                  np.pad(x, (0, padded - n), mode="reflect"))


def test_moments_merged_over_tiles_equal_numpys_over_the_whole_activation():
  x = np.random.default_rng(1).normal(3.0, 2.0, size=(1, 20, 28, 5)).astype(np.float32)
  hw = (40, 56)  # the activation is at half the input's resolution
  moments = tiled.MomentSum()
  fn = jax.jit(tiled.masked_moments, static_argnums=2)
  for y0, oy0, oy1 in tiled.spans(hw[0], TILE, HALO):
    for x0, ox0, ox1 in tiled.spans(hw[1], TILE, HALO):
      window = x[:, y0 // 2:(y0 + TILE) // 2, x0 // 2:(x0 + TILE) // 2]
      bounds = np.asarray([oy0 - y0, oy1 - y0, ox0 - x0, ox1 - x0], np.int32)
      moments.add(*fn(window, bounds, (TILE, TILE)))
  mean, var = moments.result()
  np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("net", [{"num_residual": 1}, {"num_residual": 0, "num_styles": 2}],
                         ids=["johnson", "conditional_in"])
def test_tiled_equals_untiled(photo, net, johnson):
  stylizer = johnson if net.get("num_residual") else _stylizer(**net)
  if net.get("num_styles"):
    stylizer.set_style(mix="0.3:0,0.7:1")
  out, tiler = _tiled(stylizer, photo, stylizer.style_weights[None])
  ref = stylizer.stylize_batch(photo[None])[0]
  np.testing.assert_allclose(out, ref, atol=1e-5)
  norms = 3 + 2 * net["num_residual"] + 2
  assert {k for k, *_ in tiler.compiled_shapes} == set(range(norms + 1))  # one program a pass


def test_tiled_equals_untiled_for_the_arbitrary_network(photo):
  cfg = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", width=0.125, num_residual=1,
                               embedding_dim=8, style_size=32, conv_impl="xla")
  net = arbitrary.ArbitraryModel(arbitrary_nets.init_params(jax.random.key(0), cfg), cfg)
  stylizer = any_style.AnyStyleStylizer(net, bucket=4)
  emb = stylizer.set_style(image=np.random.default_rng(2).uniform(size=(32, 32, 3)))
  out, _ = _tiled(stylizer, photo, emb[None])
  np.testing.assert_allclose(out, stylizer.stylize_batch(photo[None], emb[None])[0], atol=1e-5)


def test_stylizer_tiles_only_where_the_untiled_run_would_not_fit(photo, johnson, monkeypatch):
  stylizer = johnson  # its programs, tiled and untiled, compiled above
  hw = (2048, 2048)
  untiled = memory.estimate_peak_bytes("stylize", hw, width=stylizer.model.width)
  assert stylizer.tile_for(hw, untiled, None, False) == 0
  assert stylizer.tile_for(hw, untiled - 1, None, False) == tiled.DEFAULT_TILE
  assert stylizer.tile_for(hw, None, 256, False) == 256  # forced
  with pytest.raises(UserError, match="--size"):
    stylizer.tile_for(hw, untiled - 1, 0, False)  # never
  with pytest.raises(UserError, match="even in 512-pixel tiles"):
    stylizer.tile_for(hw, memory.BASE_BYTES["stylize"], None, False)
  with pytest.raises(UserError, match="multiple of 4"):
    stylizer.tile_for(hw, None, 250, False)
  # The whole path: a budget the untiled run exceeds picks tiles, with the same output.
  monkeypatch.setattr(tiled, "DEFAULT_TILE", TILE)
  monkeypatch.setattr(tiled, "HALO", HALO)
  monkeypatch.setattr(tiled, "RAM_STORES", 0)  # the stages go through temporary files
  ref = stylizer.stylize_many([photo], strength=0.5)[0]
  below = (memory.estimate_peak_bytes("stylize", HW, width=stylizer.model.width) - 1) / memory.GB
  monkeypatch.setattr(inference.Stylizer, "stylize_batch", None)  # the untiled path is not run
  out = stylizer.stylize_many([photo], max_memory=below, strength=0.5)[0]
  np.testing.assert_allclose(out, ref, atol=1e-5)
