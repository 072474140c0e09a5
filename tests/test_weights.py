"""Tests for nst_jax.weights (conversion, install, download), `nst-jax weights`, and VGG19 itself.

Most conversion tests shrink VGG19's channel counts (monkeypatching ``weights.VGG19_CHANNELS``) so
that fake Keras / torchvision files are a few kB; the real shapes are covered by the shared
``.npz`` and by a Keras file rebuilt from it.
"""

import json
import os
import urllib.request
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import cli
from nst_jax.core import digest, image_io, paths, vgg, weights
from nst_jax.core.errors import UserError

SHARED_SHA256 = "5d65ac44b0464070e73a824ed1fca02ee44fa65e21d4fdc44e8e2b4b7dfb961c"
SMALL_CHANNELS = (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8)


@pytest.fixture
def small_vgg(monkeypatch):
  monkeypatch.setattr(weights, "VGG19_CHANNELS", SMALL_CHANNELS)
  return SMALL_CHANNELS


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """An empty user cache; no weights from the environment."""
  monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.delenv(paths.WEIGHTS_ENV, raising=False)
  return tmp_path / "cache"


def _random_arrays(rng):
  return {k: (rng.standard_normal(s) * 0.1).astype(np.float32)
          for k, s in weights.expected_shapes().items()}


def _keras_name(layer):  # conv2_1 -> block2_conv1
  b, i = layer[4:].split("_")
  return f"block{b}_conv{i}"


def _write_keras_h5(path, arrays, layout):
  """Keras weight files: the old attribute index, nested Keras 2 groups, or Keras 3 ``vars``."""
  h5py = pytest.importorskip("h5py")
  with h5py.File(path, "w") as f:
    names = []
    for layer in vgg.CONV_LAYERS:
      kname = _keras_name(layer)
      kernel, bias = arrays[f"{layer}/kernel"], arrays[f"{layer}/bias"]
      if layout == "attrs":  # vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
        g = f.create_group(kname)
        wn = [f"{kname}_W_1:0".encode(), f"{kname}_b_1:0".encode()]
        g.attrs["weight_names"] = wn
        g.create_dataset(wn[1].decode(), data=bias)  # out of order: weight_names decides
        g.create_dataset(wn[0].decode(), data=kernel)
        names.append(kname.encode())
      elif layout == "nested":  # model.save(): model_weights/<layer>/<layer>/kernel:0
        f[f"model_weights/{kname}/{kname}/kernel:0"] = kernel
        f[f"model_weights/{kname}/{kname}/bias:0"] = bias
      else:  # Keras 3 .weights.h5
        f[f"layers/{kname}/vars/0"] = kernel
        f[f"layers/{kname}/vars/1"] = bias
    if layout == "attrs":
      f.create_group("block1_pool").attrs["weight_names"] = []
      f.attrs["layer_names"] = [b"input_1"] + names + [b"block1_pool"]


def _save_npz(path, arrays, **extra):
  np.savez(path, **arrays, **extra)
  return path


def _features(params, image, layers=("conv1_1", "relu2_2", "conv3_1", "pool5")):
  return vgg.vgg_features(params, jnp.asarray(image)[None], layers)


# ----------------------------------------------------------------------------- shapes

def test_expected_shapes_are_vgg19():
  shapes = weights.expected_shapes()
  assert len(shapes) == 32
  assert sum(int(np.prod(s)) for s in shapes.values()) == 20_024_384  # README of the weights
  assert shapes["conv1_1/kernel"] == (3, 3, 3, 64)
  assert shapes["conv3_1/kernel"] == (3, 3, 128, 256)
  assert shapes["conv4_1/kernel"] == (3, 3, 256, 512)
  assert shapes["conv5_4/bias"] == (512,)


def test_vgg_layer_names_and_output_shapes():
  """Every layer's output shape for a 64x48 input, computed abstractly (no weights needed)."""
  assert len(vgg.VGG19_LAYERS) == 16 * 2 + 5 and vgg.VGG19_LAYERS[:3] == (
      "conv1_1", "relu1_1", "conv1_2")
  params = {k.split("/")[0]: {} for k in weights.expected_shapes()}
  for key, shape in weights.expected_shapes().items():
    layer, part = key.split("/")
    params[layer][part] = jax.ShapeDtypeStruct(shape, jnp.float32)
  params["preprocess"] = {k: jax.ShapeDtypeStruct((3,), jnp.float32) for k in ("scale", "offset")}
  images = jax.ShapeDtypeStruct((2, 64, 48, 3), jnp.float32)
  out = jax.eval_shape(lambda p, x: vgg.vgg_features(p, x, vgg.VGG19_LAYERS), params, images)
  assert set(out) == set(vgg.VGG19_LAYERS)
  h, w, block = 64, 48, 1
  channels = dict(zip(range(1, 6), (64, 128, 256, 512, 512)))
  for name in vgg.VGG19_LAYERS:
    if name.startswith("pool"):
      h, w = h // 2, w // 2  # floor: 3 -> 1 at pool5
      assert out[name].shape == (2, h, w, channels[block]), name
      block += 1
    else:
      assert out[name].shape == (2, h, w, channels[block]), name
  assert out["pool5"].shape == (2, 2, 1, 512)


# ----------------------------------------------------------------------------- Keras .h5

@pytest.mark.parametrize("layout", ["attrs", "nested", "keras3"])
def test_keras_h5_round_trip(small_vgg, cache, tmp_path, rng, layout):
  arrays = _random_arrays(rng)
  src = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  _write_keras_h5(src, arrays, layout)
  assert weights.detect_format(src) == "keras_h5"
  converted = weights.convert_keras_h5(src)
  assert set(converted) == set(arrays)
  for key in arrays:  # values preserved, kernels kept HWIO, no transposition
    np.testing.assert_array_equal(converted[key], arrays[key], err_msg=key)
    assert converted[key].dtype == np.float32

  installed = weights.install_weights(src)
  assert installed == cache / paths.VGG_FILENAME
  with np.load(installed) as data:
    assert str(data["convention"]) == "caffe_bgr"
  record = json.loads(weights.provenance_path(installed).read_text())
  assert record["source"] == src.name and record["format"] == "keras_h5"
  assert record["sha256"] == digest.file_digest(src)
  image = rng.random((20, 16, 3), dtype=np.float32)
  got = _features(vgg.load_vgg19(installed), image)
  want = _features(vgg.params_from_arrays(arrays, "caffe_bgr"), image)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.real_weights
def test_keras_h5_real_shapes_round_trip(vgg_path, vgg_params, cache, tmp_path, rng):
  """A Keras-layout file rebuilt from the shared weights installs to the same network."""
  with np.load(vgg_path) as data:
    arrays = {k: data[k] for k in data.files if k != "convention"}
  src = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  _write_keras_h5(src, arrays, "attrs")
  installed = weights.install_weights(src)
  reloaded = vgg.load_vgg19(installed)
  image = rng.random((24, 20, 3), dtype=np.float32)
  layers = ("conv1_1", "relu3_1", "conv4_2")
  got, want = _features(reloaded, image, layers), _features(vgg_params, image, layers)
  for name in layers:
    np.testing.assert_array_equal(got[name], want[name])


def test_keras_h5_errors(small_vgg, tmp_path, rng):
  h5py = pytest.importorskip("h5py")
  arrays = _random_arrays(rng)
  arrays["conv3_1/kernel"] = np.ascontiguousarray(arrays["conv3_1/kernel"].transpose(3, 2, 0, 1))
  _write_keras_h5(tmp_path / "theano.h5", arrays, "attrs")
  with pytest.raises(UserError, match=r"conv3_1/kernel has shape \(8, 6, 3, 3\)"):
    weights.convert_keras_h5(tmp_path / "theano.h5")
  with h5py.File(tmp_path / "other.h5", "w") as f:
    f["dense/kernel:0"] = np.zeros((4, 4), np.float32)
  with pytest.raises(UserError, match="no layer block1_conv1"):
    weights.install_weights(tmp_path / "other.h5")
  (tmp_path / "truncated.h5").write_bytes((tmp_path / "theano.h5").read_bytes()[:4096])
  with pytest.raises(UserError, match="cannot read Keras weights"):
    weights.install_weights(tmp_path / "truncated.h5")


# ----------------------------------------------------------------------------- torchvision .pth

def _write_torch_pth(path, rng, channels, legacy=False):
  torch = pytest.importorskip("torch", reason="PyTorch parity test: pip install -e .[torch]")
  state, cin = OrderedDict(), 3
  for idx, cout in zip(weights.TORCH_FEATURE_INDICES, channels):
    state[f"features.{idx}.weight"] = torch.from_numpy(
        (rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32))
    state[f"features.{idx}.bias"] = torch.from_numpy(rng.standard_normal(cout).astype(np.float32))
    cin = cout
  state["classifier.0.weight"] = torch.zeros(5, 7)
  torch.save(state, path, _use_new_zipfile_serialization=not legacy)
  return {k: v.numpy() for k, v in state.items()}


def _numpy_first_conv_torch(image, w_oihw, bias):
  """torchvision convention by hand: (x - mean) / std, RGB, zero padding, cross-correlation."""
  x = (image.astype(np.float64) - vgg.TORCH_MEAN_RGB) / vgg.TORCH_STD_RGB  # [H, W, 3]
  xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  h, w, _ = x.shape
  out = np.zeros((h, w, w_oihw.shape[0])) + bias
  for i in range(3):
    for j in range(3):
      out += np.einsum("hwc,oc->hwo", xp[i:i + h, j:j + w], w_oihw[:, :, i, j])
  return out


def test_torch_pth_transpose_and_first_conv(small_vgg, cache, tmp_path, rng):
  torch = pytest.importorskip("torch", reason="PyTorch parity test: pip install -e .[torch]")
  src = tmp_path / "vgg19-dcbb9e9d.pth"
  state = _write_torch_pth(src, rng, small_vgg)
  assert weights.detect_format(src) == "torch_pth"
  converted = weights.convert_torch_pth(src)
  w = state["features.21.weight"]  # conv4_2, OIHW
  k = converted["conv4_2/kernel"]
  assert k.shape == (3, 3, w.shape[1], w.shape[0])
  for o, c, i, j in [(0, 0, 0, 0), (7, 5, 2, 1), (3, 6, 1, 2)]:
    assert k[i, j, c, o] == w[o, c, i, j]
  np.testing.assert_array_equal(converted["conv5_4/bias"], state["features.34.bias"])

  installed = weights.install_weights(src)
  assert weights.read_provenance(installed)["convention"] == "torch_rgb"
  image = rng.random((12, 10, 3), dtype=np.float32)
  got = np.asarray(_features(vgg.load_vgg19(installed), image, ["conv1_1"])["conv1_1"][0])
  want = _numpy_first_conv_torch(image, state["features.0.weight"], state["features.0.bias"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  x = torch.from_numpy(((image - vgg.TORCH_MEAN_RGB) / vgg.TORCH_STD_RGB).transpose(2, 0, 1))
  ref = torch.nn.functional.conv2d(x[None].float(), torch.from_numpy(state["features.0.weight"]),
                                   torch.from_numpy(state["features.0.bias"]), padding=1)
  np.testing.assert_allclose(got, ref[0].numpy().transpose(1, 2, 0), rtol=1e-4, atol=1e-4)


def test_torch_pth_legacy_format(small_vgg, tmp_path, rng):
  """Files saved before torch 1.6 (torchvision's own vgg19 download is one) are plain pickles."""
  pytest.importorskip("torch", reason="PyTorch parity test: pip install -e .[torch]")
  state = _write_torch_pth(tmp_path / "legacy.pth", rng, small_vgg, legacy=True)
  assert (tmp_path / "legacy.pth").read_bytes()[:2] == b"\x80\x02"
  assert weights.detect_format(tmp_path / "legacy.pth") == "torch_pth"
  arrays, convention, fmt = weights.convert_weights(tmp_path / "legacy.pth")
  assert (convention, fmt) == ("torch_rgb", "torch_pth")
  np.testing.assert_array_equal(arrays["conv1_1/kernel"],
                                state["features.0.weight"].transpose(2, 3, 1, 0))


def test_torch_pth_missing_layer(small_vgg, tmp_path):
  torch = pytest.importorskip("torch", reason="PyTorch parity test: pip install -e .[torch]")
  torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "partial.pth")
  with pytest.raises(UserError, match="features.0.bias"):
    weights.convert_torch_pth(tmp_path / "partial.pth")


def test_missing_optional_libraries_are_user_errors(small_vgg, monkeypatch, tmp_path, rng):
  _write_keras_h5(tmp_path / "w.h5", _random_arrays(rng), "attrs")
  (tmp_path / "w.pth").write_bytes(b"PK\x03\x04")  # content is not read before the import
  monkeypatch.setitem(__import__("sys").modules, "h5py", None)
  monkeypatch.setitem(__import__("sys").modules, "torch", None)
  with pytest.raises(UserError, match="pip install h5py"):
    weights.convert_keras_h5(tmp_path / "w.h5")
  with pytest.raises(UserError, match=r"pip install torch==2\.13\.0"):
    weights.convert_torch_pth(tmp_path / "w.pth")


# ----------------------------------------------------------------------------- .npz, install

@pytest.mark.real_weights
def test_shared_npz_validates_and_installs(vgg_path, cache):
  installed = weights.install_weights(vgg_path, expected_sha256=SHARED_SHA256)
  assert installed == cache / paths.VGG_FILENAME
  assert paths.resolve_vgg_weights(None) == installed
  record = weights.read_provenance(installed)
  assert record["sha256"] == SHARED_SHA256 and record["convention"] == "caffe_bgr"
  assert record["parameters"] == 20_024_384 and record["format"] == "npz"
  with np.load(vgg_path) as a, np.load(installed) as b:
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key])
    assert str(b["convention"]) == "caffe_bgr"
  assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp files left


def _bad_npz(tmp_path, rng, name, mutate):
  arrays = _random_arrays(rng)
  extra = mutate(arrays) or {}
  return _save_npz(tmp_path / f"{name}.npz", arrays, **extra)


@pytest.mark.parametrize("name, mutate, message", [
    ("missing", lambda a: a.__delitem__("conv5_4/bias"), "conv5_4/bias is missing"),
    ("shape", lambda a: a.update({"conv2_1/kernel": np.zeros((3, 3, 4, 5), np.float32)}),
     r"conv2_1/kernel has shape \(3, 3, 4, 5\), expected \(3, 3, 4, 6\)"),
    ("dtype", lambda a: a.update({"conv1_2/bias": a["conv1_2/bias"].astype(np.float64)}),
     "conv1_2/bias is float64, expected float32"),
    ("nan", lambda a: a["conv4_4/kernel"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
    ("convention", lambda a: {"convention": np.array("bgr")}, "unknown convention 'bgr'"),
])
def test_npz_validation_errors(small_vgg, cache, tmp_path, rng, name, mutate, message):
  src = _bad_npz(tmp_path, rng, name, mutate)
  with pytest.raises(UserError, match=message):
    weights.install_weights(src)
  assert not cache.exists() or not any(cache.iterdir())  # nothing written


def test_install_errors_leave_previous_weights(small_vgg, cache, tmp_path, rng):
  good = _save_npz(tmp_path / "good.npz", _random_arrays(rng), convention=np.array("torch_rgb"))
  installed = weights.install_weights(good)
  before = installed.read_bytes()
  sha = digest.file_digest(good)
  with pytest.raises(UserError, match="checksum mismatch for good.npz: sha256 is"):
    weights.install_weights(good, expected_sha256="0" * 64)
  with pytest.raises(UserError, match="64 hex digits"):
    weights.install_weights(good, expected_sha256="xyz")
  with pytest.raises(UserError, match="weights file not found"):
    weights.install_weights(tmp_path / "nope.h5")
  (tmp_path / "garbage.h5").write_bytes(os.urandom(256))
  with pytest.raises(UserError, match="unrecognised weights file"):
    weights.install_weights(tmp_path / "garbage.h5")
  (tmp_path / "empty.pth").write_bytes(b"")
  with pytest.raises(UserError, match="empty"):
    weights.install_weights(tmp_path / "empty.pth")
  with pytest.raises(UserError, match="directory"):
    weights.install_weights(tmp_path)
  assert installed.read_bytes() == before
  assert sorted(p.name for p in cache.iterdir()) == ["vgg19_conv.json", "vgg19_conv.npz"]
  assert weights.install_weights(good, expected_sha256=sha.upper()) == installed
  assert weights.read_provenance(installed)["convention"] == "torch_rgb"


# ----------------------------------------------------------------------------- resolution

def test_resolution_order_flag_env_cache(cache, tmp_path, monkeypatch):
  with pytest.raises(UserError, match="`nst-jax weights download`") as err:
    paths.resolve_vgg_weights(None)
  assert "\n" not in str(err.value)
  cached = cache / paths.VGG_FILENAME
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b"x")
  env_file, flag_file = tmp_path / "env.npz", tmp_path / "flag.npz"
  env_file.write_bytes(b"x")
  flag_file.write_bytes(b"x")
  assert paths.resolve_vgg_weights(None) == cached
  monkeypatch.setenv(paths.WEIGHTS_ENV, str(env_file))
  assert paths.resolve_vgg_weights(None) == env_file
  assert paths.resolve_vgg_weights(flag_file) == flag_file
  with pytest.raises(UserError, match="--vgg-weights not found"):
    paths.resolve_vgg_weights(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- CLI

def test_cli_lists_weights_command():
  assert "weights" in cli.build_parser().format_help()


def test_cli_import_and_path(small_vgg, cache, tmp_path, rng, capsys):
  src = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  _write_keras_h5(src, _random_arrays(rng), "attrs")
  sha = digest.file_digest(src)
  assert cli.main(["weights", "import", str(src), "--sha256", sha]) == 0
  out = capsys.readouterr().out
  assert "caffe_bgr" in out and str(cache / paths.VGG_FILENAME) in out
  assert cli.main(["weights", "path"]) == 0
  assert capsys.readouterr().out.strip() == str(cache / paths.VGG_FILENAME)


def test_cli_errors_are_one_line(small_vgg, cache, tmp_path, capsys):
  (tmp_path / "garbage.pth").write_bytes(b"not a weights file at all")
  assert cli.main(["weights", "import", str(tmp_path / "garbage.pth")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("nst-jax weights: error: unrecognised weights file")
  assert err.count("\n") == 1 and "Traceback" not in err
  assert cli.main(["weights", "path"]) == 2
  err = capsys.readouterr().err
  assert "nst-jax weights download" in err and err.count("\n") == 1
  assert not cache.exists() or not any(cache.iterdir())


# ----------------------------------------------------------------------------- download

def test_download_file_url(small_vgg, cache, tmp_path, rng):
  src = tmp_path / "served" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  src.parent.mkdir()
  arrays = _random_arrays(rng)
  _write_keras_h5(src, arrays, "attrs")
  digests = {a: digest.file_digest(src, a) for a in ("sha256", "md5")}
  with pytest.raises(UserError, match="checksum mismatch"):
    weights.download_weights(src.as_uri(), expected_md5="f" * 32, progress=False)
  assert not cache.exists() or not any(cache.iterdir())  # the temp download was removed
  path = weights.download_weights(src.as_uri(), expected_md5=digests["md5"], progress=False)
  record = weights.read_provenance(path)
  assert record["url"] == src.as_uri() and record["source"] == src.name
  assert record["sha256"] == digests["sha256"]
  with np.load(path) as data:
    np.testing.assert_array_equal(data["conv3_3/kernel"], arrays["conv3_3/kernel"])
  assert sorted(p.name for p in cache.iterdir()) == ["vgg19_conv.json", "vgg19_conv.npz"]
  with pytest.raises(UserError, match="cannot download"):
    weights.download_weights((tmp_path / "absent.h5").as_uri(), progress=False)


class _FakeResponse:
  """Stands in for urlopen's response: serves ``body``, announcing ``length`` bytes."""

  def __init__(self, body, length):
    self._body, self.headers = body, {"Content-Length": str(length)}

  def read(self, n):
    chunk, self._body = self._body[:n], self._body[n:]
    return chunk

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def test_download_default_url_checks_keras_md5(small_vgg, cache, tmp_path, rng, monkeypatch):
  src = tmp_path / "fake.h5"
  _write_keras_h5(src, _random_arrays(rng), "attrs")
  body = src.read_bytes()
  urls = []

  def fake_urlopen(url, timeout=None):
    urls.append(url)
    return _FakeResponse(body, len(body))

  monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
  with pytest.raises(UserError, match=f"md5 is .* expected {weights.KERAS_MD5}"):
    weights.download_weights(progress=False)  # a fake file cannot pass Keras' checksum
  assert urls == [weights.KERAS_URL]
  assert "storage.googleapis.com/tensorflow/keras-applications/vgg19/" in weights.KERAS_URL
  monkeypatch.setattr(urllib.request, "urlopen",
                      lambda url, timeout=None: _FakeResponse(body[:100], len(body)))
  with pytest.raises(UserError, match="cut short: 100 of"):
    weights.download_weights("https://example.invalid/w.h5", progress=False)
  assert not cache.exists() or not any(cache.iterdir())


# ----------------------------------------------------------------------------- VGG vs numpy

def _np_conv(x, kernel, bias):  # [H, W, Cin] x [3, 3, Cin, Cout], SAME zero padding
  h, w, _ = x.shape
  xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  out = np.broadcast_to(bias.astype(np.float64), (h, w, kernel.shape[-1])).copy()
  for i in range(3):
    for j in range(3):
      out += xp[i:i + h, j:j + w] @ kernel[i, j].astype(np.float64)
  return out


def _np_maxpool(x):
  h, w, c = x.shape[0] // 2, x.shape[1] // 2, x.shape[2]
  return x[:2 * h, :2 * w].reshape(h, 2, w, 2, c).max(axis=(1, 3))


def _np_vgg(raw, image_rgb, wanted):
  """Plain numpy VGG19 on the raw Caffe-convention arrays: BGR, 0-255, mean-subtracted."""
  x = image_rgb[..., ::-1].astype(np.float64) * 255.0 - np.array([103.939, 116.779, 123.68])
  out = {}
  for name in vgg.VGG19_LAYERS:
    if not set(wanted) - out.keys():
      break
    if name.startswith("conv"):
      x = _np_conv(x, raw[f"{name}/kernel"], raw[f"{name}/bias"])
    elif name.startswith("relu"):
      x = np.maximum(x, 0.0)
    else:
      x = _np_maxpool(x)
    out[name] = x
  return {k: out[k] for k in wanted}


@pytest.mark.real_weights
def test_vgg_features_match_numpy_on_a_photo(vgg_path, vgg_params, data_dir):
  photo = image_io.load_image(data_dir / "content" / "skimage" / "chelsea.jpg", size=128)
  h0, w0 = photo.shape[0] // 2 - 24, photo.shape[1] // 2 - 20
  crop = np.ascontiguousarray(photo[h0:h0 + 48, w0:w0 + 40])  # [48, 40, 3], non-square
  assert crop.std() > 0.05  # real texture, not a flat patch
  layers = ("conv1_1", "relu2_1", "conv3_1", "conv4_2")
  with np.load(vgg_path) as data:
    raw = {k: data[k] for k in data.files}
  want = _np_vgg(raw, crop, layers)
  got = vgg.vgg_features(vgg_params, jnp.asarray(crop)[None], layers, pooling="max")
  for name in layers:
    g = np.asarray(got[name][0], np.float64)
    assert g.shape == want[name].shape, name
    rel = np.linalg.norm(g - want[name]) / np.linalg.norm(want[name])
    assert rel <= 1e-4, (name, rel)
  assert want["conv4_2"].shape == (6, 5, 512)
