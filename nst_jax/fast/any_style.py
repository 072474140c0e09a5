"""Stylizing with any painting: the arbitrary-style network (``fast.arbitrary``) behind the same
``Stylizer`` interface as the trained networks (any photo size, one compilation per bucket).

Synopsis::

  from nst_jax.fast import inference
  stylizer = inference.Stylizer.from_any("arbitrary")     # after `nst-jax models import magenta`
  stylizer.set_style(image=painting)                       # its embedding, computed once
  outs = stylizer.stylize_many([a, b, c], strength=0.7)    # Ghiasi's strength, per photo
  stylizer.set_style(mix=[(0.7, painting1), (0.3, painting2)])   # several paintings blended

The painting is centre-cropped to a square and resized to the predictor's ``style_size`` on the
host (so one program embeds paintings of every size), then embedded once; its embedding is kept
by the image's bytes, so setting the same painting again costs nothing. ``strength`` s is Ghiasi
et al.'s interpolation of embeddings, ``(1 - s) * own + s * painting``, where ``own`` is the
photo's own embedding: s = 0 is the network applied with the photo's own style (close to the
photo, not the photo itself), s = 1 the painting's style. Unlike the trained networks' pixel
blend it changes the strokes, not their opacity.

References:
  Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
  neural artistic stylization network", BMVC 2017.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import jax
import numpy as np

from nst_jax.core import image_io
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary, arbitrary_train, inference, nets


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central square of [H, W, 3], resized to ``size`` x ``size`` (Lanczos, on the host)."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = np.asarray(image[top:top + side, left:left + side], np.float32)
  return crop if side == size else image_io.resize_array(crop, (size, size))


class AnyStyleStylizer(inference.Stylizer):
  """The arbitrary-style network with the style set from paintings (``set_style``).

  Args:
    net: the loaded model (``arbitrary.load_arbitrary``).
    bucket: pad sizes to multiples of this (a multiple of 4).
    batch_size: images per compiled call.
  """

  def __init__(self, net: arbitrary.ArbitraryModel, *, bucket: int = inference.DEFAULT_BUCKET,
               batch_size: int = 1):
    # pylint: disable=super-init-not-called  # the base's loads a trained network's config
    if bucket < nets.MULTIPLE or bucket % nets.MULTIPLE or batch_size < 1:
      raise UserError(f"bucket must be a positive multiple of {nets.MULTIPLE} and batch_size "
                      f">= 1, got {bucket}, {batch_size}")
    self.net, cfg = net, net.cfg
    _, self.model = arbitrary.make_networks(cfg)
    self.variables = net.params
    self.meta = {"kind": inference.ARBITRARY, "provenance": net.info}
    self.smoothing = None
    self.bucket, self.batch_size = bucket, batch_size
    self.compiled_shapes: set[tuple[int, ...]] = set()
    self.style_names: list[str] = []
    self.style_weights = None  # the style embedding [E] once set
    self.forward = lambda params, x, e: arbitrary.stylize(params, x, e, cfg=cfg)  # fast.tiled
    self._apply = jax.jit(self.forward)
    self.tilers = {}
    self._embed = jax.jit(lambda params, x: arbitrary.style_embedding(params, x, cfg=cfg, size=0))
    self._embeddings: dict[str, np.ndarray] = {}

  @classmethod
  def load(cls, path: str | os.PathLike | None = None, *, bf16: bool = False,
           **kwargs) -> "AnyStyleStylizer":
    """The installed model (or the model file at ``path``).

    Raises:
      UserError: not imported yet (naming ``nst-jax models import magenta``), a damaged file,
        or ``bf16`` (the released network runs in float32).
    """
    if bf16:
      raise UserError("the arbitrary-style network runs in float32; drop --bf16")
    return cls(arbitrary.load_arbitrary(path), **kwargs)

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, *, bf16: bool = False,
                      **kwargs) -> "AnyStyleStylizer":
    """The networks of an arbitrary-style training run's newest checkpoint (a workdir of
    ``nst-jax train --preset arbitrary``; ``arbitrary_train.load_checkpoint``).

    Raises:
      UserError: no readable checkpoint, one of another kind of run, or ``bf16``.
    """
    if bf16:
      raise UserError("the arbitrary-style network runs in float32; drop --bf16")
    return cls(arbitrary_train.load_checkpoint(path), **kwargs)

  def embed(self, image: np.ndarray) -> np.ndarray:
    """The style embedding [E] of an RGB image [H, W, 3] in [0, 1], computed once per image.

    Raises:
      UserError: not an RGB image, or one smaller than 2 x 2 pixels.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise UserError(f"expected an RGB style image [H, W, 3], got shape {image.shape}")
    if min(image.shape[:2]) < 2:
      raise UserError(f"a style image needs at least 2 x 2 pixels, got {image.shape[0]} x "
                      f"{image.shape[1]}")
    key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
    if key not in self._embeddings:
      square = square_crop(image, self.net.cfg.style_size)
      self._embeddings[key] = np.asarray(self._embed(self.variables, square))
    return self._embeddings[key]

  def set_style(self, *, image: np.ndarray | None = None,
                mix: Sequence[tuple[float, np.ndarray]] | None = None,
                embedding: np.ndarray | None = None, norm_deltas: dict | None = None,
                index: int | None = None, name: str | None = None) -> np.ndarray:
    """Sets the style from one painting, a weighted mix of paintings, or an embedding.

    Args:
      image: a painting [H, W, 3] in [0, 1].
      mix: (weight, painting) pairs; weights >= 0, normalized to sum to 1.
      embedding: a style embedding [E] (e.g. a refined one).
      norm_deltas: with ``embedding``, a refined style's instance-norm offsets
        (``arbitrary_refine.load_style``).
      index, name: the trained networks' style choice; refused here (one line).

    Returns:
      The style embedding [E].

    Raises:
      UserError: not exactly one of ``image``, ``mix``, ``embedding``, or bad inputs.
    """
    if index is not None or name is not None:
      raise UserError("the arbitrary-style network takes a painting (--style-image or --mix "
                      "W:IMAGE,...), not a style index or name")
    given = [x is not None for x in (image, mix, embedding)]
    if sum(given) != 1:
      raise UserError("the arbitrary-style network needs a style: one painting "
                      "(--style-image), a mix of paintings (--mix W:IMAGE,...) or an embedding")
    if norm_deltas is not None and embedding is None:
      raise UserError("instance-norm offsets come with a refined style's embedding")
    self.variables = self.net.params
    if image is not None:
      self.style_weights = self.embed(image)
    elif mix is not None:
      if not mix:
        raise UserError("--mix needs at least one W:IMAGE pair")
      weights = [float(w) for w, _ in mix]
      self.style_weights = np.asarray(arbitrary.mix_embeddings(
          np.stack([self.embed(img) for _, img in mix]), weights))
    else:
      emb = np.asarray(embedding, np.float32)
      if emb.shape != (self.net.cfg.embedding_dim,):
        raise UserError(f"expected a style embedding of shape ({self.net.cfg.embedding_dim},), "
                        f"got {emb.shape}")
      self.style_weights = emb
      if norm_deltas:
        from nst_jax.fast import arbitrary_refine  # pylint: disable=import-outside-toplevel
        self.variables = arbitrary_refine.apply_norm_deltas(self.net.params, norm_deltas)
    return self.style_weights

  def style_rows(self, photos: Sequence[np.ndarray], strength: float) -> np.ndarray:
    """Each photo's embedding: the painting's, moved towards the photo's own by 1 - strength."""
    if self.style_weights is None:
      raise UserError("no style set: give a painting (--style-image, or set_style(image=...))")
    if strength >= 1.0:
      return np.tile(self.style_weights, (len(photos), 1))
    return np.stack([np.asarray(arbitrary.interpolate_embeddings(
        self.embed(p), self.style_weights, strength)) for p in photos])

  def pixel_strength(self, strength: float) -> float:
    """Strength acts on the embedding here (``style_rows``): the pixel blend keeps it all."""
    del strength
    return 1.0
