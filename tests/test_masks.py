"""Semantic masks: colour-coded mask reading, per-layer downsampling, pairing, automatic masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from nst_jax import config
from nst_jax.core import image_io, metrics, regions, smoothing, vgg
from nst_jax.core.errors import UserError

NAMES = list(regions.LUAN_COLORS)
BLACK, WHITE, GREEN, GREY = (NAMES.index(n) for n in ("black", "white", "green", "grey"))


def _write(path, rgb_uint8):
  Image.fromarray(np.asarray(rgb_uint8, np.uint8)).save(path)
  return path


def _two_tone(h=20, w=31):
  """Black left, white right, an anti-aliased boundary (columns 14, 15), a green square."""
  img = np.zeros((h, w, 3), np.uint8)
  img[:, 16:] = 255
  img[:, 14] = 64    # 25 % white coverage
  img[:, 15] = 128   # 50 %
  img[2:8, 22:28] = (0, 255, 0)
  return img


def test_luan_colors_match_the_shared_masks():
  assert NAMES == ["blue", "green", "black", "white", "red", "yellow", "grey", "lightblue",
                   "purple"]
  assert regions.LUAN_COLORS["lightblue"] == (0.0, 1.0, 1.0)
  assert regions.LUAN_COLORS["grey"] == (0.5, 0.5, 0.5)


def test_color_mask_soft_edges(tmp_path):
  m = regions.load_color_mask(_write(tmp_path / "seg.png", _two_tone()))
  assert m.shape == (len(NAMES), 20, 31) and m.dtype == np.float32
  np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-6)
  assert np.all(m[BLACK, :, :14] == 1.0) and np.all(m[WHITE, 10:, 16:] == 1.0)
  np.testing.assert_allclose(m[WHITE, :, 14], 64 / 255, atol=1e-6)   # linear coverage
  np.testing.assert_allclose(m[WHITE, :, 15], 128 / 255, atol=1e-6)
  np.testing.assert_allclose(m[BLACK, :, 15], 127 / 255, atol=1e-6)
  assert m[GREY].max() == 0.0          # the grey edge pixels are not a grey region
  assert m[GREEN, 4, 24] == 1.0 and m[GREEN].sum() == pytest.approx(36, abs=1e-4)
  present = [NAMES[i] for i in np.flatnonzero(m.mean((1, 2)) > 0)]
  assert present == ["green", "black", "white"]


def test_color_mask_small_resize_and_bad_aspect(tmp_path):
  path = _write(tmp_path / "seg.png", _two_tone())
  m = regions.load_color_mask(path, size_hw=(21, 31))                    # one row off
  assert m.shape == (len(NAMES), 21, 31)
  np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-5)
  assert m[BLACK, 10, 3] == pytest.approx(1.0) and m[WHITE, 10, 28] == pytest.approx(1.0)
  assert regions.load_color_mask(path, size_hw=(10, 16)).shape == (len(NAMES), 10, 16)
  for bad in [(31, 20), (30, 31), (20, 45)]:
    with pytest.raises(UserError, match="aspect"):
      regions.load_color_mask(path, size_hw=bad)


def test_color_mask_user_errors(tmp_path):
  with pytest.raises(UserError):
    regions.load_color_mask(tmp_path / "missing.png")
  orange = np.full((12, 12, 3), (255, 128, 0), np.uint8)
  with pytest.raises(UserError, match="colour code"):
    regions.load_color_mask(_write(tmp_path / "orange.png", orange))


def test_real_mask_one_row_off(data_dir):
  photo = image_io.load_image(data_dir / "photo" / "input" / "in7.png")
  seg = data_dir / "photo" / "segmentation" / "in7.png"
  assert Image.open(seg).size[1] == photo.shape[0] - 1
  m = regions.load_color_mask(seg, size_hw=photo.shape[:2])
  assert m.shape == (len(NAMES),) + photo.shape[:2]
  np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-5)
  present = {NAMES[i] for i in np.flatnonzero(regions.pair_regions(m, m))}
  assert present == {"black", "white"}


def test_pair_regions_weights():
  h = w = 8
  content = np.zeros((4, h, w), np.float32)
  style = np.zeros((4, h, w), np.float32)
  content[0, :4], content[1, 4:] = 1, 1       # regions 0, 1
  style[1, :, :2], style[2, :, 2:] = 1, 1      # regions 1, 2
  np.testing.assert_array_equal(regions.pair_regions(content, style), [0, 1, 0, 0])
  style[3, 0, 0], style[2, 0, 0] = 1, 0        # a one-pixel region (1.6 %) counts ...
  assert regions.pair_regions(content, style, min_area=0.05)[3] == 0   # ... unless min_area says


@pytest.mark.real_weights
@pytest.mark.parametrize("hw", [(37, 50), (64, 45)])
def test_downsample_sizes_match_vgg_features(vgg_params, hw, rng):
  layers = ("relu1_1", "pool1", "relu2_1", "conv3_1", "relu4_1", "relu5_1", "pool5")
  images = jax.ShapeDtypeStruct((1,) + hw + (3,), jnp.float32)  # shapes only: no compute
  feats = jax.eval_shape(lambda x: vgg.vgg_features(vgg_params, x, layers), images)
  soft = rng.random((3,) + hw).astype(np.float32)
  soft /= soft.sum(0)
  for pooling in config.MASK_POOLINGS:
    per_layer = regions.downsample_masks(soft, layers, pooling)
    assert list(per_layer) == list(layers)
    for name in layers:
      assert per_layer[name].shape == (3,) + feats[name].shape[1:3], (pooling, name)
      if pooling != "max":
        np.testing.assert_allclose(per_layer[name].sum(0), 1.0, atol=1e-5)


def test_downsample_values():
  x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
  out = regions.downsample_masks(x, ("pool1", "relu2_1"), "avg", conv_blur=False)
  ref = x[:, :4, :6].reshape(2, 2, 2, 3, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(out["pool1"], ref)
  np.testing.assert_allclose(out["relu2_1"], ref)
  blurred = regions.downsample_masks(x, ("conv1_1",))["conv1_1"]
  np.testing.assert_allclose(blurred[:, 2, 3], x[:, 1:4, 2:5].mean(axis=(1, 2)), rtol=1e-6)
  np.testing.assert_allclose(blurred[:, 0, 0], x[:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)
  with pytest.raises(UserError):
    regions.downsample_masks(x, ("pool1",), "median")


def test_matched_region_iou_needs_one_shared_matching():
  truth = np.zeros((2, 6, 6), np.float32)
  truth[0, :3], truth[1, 3:] = 1, 1
  assert metrics.matched_region_iou(truth[::-1], truth[::-1], truth, truth) == pytest.approx(1.0)
  # The labels swap meaning between content and style: no single matching fits both.
  assert metrics.matched_region_iou(truth, truth[::-1], truth, truth) == pytest.approx(0.5)
  whole = np.ones((1, 6, 6))
  assert metrics.matched_region_iou(whole, whole, truth, truth) == pytest.approx(0.25)


def test_gradient_correlation_sees_edges_not_contrast(rng):
  x = ndimage.gaussian_filter(rng.uniform(size=(24, 32, 3)), (1, 1, 0)).astype(np.float32)
  assert metrics.gradient_correlation(x, x) == pytest.approx(1.0)
  # A contrast change and a shift keep every edge: the magnitudes scale by 0.5.
  assert metrics.gradient_correlation(0.5 * x + 0.2, x) == pytest.approx(1.0, abs=1e-6)
  # Unrelated structure: uncorrelated edges.
  assert abs(metrics.gradient_correlation(x[::-1, ::-1], x)) < 0.3


@pytest.mark.real_weights
def test_auto_masks_are_partitions(vgg_params, rng):
  content = rng.random((40, 64, 3)).astype(np.float32)
  content[20:] *= 0.3                                  # a dark bottom half
  style = rng.random((56, 48, 3)).astype(np.float32)
  cm, sm = regions.auto_masks(vgg_params, content, style, num_regions=3, work_size=64)
  assert cm.shape == (3, 40, 64) and sm.shape == (3, 56, 48)
  for m in (cm, sm):
    assert m.dtype == np.float32 and m.min() >= 0.0 and m.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-5)
  again = regions.auto_masks(vgg_params, content, style, num_regions=3, work_size=64)
  np.testing.assert_array_equal(again[0], cm)          # deterministic for a seed


# Long (over 10 s on 2 busy cores): `-m slow`; test_auto_masks_are_partitions covers the automatic
# masks.
@pytest.mark.slow
@pytest.mark.real_weights
def test_auto_masks_beat_one_region_baseline(vgg_params, data_dir):
  photo = data_dir / "photo"
  content = image_io.load_image(photo / "input" / "in14.png", size=128)
  style = image_io.load_image(photo / "style" / "tar14.png", size=128)
  truth_c = regions.load_color_mask(photo / "segmentation" / "in14.png", size_hw=content.shape[:2])
  truth_s = regions.load_color_mask(photo / "segmentation" / "tar14.png", size_hw=style.shape[:2])
  cm, sm = regions.auto_masks(vgg_params, content, style, work_size=128)
  whole_c, whole_s = np.ones((1,) + content.shape[:2]), np.ones((1,) + style.shape[:2])
  baseline = metrics.matched_region_iou(whole_c, whole_s, truth_c, truth_s)
  score = metrics.matched_region_iou(cm, sm, truth_c, truth_s)
  assert baseline < 0.4
  assert score > baseline + 0.3


# --- The guided filter (He et al.), a linear operator of the filtered image ---------------------

@pytest.mark.parametrize("radius", [1, 3])
def test_box_mean_matches_scipy_uniform_filter(radius, rng):
  x = rng.random((11, 9, 2)).astype(np.float32)
  ref = ndimage.uniform_filter(x, size=(2 * radius + 1,) * 2 + (1,), mode="reflect")
  np.testing.assert_allclose(np.asarray(smoothing.box_mean(jnp.asarray(x), radius)), ref, atol=1e-6)


def test_guided_filter_is_linear_and_keeps_affine_functions_of_the_guide(rng):
  guide = rng.random((16, 13, 3)).astype(np.float32)
  gf = smoothing.guided_filter_for(guide, radius=2, eps=1e-6)
  u, v = (jnp.asarray(rng.random((16, 13, 3)), jnp.float32) for _ in range(2))
  apply = jax.jit(smoothing.apply_guided_filter)
  np.testing.assert_allclose(apply(gf, 2 * u - 3 * v), 2 * apply(gf, u) - 3 * apply(gf, v),
                             atol=1e-5)
  affine = guide @ rng.normal(size=(3, 3)).astype(np.float32) + 0.3   # exactly affine: kept
  np.testing.assert_allclose(apply(gf, jnp.asarray(affine)), affine, atol=2e-3)
  smoothed = np.asarray(apply(gf, u))                                   # noise: smoothed away
  assert np.std(smoothed - np.asarray(u)) > 0.1 and np.std(smoothed) < 0.8 * np.std(u)
  # The numpy entry point is the same filter.
  np.testing.assert_allclose(smoothing.guided_filter(guide, np.asarray(u), radius=2, eps=1e-6),
                             smoothed, atol=1e-6)
