"""Semantic region masks for photorealistic style transfer (Luan et al. 2017).

Synopsis::

  from nst_jax.core import regions
  cm = regions.load_color_mask("segmentation/in1.png", size_hw=content.shape[:2])   # [R, H, W]
  sm = regions.load_color_mask("segmentation/tar1.png", size_hw=style.shape[:2])
  present = regions.pair_regions(cm, sm)                   # [R] 1.0 where both images have it
  per_layer = regions.downsample_masks(cm, ("relu1_1", "relu4_1"))   # {layer: [R, h, w]}
  cm, sm = regions.auto_masks(vgg_params, content, style, num_regions=2)   # no masks given

Every mask set is [R, H, W] float32, a soft partition of the image (summing to 1 per pixel).
Colour-coded masks use R = len(LUAN_COLORS) = 9 regions in Luan's order, absent colours all
zero; automatic masks use R = num_regions, with the same meaning in both images.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from nst_jax import config
from nst_jax.core import image_io, smoothing, vgg
from nst_jax.core.errors import UserError

# Luan et al.'s colour code, in the order of their ``color_codes`` (neuralstyle_seg.lua).
LUAN_COLORS: dict[str, tuple[float, float, float]] = {
    "blue": (0.0, 0.0, 1.0), "green": (0.0, 1.0, 0.0), "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0), "red": (1.0, 0.0, 0.0), "yellow": (1.0, 1.0, 0.0),
    "grey": (0.5, 0.5, 0.5), "lightblue": (0.0, 1.0, 1.0), "purple": (1.0, 0.0, 1.0),
}
COLOR_TOLERANCE = 0.1  # Luan's ExtractMask: every channel within 0.1 of the code


def _palette() -> np.ndarray:
  return np.array(list(LUAN_COLORS.values()), np.float32)   # [R, 3]


def _present_colors(rgb: np.ndarray, tolerance: float, min_area: float) -> np.ndarray:
  """Colours with enough *interior* pixels (3x3 neighbourhood all within tolerance).

  Anti-aliased edges between two codes pass through other codes (black|white edges are grey);
  they are one or two pixels wide, so requiring interior pixels tells them from real regions.
  """
  close = np.max(np.abs(rgb[None] - _palette()[:, None, None]), axis=-1) < tolerance  # [R, H, W]
  interior = ndimage.binary_erosion(close, np.ones((1, 3, 3), bool))
  return np.flatnonzero(interior.sum(axis=(1, 2)) >= max(1.0, min_area * rgb[..., 0].size))


def colors_to_masks(rgb: np.ndarray, *, tolerance: float = COLOR_TOLERANCE,
                    min_area: float = 1e-4) -> np.ndarray:
  """Soft masks from a colour-coded segmentation image.

  Each pixel is split between its nearest present code a and the code b whose segment [a, b]
  passes closest to it, by projecting its colour on that segment: exact codes give one-hot
  masks, an anti-aliased edge pixel ``(1 - t) a + t b`` gets memberships 1 - t and t.

  Args:
    rgb: [H, W, 3] in [0, 1].
    tolerance: per-channel distance under which a pixel matches a code (Luan: 0.1).
    min_area: a code is present when at least this fraction of pixels are interior matches.

  Returns:
    [R, H, W] float32 (R = len(LUAN_COLORS)), summing to 1 per pixel; absent codes are zero.
  """
  present = _present_colors(rgb, tolerance, min_area) if min(rgb.shape[:2]) >= 3 else []
  if len(present) == 0:
    raise UserError("segmentation mask has none of Luan's colour codes "
                    f"({', '.join(LUAN_COLORS)}) over a region")
  out = np.zeros((len(LUAN_COLORS),) + rgb.shape[:2], np.float32)
  if len(present) == 1:
    out[present[0]] = 1.0
    return out
  codes = _palette()[present]                                          # [P, 3]
  diff = rgb[None] - codes[:, None, None]                              # [P, H, W, 3]
  nearest = np.argmin(np.sum(np.square(diff), axis=-1), axis=0)        # [H, W]
  a = codes[nearest]                                                   # [H, W, 3]
  seg = codes[:, None, None] - a[None]                                 # [P, H, W, 3]: b - a
  t = np.sum((rgb - a)[None] * seg, axis=-1) / np.maximum(np.sum(np.square(seg), -1), 1e-12)
  t = np.clip(t, 0.0, 1.0)                                             # [P, H, W]
  off = np.sum(np.square(rgb - a - t[..., None] * seg), axis=-1)      # distance to [a, b]
  off[nearest, *np.indices(nearest.shape)] = np.inf                    # b != a
  other = np.argmin(off, axis=0)
  t = np.take_along_axis(t, other[None], axis=0)[0].astype(np.float32)
  rows, cols = np.indices(rgb.shape[:2])
  out[present[nearest], rows, cols] = 1.0 - t
  out[present[other], rows, cols] = t
  return out


def _check_aspect(label: str, mask_hw: tuple[int, int], size_hw: tuple[int, int]) -> None:
  """Accepts a mask whose shape matches ``size_hw`` up to a couple of pixels after scaling."""
  (hm, wm), (ht, wt) = mask_hw, size_hw
  slack = 2.0 + max(hm / ht, wm / wt)  # two mask pixels, plus rounding of one target pixel
  if abs(hm - ht * wm / wt) > slack and abs(wm - wt * hm / ht) > slack:
    raise UserError(f"{label} is {wm}x{hm}, which does not match the image's aspect ratio "
                    f"({wt}x{ht}); draw the mask on the same image")


def resize_masks(masks: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
  """Resizes [R, H, W] soft masks (antialiased bilinear, so a partition stays a partition)."""
  h, w = size_hw
  if masks.shape[1:] == (h, w):
    return masks
  out = np.zeros((masks.shape[0], h, w), np.float32)
  for r in np.flatnonzero(masks.reshape(masks.shape[0], -1).max(axis=1) > 0):
    img = Image.fromarray(np.ascontiguousarray(masks[r], np.float32), mode="F")
    out[r] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
  out = np.clip(out, 0.0, 1.0)
  return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-12)


def load_color_mask(path: str | os.PathLike, *, size_hw: tuple[int, int] | None = None,
                    tolerance: float = COLOR_TOLERANCE, min_area: float = 1e-4,
                    name: str | None = None) -> np.ndarray:
  """Reads a colour-coded segmentation (Luan et al.'s code) as soft region masks.

  Args:
    path: PNG (or any image) painted with the colours of ``LUAN_COLORS``; edges may be
      anti-aliased.
    size_hw: (H, W) of the photo it belongs to; the mask is resized to it. A mask whose aspect
      ratio is off by more than a couple of pixels raises ``UserError``.
    tolerance: per-channel colour tolerance (Luan: 0.1).
    min_area: minimum fraction of interior pixels for a colour to count as a region.
    name: how errors about its content name the mask (default: its path), e.g. "the content
      mask" for an upload whose stored path means nothing to its sender.

  Returns:
    [R, H, W] float32, R = len(LUAN_COLORS), in ``LUAN_COLORS`` order; sums to 1 per pixel.

  Raises:
    UserError: unreadable file, wrong aspect ratio, or no colour code found.

  References:
    Luan, Paris, Shechtman & Bala, "Deep Photo Style Transfer", CVPR 2017.
  """
  rgb = image_io.load_image(path)                                       # [H, W, 3]
  if size_hw is not None:
    _check_aspect(name or f"mask {path}", rgb.shape[:2], tuple(size_hw))
  try:
    masks = colors_to_masks(rgb, tolerance=tolerance, min_area=min_area)
  except UserError as e:
    raise UserError(f"{name or path}: {e}") from None
  return masks if size_hw is None else resize_masks(masks, tuple(size_hw))


def pair_regions(content_masks, style_masks, *, min_area: float = 1e-3) -> np.ndarray:
  """Which regions exist in both images.

  We return a weight vector rather than an index list: R stays fixed, so the masked style loss
  keeps static shapes under jit; ``np.flatnonzero(weights)`` gives the indices.

  Args:
    content_masks: [R, H, W] content regions.
    style_masks: [R, H', W'] style regions, same region order.
    min_area: a region counts as present when its mask's mean is above this.

  Returns:
    [R] float32: 1.0 for regions present in both images, 0.0 for regions missing from either
    (those are ignored by the masked Gram loss).
  """
  c = np.asarray(content_masks).mean(axis=(1, 2)) > min_area
  s = np.asarray(style_masks).mean(axis=(1, 2)) > min_area
  if c.shape != s.shape:
    raise ValueError(f"region counts differ: {c.shape[0]} vs {s.shape[0]}")
  return (c & s).astype(np.float32)


def _pool2(x: jax.Array, how: str) -> jax.Array:
  """[..., H, W] -> [..., H // 2, W // 2], the grid of VGG's 2x2 stride-2 VALID pooling."""
  h, w = x.shape[-2] // 2, x.shape[-1] // 2
  if how == "bilinear":  # Luan's image.scale
    return jax.image.resize(x, x.shape[:-2] + (h, w), "linear", antialias=True)
  window = (1,) * (x.ndim - 2) + (2, 2)
  if how == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") * 0.25


def _box3(x: jax.Array) -> jax.Array:
  window, strides = (1,) * (x.ndim - 2) + (3, 3), (1,) * x.ndim
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")


def _neighbours(n: int) -> np.ndarray:
  """How many of {i-1, i, i+1} lie in [0, n), per i."""
  counts = np.full(n, 3.0, np.float32)
  counts[0] -= 1
  counts[-1] -= 1
  return counts


def _blur3(x: jax.Array) -> jax.Array:
  """3x3 mean, renormalised at the border (Luan blurs at every conv); partitions stay partitions."""
  # The border counts as a host constant: XLA would constant-fold a box sum of ones slowly.
  counts = np.outer(_neighbours(x.shape[-2]), _neighbours(x.shape[-1]))
  return _box3(x) / jnp.asarray(counts, x.dtype)


def downsample_masks(masks, layers, pooling: str = "avg", *,
                     conv_blur: bool = True) -> dict[str, jax.Array]:
  """Masks at the resolution of each VGG layer, following the network layer by layer.

  Args:
    masks: [..., R, H, W] at the image's resolution.
    layers: VGG19 layer names (``vgg.VGG19_LAYERS``).
    pooling: how masks are halved at each pool: "avg" (2x2 mean on the pooling grid, default),
      "max" (2x2 max: thin regions survive, no longer a partition) or "bilinear" (Luan's
      ``image.scale``). Sizes are always ``floor(h / 2)``, as ``vgg_features``'s pools.
    conv_blur: blur by 3x3 at every conv layer, as Luan's code does, to follow receptive fields.

  Returns:
    ``{layer: [..., R, h, w]}`` with (h, w) equal to ``vgg_features``'s spatial size.

  References:
    Luan et al., "Deep Photo Style Transfer", CVPR 2017 (neuralstyle_seg.lua).
  """
  if pooling not in config.MASK_POOLINGS:
    raise UserError(f"unknown mask pooling {pooling!r}; expected one of {config.MASK_POOLINGS}")
  out = _downsample(jnp.asarray(masks, jnp.float32), tuple(vgg.check_layers(layers)), pooling,
                    conv_blur)
  return {name: out[name] for name in vgg.VGG19_LAYERS if name in out}  # network order


# One program per shape and settings rather than a dispatch per pool and blur (inlined when
# called under an outer jit).
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _downsample(x: jax.Array, layers: tuple[str, ...], pooling: str,
                conv_blur: bool) -> dict[str, jax.Array]:
  wanted, out = set(layers), {}
  for name in vgg.VGG19_LAYERS:
    if not wanted - out.keys():
      break
    if name.startswith("pool"):
      x = _pool2(x, pooling)
    elif name.startswith("conv") and conv_blur:
      x = _blur3(x)
    if name in wanted:
      out[name] = x
  return out


AUTO_LAYERS = ("relu3_1", "relu4_1")


@jax.jit
def rgb_to_lab(rgb):
  """sRGB in [0, 1] -> CIE Lab (D65), [..., 3]; L in [0, 100]. Traceable (a jax.Array out)."""
  rgb = jnp.asarray(rgb, jnp.float32)
  lin = jnp.where(rgb <= 0.04045, rgb / 12.92, ((jnp.maximum(rgb, 0.04045) + 0.055) / 1.055) ** 2.4)
  xyz = lin @ jnp.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192],
                         [0.1805, 0.0722, 0.9505]])
  xyz = xyz / jnp.array([0.95047, 1.0, 1.08883])
  f = jnp.where(xyz > (6 / 29) ** 3, jnp.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
  return jnp.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                    200 * (f[..., 1] - f[..., 2])], axis=-1)


@jax.jit
def deep_descriptors(feats: dict) -> jax.Array:
  """``AUTO_LAYERS`` features unit-normalised per position, on the first layer's grid.

  Args:
    feats: ``{"relu3_1": [B, h, w, 256], "relu4_1": [B, h', w', 512]}`` (VGG features).

  Returns:
    [B, h, w, 768] float32.
  """
  grid = feats[AUTO_LAYERS[0]].shape[1:3]
  deep = []
  for name in AUTO_LAYERS:
    f = feats[name].astype(jnp.float32)                                  # [B, h', w', C]
    f = f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-6)
    deep.append(jax.image.resize(f, f.shape[:1] + grid + f.shape[-1:], "linear"))
  return jnp.concatenate(deep, -1)


def position_grid(grid: tuple[int, int]) -> np.ndarray:
  """[h, w, 2] normalised (y, x) positions in [0, 1]."""
  ys, xs = np.meshgrid(np.linspace(0, 1, grid[0]), np.linspace(0, 1, grid[1]), indexing="ij")
  return np.stack([ys, xs], -1).astype(np.float32)


def _descriptors(vgg_params, image: np.ndarray, work_size: int) -> list[np.ndarray]:
  """Per-position [deep, colour, position] descriptors on the relu3_1 grid (1/4 resolution)."""
  h, w = image.shape[:2]
  scale = min(1.0, work_size / max(h, w))
  small = image_io.resize_array(image, (max(8, round(h * scale)), max(8, round(w * scale))))
  feats = vgg.vgg_features(vgg_params, jnp.asarray(small)[None], AUTO_LAYERS)
  grid = feats[AUTO_LAYERS[0]].shape[1:3]
  colour = np.asarray(rgb_to_lab(image_io.resize_array(small, grid)))
  return [np.asarray(deep_descriptors(feats)[0]), colour, position_grid(grid)]


def kmeans(data: np.ndarray, k: int, seed: int, restarts: int = 4) -> np.ndarray:
  """Best of a few k-means++ runs (scipy ``kmeans2``); returns the centroids [k, D]."""
  from scipy.cluster.vq import kmeans2  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  best, best_cost = None, np.inf
  for _ in range(restarts):
    centroids, labels = kmeans2(data, k, iter=30, minit="++", seed=rng)
    cost = np.sum(np.square(data - centroids[labels]))
    if cost < best_cost:
      best, best_cost = centroids, cost
  return best


def principal_axes(data: np.ndarray, dims: int, seed: int, iters: int = 6) -> np.ndarray:
  """Top ``dims`` principal axes [D, dims] of centred data by subspace iteration (a full
  eigendecomposition of the 768 x 768 scatter costs seconds on a loaded CPU)."""
  scatter = data.T @ data                                                # [D, D]
  basis = np.random.default_rng(seed).standard_normal((scatter.shape[0], dims + 8))
  for _ in range(iters):
    basis = np.linalg.qr(scatter @ basis)[0]
  _, vectors = np.linalg.eigh(basis.T @ scatter @ basis)
  return (basis @ vectors[:, -dims:]).astype(data.dtype)


def refine_masks(masks: np.ndarray, image: np.ndarray, *, radius: int | None = None,
                 eps: float = 1e-3) -> np.ndarray:
  """Snaps soft masks [R, H, W] to the edges of ``image`` [H, W, 3]; still a soft partition."""
  radius = radius or max(2, round(max(image.shape[:2]) / 64))
  out = np.clip(smoothing.guided_filter(image, np.moveaxis(masks, 0, -1), radius=radius, eps=eps), 0, None)
  out = np.moveaxis(out, -1, 0)
  return (out / np.maximum(out.sum(axis=0, keepdims=True), 1e-6)).astype(np.float32)


def _joint_data(descs, weights, per_image_norm: bool, pca_dims: int, seed: int) -> np.ndarray:
  """Both images' descriptors as one weighted [N, D] matrix, each block of unit total variance."""
  blocks = []
  for i, weight in enumerate(weights):
    parts = [d[i].reshape(-1, d[i].shape[-1]) for d in descs]
    if per_image_norm and i < 2:  # a style photo's palette and contrast differ by design
      parts = [(p - p.mean(0)) / np.sqrt(np.sum(p.var(0)) + 1e-12) for p in parts]
    block = np.concatenate(parts)
    block = block - block.mean(axis=0)
    if i == 0 and block.shape[1] > pca_dims:
      block = block @ principal_axes(block, pca_dims, seed)
    blocks.append(weight * block / np.sqrt(np.sum(block.var(axis=0)) + 1e-12))
  return np.concatenate(blocks, axis=1)


def _soft_assign(data: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """Softmax of negative squared distances [N, R]; temperature: mean distance to the nearest."""
  dist = np.sum(np.square(data[:, None] - centroids[None]), axis=-1)     # [N, R]
  logits = -(dist - dist.min(axis=1, keepdims=True)) / (np.mean(dist.min(axis=1)) + 1e-12)
  soft = np.exp(logits)
  return (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)


def auto_masks(vgg_params, content: np.ndarray, style: np.ndarray, *, num_regions: int = 2,
               seed: int = 0, work_size: int = 256, deep_weight: float = 1.0,
               colour_weight: float = 0.5, position_weight: float = 0.6, pca_dims: int = 16,
               per_image_norm: bool = True, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Region masks for a content/style pair without a segmentation network.

  The positions of both images are clustered together (k-means) on VGG features (relu3_1 and
  relu4_1, unit-normalised, joint PCA), Lab colour and normalised position; each block is
  scaled to unit variance and weighted, so that a cluster means the same thing in both images.
  Features and colours are first standardised per image, since a style photo differs from the
  content in palette by design. The soft masks are then snapped to image edges with a guided
  filter. Regions are ordered top to bottom by mean height. The defaults were tuned on Luan et
  al.'s 20 pairs (benchmarks/mask_eval.py); most of their hand masks have two regions.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    content: [H, W, 3] in [0, 1].
    style: [H', W', 3] in [0, 1].
    num_regions: number of clusters R.
    seed: k-means (and PCA) seed.
    work_size: the long side at which features are computed (<= 256 keeps it fast).
    deep_weight: weight of the VGG feature block.
    colour_weight: weight of the Lab colour block.
    position_weight: weight of the (y, x) block (sky above, ground below).
    pca_dims: dimensions kept from the VGG features.
    per_image_norm: standardise features and colours per image before the joint clustering.
    refine: snap the masks to the edges of each image (guided filter).

  Returns:
    ``(content_masks [R, H, W], style_masks [R, H', W'])``: soft partitions, float32.
  """
  images = [np.asarray(x, np.float32) for x in (content, style)]
  descs = [_descriptors(vgg_params, x, work_size) for x in images]
  data = _joint_data(descs, (deep_weight, colour_weight, position_weight), per_image_norm,
                     pca_dims, seed)                                     # [N, D]
  soft = _soft_assign(data, kmeans(data, num_regions, seed))            # [N, R]
  height = np.concatenate([d[2][..., 0].ravel() for d in descs])
  soft = soft[:, np.argsort(height @ soft / (soft.sum(0) + 1e-12))]
  grids = [d[0].shape[:2] for d in descs]
  split = np.split(soft, [grids[0][0] * grids[0][1]])
  out = [resize_masks(s.T.reshape((num_regions,) + g), x.shape[:2])
         for s, g, x in zip(split, grids, images)]
  return tuple(refine_masks(m, x) if refine else m for m, x in zip(out, images))
