"""The ``conv_impl`` switch: XLA's convolutions and the CPU kernels agree, and "auto" picks by backend.

Every layer shape the package runs (VGG19's 3x3 convolutions with their real channel counts, the
transform network's 9x9 / 3x3 / stride-2 / upsampling convolutions with both paddings) is computed
with ``impl="xla"`` and ``impl="cpu_fast"``; values and vector-Jacobian products with a random
cotangent must agree to float32 rounding. Spatial sizes are tiny to keep the run fast.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config
from nst_jax.core import conv, objective, vgg
from nst_jax.core.errors import UserError
from nst_jax.fast import nets
from nst_jax.slow import research

IMPLS = ("xla", "cpu_fast")
# (in, out) channels of VGG19's 3x3 convolutions: 64, 128, 256, 512, 512 per block.
VGG_WIDTHS = (64, 128, 256, 512, 512)
VGG_SHAPES = sorted({(i, o) for i, o in zip((3,) + VGG_WIDTHS, VGG_WIDTHS)}
                    | {(w, w) for w in VGG_WIDTHS})
# (kernel, stride, in, out) of TransformNet at width 1: conv1, conv2, conv3, the residual blocks,
# conv_out (rgb: 9x9, affine: 3x3 at full or quarter resolution).
NET_SHAPES = [(9, 1, 3, 32), (3, 2, 32, 64), (3, 2, 64, 128), (3, 1, 128, 128), (9, 1, 32, 3),
              (3, 1, 32, 12), (3, 1, 128, 12)]
UPSAMPLE_SHAPES = [(128, 64), (64, 32)]  # upconv1, upconv2


def _normal(shape, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape).astype(np.float32) * scale)


def _assert_close(actual, expected, rtol, scale=None):
  # Relative to the largest magnitude: the kernels reorder float32 sums.
  expected = np.asarray(expected)
  assert actual.shape == expected.shape
  scale = max(1e-6, float(np.abs(expected).max()) if scale is None else scale)
  np.testing.assert_allclose(np.asarray(actual), expected, atol=rtol * scale, rtol=0)


def _value_and_vjp(fn, args, seed):
  # fn(*args) and the VJP of a fixed random cotangent, in one compiled program per impl.
  shapes = jax.eval_shape(fn, *args)
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  probe = tree.unflatten([_normal(l.shape, seed + i) for i, l in enumerate(leaves)])

  def run(*a):
    out, vjp = jax.vjp(fn, *a)
    return out, vjp(probe)

  return jax.jit(run)(*args)


def _assert_impls_agree(make_fn, args, *, rtol=2e-5, grad_rtol=1e-4, seed=0):
  """``make_fn(impl)`` for both impls: same values and the same VJP of one random cotangent.

  Values are compared leaf by leaf relative to each leaf's largest magnitude; gradients relative
  to the largest of all (some, e.g. of biases before instance normalization, are 0 up to
  rounding).
  """
  (out_x, g_x), (out_c, g_c) = (_value_and_vjp(make_fn(i), args, seed) for i in IMPLS)
  for a, b in zip(jax.tree_util.tree_leaves(out_c), jax.tree_util.tree_leaves(out_x)):
    _assert_close(a, b, rtol)
  g_scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(g_x))
  for a, b in zip(jax.tree_util.tree_leaves(g_c), jax.tree_util.tree_leaves(g_x)):
    _assert_close(a, b, grad_rtol, scale=g_scale)


# --- resolution and validation ---------------------------------------------------------------

@pytest.mark.parametrize("backend,expected", [("cpu", "cpu_fast"), ("gpu", "xla"),
                                              ("tpu", "xla")])
def test_auto_picks_the_cpu_kernels_only_on_the_cpu_backend(monkeypatch, backend, expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert conv.resolve_impl("auto") == expected
  assert [conv.resolve_impl(i) for i in IMPLS] == list(IMPLS)  # explicit choices are kept


def test_conv_impl_names_match_the_config_choices():
  assert config.CONV_IMPLS == ("auto",) + IMPLS
  for cfg in (config.LossConfig(), config.NetConfig(), config.VisualizeConfig()):
    assert cfg.conv_impl == "auto"
  cfg = config.override(config.thesis(), {"net.conv_impl": "xla", "loss.conv_impl": "cpu_fast"})
  assert nets.config_from_json(config.to_json(cfg)) == cfg
  assert nets.make_model(cfg.net).conv_impl == "xla"


def test_a_bad_conv_impl_is_refused_naming_the_field():
  with pytest.raises(UserError, match="conv_impl 'cudnn'"):
    conv.resolve_impl("cudnn")
  with pytest.raises(config.ConfigError, match="conv_impl"):
    config.LossConfig(conv_impl="fast").check()
  train = config.train_smoke()
  for key in ("net.conv_impl", "loss.conv_impl"):
    with pytest.raises(config.ConfigError, match=key):
      config.override(train, {key: "gpu"}).check()
  with pytest.raises(UserError, match="conv_impl"):
    nets.init_variables(nets.TinyNet(conv_impl="XLA"), jax.random.key(0), size=16)
  fake_params = {"conv1_1": {"kernel": np.zeros((3, 3, 3, 64), np.float32)}}
  with pytest.raises(config.ConfigError, match="conv_impl"):
    research.check_visualize(fake_params, "conv1_1", (0,), config.VisualizeConfig(conv_impl="x"))
  with pytest.raises(UserError, match="conv_impl"):
    vgg.vgg_features({}, jnp.zeros((1, 8, 8, 3)), ("conv1_1",), conv_impl="none")


def _primitives(fn, *args) -> str:
  return str(jax.make_jaxpr(fn)(*args))


def _abstract_variables(model):
  # Shapes only: tracing needs no values, and an eager init would run the kernels op by op.
  return jax.eval_shape(lambda key: nets.init_variables(model, key, size=16), jax.random.key(0))


def test_auto_on_a_gpu_traces_xla_convolutions_only(monkeypatch):
  # The CPU kernels leave marks in the traced program: VGG's custom VJP, the Winograd /
  # block-matmul einsums of the transform net. "auto" must drop both when the backend is a GPU.
  params = {n: {"kernel": jnp.zeros((3, 3, i, o)), "bias": jnp.zeros(o)}
            for n, (i, o) in (("conv1_1", (3, 64)), ("conv1_2", (64, 64)))}
  params["preprocess"] = {"scale": jnp.ones(3), "offset": jnp.zeros(3)}
  images = jnp.zeros((1, 8, 8, 3))
  model = nets.TinyNet(upsample="resize")
  variables = _abstract_variables(model)
  seen = {}
  for backend in ("cpu", "gpu"):
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    # New functions each time: traces are cached by function, and "auto" is resolved in the trace.
    features = lambda x: vgg.vgg_features(params, x, ("relu1_2",))
    forward = lambda v, x: model.apply(v, x)
    seen[backend] = (_primitives(features, images), _primitives(forward, variables, images))
  assert "_conv3x3_cpu" in seen["cpu"][0] and "_conv3x3_cpu" not in seen["gpu"][0]
  assert "dot_general" in seen["cpu"][1] and "dot_general" not in seen["gpu"][1]
  assert seen["gpu"][1].count("conv_general_dilated") == 8  # 9x9, 2 stride-2, 2 res, 2 up, out


def test_configs_carry_conv_impl_to_the_traced_program():
  # objective.loss_terms reads LossConfig.conv_impl, nets.make_model NetConfig.conv_impl.
  params = {"conv1_1": {"kernel": jnp.zeros((3, 3, 3, 4)), "bias": jnp.zeros(4)},
            "preprocess": {"scale": jnp.ones(3), "offset": jnp.zeros(3)}}
  images = jnp.zeros((1, 8, 8, 3))
  targets = {"content": {"relu1_1": jnp.zeros((1, 8, 8, 4))}, "styles": (), "blend": jnp.ones(0)}
  net_images = jnp.zeros((1, 16, 16, 3))
  for impl in IMPLS:
    cfg = config.LossConfig(content_layers=("relu1_1",), style_layers=(), style_layer_weights=(),
                            conv_impl=impl)
    loss = lambda x, cfg=cfg: jnp.sum(objective.loss_terms(params, x, targets, cfg)["total"])
    assert ("_conv3x3_cpu" in _primitives(loss, images)) == (impl == "cpu_fast")
    model = nets.make_model(config.NetConfig(width=0.125, num_residual=1, conv_impl=impl))
    jaxpr = _primitives(lambda v, x, m=model: m.apply(v, x), _abstract_variables(model),
                        net_images)
    assert ("dot_general" in jaxpr) == (impl == "cpu_fast")


# --- both implementations agree, layer by layer ------------------------------------------------

def _conv_cases(shapes, size, seed):
  # [(x [1, *size, I], kernel [k, k, I, O])] with unit-variance outputs, one per (k, I, O).
  return [(_normal((1, *size, i), seed + n), _normal((k, k, i, o), seed + 50 + n, (k * k * i) ** -0.5))
          for n, (k, i, o) in enumerate(shapes)]


def test_vgg_conv3x3_impls_agree_on_every_vgg19_shape(monkeypatch):
  # cpu_fast runs the wide layers (256, 512 channels) as Winograd F(2x2, 3x3): the forward and
  # the input gradient from the same transformed kernel; odd sizes test its tiling. Here on
  # every wide layer (the default needs >= 512 pixels).
  monkeypatch.setattr(vgg, "WINOGRAD_MIN_PIXELS", 0)
  cases = _conv_cases([(3, i, o) for i, o in VGG_SHAPES], (6, 5), seed=0)
  # One function of all the cases: a single program per impl keeps the compile time down.
  make = lambda impl: lambda cases: [vgg.conv3x3(x, w, impl=impl) for x, w in cases]
  _assert_impls_agree(make, (cases,), seed=1)


def test_vgg_conv3x3_runs_winograd_on_wide_layers_of_512_pixels_and_more():
  def uses_winograd(hw, cin, cout):
    x, k = jnp.zeros((1, *hw, cin)), jnp.zeros((3, 3, cin, cout))
    return "dot_general" in _primitives(lambda x: vgg.conv3x3(x, k, impl="cpu_fast"), x)
  assert uses_winograd((24, 32), 256, 512) and uses_winograd((64, 48), 128, 256)
  assert not uses_winograd((12, 16), 512, 512)  # the kernel transform would dominate
  assert not uses_winograd((64, 64), 128, 128)  # XLA's convolution is faster with few channels


def test_vgg_conv3x3_impls_agree_on_images_narrower_than_the_kernel():
  # cpu_fast computes these as one matmul (vgg.NARROW), not as XLA:CPU's slow convolution.
  cases = [(_normal((1, *hw, 32), 60 + n), _normal((3, 3, 32, 48), 70 + n, (9 * 32) ** -0.5))
           for n, hw in enumerate([(1, 1), (1, 2), (2, 3), (5, 2)])]
  make = lambda impl: lambda cases: [vgg.conv3x3(x, w, impl=impl) for x, w in cases]
  _assert_impls_agree(make, (cases,), seed=3)
  for hw, narrow in (((2, 3), True), ((1, 7), True), ((3, 3), False)):
    x, k = jnp.zeros((1, *hw, 512)), jnp.zeros((3, 3, 512, 512))
    prims = _primitives(lambda x: vgg.conv3x3(x, k, impl="cpu_fast"), x)
    assert ("conv_general_dilated" not in prims) == narrow, (hw, prims)


@pytest.mark.parametrize("padding", config.PADDINGS)
def test_transform_net_convs_agree_between_impls(padding):
  # conv2d on every (kernel, stride, in, out) of NET_SHAPES, then the two upsampling convs.
  cases = _conv_cases([(k, i, o) for k, _, i, o in NET_SHAPES], (12, 10), seed=10)
  cases += _conv_cases([(3, i, o) for i, o in UPSAMPLE_SHAPES], (5, 6), seed=20)
  kws = [{"stride": s} for _, s, _, _ in NET_SHAPES] + [None] * len(UPSAMPLE_SHAPES)

  def make(impl):
    def run(cases):
      return [conv.conv2d(x, w, padding=padding, impl=impl, **kw) if kw is not None else
              conv.upsample_conv2d(x, w, padding=padding, impl=impl)
              for (x, w), kw in zip(cases, kws)]
    return run

  _assert_impls_agree(make, (cases,), seed=2)


def test_xla_impl_is_the_reference_convolution():
  # "xla" is not a third implementation: it is conv_reference / upsample_conv_reference.
  x, w = _normal((1, 7, 6, 4), 1), _normal((3, 3, 4, 5), 2)
  for padding in config.PADDINGS:
    np.testing.assert_array_equal(conv.conv2d(x, w, 1, padding=padding, impl="xla"),
                                  conv.conv_reference(x, w, 1, padding=padding))
    np.testing.assert_array_equal(conv.upsample_conv2d(x, w, padding=padding, impl="xla"),
                                  conv.upsample_conv_reference(x, w, padding=padding))


# --- whole networks --------------------------------------------------------------------------

@pytest.mark.slow  # ~40 s (two compilations of VGG19's forward and backward pass); the default
# run keeps every VGG19 convolution shape's values and VJPs (above) and the real network's
# features up to conv4_2 against numpy (test_weights.py, "auto": the CPU kernels on a CPU)
def test_vgg_feature_dicts_agree_between_impls(vgg_params):
  # Every layer of the real network at 32 px (pool5 is 1 x 1), values and input gradients.
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(1, 32, 32, 3)).astype(np.float32))
  make = lambda impl: lambda x: vgg.vgg_features(vgg_params, x, vgg.VGG19_LAYERS, "avg",
                                                 conv_impl=impl)
  _assert_impls_agree(make, (images,), rtol=1e-5, grad_rtol=1e-4, seed=5)


@pytest.mark.parametrize("net", [
    pytest.param(dict(upsample="resize", padding="reflect"),  # the thesis' network
                 marks=pytest.mark.slow),
    dict(normalization="batch", upsample="transpose", padding="zero")], ids=str)  # Johnson's
def test_transform_net_forward_agrees_between_impls(net):
  base = nets.make_model(config.NetConfig(width=0.25, num_residual=1, **net))  # 1: same shapes
  variables = jax.jit(base.init)(jax.random.key(1), jnp.zeros((1, 16, 16, 3)))
  images = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 20, 16, 3)).astype(np.float32))

  def make(impl):
    model = dataclasses.replace(base, conv_impl=impl)
    return lambda v, x: model.apply(v, x)

  # Outputs, and the gradients with respect to every parameter and the images.
  _assert_impls_agree(make, (variables, images), rtol=2e-5, grad_rtol=2e-4, seed=3)


def test_winograd_in_row_strips_equals_the_whole_image():
  # Row strips (vgg.WINOGRAD_STRIP_PIXELS) start on even rows: the same 2x2 tiles, the same
  # values, forward and flipped (the input gradient); odd heights, a batch, a 1-strip remainder.
  k = _normal((3, 3, 8, 5), 80, (9 * 8) ** -0.5)
  u = conv.winograd_kernel(k)
  # Jitted: one program per case, not one per op and strip (the suite's time).
  same = jax.jit(conv.winograd_conv3x3_same, static_argnames=("flipped", "strip_pixels"))
  for n, shape in enumerate([(1, 37, 23, 8), (2, 30, 17, 8), (1, 5, 40, 8)]):
    x, g = _normal(shape, 81 + n), _normal(shape[:3] + (5,), 91 + n)
    for strip in (40, 100):
      np.testing.assert_allclose(same(x, u, strip_pixels=strip), same(x, u), rtol=0, atol=1e-6)
      np.testing.assert_allclose(same(g, u, flipped=True, strip_pixels=strip),
                                 same(g, u, flipped=True), rtol=0, atol=1e-6)


def test_vgg_conv3x3_in_strips_keeps_xlas_values_and_gradients(monkeypatch):
  monkeypatch.setattr(vgg, "WINOGRAD_MIN_PIXELS", 0)
  monkeypatch.setattr(vgg, "WINOGRAD_STRIP_PIXELS", 24)
  cases = _conv_cases([(3, 256, 16)], (9, 7), seed=5)
  make = lambda impl: lambda cases: [vgg.conv3x3(x, w, impl=impl) for x, w in cases]
  _assert_impls_agree(make, (cases,), seed=6)
