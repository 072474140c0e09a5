"""Tests for nst_jax.nets: the transformation networks of Johnson et al. (2016) and variants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config
from nst_jax.core import conv
from nst_jax.core.errors import UserError
from nst_jax.fast import layers, nets

KEY = jax.random.key(0)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape).astype(np.float32))


@functools.lru_cache(maxsize=None)
def _init(model):
  return nets.init_variables(model, KEY, size=16)


def _abstract_variables(model):
  return jax.eval_shape(lambda key: nets.init_variables(model, key), KEY)


def test_johnson_parameter_count_matches_hand_arithmetic():
  # conv: k*k*cin*cout weights + cout biases; each normalization: cout scales + cout biases.
  conv1 = 9 * 9 * 3 * 32 + 32 + 2 * 32  # 7_872
  conv2 = 3 * 3 * 32 * 64 + 64 + 2 * 64  # 18_624
  conv3 = 3 * 3 * 64 * 128 + 128 + 2 * 128  # 74_112
  res = 5 * 2 * (3 * 3 * 128 * 128 + 128 + 2 * 128)  # 5 blocks x 2 convs = 1_478_400
  up1 = 3 * 3 * 128 * 64 + 64 + 2 * 64  # 73_920
  up2 = 3 * 3 * 64 * 32 + 32 + 2 * 32  # 18_528
  conv_out = 9 * 9 * 32 * 3 + 3  # 7_779, no normalization after the last conv
  expected = conv1 + conv2 + conv3 + res + up1 + up2 + conv_out
  assert expected == 1_679_235
  johnson = _abstract_variables(nets.JohnsonNet())
  assert nets.count_params(johnson) == expected
  # batch_stats (running mean/var) are not parameters: 2 per normalized channel.
  normalized = 32 + 64 + 128 + 5 * 2 * 128 + 64 + 32
  assert nets.count_params(johnson["batch_stats"]) == 2 * normalized
  # Resize-convolution and instance norm have the same parameter count.
  assert nets.count_params(_abstract_variables(nets.ThesisNet())) == expected


def test_width_and_depth_scale_the_parameter_count():
  tiny = nets.count_params(_abstract_variables(nets.TinyNet()))
  # width 0.125: channels 4, 8, 16, R16 x1, 8, 4, 3.
  expected = ((9 * 9 * 3 * 4 + 3 * 4) + (3 * 3 * 4 * 8 + 3 * 8) + (3 * 3 * 8 * 16 + 3 * 16)
              + 2 * (3 * 3 * 16 * 16 + 3 * 16) + (3 * 3 * 16 * 8 + 3 * 8)
              + (3 * 3 * 8 * 4 + 3 * 4) + (9 * 9 * 4 * 3 + 3))
  assert tiny == expected


def test_lite_parameter_count_matches_hand_arithmetic():
  # width 0.25: channels 8, 16, R32 x5, 16, 8, 3; 2x2 pixel blocks in (12 channels).
  expected = ((3 * 3 * 12 * 8 + 3 * 8) + (3 * 3 * 8 * 16 + 3 * 16) + (3 * 3 * 16 * 32 + 3 * 32)
              + 5 * 2 * (3 * 3 * 32 * 32 + 3 * 32) + (3 * 3 * 32 * 16 + 3 * 16)
              + (3 * 3 * 16 * 8 + 3 * 8) + (3 * 3 * 8 * 3 + 3))
  assert nets.count_params(_abstract_variables(nets.LiteNet())) == expected == 105_963
  assert config.lite().net.pixel_shuffle and config.lite().net.width == nets.LiteNet().width


@pytest.mark.parametrize("model", [nets.TinyNet(), nets.TinyNet(upsample="resize"),
                                   nets.TinyNet(pixel_shuffle=True),
                                   nets.TinyNet(normalization="batch", padding="zero")])
def test_output_shape_and_range(model):
  variables = _init(model)
  out = jax.jit(model.apply)(variables, _images((2, 24, 40, 3)))
  assert out.shape == (2, 24, 40, 3) and out.dtype == jnp.float32
  assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
  stylize = jax.jit(functools.partial(nets.stylize_any_size, model))
  odd = stylize(variables, _images((1, 37, 53, 3)))
  assert odd.shape == (1, 37, 53, 3)
  assert 0.0 <= float(odd.min()) and float(odd.max()) <= 1.0


def test_direct_call_rejects_sizes_not_divisible_by_4():
  model = nets.TinyNet()
  with pytest.raises(ValueError, match="divisible by 4"):
    model.apply(_init(model), _images((1, 18, 16, 3)))


def test_pad_to_multiple_matches_numpy_reflect_and_crops_back():
  x = _images((2, 37, 53, 3))
  padded, pads = nets.pad_to_multiple(x, 4)
  assert padded.shape == (2, 40, 56, 3) and pads == ((1, 2), (1, 2))
  ref = np.pad(np.asarray(x), ((0, 0), (1, 2), (1, 2), (0, 0)), mode="reflect")
  np.testing.assert_array_equal(np.asarray(padded), ref)
  np.testing.assert_array_equal(np.asarray(nets.crop_padding(padded, pads)), np.asarray(x))
  same, none = nets.pad_to_multiple(_images((1, 8, 12, 3)), 4)
  assert same.shape == (1, 8, 12, 3) and none == ((0, 0), (0, 0))


def test_any_size_equals_direct_call_on_the_padded_image():
  model = nets.TinyNet()
  variables = _init(model)
  x = _images((1, 37, 53, 3))
  padded, pads = nets.pad_to_multiple(x)
  direct = nets.crop_padding(jax.jit(model.apply)(variables, padded), pads)
  any_size = jax.jit(functools.partial(nets.stylize_any_size, model))  # one program, not per op
  np.testing.assert_allclose(any_size(variables, x), direct, atol=1e-6)


def test_reflect_and_zero_padding_give_different_outputs_with_the_same_params():
  reflect, zero = nets.TinyNet(padding="reflect"), nets.TinyNet(padding="zero")
  variables = _init(reflect)
  x = _images((1, 16, 16, 3))
  diff = jnp.abs(reflect.apply(variables, x) - zero.apply(variables, x))
  assert float(diff.max()) > 1e-3


def test_upsample_modes_have_different_layers_and_outputs():
  transpose, resize = nets.TinyNet(upsample="transpose"), nets.TinyNet(upsample="resize")
  pt, pr = _init(transpose)["params"], _init(resize)["params"]
  assert {"deconv1", "deconv2"} <= set(pt) and not {"upconv1", "upconv2"} & set(pt)
  assert {"upconv1", "upconv2"} <= set(pr) and not {"deconv1", "deconv2"} & set(pr)
  # Same kernels under the other layer names: the upsampling operator alone differs.
  renamed = {k.replace("deconv", "upconv"): v for k, v in pt.items()}
  x = _images((1, 16, 16, 3))
  diff = jnp.abs(transpose.apply({"params": pt}, x) - resize.apply({"params": renamed}, x))
  assert float(diff.max()) > 1e-3


def test_transposed_conv_matches_torch_full_convolution():
  # Torch SpatialFullConvolution(k=3, s=2, pad=1, adj=1): out[2i - 1 + k] += x[i] * w[k], with
  # Flax's (non-transposed) kernel being Torch's flipped.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
  layer = layers.transpose_conv(5, jnp.float32, "deconv")
  variables = layer.init(KEY, x)
  out = np.asarray(layer.apply(variables, x))
  w = np.asarray(variables["params"]["kernel"])[::-1, ::-1]
  ref = np.zeros((8, 10, 5), np.float32)
  for i in range(3):
    for j in range(4):
      for a in range(3):
        for b in range(3):
          ref[2 * i + a, 2 * j + b] += x[0, i, j] @ w[a, b]
  ref = ref[1:7, 1:9] + np.asarray(variables["params"]["bias"])
  assert out.shape == (1, 6, 8, 5)
  np.testing.assert_allclose(out[0], ref, atol=1e-5)


def test_batch_norm_has_stats_and_train_differs_from_eval():
  model = nets.TinyNet(normalization="batch")
  variables = _init(model)
  assert "batch_stats" in variables and "batch_stats" not in _init(nets.TinyNet())
  x = _images((2, 16, 16, 3))
  eval_out = model.apply(variables, x, train=False)
  train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert float(jnp.abs(train_out - eval_out).max()) > 1e-3
  mean = updates["batch_stats"]["norm1"]["mean"]
  assert float(jnp.abs(mean).max()) > 0  # the running average moved off its zero init
  np.testing.assert_array_equal(model.apply(variables, x), eval_out)  # eval is the default


def test_instance_norm_output_does_not_depend_on_the_rest_of_the_batch():
  model = nets.TinyNet()
  variables = _init(model)
  a, b, c = _images((1, 16, 16, 3), 1), _images((1, 16, 16, 3), 2), _images((1, 16, 16, 3), 3)
  alone = model.apply(variables, a)[0]
  with_b = model.apply(variables, jnp.concatenate([a, b]))[0]
  with_c = model.apply(variables, jnp.concatenate([a, c]))[0]
  np.testing.assert_allclose(with_b, alone, atol=1e-5)
  np.testing.assert_allclose(with_c, alone, atol=1e-5)


def test_batch_norm_train_output_depends_on_the_rest_of_the_batch():
  model = nets.TinyNet(normalization="batch")
  variables = _init(model)
  a, b, c = _images((1, 16, 16, 3), 1), _images((1, 16, 16, 3), 2), _images((1, 16, 16, 3), 3)

  @functools.partial(jax.jit, static_argnums=1)  # one program per mode, not one per op
  def first(batch, train):
    out = model.apply(variables, batch, train=train, mutable=["batch_stats"] if train else False)
    return (out[0] if train else out)[0]

  ab, ac = jnp.concatenate([a, b]), jnp.concatenate([a, c])
  assert float(jnp.abs(first(ab, True) - first(ac, True)).max()) > 1e-3
  np.testing.assert_allclose(first(ab, False), first(ac, False), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_output():
  model = nets.TinyNet(dtype=jnp.bfloat16)
  variables = _init(model)
  dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  x = _images((1, 16, 16, 3))
  out = jax.jit(model.apply)(variables, x)  # jitted: one program, not one per op
  assert out.dtype == jnp.float32
  ref = jax.jit(nets.TinyNet().apply)(variables, x)
  err = float(jnp.abs(out - ref).max())
  assert 0 < err < 0.05  # really computed in bf16, and close to the float32 result


def test_jit_matches_eager_and_does_not_retrace():
  model = nets.TinyNet(upsample="resize")
  variables = _init(model)
  traces = []

  @jax.jit
  def stylize(variables, images):
    traces.append(1)
    return nets.stylize_any_size(model, variables, images)

  x = _images((1, 21, 30, 3))
  np.testing.assert_allclose(stylize(variables, x), nets.stylize_any_size(model, variables, x),
                             atol=1e-5)
  stylize(variables, _images((1, 21, 30, 3), 5))
  assert len(traces) == 1


def test_input_blend_mixes_the_input_into_the_output():
  a = nets.THESIS_INPUT_BLEND
  plain, blended = nets.TinyNet(), nets.TinyNet(input_blend=a)
  variables = _init(plain)
  x = _images((1, 16, 16, 3))
  expected = (1 - a) * plain.apply(variables, x) + a * x
  np.testing.assert_allclose(blended.apply(variables, x), expected, atol=1e-6)


def test_affine_output_against_numpy():
  rng = np.random.default_rng(3)
  coeffs = rng.normal(size=(2, 4, 5, 12)).astype(np.float32)
  images = rng.uniform(size=(2, 4, 5, 3)).astype(np.float32)
  s = nets.AFFINE_SCALE
  matrix = np.eye(3) + s * coeffs[..., :9].reshape(2, 4, 5, 3, 3)
  expected = np.clip(np.einsum("bhwoi,bhwi->bhwo", matrix, images) + s * coeffs[..., 9:], 0, 1)
  np.testing.assert_allclose(nets.affine_output(jnp.asarray(coeffs), jnp.asarray(images)),
                             expected, atol=1e-6)
  np.testing.assert_allclose(nets.affine_output(jnp.zeros_like(coeffs), images), images)


def test_affine_head_is_a_smooth_per_pixel_colour_transform():
  model = nets.TinyNet(output="affine", affine_grid=4)
  variables = _init(model)
  params, rgb_params = variables["params"], _init(nets.TinyNet())["params"]
  # No upsampling layers; conv_out is a 3x3 conv from the trunk's 16 channels to 12.
  assert not {"upconv1", "deconv1", "norm4", "upconv2", "norm5"} & set(params)
  assert params["conv_out"]["kernel"].shape == (3, 3, 16, 12)
  assert {k: v for k, v in params.items() if k != "conv_out"}.keys() <= rgb_params.keys()
  x = _images((2, 16, 16, 3))
  apply = jax.jit(model.apply)  # one program per shape, not one per op (the suite's time)
  out = apply(variables, x)
  assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
  # Starts near the identity (small raw coefficients), unlike the rgb head's random colours.
  assert float(jnp.mean(jnp.abs(out - x))) < 0.1
  # A flat input gives coefficients that vary smoothly: out - x on a constant image is smooth.
  flat = jnp.full((1, 32, 32, 3), 0.5)
  delta = np.asarray(apply(variables, flat) - flat)[0]
  assert np.abs(np.diff(delta, axis=0)).max() <= 0.5 * np.abs(delta - delta.mean((0, 1))).max() + 1e-6


def test_full_resolution_affine_head():
  model = nets.TinyNet(output="affine")  # affine_grid=1
  variables = _init(model)
  rgb = _init(nets.TinyNet())["params"]
  # The rgb network's layers, with a 3x3 conv_out to 12 channels instead of a 9x9 one to 3.
  assert variables["params"].keys() == rgb.keys()
  assert variables["params"]["conv_out"]["kernel"].shape == (3, 3) + rgb["conv_out"]["kernel"].shape[2:3] + (12,)
  x = _images((1, 16, 16, 3))
  out = model.apply(variables, x)
  assert out.shape == x.shape and float(jnp.mean(jnp.abs(out - x))) < 0.1


def test_gradients_reach_every_parameter():
  model = nets.TinyNet(upsample="resize")
  variables = _init(model)
  x = _images((1, 16, 16, 3))
  grads = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, x) ** 2)))(variables["params"])
  norms = [float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads)]
  assert all(np.isfinite(norms)) and min(norms) > 0


@pytest.mark.parametrize("option", [{"normalization": "layer"}, {"upsample": "bilinear"},
                                    {"padding": "edge"}, {"width": 0.0}, {"input_blend": 1.0},
                                    {"output": "lab"}, {"output": "affine", "affine_grid": 2},
                                    {"output": "affine", "pixel_shuffle": True}])
def test_invalid_options_raise_user_error(option):
  model = nets.TinyNet(**option)
  with pytest.raises(UserError):
    nets.init_variables(model, KEY, size=16)


def test_presets():
  johnson, thesis = nets.JohnsonNet(), nets.ThesisNet()
  assert (johnson.normalization, johnson.upsample, johnson.padding) == ("batch", "transpose", "zero")
  assert (thesis.normalization, thesis.upsample, thesis.padding) == ("instance", "resize", "reflect")
  assert hash(johnson) == hash(nets.JohnsonNet())  # hashable, usable as a static jit argument


# --- The fast convolutions (conv.conv2d, conv.upsample_conv2d) against XLA's plain ones ---------

def _conv_case(shape, kernel, cout, seed):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], cout)).astype(np.float32) * 0.2)
  return x, w


def _assert_close(actual, expected, rtol=2e-5):
  expected = np.asarray(expected)
  assert actual.shape == expected.shape
  scale = max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(np.asarray(actual), expected, atol=rtol * scale, rtol=0)


@pytest.mark.parametrize("padding", config.PADDINGS)
@pytest.mark.parametrize("kernel,stride,cin,cout", [(3, 1, 5, 6), (3, 2, 4, 6), (9, 1, 3, 4),
                                                    (9, 1, 6, 3), (5, 1, 3, 2), (1, 1, 3, 2)])
@pytest.mark.parametrize("size", [(12, 16), (13, 11)])
def test_conv2d_matches_xla_convolution(padding, kernel, stride, cin, cout, size):
  x, w = _conv_case((2, *size, cin), kernel, cout, seed=kernel + stride + cin)
  fast = jax.jit(functools.partial(conv.conv2d, stride=stride, padding=padding))
  ref = conv.conv_reference(x, w, stride, padding=padding)
  _assert_close(fast(x, w), ref)
  # conv_reference itself is a plain padded correlation (numpy's pad, a direct sum).
  xp = np.pad(np.asarray(x), ((0, 0), *[(kernel // 2,) * 2] * 2, (0, 0)),
              mode="reflect" if padding == "reflect" else "constant")
  i, j = ref.shape[1] // 2, ref.shape[2] // 3
  patch = xp[:, stride * i:stride * i + kernel, stride * j:stride * j + kernel]
  np.testing.assert_allclose(ref[:, i, j], np.einsum("bhwc,hwco->bo", patch, np.asarray(w)),
                             atol=1e-4)


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_tiles_match_xla_convolution_on_any_size(tile):
  for shape in ((2, 9, 14, 5), (1, 3, 3, 2)):  # VALID outputs 7 x 12 (partial tiles), 1 x 1
    x, w = _conv_case(shape, 3, 4, seed=tile)
    out = jax.jit(conv._winograd_conv3x3, static_argnums=2)(x, w, tile)
    _assert_close(out, conv._conv_valid(x, w), rtol=2e-6 if tile == 2 else 2e-5)


@pytest.mark.parametrize("padding", config.PADDINGS)
@pytest.mark.parametrize("size", [(6, 8), (5, 7), (1, 1)])
def test_upsample_conv2d_matches_upsample_then_convolution(padding, size):
  x, w = _conv_case((2, *size, 5), 3, 4, seed=size[0])
  fast = jax.jit(functools.partial(conv.upsample_conv2d, padding=padding))
  _assert_close(fast(x, w), conv.upsample_conv_reference(x, w, padding=padding))


@pytest.mark.parametrize("fast,ref,kernel,stride,cin,cout", [
    (conv.conv2d, conv.conv_reference, 3, 1, 4, 3),
    (conv.conv2d, conv.conv_reference, 9, 1, 4, 3),  # few outputs: col2im between blocks
    (conv.conv2d, conv.conv_reference, 9, 1, 3, 5),  # few inputs: im2col between blocks
    (conv.conv2d, conv.conv_reference, 3, 2, 4, 3),
    (conv.upsample_conv2d, conv.upsample_conv_reference, 3, None, 4, 3)])
@pytest.mark.parametrize("padding", config.PADDINGS)
def test_fast_convolution_gradients_match_the_reference(fast, ref, kernel, stride, cin, cout,
                                                        padding):
  x, w = _conv_case((1, 10, 9, cin), kernel, cout, seed=7)
  kw = {"padding": padding} if stride is None else {"stride": stride, "padding": padding}
  probe = jnp.asarray(np.random.default_rng(8).normal(size=ref(x, w, **kw).shape), jnp.float32)

  def loss(fn):
    return jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w, **kw)) * probe), (0, 1)))

  for g_fast, g_ref in zip(loss(fast)(x, w), loss(ref)(x, w)):
    _assert_close(g_fast, g_ref, rtol=1e-4)


def test_fast_convolutions_in_bfloat16_stay_close_to_float32():
  x, w = _conv_case((1, 16, 16, 8), 9, 3, seed=9)
  for fn in (functools.partial(conv.conv2d, padding="reflect"),
             functools.partial(conv.upsample_conv2d, padding="zero")):
    out = jax.jit(fn)(x.astype(jnp.bfloat16), w[:3, :3].astype(jnp.bfloat16) if fn.func is
                      conv.upsample_conv2d else w.astype(jnp.bfloat16))
    ref = fn(x, w[:3, :3] if fn.func is conv.upsample_conv2d else w)
    assert out.dtype == jnp.bfloat16
    err = float(jnp.abs(out.astype(jnp.float32) - ref).max() / jnp.abs(ref).max())
    assert 0 < err < 0.03


def _reference_net(model, params, images):
  # TransformNet ("resize" upsampling, instance norm, rgb head) from XLA's plain convolutions.
  def conv_(x, name, stride=1, up=False, block=params):
    p = block[name]
    fn = conv.upsample_conv_reference if up else functools.partial(conv.conv_reference,
                                                                   stride=stride)
    return fn(x, p["kernel"], padding=model.padding) + p["bias"]

  def norm(x, p, relu=True):
    mean, var = jnp.mean(x, (1, 2), keepdims=True), jnp.var(x, (1, 2), keepdims=True)
    y = (x - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]
    return jax.nn.relu(y) if relu else y

  x = images * 2 - 1
  if model.pixel_shuffle:  # 2x2 blocks as channels, (row phase, column phase, RGB)
    x = jnp.concatenate([x[:, a::2, b::2] for a in (0, 1) for b in (0, 1)], axis=-1)
  x = norm(conv_(x, "conv1"), params["norm1"])
  x = norm(conv_(x, "conv2", 1 if model.pixel_shuffle else 2), params["norm2"])
  x = norm(conv_(x, "conv3", 2), params["norm3"])
  for i in range(1, model.num_residual + 1):
    r = params[f"res{i}"]
    y = norm(conv_(x, "conv1", block=r), r["norm1"])
    x = x + norm(conv_(y, "conv2", block=r), r["norm2"], relu=False)
  x = norm(conv_(x, "upconv1", up=True), params["norm4"])
  if model.pixel_shuffle:  # a resize-convolution to RGB
    x = norm(conv_(x, "conv4"), params["norm5"])
    return (jnp.tanh(conv_(x, "conv_out", up=True)) + 1) / 2
  x = norm(conv_(x, "upconv2", up=True), params["norm5"])
  return (jnp.tanh(conv_(x, "conv_out")) + 1) / 2


@pytest.mark.parametrize("padding,shuffle", [("reflect", False), ("zero", False),
                                             pytest.param("reflect", True,
                                                          marks=pytest.mark.slow)])
def test_thesis_net_matches_a_plain_convolution_reference(padding, shuffle):
  model = nets.TinyNet(upsample="resize", padding=padding, pixel_shuffle=shuffle)
  params = _init(model)["params"]
  x = _images((2, 20, 28, 3), seed=4)
  out = jax.jit(model.apply)({"params": params}, x)
  np.testing.assert_allclose(out, jax.jit(functools.partial(_reference_net, model))(params, x),
                             atol=2e-5)
