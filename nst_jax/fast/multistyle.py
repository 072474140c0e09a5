"""One network, many styles: a run's styles, style targets per example, adding a style.

Synopsis::

  from nst_jax.fast import multistyle
  multistyle.style_paths(cfg)                              # the run's style images
  stacked = multistyle.stack_style_targets([targets_a, targets_b])   # leaves [S, ...]
  idx, w = multistyle.draw_styles(key, batch=4, num_targets=2, num_styles=2)  # [B], [B, S]
  per_example = multistyle.gather_style_targets(stacked, idx)        # leaves [B, ...]
  params3 = multistyle.add_style_rows(params2, 1)          # scale/bias [2, C] -> [3, C]
  tx = multistyle.add_style_optimizer(optax.adam(1e-3), first_new=2)   # only row 2 moves

A multi-style network (``NetConfig.num_styles`` = S > 1) has conditional instance normalization
(``layers.ConditionalInstanceNorm``): every normalization layer holds ``scale`` and ``bias`` [S, C],
one row per style, and the call's style weights [B, S] (``nets.style_vector``: a user's pick or
mix) blend the rows per example. Training draws
one style per batch element; its Gram targets are gathered from the stacked targets of all styles.
Adding a style to a trained network fits only the new rows (the paper's few-minute fine-tuning):
every other parameter, and the old rows, receive zero updates.

References:
  Dumoulin, Shlens & Kudlur, "A Learned Representation for Artistic Style", ICLR 2017.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from nst_jax.config import TrainConfig

NORM_LEAVES = ("scale", "bias")


def style_name(path: str) -> str:
  """A style's short name: the image file's stem (``van_gogh_starry_night``)."""
  return Path(path).stem


def style_paths(cfg: TrainConfig) -> tuple[str, ...]:
  """The run's style images: ``cfg.styles``, else ``(cfg.style,)`` (``()`` when neither is set)."""
  return tuple(cfg.styles) or ((cfg.style,) if cfg.style else ())


def stack_style_targets(targets: Sequence[dict]) -> dict:
  """``make_style_targets`` results of S styles (leaves [1, ...]) -> one dict, leaves [S, ...]."""
  styles = [t["styles"][0] for t in targets]
  stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *styles)
  return {"styles": (stacked,), "blend": jnp.ones((1,), jnp.float32)}


def num_targets(style_targets: dict) -> int:
  """S, the number of styles whose targets are stacked in ``style_targets`` (static)."""
  return int(jax.tree_util.tree_leaves(style_targets["styles"][0])[0].shape[0])


def gather_style_targets(stacked: dict, idx: jax.Array) -> dict:
  """Each example's own targets: leaves [S, ...] -> [B, ...] by ``idx`` [B] (int)."""
  styles = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), stacked["styles"][0])
  return {"styles": (styles,), "blend": stacked["blend"]}


def draw_styles(key: jax.Array, batch: int, num_targets: int,  # pylint: disable=redefined-outer-name
                num_styles: int) -> tuple[jax.Array, jax.Array]:
  """One style per example: indices into the targets, and one-hot network style weights.

  The targets cover the *last* ``num_targets`` of the network's ``num_styles`` styles (all of
  them in a multi-style run; only the new ones when adding styles to a trained network).

  Returns:
    ``(idx [B] int32 in [0, num_targets), weights [B, num_styles] one-hot at idx + offset)``.
  """
  idx = jax.random.randint(key, (batch,), 0, num_targets)
  return idx, jax.nn.one_hot(idx + (num_styles - num_targets), num_styles, dtype=jnp.float32)


def is_norm_leaf(path) -> bool:
  """Whether a parameter's tree path (``tree_map_with_path``) is a norm layer's scale or bias."""
  keys = [str(getattr(k, "key", k)) for k in path]
  return len(keys) >= 2 and keys[-1] in NORM_LEAVES and keys[-2].startswith("norm")


def add_style_rows(params, num_new: int):
  """A network's parameters with ``num_new`` more style rows in every normalization layer.

  A one-style network's ``scale``/``bias`` [C] become [1 + num_new, C]; a multi-style one's
  [S, C] become [S + num_new, C]. New rows start at the mean of the old ones (a neutral style),
  every other parameter is unchanged.
  """
  def expand(path, x):
    if not is_norm_leaf(path):
      return x
    rows = x[None] if x.ndim == 1 else x  # [S, C]
    new = jnp.repeat(jnp.mean(rows, axis=0, keepdims=True), num_new, axis=0)
    return jnp.concatenate([rows, new], axis=0)
  return jax.tree_util.tree_map_with_path(expand, params)


def new_rows_mask(params, first_new: int):
  """1 on the normalization rows >= ``first_new``, 0 everywhere else (a tree like ``params``)."""
  def mask(path, x):
    if not is_norm_leaf(path) or x.ndim != 2:
      return jnp.zeros_like(x)
    return jnp.broadcast_to((jnp.arange(x.shape[0]) >= first_new)[:, None], x.shape).astype(x.dtype)
  return jax.tree_util.tree_map_with_path(mask, params)


def add_style_optimizer(tx: optax.GradientTransformation,
                        first_new: int) -> optax.GradientTransformation:
  """``tx`` restricted to the style rows >= ``first_new``: every other gradient is zeroed
  before ``tx`` and every other update after it, so the rest of the network stays exactly frozen
  (``optax.masked`` works per leaf; these rows share a leaf with the frozen old styles)."""
  def zero_others(updates, params):
    return jax.tree.map(lambda u, m: u * m, updates, new_rows_mask(params, first_new))

  def init(params):
    return tx.init(params)

  def update(grads, state, params=None):
    grads = zero_others(grads, params)
    updates, state = tx.update(grads, state, params)
    return zero_others(updates, params), state

  return optax.GradientTransformation(init, update)
