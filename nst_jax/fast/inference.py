"""Stylizing images with a trained feed-forward network: any size, one compilation per bucket.

Synopsis::

  from nst_jax.fast import inference
  stylizer = inference.Stylizer.from_checkpoint("runs/starry")       # loads once
  out = stylizer(photo)                                              # [H, W, 3] in [0, 1]
  outs = stylizer.stylize_many([a, b, c], strength=0.8, original_colors="yiq")
  stylizer = inference.Stylizer.from_any("starry")      # a shipped model name, .npz, or workdir
  stylizer.set_style(mix="0.5:starry,0.5:great_wave")   # multi-style networks

Sizes: each image is reflect-padded on the host to the next multiple of ``bucket`` pixels in
height and width (32 by default; the network itself needs a multiple of 4), stylized, and cropped
back, so a folder of photos of similar sizes compiles once per distinct padded shape. Images of
the same padded shape are stacked into batches of ``batch_size`` (1 by default; more helps on
accelerators), the last one filled up with copies, so the network compiles once per bucket.

Smoothing: photorealistic networks (``config.photoreal``) are followed by a post-step with
the photo as guide, one of slow photorealistic transfer's (Luan et al.'s optional step), which
makes the output locally affine in the photo's colours (``Smoothing``; default: on for
photorealistic checkpoints only). By default it is the smooth local affine step
(``smoothing.affine_smooth``) with a matting budget of 2: per image, the least smoothing that
keeps the output's matting energy within twice the photo's, and at least the weight a network was
trained through (``PhotoTrainConfig.affine_output``); networks trained through the guided filter
(``guided_output``) get that filter (radius long side / 12). Calibrated in docs/fast_photoreal.md.

Strength: ``out = s * stylized + (1 - s) * content``, a linear blend in pixel space (after the
optional luminance-only transfer). With instance normalization the network's output is not an
affine function of any parameter that would make a "weaker" network, and the pixel blend is what
users expect from an opacity slider: s = 0 returns the photo, s = 1 the network's output.

References:
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016.
  Gatys, Bethge, Hertzmann & Shechtman, "Preserving Color in Neural Artistic Style Transfer",
  arXiv:1606.05897, 2016 (``original_colors``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np

from nst_jax import config
from nst_jax.core import checkpoint, colors, memory, model_file, zoo
from nst_jax.core import smoothing as smoothing_lib
from nst_jax.core.errors import UserError
from nst_jax.fast import nets, tiled

DEFAULT_BUCKET = 32
KIND = "style"  # the model-file kind of a style network (one style or several)
ARBITRARY = "arbitrary"  # the name (and model-file kind) of the imported arbitrary-style network


def _any_style():
  # fast.any_style subclasses Stylizer, so it is imported when first needed.
  from nst_jax.fast import any_style  # pylint: disable=import-outside-toplevel
  return any_style


def bucket_shape(hw: tuple[int, int], bucket: int) -> tuple[int, int]:
  """(H, W) rounded up to multiples of ``bucket`` (itself a multiple of 4)."""
  return tuple(-(-n // bucket) * bucket for n in hw)


def pad_to(image: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
  """Reflect-pads [H, W, 3] at the bottom and right to ``hw``; returns it and the original size."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, hw[0] - h), (0, hw[1] - w), (0, 0)), mode="reflect")
  return padded, (h, w)


def apply_smoothing(smoothing: config.Smoothing, image: np.ndarray, photo: np.ndarray) -> np.ndarray:
  """``image`` [H, W, 3] smoothed with ``photo`` as guide, as ``smoothing`` says; float32 in
  [0, 1]."""
  if smoothing.method == "guided":
    radius = smoothing.radius or smoothing_lib.default_radius(
        photo.shape[:2], smoothing_lib.FAST_SMOOTH_RADIUS_DIVISOR)
    return smoothing_lib.guided_smooth(image, photo, radius=radius)
  weight = smoothing.weight or config.AFFINE_WEIGHT
  return smoothing_lib.affine_smooth(image, photo, weight=weight, budget=smoothing.budget,
                                     min_weight=smoothing.weight)[0]


def blend(stylized: np.ndarray, content: np.ndarray, *, strength: float = 1.0,
          original_colors: str = "", smoothing: config.Smoothing | None = None) -> np.ndarray:
  """The post-processing of one output: smoothing, luminance-only transfer, strength blend.

  Args:
    stylized: [H, W, 3] the network's output in [0, 1].
    content: [H, W, 3] the photo.
    strength: s in [0, 1]: ``s * stylized + (1 - s) * content``.
    original_colors: "" (keep the network's colours), "yiq" or "yuv" (keep the photo's chroma).
    smoothing: the post-step with the photo as guide, or None.

  Returns:
    float32 [H, W, 3] in [0, 1].
  """
  if smoothing is not None:
    stylized = apply_smoothing(smoothing, np.clip(stylized, 0.0, 1.0), content)
  if original_colors:
    stylized = colors.original_colors(stylized, content, original_colors)
  out = strength * stylized + (1.0 - strength) * content
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def default_smoothing(model: nn.Module, cfg: config.TrainConfig | None) -> config.Smoothing | None:
  """The post-step a network gets by default: none for artistic ("rgb" head) networks; for
  photorealistic ones the one it was trained through (``cfg.photo``), else ``Smoothing()``."""
  if getattr(model, "output", "rgb") != "affine":
    return None
  if cfg is not None and cfg.photo.guided_output:
    return config.Smoothing(method="guided")
  return config.Smoothing(weight=cfg.photo.affine_output if cfg is not None else 0.0)


def pick_variables(tree: dict, averaged: bool) -> dict:
  """``{"params", "batch_stats"?}`` for ``model.apply`` from a partly restored training state
  (``Checkpoints.restore_leaves``): the parameter average, found under the optimizer state's
  ``ema_params``, when the run kept one (as ``train_state.variables_of``), else the parameters."""
  params = find_subtree(tree.get("opt_state"), "ema_params") if averaged else tree["params"]
  if params is None:
    raise UserError("the checkpoint's config keeps a parameter average, but its state has none")
  out = {"params": params}
  if tree.get("batch_stats"):
    out["batch_stats"] = tree["batch_stats"]
  return out


def find_subtree(tree: Any, key: str) -> Any:
  """The value under the first dict key ``key`` in nested dicts and lists (depth first), or None."""
  if isinstance(tree, dict):
    if key in tree:
      return tree[key]
    tree = list(tree.values())
  for child in tree if isinstance(tree, (list, tuple)) else ():
    found = find_subtree(child, key)
    if found is not None:
      return found
  return None


def check_options(strength: float, original_colors: str) -> None:
  """Raises ``config.ConfigError`` (naming the option) for a bad strength or colour mode."""
  if not 0.0 <= strength <= 1.0:
    raise config.ConfigError("strength", f"must be in [0, 1], got {strength}")
  if original_colors not in ("",) + colors.SPACES:
    raise config.ConfigError("original_colors", f"must be '' or one of {', '.join(colors.SPACES)}"
                             f", got {original_colors!r}")


def check_params_fit(model: nn.Module, params, path) -> None:
  """Raises ``UserError`` unless ``params`` has exactly the structure and shapes of ``model``'s."""
  expected = jax.eval_shape(lambda: nets.init_variables(model, jax.random.key(0)))["params"]
  want = {k: v.shape for k, v in model_file.flatten(expected).items()}
  got = {k: v.shape for k, v in model_file.flatten(params).items()}
  if want != got:
    diff = sorted(set(want.items()) ^ set(got.items()))[:1]
    raise UserError(f"{path}: the parameters do not fit the network its config describes "
                    f"(first difference: {diff})")


class Stylizer:
  """A trained network with its variables, compiled per input shape, applied to host arrays.

  Args:
    model: a ``nets.TransformNet``.
    variables: ``{"params", "batch_stats"?}``.
    bucket: pad sizes to multiples of this (a multiple of 4).
    batch_size: images per compiled call.
    meta: the checkpoint's metadata (config, style hash, step); its config picks the default
      post-step, ``self.smoothing`` (``default_smoothing``).
  """

  def __init__(self, model: nn.Module, variables: Any, *, bucket: int = DEFAULT_BUCKET,
               batch_size: int = 1, meta: dict | None = None):
    if bucket < nets.MULTIPLE or bucket % nets.MULTIPLE or batch_size < 1:
      raise UserError(f"bucket must be a positive multiple of {nets.MULTIPLE} and batch_size "
                      f">= 1, got {bucket}, {batch_size}")
    self.model, self.variables, self.meta = model, variables, meta or {}
    cfg = nets.config_from_dict(self.meta["config"]) if "config" in self.meta else None
    self.smoothing = default_smoothing(model, cfg)
    self.bucket, self.batch_size = bucket, batch_size
    self.forward = lambda v, x, w: model.apply(v, x, w, train=False)  # un-jitted (fast.tiled)
    self._apply = jax.jit(self.forward)
    self.tilers: dict[int, tiled.Tiler] = {}
    self.compiled_shapes: set[tuple[int, ...]] = set()
    self.style_names = [s.get("name", str(i)) for i, s in enumerate(self.meta.get("styles", []))]
    num_styles = getattr(model, "num_styles", 1)
    if len(self.style_names) != num_styles:
      self.style_names = [str(i) for i in range(num_styles)]
    self.style_weights = nets.style_vector(self.style_names)  # [S]: the first style

  def set_style(self, *, index: int | None = None, name: str | None = None,
                mix: str | None = None) -> np.ndarray:
    """Picks the style of a multi-style network (``nets.style_vector``); returns [S]."""
    self.style_weights = nets.style_vector(self.style_names, index=index, name=name,
                                                 mix=mix)
    return self.style_weights

  @classmethod
  def from_file(cls, path: str | os.PathLike, *, bf16: bool = False, **kwargs) -> "Stylizer":
    """Loads a style network's model file (``core.model_file``: float16 on disk, float32 here).

    Raises:
      UserError: a damaged or foreign file, another kind of model, or parameters that do not
        fit its network.
    """
    saved = model_file.load(path, kind=KIND)
    if not saved.config:
      raise UserError(f"{path} is not a style network (no training config)")
    meta = {**saved.meta, "config": saved.config}
    cfg = nets.config_from_dict(saved.config)
    model = nets.make_model(cfg.net, bf16=bf16)
    check_params_fit(model, saved.variables["params"], path)
    return cls(model, {"params": saved.variables["params"]}, meta=meta, **kwargs)

  @classmethod
  def from_any(cls, path: str | os.PathLike, **kwargs) -> "Stylizer":
    """What ``--model`` names (``zoo.resolve``): ``from_file`` for an ``.npz`` or a shipped or
    installed name (sha256 checked), ``from_checkpoint`` for a training workdir; an
    arbitrary-style model (``arbitrary``, once imported) gives an ``any_style.AnyStyleStylizer``.

    Raises:
      UserError: nothing of that name, or a model that is no style network; for ``arbitrary``
        before its import, the message names the import command.
    """
    if str(path) == ARBITRARY and not os.path.exists(path):  # not imported: the hint
      return _any_style().AnyStyleStylizer.load(None, **kwargs)
    found = zoo.resolve(path)
    if found.origin == "workdir":
      return cls.from_checkpoint(found.path, **kwargs)
    kind = (found.entry or model_file.read_header(found.path)).get("kind")
    if kind == ARBITRARY:
      return _any_style().AnyStyleStylizer.load(found.path, **kwargs)
    if kind != KIND:
      raise UserError(f"model {str(path)!r} is a {kind!r} model, not a style network")
    return cls.from_file(found.path, **kwargs)

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, *, bf16: bool = False,
                      **kwargs) -> "Stylizer":
    """Loads a training checkpoint once: the config in it rebuilds the network.

    Args:
      path: a training workdir (newest checkpoint), its ``checkpoints`` folder, or a step folder;
        an arbitrary-style run's gives an ``any_style.AnyStyleStylizer``.
      bf16: bfloat16 compute (parameters stay float32).
      **kwargs: ``bucket``, ``batch_size``.

    Raises:
      UserError: missing, incomplete or damaged checkpoints, or a config that is not ours.
    """
    ckpts, step = checkpoint.open_checkpoint(path)
    with ckpts:
      meta = ckpts.restore_meta(step)
      if meta.get("kind") == ARBITRARY:  # a run of ``nst-jax train --preset arbitrary``
        return _any_style().AnyStyleStylizer.from_checkpoint(path, bf16=bf16, **kwargs)
      cfg = nets.config_from_dict(meta["config"])
      tree = ckpts.restore_leaves(step, lambda p: p[0] in ("params", "batch_stats") or (
          cfg.ema_decay > 0 and "ema_params" in p))
    return cls(nets.make_model(cfg.net, bf16=bf16), pick_variables(tree, cfg.ema_decay > 0),
               meta=meta, **kwargs)

  def stylize_batch(self, images: np.ndarray, styles: np.ndarray | None = None) -> np.ndarray:
    """The network on a batch of equally sized images [B, H, W, 3] (H, W multiples of 4), each
    with its row of ``styles`` [B, S] (default: ``self.style_weights`` for every image)."""
    self.compiled_shapes.add(tuple(images.shape))
    if styles is None:
      styles = np.broadcast_to(self.style_weights, (images.shape[0], len(self.style_weights)))
    return np.asarray(self._apply(self.variables, images, styles))  # [B, H, W, 3]

  def style_rows(self, photos: Sequence[np.ndarray], strength: float) -> np.ndarray | None:
    """The style input of each photo of a batch (None: ``self.style_weights`` for all). A
    subclass whose strength acts on the style input, not on pixels, mixes it in here."""
    del photos, strength
    return None

  def pixel_strength(self, strength: float) -> float:
    """The strength left for the pixel blend (``blend``): all of it here."""
    return strength

  def stylize_many(self, images: Sequence[np.ndarray], *, strength: float = 1.0,
                   original_colors: str = "", smooth: bool | None = None,
                   smoothing: config.Smoothing | None = None,
                   max_memory: float | None = None, tile: int | None = None) -> list[np.ndarray]:
    """Stylizes images of any sizes; returns float32 [H, W, 3] in [0, 1] for each.

    Args:
      images: float [H, W, 3] arrays in [0, 1].
      strength: see ``blend``.
      original_colors: see ``blend``.
      smooth: post-step on or off; None: on for photorealistic ("affine" head) networks only.
      smoothing: the post-step when on (default: ``self.smoothing``, else ``Smoothing()``).
      max_memory: GB a batch may use (``memory.budget_bytes``); an image whose estimated peak
        is larger is stylized in tiles (``fast.tiled``), or refused (UserError) before any is
        stylized when even that does not fit.
      tile: None: tiles only where the untiled run would not fit; 0: never; PX: tiles of PX
        pixels for every image larger than one.
    """
    check_options(strength, original_colors)
    smooth = self.smoothing is not None if smooth is None else smooth
    smoothing = (smoothing or self.smoothing or config.Smoothing()) if smooth else None
    if smoothing is not None:
      smoothing.check()
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
      if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
        raise UserError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
      groups.setdefault(bucket_shape(img.shape[:2], self.bucket), []).append(i)
    budget = memory.budget_bytes(max_memory)
    tiles = {hw: self.tile_for(hw, budget, tile, smoothing is not None,
                               self.style_rows([images[members[0]]], strength))
             for hw, members in groups.items()}
    results: list[np.ndarray | None] = [None] * len(images)
    post = {"strength": self.pixel_strength(strength), "original_colors": original_colors}
    for hw, members in groups.items():
      for i in members if tiles[hw] else ():
        image = np.asarray(images[i], np.float32)
        rows = self.style_rows([image], strength)
        rows = np.asarray(self.style_weights[None] if rows is None else rows, np.float32)
        finish = (lambda out, photo: blend(out, photo, **post)) if smoothing is None else (
            lambda out, photo: out)
        out = tiled.stylize_image(self.tiler(tiles[hw]), self.variables, image, hw, rows, finish)
        self.compiled_shapes |= self.tiler(tiles[hw]).compiled_shapes
        results[i] = out if smoothing is None else blend(out, image, smoothing=smoothing, **post)
      for start in range(0, 0 if tiles[hw] else len(members), self.batch_size):
        chunk = members[start:start + self.batch_size]
        padded = [pad_to(np.asarray(images[i], np.float32), hw)[0] for i in chunk]
        padded += [padded[-1]] * (self.batch_size - len(chunk))  # a full batch: no recompile
        rows = self.style_rows([images[i] for i in chunk], strength)
        if rows is not None:
          rows = np.concatenate([rows, np.repeat(rows[-1:], len(padded) - len(rows), 0)])
        out = self.stylize_batch(np.stack(padded), rows)
        for j, i in enumerate(chunk):
          h, w = images[i].shape[:2]
          results[i] = blend(out[j, :h, :w], np.asarray(images[i], np.float32),
                             smoothing=smoothing, **post)
    return results

  def tiler(self, tile: int) -> tiled.Tiler:
    """The ``fast.tiled.Tiler`` of this network with tiles of ``tile`` pixels (kept: its
    programs are compiled once per tile shape)."""
    if tile not in self.tilers:
      self.tilers[tile] = tiled.Tiler(self.forward, tile=tile)
    return self.tilers[tile]

  def tile_for(self, hw: tuple[int, int], budget: int | None, tile: int | None,
               smoothing: bool, rows=None) -> int:
    """The tile size for a padded size ``hw``: 0 (untiled) where the untiled run fits ``budget``
    and ``tile`` is None, or ``tile`` is 0; ``tile`` (default ``tiled.DEFAULT_TILE``) where the
    image is larger than one tile.

    Raises:
      UserError: a bad ``tile``, or an estimated peak above ``budget`` either way.
    """
    width = getattr(self.model, "width", 1.0)
    untiled = {"batch": self.batch_size, "width": width, "smoothing": smoothing}
    fits = budget is None or memory.estimate_peak_bytes("stylize", hw, **untiled) <= budget
    if tile == 0 or (tile is None and fits):
      memory.check_fits("stylize", hw, budget, **untiled)
      return 0
    tile = tile or tiled.DEFAULT_TILE
    tiled.check_tile(tile)
    if max(hw) <= tile:
      memory.check_fits("stylize", hw, budget, **untiled)
      return 0
    if rows is None:
      rows = self.style_weights[None]
    tiler = self.tiler(tile)
    need = tiler.estimate_bytes(tiler.plan(self.variables, hw, np.asarray(rows, np.float32)),
                                hw, width=width, smoothing=smoothing)
    if budget is not None and need > budget:
      raise UserError(f"a {hw[1]}x{hw[0]} stylize run needs about {need / memory.GB:.3g} GB even "
                      f"in {tile}-pixel tiles, more than the {budget / memory.GB:.3g} GB allowed "
                      f"(--max-memory or ${memory.MEMORY_ENV}); use a smaller --size or --tile")
    return tile

  def __call__(self, image: np.ndarray, **kwargs) -> np.ndarray:
    """Stylizes one [H, W, 3] image (see ``stylize_many`` for the options)."""
    return self.stylize_many([image], **kwargs)[0]
