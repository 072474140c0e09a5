"""SR networks, losses, tiled upscaling and the sr / upscale commands."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst_jax import config
from nst_jax.cli import main
from nst_jax.core import losses as core_losses
from nst_jax.core import vgg
from nst_jax.sr import losses, nets, upscale


@pytest.mark.parametrize("preset,scale,count", [
    ("johnson", 4, 401_859), ("johnson", 8, 438_915), ("fast", 4, 34_800), ("fast", 3, 28_731)])
def test_parameter_counts_and_any_input_size(preset, scale, count):
  cfg = config.SR_PRESETS[preset](scale).check()
  net = nets.make_net(cfg.net, scale)
  variables = nets.init_variables(net, jax.random.key(0))
  assert nets.count_params(variables) == count
  out = nets.apply_net(net, variables, jnp.zeros((1, 17, 23, 3)))
  assert out.shape == (1, 17 * scale, 23 * scale, 3)


def test_johnson_count_by_hand():
  """9x9 3->64, 4 blocks of two 3x3 64->64, 2 transposed 3x3, 9x9 64->3; BN scale+bias."""
  conv = lambda k, i, o: k * k * i * o + o
  want = conv(9, 3, 64) + 128 + 4 * 2 * (conv(3, 64, 64) + 128) + 2 * (conv(3, 64, 64) + 128)
  assert want + conv(9, 64, 3) == 401_859


def test_bf16_inference_follows_float32():
  cfg = config.sr_johnson(4)
  net = nets.make_net(cfg.net, 4)
  variables = nets.init_variables(net, jax.random.key(1))
  lr = jax.random.uniform(jax.random.key(2), (1, 12, 10, 3))
  a = nets.apply_net(net, variables, lr)
  b = nets.apply_net(net, variables, lr.astype(jnp.bfloat16))
  assert b.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(b, np.float32), a, atol=0.05)


def test_pixel_shuffle_matches_torch_order():
  x = jnp.arange(2 * 3 * 8, dtype=jnp.float32).reshape(1, 2, 3, 8)  # C = 2, s = 2
  y = np.asarray(nets.pixel_shuffle(x, 2))
  for c in range(2):
    for i in range(2):
      for j in range(2):
        np.testing.assert_array_equal(y[0, i::2, j::2, c], np.asarray(x)[0, :, :, c * 4 + i * 2 + j])


# x4 (48 outputs, one padded group) is long beside x8's three groups: `-m slow`.
@pytest.mark.parametrize("scale", [8, pytest.param(4, marks=pytest.mark.slow)])
def test_grouped_conv_impl_same_values_and_gradients(scale):
  """conv_impl=cpu_fast (wide outputs in groups of 64) is nn.Conv's function: x8's 192 and x4's
  48 outputs, values and parameter gradients; a bad conv_impl is refused naming the key."""
  base = config.sr_smoke(scale)
  lr = jax.random.uniform(jax.random.key(3), (2, 6, 5, 3))
  hr = jax.random.uniform(jax.random.key(4), (2, 6 * scale, 5 * scale, 3))
  outs = []
  for impl in ("xla", "cpu_fast"):
    net = nets.make_net(config.override(base, {"net.conv_impl": impl}).net, scale)
    variables = nets.init_variables(net, jax.random.key(0))
    # A nonzero last layer (the preset starts it at zero), so every gradient is exercised.
    params = jax.tree.map(lambda x: x + 0.1, variables["params"])
    loss = lambda p: jnp.mean(jnp.square(net.apply({"params": p}, lr) - hr))
    outs.append((net.apply({"params": params}, lr), jax.grad(loss)(params)))
    convs = str(jax.make_jaxpr(net.apply)({"params": params}, lr)).count("conv_general_dilated")
    # smoke: a 5x5 and a 3x3 of width 8, then 3 s^2 outputs: 192 = 3 groups, 48 = 1 (padded)
    assert convs == (2 + (3 if scale == 8 and impl == "cpu_fast" else 1))
  np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(outs[0][1]), jax.tree.leaves(outs[1][1])):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
  with pytest.raises(config.ConfigError, match="net.conv_impl"):
    config.override(config.sr_fast(4), {"net.conv_impl": "fast"}).check()


def test_presets_override_and_bad_values():
  cfg = config.override(config.sr_johnson(4), {"loss.pixel_weight": "2", "net.width": "8"})
  assert cfg.loss.pixel_weight == 2.0 and cfg.net.width == 8
  with pytest.raises(config.ConfigError):
    config.override(cfg, {"net.arch": "nope"}).check()


def test_losses_match_numpy():
  rng = np.random.default_rng(0)
  sr, hr = (rng.uniform(size=(2, 16, 12, 3)).astype(np.float32) for _ in range(2))
  np.testing.assert_allclose(losses.pixel_loss(sr, hr), ((sr - hr) ** 2).mean((1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(losses.pixel_loss(sr, hr, "l1"), np.abs(sr - hr).mean((1, 2, 3)),
                             rtol=1e-6)
  kernel = rng.normal(0, 0.2, (3, 3, 3, 4)).astype(np.float32)
  params = {"conv1_1": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(4)},
            "preprocess": {"scale": jnp.ones(3), "offset": jnp.zeros(3)}}
  f = lambda x: np.maximum(np.asarray(vgg.conv3x3(jnp.asarray(x), jnp.asarray(kernel))), 0)
  want = ((f(sr) - f(hr)) ** 2).mean((1, 2, 3))
  cfg = config.SRLossConfig(pixel_weight=0.5, feature_weight=2.0, tv_weight=3.0,
                               feature_layers=("relu1_1",))
  terms = losses.sr_losses(cfg, params, jnp.asarray(sr), jnp.asarray(hr))
  np.testing.assert_allclose(terms["feature"], want, rtol=1e-4)
  np.testing.assert_allclose(terms["total"], 0.5 * ((sr - hr) ** 2).mean((1, 2, 3)) + 2 * want
                             + 3 * core_losses.tv_loss(jnp.asarray(sr)), rtol=1e-4)
  zero = losses.sr_losses(cfg, params, jnp.asarray(hr), jnp.asarray(hr))
  np.testing.assert_allclose(zero["pixel"] + zero["feature"], 0, atol=1e-7)


def test_tiled_equals_untiled():
  cfg = config.sr_smoke(4)
  variables = nets.init_variables(nets.make_net(cfg.net, 4), jax.random.key(0))
  up = upscale.Upscaler(cfg, variables)
  img = np.random.default_rng(0).uniform(size=(57, 45, 3)).astype(np.float32)
  whole, tiled = up(img), up(img, tile=24, overlap=16)
  assert whole.shape == tiled.shape == (228, 180, 3)
  np.testing.assert_allclose(tiled[8:-8, 8:-8], whole[8:-8, 8:-8], atol=1e-4)
  w = [upscale.ramp(40, 16, False, True), upscale.ramp(40, 16, True, False)]
  np.testing.assert_allclose(w[0][:16] + w[1][-16:], 1.0)  # complementary in a shared band
  assert w[0][:4].max() == 0.0


def test_tiled_upscale_holds_one_output_sized_buffer():
  """Host memory (numpy's allocations, traced) of a tiled upscale and its uint8 conversion stay
  near one float32 output (the result itself): no weight map, no full-size temporaries."""
  import tracemalloc  # pylint: disable=import-outside-toplevel
  from nst_jax.core import image_io  # pylint: disable=import-outside-toplevel
  up = upscale.Upscaler.bicubic(4)
  img = np.random.default_rng(0).uniform(size=(200, 150, 3)).astype(np.float32)
  up(img[:40, :40], tile=32, overlap=8)  # compile the tile shape first
  tracemalloc.start()
  try:
    out = up(img, tile=32, overlap=8)
    u8 = image_io.to_uint8(out, rows=32)  # float temporaries of 32-row bands
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 1.2 * out.nbytes + u8.nbytes  # before: ~3.5x (weights, quotient, clip, x255)
  np.testing.assert_array_equal(u8, np.round(np.clip(out, 0, 1) * 255).astype(np.uint8))


def test_histogram_matching_takes_the_reference_distribution():
  rng = np.random.default_rng(0)
  img, ref = rng.uniform(size=(20, 20, 3)), rng.beta(2, 5, size=(20, 20, 3))
  out = upscale.match_histogram(img, ref)
  np.testing.assert_allclose(np.sort(out.ravel()), np.sort(ref.ravel()), atol=1e-6)
  assert np.array_equal(np.argsort(out[..., 0].ravel()), np.argsort(img[..., 0].ravel()))


def _png(path, size=(12, 10), mode="RGB"):
  Image.new(mode, size).save(path)
  return str(path)


def test_upscale_cli_and_bad_input(tmp_path, capsys):
  good = _png(tmp_path / "a.png")
  assert main(["upscale", "--model", "bicubic", good, "--out", str(tmp_path / "o")]) == 0
  assert Image.open(tmp_path / "o" / "a_x4.png").size == (48, 40)
  for name, mode in (("g.png", "L"), ("r.png", "RGBA"), ("s.png", "I;16"), ("c.jpg", "CMYK")):
    assert main(["upscale", "--model", "bicubic", _png(tmp_path / name, mode=mode),
                 "--out", str(tmp_path / "o")]) == 0
  truncated = tmp_path / "t.png"
  truncated.write_bytes((tmp_path / "a.png").read_bytes()[:40])
  cases = [[_png(tmp_path / "one.png", (1, 1))], [good, str(truncated)],
           [good, "--scale", "5"], [good, "--model", "x"], [good, "--tile", "8", "--overlap", "8"]]
  capsys.readouterr()
  for extra in cases:
    out = tmp_path / "bad"
    argv = ["upscale", "--model", "bicubic", *extra, "--out", str(out)]
    assert main(argv) == 2, extra
    assert not out.exists()  # no partial output
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_sr_eval_cli(tmp_path, capsys):
  data = tmp_path / "hr"
  data.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(data / "x.png")
  report = tmp_path / "r.json"
  assert main(["sr", "eval", "--model", "bicubic", "--data", str(data), "--scale", "2",
               "--lpips", "", "--json", str(report)]) == 0
  assert json.loads(report.read_text())["mean"]["psnr"] > 5
  assert main(["sr", "eval", "--model", "bicubic", "--data", str(tmp_path / "none"),
               "--lpips", ""]) == 2
  Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(data / "tiny.png")
  assert main(["sr", "eval", "--model", "bicubic", "--data", str(data), "--lpips", ""]) == 2
