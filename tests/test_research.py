"""Tests of the research tools: reconstructions, textures, unit visualization and their CLI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from nst_jax import cli, config
from nst_jax.core import image_io, vgg
from nst_jax.slow import research

CONTENT = "content/classic_st/tubingen.jpg"
STYLE = "styles/van_gogh_starry_night.jpg"
CELL_PX = 220  # plots.save_image_grid: 2.2 inches at 100 dpi per cell
real_weights = pytest.mark.real_weights


def test_growing_stacks():
  assert research.growing_stacks(("a", "b", "c")) == [("a",), ("a", "b"), ("a", "b", "c")]


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_gaussian_blur_matches_scipy(rng, sigma):
  images = rng.random((2, 17, 12, 3), dtype=np.float32)
  got = np.asarray(jax.jit(research.gaussian_blur, static_argnums=1)(jnp.asarray(images), sigma))
  want = scipy.ndimage.gaussian_filter(images, (0, sigma, sigma, 0), mode="mirror", truncate=3.0)
  np.testing.assert_allclose(got, want, atol=1e-5)


@real_weights
def test_layer_channels(vgg_params):
  assert research.layer_channels(vgg_params, "conv1_1") == 64
  assert research.layer_channels(vgg_params, "pool1") == 64
  assert research.layer_channels(vgg_params, "relu3_2") == 256
  assert research.layer_channels(vgg_params, "conv5_1") == 512


@real_weights
def test_unit_activations_match_features(vgg_params, rng):
  images = jnp.asarray(rng.random((3, 24, 20, 3), dtype=np.float32))
  units = np.array([3, 0, 63])
  feats = np.asarray(vgg.vgg_features(vgg_params, images, ("conv1_2",))["conv1_2"])
  mean = research.unit_activations(vgg_params, images, "conv1_2", jnp.asarray(units))
  center = research.unit_activations(vgg_params, images, "conv1_2", jnp.asarray(units),
                                     spatial="center")
  np.testing.assert_allclose(mean, [feats[i, :, :, u].mean() for i, u in enumerate(units)],
                             rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(center, [feats[i, 12, 10, u] for i, u in enumerate(units)],
                             rtol=1e-5, atol=1e-3)


# Long (over 10 s on 2 busy cores): `-m slow`; test_texture_lowers_style_loss and the CLI tests
# cover the same optimization.
@pytest.mark.slow
@real_weights
def test_reconstructions_lower_their_loss(vgg_params, data_dir):
  content = image_io.load_image(data_dir / CONTENT, size=32)
  style = image_io.load_image(data_dir / STYLE, size=32)
  optim = config.OptimConfig(optimizer="lbfgs", num_iters=15, chunk=15)  # compiles 2x faster
  contents, styles = research.reconstruct_all(
      vgg_params, content, style, optim, content_layers=("conv1_2", "conv3_2"),
      style_layers=("conv1_1", "conv2_1"), progress=False)
  assert [r.label for r in contents + styles] == [
      "content conv1_2", "content conv3_2", "style conv1_1", "style conv1_1..conv2_1"]
  for r in contents + styles:
    total = r.history["total"].ravel()
    assert total[-1] < 0.2 * total[0], (r.label, total[0], total[-1])
    assert r.nan_at is None
    assert r.image.min() >= 0.0 and r.image.max() <= 1.0
  assert contents[0].image.shape == content.shape and styles[1].image.shape == style.shape
  rows, row_titles, col_titles = research.figure_rows(content, style, contents, styles)
  assert [len(r) for r in rows] == [3, 3] and len(row_titles) == 2
  assert col_titles[1] == "content: conv1_2\nstyle: conv1_1"


@real_weights
def test_visualize_increases_activation(vgg_params):
  cfg = config.VisualizeConfig(size=32, num_iters=30)
  out = research.visualize_units(vgg_params, "conv2_1", (5, 9), cfg, progress=False)
  assert out.history["activation"].shape == (30, 2)
  assert np.all(out.final > 10 * np.maximum(out.initial, 1.0)), (out.initial, out.final)
  for img in out.images:
    assert img.shape == (32, 32, 3) and img.min() >= 0.0 and img.max() <= 1.0


@real_weights
def test_texture_lowers_style_loss(vgg_params, data_dir):
  style = image_io.load_image(data_dir / STYLE, size=48)
  cfg = config.override(config.gatys(), {
      "size": 32, "loss.style_layers": "relu1_1,relu2_1", "loss.style_layer_weights": "1,1",
      "optim.optimizer": "lbfgs", "optim.num_iters": 10, "optim.chunk": 5})
  out = research.synthesize_texture(vgg_params, style, cfg, progress=False)
  h, w = style.shape[:2]
  assert out.images[0].shape == (round(32 * h / w), 32, 3)
  assert out.history["total"][-1] < 0.2 * out.history["total"][0]
  assert np.all(out.history["content"] == 0)


def _main(argv, capsys):
  code = cli.main(argv)
  return code, capsys.readouterr().err


@real_weights
def test_cli_reconstruct_grid(tmp_path, vgg_path, data_dir, capsys):
  out = tmp_path / "fig1.png"
  code, err = _main(["reconstruct", "--content", str(data_dir / CONTENT), "--style",
                     str(data_dir / STYLE), "--out", str(out), "--size", "32", "--iters", "3",
                     "--optimizer", "adam", "--content-layers", "conv1_2,conv2_2",
                     "--style-layers", "conv1_1",
                     "--vgg-weights", str(vgg_path), "--no-progress"], capsys)
  assert code == 0, err
  assert Image.open(out).size == (3 * CELL_PX, 2 * CELL_PX)  # input + 2 depths; 2 rows


@real_weights
def test_cli_texture(tmp_path, vgg_path, data_dir, capsys):
  out = tmp_path / "tex.png"
  code, err = _main(["texture", "--style", str(data_dir / STYLE), "--out", str(out), "--size",
                     "32", "--iters", "4", "--style-layers", "relu1_1", "--vgg-weights",
                     str(vgg_path), "--no-progress"], capsys)
  assert code == 0, err
  assert max(Image.open(out).size) == 32
  assert (tmp_path / "tex_losses.png").is_file() and (tmp_path / "tex_losses.csv").is_file()


@real_weights
def test_cli_visualize_grid(tmp_path, vgg_path, capsys):
  out = tmp_path / "units.png"
  code, err = _main(["visualize", "--layer", "conv1_2", "--units", "0,1,2", "--columns", "2",
                     "--out", str(out), "--size", "32", "--iters", "3", "--vgg-weights",
                     str(vgg_path), "--no-progress"], capsys)
  assert code == 0, err
  assert Image.open(out).size == (2 * CELL_PX, 2 * CELL_PX)


@real_weights
@pytest.mark.parametrize("command, argv", [
    ("reconstruct", ["--content", "MISSING.jpg", "--style", "{style}"]),
    ("reconstruct", ["--content", "{corrupt}", "--style", "{style}"]),
    ("reconstruct", ["--content", "{content}", "--style", "{style}", "--content-layers",
                     "conv9_9"]),
    ("reconstruct", ["--content", "{content}", "--style", "{style}", "--size", "0"]),
    ("reconstruct", ["--content", "{content}", "--style", "{style}", "--out", "{tmp}/x.jpg"]),
    ("texture", ["--style", "{corrupt}"]),
    ("texture", ["--style", "{style}", "--iters", "0"]),
    ("reconstruct", ["--content", "{content}", "--style", "{style}", "--iters", "0"]),
    ("visualize", ["--layer", "conv1_1", "--units", "0", "--iters", "0"]),
    ("texture", ["--style", "{style}", "--tv-weight", "-1"]),
    ("visualize", ["--layer", "conv9_1", "--units", "0"]),
    ("visualize", ["--layer", "conv1_1", "--units", "1,x"]),
    ("visualize", ["--layer", "conv1_1", "--units", "64"]),
    ("visualize", ["--layer", "conv1_1", "--units", "0", "--decay", "1.5"]),
])
def test_cli_bad_input(tmp_path, vgg_path, data_dir, capsys, command, argv):
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  fill = dict(style=data_dir / STYLE, content=data_dir / CONTENT, corrupt=corrupt, tmp=tmp_path)
  argv = [a.format(**fill) for a in argv]
  if "--out" not in argv:
    argv += ["--out", str(tmp_path / "out.png")]
  try:
    code = cli.main([command] + argv + ["--vgg-weights", str(vgg_path), "--no-progress"])
  except SystemExit as e:  # argparse rejects bad flag values itself
    code = e.code
  err = capsys.readouterr().err
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.jpg"]
