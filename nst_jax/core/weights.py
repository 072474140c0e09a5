"""VGG19 weights: convert the public Keras / torchvision files to the project's ``.npz``, install.

Synopsis::

  from nst_jax.core import weights
  path = weights.install_weights("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
  path = weights.download_weights()          # Keras' official file, MD5-checked, then installed
  arrays = weights.convert_torch_pth("vgg19-dcbb9e9d.pth")   # {"conv1_1/kernel": HWIO, ...}

The installed file is ``paths.cached_vgg_path()``: keys ``convX_Y/kernel`` (HWIO float32) and
``convX_Y/bias`` for the 16 conv layers, plus a string entry ``convention`` ("caffe_bgr" for the
Keras / Caffe weights, "torch_rgb" for torchvision's), which ``vgg.load_vgg19`` reads. A JSON
provenance record (source name, sha256, md5, format, date) is written beside it.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from nst_jax.core import digest, image_io, paths
from nst_jax.core.errors import UserError
from nst_jax.core.vgg import CONV_LAYERS, CONVENTIONS

KERAS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
             "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
# Keras publishes only an MD5 for this file (the ``file_hash`` in keras/src/applications/vgg19.py;
# Keras' ``get_file`` reads a 32-hex-digit hash as MD5).
KERAS_MD5 = "253f8cb515780f3b799900260a226db6"
# Output channels of conv1_1 ... conv5_4; every kernel is 3x3.
VGG19_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 256,
                  512, 512, 512, 512, 512, 512, 512, 512)
# Positions of the convolutions in torchvision's ``vgg19().features`` Sequential.
TORCH_FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled 0x1950a86a20f9469cfc6c
_FORMATS = "a Keras .h5, a torchvision .pth or a .npz in the project layout"


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """``{"convX_Y/kernel": (3, 3, Cin, Cout), "convX_Y/bias": (Cout,)}`` for the VGG19 conv layers."""
  shapes, cin = {}, 3
  for name, cout in zip(CONV_LAYERS, VGG19_CHANNELS):
    shapes[f"{name}/kernel"] = (3, 3, cin, cout)
    shapes[f"{name}/bias"] = (cout,)
    cin = cout
  return shapes


def validate_arrays(arrays: Mapping[str, np.ndarray], source: str = "weights") -> dict:
  """Checks a converted set is complete VGG19 (every layer, its shape, float32, finite).

  Returns just the 32 arrays; raises ``UserError`` naming ``source`` and the first bad tensor.
  """
  out = {}
  for key, shape in expected_shapes().items():
    if key not in arrays:
      raise UserError(f"{source}: VGG19 tensor {key} is missing")
    arr = np.asarray(arrays[key])
    if arr.shape != shape:
      raise UserError(f"{source}: {key} has shape {arr.shape}, expected {shape} (VGG19)")
    if arr.dtype != np.float32:
      raise UserError(f"{source}: {key} is {arr.dtype}, expected float32")
    if not np.isfinite(arr).all():
      raise UserError(f"{source}: {key} holds NaN or infinite values")
    out[key] = arr
  return out


def detect_format(path: str | os.PathLike) -> str:
  """A weights file's format, from its content: "keras_h5", "torch_pth" or "npz" (else UserError)."""
  path = _existing_file(path)
  with open(path, "rb") as f:
    head = f.read(16)
  if head.startswith(_HDF5_MAGIC):
    return "keras_h5"
  if head.startswith(_TORCH_LEGACY_MAGIC):
    return "torch_pth"
  if head.startswith(_ZIP_MAGIC):
    try:
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
    except (zipfile.BadZipFile, OSError):
      names = []
    if any(n.endswith(".npy") for n in names):
      return "npz"
    if any(n.endswith("data.pkl") for n in names):
      return "torch_pth"  # torch.save's zip format: <name>/data.pkl + tensor storages
  raise UserError(f"unrecognised weights file {path} (suffix {path.suffix or 'none'!r}): "
                  f"expected {_FORMATS}")


def _existing_file(path: str | os.PathLike) -> Path:
  path = Path(path).expanduser()
  if not path.exists():
    raise UserError(f"weights file not found: {path}")
  if not path.is_file():
    raise UserError(f"expected a weights file, got a directory: {path}")
  if path.stat().st_size == 0:
    raise UserError(f"weights file is empty (0 bytes): {path}")
  return path


def _brief(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return (text[0] if text else type(e).__name__)[:200]


def _import_h5py():
  try:
    import h5py  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("reading Keras .h5 weights needs h5py: pip install h5py") from None
  return h5py


def _find_group(h5py, root, name: str):
  """The shallowest group called ``name`` (Keras nests layers under ``model_weights``/``layers``)."""
  if name in root and isinstance(root[name], h5py.Group):
    return root[name]
  return root.visititems(
      lambda path, obj: obj if isinstance(obj, h5py.Group) and path.split("/")[-1] == name
      else None)


def _group_datasets(h5py, group) -> list[np.ndarray]:
  """A layer group's weights: those ``weight_names`` lists, else every dataset below it."""
  if "weight_names" in group.attrs:
    return [np.asarray(group[n.decode() if isinstance(n, bytes) else str(n)]) for n in group.attrs["weight_names"]]
  found = []
  group.visititems(lambda _, obj: found.append(np.asarray(obj))
                   if isinstance(obj, h5py.Dataset) else None)
  return found


def _keras_layer(h5py, f, layer: str, source: str) -> tuple[np.ndarray, np.ndarray]:
  group = _find_group(h5py, f, layer)
  if group is None:
    raise UserError(f"{source} has no layer {layer}: not a Keras VGG19 weights file")
  tensors = _group_datasets(h5py, group)
  kernels = [t for t in tensors if t.ndim == 4]
  biases = [t for t in tensors if t.ndim == 1]
  if len(kernels) != 1 or len(biases) != 1:
    raise UserError(f"{source}: layer {layer} should hold one kernel and one bias, found "
                    f"shapes {[t.shape for t in tensors]}")
  return kernels[0], biases[0]


def convert_keras_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels[_notop].h5``.

  Layers ``block{b}_conv{i}`` become ``conv{b}_{i}``. Both layouts of Keras weight files are
  read: a ``layer_names`` / ``weight_names`` attribute index over datasets such as
  ``block1_conv1/block1_conv1_W_1:0``, and nested groups (``model_weights/...``,
  ``block1_conv1/block1_conv1/kernel:0``, Keras 3's ``layers/block1_conv1/vars/0``). Kernels are
  already HWIO and the convention is Caffe's (BGR, 0-255, mean-subtracted). FC layers are ignored.

  Args:
    path: the ``.h5`` file.

  Returns:
    Validated ``{"convX_Y/kernel": HWIO float32, "convX_Y/bias": float32}``.

  Raises:
    UserError: if h5py is missing, the file is unreadable or is not VGG19.

  References:
    Simonyan & Zisserman, ICLR 2015 (arXiv:1409.1556); Keras applications' port of the weights.
  """
  path = _existing_file(path)
  h5py = _import_h5py()
  arrays = {}
  try:
    with h5py.File(path, "r") as f:
      for name in CONV_LAYERS:
        b, i = name[4:].split("_")
        kernel, bias = _keras_layer(h5py, f, f"block{b}_conv{i}", str(path))
        arrays[f"{name}/kernel"] = _to_float32(kernel)
        arrays[f"{name}/bias"] = _to_float32(bias)
  except (OSError, KeyError, ValueError) as e:
    raise UserError(f"cannot read Keras weights {path}: {_brief(e)}") from None
  return validate_arrays(arrays, str(path))


def _to_float32(arr: np.ndarray) -> np.ndarray:
  """Floating tensors are stored float32; anything else is left for ``validate_arrays`` to refuse."""
  arr = np.asarray(arr)
  return arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) else arr


def load_torch_state_dict(path: Path) -> Mapping:
  """A ``.pth``'s state_dict, read by ``torch.load(weights_only=True)`` (no code runs)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("reading PyTorch .pth weights needs torch: pip install torch==2.13.0") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types (pickle, zip, RuntimeError) for bad files
    raise UserError(f"cannot read PyTorch weights {path}: {_brief(e)}") from None
  if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict")
  return obj


def torch_array(state: Mapping, key: str, path: Path, arch: str = "VGG19") -> np.ndarray:
  value = state.get(key)
  if not hasattr(value, "detach"):
    raise UserError(f"{path} has no tensor {key}: not a torchvision {arch} state_dict")
  return _to_float32(value.detach().cpu().float().numpy())


def convert_torch_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads torchvision's ``vgg19-dcbb9e9d.pth`` state_dict (convention "torch_rgb").

  ``features.{idx}.weight`` (OIHW) / ``.bias`` at idx 0, 2, 5, ..., 34 become ``convX_Y``, the
  kernels transposed to HWIO; ``classifier.*`` is ignored. These are torchvision's retrained
  VGG19: RGB input in [0, 1] normalised by the ImageNet mean/std.

  Args:
    path: the ``.pth`` file (``torch.save`` of a state_dict; loaded with ``weights_only``).

  Returns:
    Validated ``{"convX_Y/kernel": HWIO float32, "convX_Y/bias": float32}``.

  Raises:
    UserError: if torch is missing, the file is unreadable or is not VGG19.
  """
  path = _existing_file(path)
  state = load_torch_state_dict(path)
  arrays = {}
  for name, idx in zip(CONV_LAYERS, TORCH_FEATURE_INDICES):
    weight = torch_array(state, f"features.{idx}.weight", path)
    if weight.ndim == 4:
      weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    arrays[f"{name}/kernel"] = weight
    arrays[f"{name}/bias"] = torch_array(state, f"features.{idx}.bias", path)
  return validate_arrays(arrays, str(path))


def read_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """Reads and validates a ``.npz`` in the project layout; returns ``(arrays, convention)``."""
  path = _existing_file(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"cannot read weights {path}: {_brief(e)}") from None
  convention = str(arrays.pop("convention", np.array("caffe_bgr")))
  if convention not in CONVENTIONS:
    raise UserError(f"{path}: unknown convention {convention!r}; expected one of {CONVENTIONS}")
  return validate_arrays(arrays, str(path)), convention


def convert_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str, str]:
  """Converts any supported file; returns ``(arrays, convention, format)``."""
  fmt = detect_format(path)
  if fmt == "keras_h5":
    return convert_keras_h5(path), "caffe_bgr", fmt
  if fmt == "torch_pth":
    return convert_torch_pth(path), "torch_rgb", fmt
  return (*read_npz(path), fmt)


def _expected_hex(value: str | None, algo: str, length: int) -> str | None:
  value = (value or "").strip().lower()
  if value and (len(value) != length or value.strip("0123456789abcdef")):
    raise UserError(f"expected {algo} must be {length} hex digits, got {value!r}")
  return value or None


def check_digest(path: str | os.PathLike, *, source: str | None = None,
                 expected_sha256: str | None = None, expected_md5: str | None = None) -> dict:
  """``{"sha256": hex, "md5": hex}`` of the file (Keras publishes only an MD5, so both are kept).

  Raises ``UserError`` if a given expected hash is malformed or differs."""
  expected = {"sha256": _expected_hex(expected_sha256, "sha256", 64),
              "md5": _expected_hex(expected_md5, "md5", 32)}
  digests = {algo: digest.file_digest(path, algo) for algo in expected}
  for algo, want in expected.items():
    if want and digests[algo] != want:
      raise UserError(f"checksum mismatch for {source or path}: {algo} is {digests[algo]}, "
                      f"expected {want}")
  return digests


def provenance_path(npz_path: str | os.PathLike) -> Path:
  """Where the provenance JSON of an installed ``.npz`` lives (same name, ``.json``)."""
  return Path(npz_path).with_suffix(".json")


def read_provenance(npz_path: str | os.PathLike) -> dict:
  """The provenance record of an installed ``.npz``, or ``{}`` if there is none."""
  try:
    return json.loads(provenance_path(npz_path).read_text())
  except (OSError, ValueError):
    return {}


def _write_installed(dest: Path, arrays: Mapping[str, np.ndarray], record: dict) -> Path:
  convention = np.array(record["convention"])
  image_io.atomic_write(dest, lambda tmp: np.savez(tmp, **arrays, convention=convention))
  image_io.write_text(provenance_path(dest), json.dumps(record, indent=2) + "\n")
  return dest


def _install(src: Path, *, expected_sha256, expected_md5, dest, source: str, url=None) -> Path:
  src = _existing_file(src)
  digests = check_digest(src, source=source, expected_sha256=expected_sha256,
                         expected_md5=expected_md5)
  arrays, convention, fmt = convert_weights(src)
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  record = {"source": source, **({"url": url} if url else {}), **digests, "format": fmt,
            "convention": convention, "parameters": sum(a.size for a in arrays.values()),
            "installed": now}
  return _write_installed(Path(dest or paths.cached_vgg_path()), arrays, record)


def install_weights(src_path: str | os.PathLike, *, expected_sha256: str | None = None,
                    expected_md5: str | None = None,
                    dest: str | os.PathLike | None = None) -> Path:
  """Converts a Keras ``.h5``, torchvision ``.pth`` or project ``.npz`` and installs it.

  The source's checksum is verified first when an expected one is given. The ``.npz`` (with its
  ``convention``) and a provenance JSON beside it are written atomically: an error leaves any
  previously installed weights untouched. Nothing is printed.

  Args:
    src_path: the weights file; its format is told from its content.
    expected_sha256: hex sha256 the source file must have.
    expected_md5: hex MD5 the source file must have (Keras publishes MD5s, e.g. ``KERAS_MD5``).
    dest: where to install; default ``paths.cached_vgg_path()`` (honours ``$NST_JAX_CACHE``).

  Returns:
    The installed ``.npz`` path.

  Raises:
    UserError: missing file, unknown format, wrong shapes, checksum mismatch.
  """
  src = Path(src_path).expanduser()
  return _install(src, expected_sha256=expected_sha256, expected_md5=expected_md5, dest=dest,
                  source=src.name)


def _fetch(url: str, out_path: str | os.PathLike, *, progress: bool) -> None:
  """Streams ``url`` into ``out_path`` with a tqdm bar on stderr; network errors -> UserError."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  name = Path(urllib.parse.urlparse(url).path).name or url
  try:
    with urllib.request.urlopen(url, timeout=60) as resp, open(out_path, "wb") as f:
      total = int(resp.headers.get("Content-Length") or 0) or None
      done = 0
      with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
        while chunk := resp.read(1 << 20):
          f.write(chunk)
          done += len(chunk)
          bar.update(len(chunk))
  except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
    reason = getattr(e, "reason", None) or _brief(e)
    raise UserError(f"cannot download {url}: {reason}") from None
  if total is not None and done != total:
    raise UserError(f"download of {url} was cut short: {done} of {total} bytes")


def download_weights(url: str = KERAS_URL, *, expected_sha256: str | None = None,
                     expected_md5: str | None = None, dest: str | os.PathLike | None = None,
                     progress: bool = True) -> Path:
  """Downloads weights (default: Keras' official VGG19 notop ``.h5``), verifies and installs them.

  The download goes to a temporary file beside ``dest``, removed afterwards. ``KERAS_URL`` with
  no hash given is checked against Keras' own ``KERAS_MD5``.

  Args:
    url: http(s) or file URL of a Keras ``.h5``, torchvision ``.pth`` or project ``.npz``.
    expected_sha256: hex sha256 the download must have.
    expected_md5: hex MD5 the download must have.
    dest: where to install; default ``paths.cached_vgg_path()``.
    progress: show a tqdm progress bar on stderr.

  Returns:
    The installed ``.npz`` path.

  Raises:
    UserError: network failure, truncated download, checksum mismatch, bad content.
  """
  if url == KERAS_URL and not (expected_sha256 or expected_md5):
    expected_md5 = KERAS_MD5
  dest = Path(dest or paths.cached_vgg_path())
  dest.parent.mkdir(parents=True, exist_ok=True)
  name = Path(urllib.parse.urlparse(url).path).name or "download"
  fd, tmp = tempfile.mkstemp(prefix=".download.", suffix=Path(name).suffix, dir=dest.parent)
  os.close(fd)
  try:  # the temporary file goes whatever happens, Ctrl-C included
    _fetch(url, tmp, progress=progress)
    return _install(Path(tmp), expected_sha256=expected_sha256, expected_md5=expected_md5,
                    dest=dest, source=name, url=url)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
