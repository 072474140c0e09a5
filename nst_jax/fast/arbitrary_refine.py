"""Style refinement: fit the arbitrary network's style embedding to one painting (CPU-sized).

The style prediction network of Ghiasi et al. maps a painting to its embedding in one pass; that
embedding is a good start but not the best the transfer network can do for that painting under
the project's perceptual loss. Refinement fits the embedding alone (optionally also per-channel
offsets of every instance norm's scale and shift, ``norms=True``) to the loss the zoo's networks
are trained and scored with (``training.perceptual_loss_terms``: VGG19 Gram style, content, TV)
over a few small photo crops, by L-BFGS on the whole (deterministic) batch, or by Adam steps. The transfer network stays frozen. The
result can be stored as a named style in the user cache and used like a painting's embedding.

Synopsis::

  from nst_jax.fast import arbitrary, arbitrary_refine as refine
  model = arbitrary.load_arbitrary()
  painting = image_io.load_image("starry.jpg", size=256)
  photos = refine.load_photos(refine.default_photo_dir(), count=4, size=128)     # [4, 128, 128, 3]
  result = refine.refine_embedding(model, painting, photos, steps=24, vgg_params=vgg_params,
                                   norms=True, optimizer="lbfgs",   # or "adam" (learning_rate)
                                   callback=lambda step, loss: print(step, loss))
  refine.save_style("starry", result, painting_sha256=sha, base_sha256=model_sha)
  style = refine.load_style("starry")             # a StoredStyle: embedding [E], norm deltas
  out = refine.stylize(model, photo, style.embedding, style.norm_deltas)
  refine.list_styles()                            # ["starry", ...]

References:
  Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
  neural artistic stylization network", BMVC 2017 (the embedding space, sec. 5).
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016 (the loss).
  Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
  Byrd, Lu, Nocedal & Zhu, "A limited memory algorithm for bound constrained optimization",
  SIAM J. Sci. Comput. 16(5), 1995 (scipy's L-BFGS-B).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
from jax.flatten_util import ravel_pytree

from nst_jax import config
from nst_jax.config import LossConfig
from nst_jax.core import image_io, model_file, paths
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary, training

STYLE_FORMAT = "nst_jax-arbitrary-style-1"
STYLE_KIND = "arbitrary_style"  # the model-file kind of a refined style
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NORM_PROJECTIONS = ("beta", "gamma")
OPTIMIZERS = ("lbfgs", "adam")


def default_loss_config() -> LossConfig:
  """The objective the zoo's networks are trained and scored with (the ``thesis`` preset)."""
  return config.thesis().loss


def default_photo_dir() -> Path:
  """The shared training photos (COCO crops, none among the scored content photos)."""
  return paths.data_dir() / "train" / "coco2017_256"


@dataclasses.dataclass(frozen=True)
class RefineResult:
  """What ``refine_embedding`` returns.

  Attributes:
    embedding: float32 [E], the refined embedding.
    initial_embedding: float32 [E], the predictor's embedding of the painting.
    norm_deltas: ``{norm_path: {"beta": [C], "gamma": [C]}}`` offsets added to each instance
      norm's projected shift and scale, or None (``norms=False``).
    losses: the mean total loss over the photos before each step, then after the last.
    steps: Adam steps taken.
    settings: learning rate, photo count and size, loss config, style size (provenance).
    seconds: CPU seconds of this process spent in the call (compilation included).
  """

  embedding: np.ndarray
  initial_embedding: np.ndarray
  norm_deltas: dict | None
  losses: tuple
  steps: int
  settings: dict
  seconds: float


def load_photos(folder, *, count: int, size: int, seed: int = 0) -> np.ndarray:
  """``count`` photos of ``folder`` (a seeded choice), each the central square crop of the photo
  resized to long side ``size``: float32 [count, size, size, 3] (``size`` rounded down to a
  multiple of 4).

  Raises:
    UserError: no such folder, or fewer than ``count`` images in it.
  """
  files = image_io.list_images(folder) if Path(folder).is_dir() else []
  if count < 1 or len(files) < count:
    raise UserError(f"need {count} photos for refinement under {folder}, found {len(files)}")
  side = size - size % 4
  if side < 16:
    raise UserError(f"refinement photo size must be at least 16 px, got {size}")
  chosen = np.random.default_rng(seed).choice(len(files), count, replace=False)
  crops = []
  for i in sorted(chosen):
    img = image_io.load_image(files[i], size=None)
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    crops.append(image_io.resize_array(crop, (side, side)))
  return np.stack(crops)  # [N, side, side, 3]


def _norm_paths(transfer_params: dict) -> list[tuple[str, ...]]:
  # the modules holding a StyleNorm's beta / gamma projections, e.g. ("res1", "norm1")
  found = []

  def walk(tree, prefix):
    if all(k in tree for k in NORM_PROJECTIONS):
      found.append(prefix)
      return
    for k, v in tree.items():
      if isinstance(v, dict):
        walk(v, prefix + (k,))

  walk(transfer_params, ())
  return sorted(found)


def zero_norm_deltas(transfer_params: dict) -> dict:
  """``{"res1/norm1": {"beta": zeros [C], "gamma": zeros [C]}, ...}`` for every StyleNorm."""
  deltas = {}
  for path in _norm_paths(transfer_params):
    node = functools.reduce(lambda t, k: t[k], path, transfer_params)
    deltas["/".join(path)] = {p: jnp.zeros_like(node[p]["bias"]) for p in NORM_PROJECTIONS}
  return deltas


def apply_norm_deltas(params: dict, norm_deltas: dict | None) -> dict:
  """``params`` with each delta added to its projection's bias (so the projected shift / scale
  move by the delta whatever the embedding); a new tree, ``params`` untouched."""
  if not norm_deltas:
    return params
  transfer = jax.tree_util.tree_map(lambda x: x, params["transfer"])  # a copy of the dicts
  for key, delta in norm_deltas.items():
    node = functools.reduce(lambda t, k: t[k], key.split("/"), transfer)
    for p in NORM_PROJECTIONS:
      node[p] = dict(node[p], bias=node[p]["bias"] + delta[p])
  return dict(params, transfer=transfer)


def stylize(model: arbitrary.ArbitraryModel, content, embedding, norm_deltas=None) -> jax.Array:
  """``arbitrary.stylize`` (float path, jitted) with a refined style (embedding + norm deltas)."""
  return _jit_stylize(model.params, jnp.asarray(content, jnp.float32),
                      jnp.asarray(embedding, jnp.float32), norm_deltas, model.cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _jit_stylize(params, content, embedding, norm_deltas, cfg):
  return arbitrary.stylize(apply_norm_deltas(params, norm_deltas), content, embedding, cfg=cfg)


def refine_loss(trainable: dict, params: dict, photos: jax.Array, vgg_params, style_targets: dict,
                loss_cfg: LossConfig, cfg: config.ArbitraryConfig) -> jax.Array:
  """Mean total perceptual loss over ``photos`` [B, H, W, 3] of the transfer network with
  ``trainable`` = ``{"embedding": [E], "norm_deltas": ... or None}``; a scalar."""
  p = apply_norm_deltas(params, trainable.get("norm_deltas"))
  out = arbitrary.stylize(p, photos, trainable["embedding"], cfg=cfg)  # [B, H, W, 3]
  terms = training.perceptual_loss_terms(vgg_params, out, photos, style_targets, loss_cfg)
  return jnp.mean(terms["total"])


# One compiled program per photo shape serves both optimizers (and every loss reported): the loss
# and its gradient. Adam's update is a separate, tiny program.
loss_and_grad = jax.jit(jax.value_and_grad(refine_loss), static_argnames=("loss_cfg", "cfg"))


# The optimizer is rebuilt from its (static, hashable) learning rate inside the update: an optax
# transformation object is a new static argument at every call, which would recompile.
@functools.partial(jax.jit, static_argnames=("learning_rate",))
def adam_update(trainable, opt_state, grads, *, learning_rate):
  """Adam's update of ``trainable`` by ``grads``; returns (trainable, opt_state)."""
  updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, trainable)
  return optax.apply_updates(trainable, updates), opt_state


def refine_step(trainable, opt_state, params, photos, vgg_params, style_targets, *,
                learning_rate, loss_cfg, cfg):
  """One Adam step on ``trainable``; returns (trainable, opt_state, loss before the step)."""
  loss, grads = loss_and_grad(trainable, params, photos, vgg_params, style_targets, loss_cfg, cfg)
  trainable, opt_state = adam_update(trainable, opt_state, grads, learning_rate=learning_rate)
  return trainable, opt_state, loss


def refine_embedding(model: arbitrary.ArbitraryModel, painting, photos, *, vgg_params,
                     steps: int = 60, learning_rate: float = 0.05, norms: bool = False,
                     loss_cfg: LossConfig | None = None, style_size: int = 256,
                     batch: int | None = None, optimizer: str = "adam",
                     callback: Callable[[int, float], Any] | None = None) -> RefineResult:
  """Refines the painting's style embedding on the perceptual loss over ``photos``.

  Args:
    model: the arbitrary-style model (``arbitrary.load_arbitrary``); its float path is used.
    painting: RGB [H, W, 3] in [0, 1], at least 2 x 2.
    photos: [B, h, w, 3] in [0, 1] (e.g. ``load_photos``), h and w multiples of 4.
    vgg_params: from ``vgg.load_vgg19``.
    steps: Adam steps, or L-BFGS loss evaluations (0 returns the predictor's embedding).
    learning_rate: Adam's step size (L-BFGS finds its own by a line search).
    norms: also fit per-channel offsets of every instance norm's shift and scale.
    loss_cfg: the objective (default ``default_loss_config()``, the zoo's).
    style_size: the painting's long side for its Gram targets (the zoo's training style size).
    batch: Adam only: photos per step: step ``i`` uses mini-batch ``i mod (B // batch)`` of
      ``photos`` (fresh photos at every step when ``B >= steps * batch``); None: all ``photos``
      at every step (L-BFGS always uses them all: its line search needs one fixed loss).
    optimizer: ``"lbfgs"`` (scipy's L-BFGS-B on the flattened parameters, ``steps`` loss
      evaluations at most, the best point evaluated returned) or ``"adam"``.
    callback: called as ``callback(step, loss)`` after each step or evaluation (1-based; the
      loss before the step, or at the evaluated point).

  Returns:
    A ``RefineResult`` (``losses``: Adam: each step's mini-batch loss, then the last step's
    mini-batch after the last step; L-BFGS: each evaluation's loss, then the returned point's).

  Raises:
    UserError: a bad painting, photos, optimizer or batch, or a negative step count.
  """
  start = time.process_time()
  loss_cfg = loss_cfg or default_loss_config()
  photos = jnp.asarray(photos, jnp.float32)
  if photos.ndim != 4 or photos.shape[-1] != 3 or photos.shape[1] % 4 or photos.shape[2] % 4:
    raise UserError(f"refinement photos must be [B, H, W, 3] with H, W multiples of 4, got "
                    f"{tuple(photos.shape)}")
  if steps < 0:
    raise UserError(f"refinement steps must be >= 0, got {steps}")
  if optimizer not in OPTIMIZERS:
    raise UserError(f"refinement optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                    f"{optimizer!r}")
  if optimizer == "lbfgs" and batch not in (None, photos.shape[0]):
    raise UserError("L-BFGS refinement uses all photos at every evaluation; leave out the batch")
  batch = photos.shape[0] if batch is None else batch
  if not 1 <= batch <= photos.shape[0]:
    raise UserError(f"refinement batch must be 1-{photos.shape[0]} photos, got {batch}")
  painting = np.asarray(painting, np.float32)
  initial = model.embed(painting)  # UserError for a non-RGB or 1 x 1 painting
  style = image_io.resize_array(painting, _long_side(painting.shape[:2], style_size))
  targets = training.make_style_targets(vgg_params, jnp.asarray(style)[None], loss_cfg)
  trainable = {"embedding": jnp.array(initial),
               "norm_deltas": zero_norm_deltas(model.params["transfer"]) if norms else None}
  common = {"model": model, "photos": photos, "vgg_params": vgg_params, "targets": targets,
            "loss_cfg": loss_cfg, "steps": steps, "callback": callback}
  if optimizer == "lbfgs":
    trainable, losses = _fit_lbfgs(trainable, **common)
  else:
    trainable, losses = _fit_adam(trainable, learning_rate=float(learning_rate), batch=batch,
                                  **common)
  deltas = trainable["norm_deltas"]
  settings = {"optimizer": optimizer, "learning_rate": learning_rate, "norms": norms,
              "photos": int(photos.shape[0]), "batch": batch,
              "photo_size": list(photos.shape[1:3]), "style_size": style_size,
              "loss": config.to_dict(loss_cfg)}
  return RefineResult(np.asarray(trainable["embedding"]), np.asarray(initial),
                      None if deltas is None else jax.tree_util.tree_map(np.asarray, deltas),
                      tuple(losses), steps, settings, time.process_time() - start)


def _fit_adam(trainable, *, model, photos, vgg_params, targets, loss_cfg, steps, callback,
              learning_rate, batch):
  batches = photos[:photos.shape[0] // batch * batch].reshape((-1, batch) + photos.shape[1:])
  opt_state = optax.adam(learning_rate).init(trainable)
  step_fn = functools.partial(refine_step, learning_rate=learning_rate, loss_cfg=loss_cfg,
                              cfg=model.cfg)
  losses = []
  for i in range(steps):
    trainable, opt_state, loss = step_fn(trainable, opt_state, model.params,
                                         batches[i % len(batches)], vgg_params, targets)
    losses.append(float(loss))
    if callback is not None:
      callback(i + 1, losses[-1])
  last = batches[(steps - 1) % len(batches)]
  losses.append(float(loss_and_grad(trainable, model.params, last, vgg_params, targets, loss_cfg,
                                    model.cfg)[0]))
  return trainable, losses


class _Spent(Exception):
  """The evaluation budget is spent (scipy checks its ``maxfun`` between line searches only)."""


def _fit_lbfgs(trainable, *, model, photos, vgg_params, targets, loss_cfg, steps, callback):
  # scipy's L-BFGS-B on the host: ~100 (embedding) to a few thousand (norm offsets) numbers, the
  # loss and gradient from the one compiled program; optax's L-BFGS would compile the loss a
  # second time inside its jitted line search.
  x0, unravel = ravel_pytree(trainable)
  seen = []  # (loss, x) of every evaluation

  def value_and_grad(x):
    if seen and len(seen) >= steps:
      raise _Spent()
    loss, grad = loss_and_grad(unravel(jnp.asarray(x, jnp.float32)), model.params, photos,
                               vgg_params, targets, loss_cfg, model.cfg)
    seen.append((float(loss), np.array(x)))
    if callback is not None and steps:
      callback(len(seen), seen[-1][0])
    return seen[-1][0], np.asarray(ravel_pytree(grad)[0], np.float64)

  with contextlib.suppress(_Spent):  # steps = 0: the start's loss only
    scipy.optimize.minimize(value_and_grad, np.asarray(x0, np.float64), jac=True,
                            method="L-BFGS-B", options={"maxfun": steps, "maxiter": steps})
  best = min(range(len(seen)), key=lambda i: (not np.isfinite(seen[i][0]), seen[i][0]))
  return (unravel(jnp.asarray(seen[best][1], jnp.float32)),
          [loss for loss, _ in seen][:max(steps, 1)] + [seen[best][0]])


def _long_side(hw, size: int) -> tuple[int, int]:
  h, w = hw
  scale = size / max(h, w)
  return max(1, round(h * scale)), max(1, round(w * scale))


# --- named styles --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StoredStyle:
  """A named style read back by ``load_style``: the embedding [E], the norm deltas (or None)
  and the stored metadata (painting and base model sha256, steps, settings, provenance)."""

  embedding: np.ndarray
  norm_deltas: dict | None
  meta: dict


def style_path(name: str) -> Path:
  """Where the named style ``name`` lives (the one place that decides it): ``<cache>/styles/``.

  Raises:
    UserError: a name that is not a plain file name (letters, digits, ``_ . -``).
  """
  if not NAME_RE.fullmatch(name or ""):
    raise UserError(f"style name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                    "starting with a letter or digit")
  return paths.cache_dir() / "styles" / f"{name}.npz"


def save_style(name: str, result: RefineResult, *, painting_sha256: str, base_sha256: str,
               provenance: dict | None = None) -> Path:
  """Stores ``result`` as the named style ``name`` (atomically; replaces one of that name).

  Args:
    name: the style's name (``style_path``).
    result: from ``refine_embedding``.
    painting_sha256: the painting file's sha256.
    base_sha256: the sha256 of the arbitrary model file the style was refined for.
    provenance: anything else worth keeping (e.g. the painting's file name, the command).

  Returns:
    The written path.
  """
  meta = {"kind": STYLE_KIND, "style_format": STYLE_FORMAT, "name": name,
          "painting_sha256": painting_sha256, "base_sha256": base_sha256, "steps": result.steps,
          "settings": result.settings, "losses": [result.losses[0], result.losses[-1]],
          "cpu_seconds": result.seconds, "provenance": provenance or {}}
  tree = {"embedding": result.embedding, "initial_embedding": result.initial_embedding}
  if result.norm_deltas:
    tree["norm_deltas"] = result.norm_deltas
  path = style_path(name)
  model_file.save(path, {"params": tree}, result.settings, kind=STYLE_KIND, source="nst_jax",
                  licence="Apache-2.0", how="nst-jax models refine", meta=meta, dtype="float32")
  return path


def load_style(name: str) -> StoredStyle:
  """Reads the named style ``name``.

  Raises:
    UserError: no style of that name (listing those there are), or a damaged file.
  """
  path = style_path(name)
  if not path.is_file():
    known = ", ".join(list_styles()) or "none"
    raise UserError(f"no refined style named {name!r} (known: {known}); make one with "
                    f"`nst-jax models refine --style-image PAINTING --name {name}`")
  stored = model_file.load(path, kind=STYLE_KIND)
  tree, meta = stored.variables["params"], stored.meta
  if "embedding" not in tree:
    raise UserError(f"{path} is not a refined arbitrary style (no embedding)")
  deltas = tree.get("norm_deltas")
  if deltas:  # the file's keys join nested names with "/": regroup under "res1/norm1" etc.
    flat = model_file.flatten(deltas)
    deltas = {}
    for key, value in flat.items():
      module, proj = key.rsplit("/", 1)
      deltas.setdefault(module, {})[proj] = value
  return StoredStyle(tree["embedding"], deltas or None, meta)


def list_styles() -> list[str]:
  """The names of the stored refined styles, sorted."""
  folder = style_path("x").parent
  return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []


def describe_style(name: str) -> str:
  """One line about a stored style: steps, loss before / after, settings."""
  s = load_style(name)
  m = s.meta
  lo = m.get("losses", [float("nan")] * 2)
  return (f"{name}: {m.get('steps')} steps, loss {lo[0]:.4g} -> {lo[-1]:.4g}, "
          f"norms={'yes' if s.norm_deltas else 'no'}, "
          f"{json.dumps({k: v for k, v in m.get('settings', {}).items() if k != 'loss'})}")
