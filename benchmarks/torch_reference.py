"""A PyTorch implementation of nst_jax's Gatys objective, for the CPU speed comparison only.

Synopsis::

  from nst_jax.config import LossConfig
  import torch_reference as tr
  params = tr.load_vgg19("vgg19_conv.npz")
  cfg = LossConfig()
  targets = tr.make_targets(params, content, [style], cfg)   # content/style: [H, W, 3] numpy
  terms = tr.loss_terms(params, x, targets, cfg)              # x: [1, 3, H, W] torch, in [0, 1]

It mirrors ``nst_jax.vgg`` / ``nst_jax.losses`` / ``nst_jax.objective`` term by term: the same
``.npz`` weights (Caffe BGR kernel reordered to RGB, x * 255 - mean), 3x3 SAME convolutions, 2x2
average (or max) pooling, content loss mean((F - P)^2), Gram F^T F / M, style loss
0.25 * mean((G - A)^2) per layer, blend-weighted, and tv = mean(dy^2) + mean(dx^2). Only the
"gram" style loss is implemented. It imports neither jax nor nst_jax.vgg, so the peak memory of
a torch run is not inflated by JAX.

References:
  Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block in VGG19, as nst_jax.vgg.BLOCKS
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def layer_names() -> list[str]:
  names = []
  for b, n in enumerate(BLOCKS, start=1):
    for i in range(1, n + 1):
      names += [f"conv{b}_{i}", f"relu{b}_{i}"]
    names.append(f"pool{b}")
  return names


def load_vgg19(path) -> dict:
  """Reads the ``.npz`` layout into ``{conv: (weight OIHW, bias)}`` plus the input affine map."""
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  convention = str(arrays.pop("convention", np.array("caffe_bgr")))
  params = {}
  for name in (n for n in layer_names() if n.startswith("conv")):
    kernel = arrays[f"{name}/kernel"].astype(np.float32)  # [3, 3, I, O]
    if name == "conv1_1" and convention == "caffe_bgr":
      kernel = kernel[:, :, ::-1, :]
    weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # [O, I, 3, 3]
    params[name] = (weight, torch.from_numpy(arrays[f"{name}/bias"].astype(np.float32)))
  if convention == "caffe_bgr":
    scale, offset = torch.full((3,), 255.0), torch.tensor(CAFFE_MEAN_RGB)
  else:
    std, mean = torch.tensor(TORCH_STD_RGB), torch.tensor(TORCH_MEAN_RGB)
    scale, offset = 1.0 / std, mean / std
  params["preprocess"] = (scale.view(1, 3, 1, 1), offset.view(1, 3, 1, 1))
  return params


def vgg_features(params: dict, images: torch.Tensor, layers: Sequence[str],
                 pooling: str = "avg") -> dict[str, torch.Tensor]:
  """Activations at ``layers`` of RGB [B, 3, H, W] images in [0, 1]; stops at the deepest."""
  wanted, out = set(layers), {}
  scale, offset = params["preprocess"]
  x = images * scale - offset
  for name in layer_names():
    if not wanted - out.keys():
      break
    if name.startswith("conv"):
      x = F.conv2d(x, *params[name], padding=1)
    elif name.startswith("relu"):
      x = F.relu(x)
    else:
      x = F.avg_pool2d(x, 2) if pooling == "avg" else F.max_pool2d(x, 2)
    if name in wanted:
      out[name] = x
  return out


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
  """[B, C, H, W] -> [B, C, C], normalized by the number of positions M = H W."""
  b, c, h, w = features.shape
  f = features.reshape(b, c, h * w)
  return torch.bmm(f, f.transpose(1, 2)) / (h * w)


def to_tensor(image: np.ndarray) -> torch.Tensor:
  """[H, W, 3] numpy -> [1, 3, H, W] float32 tensor."""
  return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None], np.float32))


@torch.no_grad()
def make_targets(params, content: np.ndarray, styles: Sequence[np.ndarray], cfg,
                 blend: Sequence[float] | None = None) -> dict:
  """Content features and style Grams, as ``nst_jax.objective.make_targets``."""
  blend = np.ones(len(styles)) if blend is None else np.asarray(blend, np.float64)
  feats = vgg_features(params, to_tensor(content), cfg.content_layers, cfg.pooling)
  grams = []
  for style in styles:
    sf = vgg_features(params, to_tensor(style), cfg.style_layers, cfg.pooling)
    grams.append({l: gram_matrix(sf[l]) for l in cfg.style_layers})
  return {"content": feats, "styles": grams, "blend": (blend / blend.sum()).tolist()}


def loss_terms(params, images: torch.Tensor, targets: dict, cfg) -> dict[str, torch.Tensor]:
  """Weighted content, style and tv terms and their sum, per example ([B] each)."""
  layers = list(dict.fromkeys(tuple(cfg.content_layers) + tuple(cfg.style_layers)))
  feats = vgg_features(params, images, layers, cfg.pooling)
  content = images.new_zeros(images.shape[0])
  for layer, w in zip(cfg.content_layers, cfg.content_layer_weights):
    content = content + w * torch.mean((feats[layer] - targets["content"][layer]) ** 2,
                                       dim=(1, 2, 3))
  style = images.new_zeros(images.shape[0])
  for grams, b in zip(targets["styles"], targets["blend"]):
    for layer, w in zip(cfg.style_layers, cfg.style_layer_weights):
      diff = gram_matrix(feats[layer]) - grams[layer]
      style = style + b * w * 0.25 * torch.mean(diff ** 2, dim=(1, 2))
  dy = (images[:, :, 1:, :] - images[:, :, :-1, :]) ** 2
  dx = (images[:, :, :, 1:] - images[:, :, :, :-1]) ** 2
  tv = dy.mean(dim=(1, 2, 3)) + dx.mean(dim=(1, 2, 3))
  terms = {"content": cfg.content_weight * content, "style": cfg.style_weight * style,
           "tv": cfg.tv_weight * tv}
  terms["total"] = terms["content"] + terms["style"] + terms["tv"]
  return terms


def make_optimizer(name: str, x: torch.Tensor, *, max_iter: int, history_size: int = 20,
                   learning_rate: float = 0.02) -> torch.optim.Optimizer:
  """torch.optim.LBFGS (strong Wolfe line search, no early stop) for "lbfgsb"/"lbfgs", or Adam.

  torch has no L-BFGS-B, so "lbfgsb" is compared with unconstrained L-BFGS; ``max_iter`` is
  the number of iterations one ``step(closure)`` call runs (neural-style-pt's usage).
  """
  if name in ("lbfgsb", "lbfgs"):
    return torch.optim.LBFGS([x], lr=1.0, max_iter=max_iter, max_eval=max_iter * 20,
                             tolerance_grad=-1.0, tolerance_change=-1.0,
                             history_size=history_size, line_search_fn="strong_wolfe")
  if name == "adam":
    return torch.optim.Adam([x], lr=learning_rate)
  raise ValueError(f"unknown optimizer {name!r}")
