"""The state of a training run, shared by the wings that train networks (``fast``, ``sr``).

Synopsis::

  from nst_jax.core.state import TrainState, make_key
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                     opt_state=tx.init(params))
  key = jax.random.fold_in(make_key(seed), int(state.step))
"""

from __future__ import annotations

from typing import Any

import flax
import jax


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training; a plain pytree (saved as is by orbax).

  Attributes:
    step: int32 scalar, the number of updates done.
    params: the network's parameters.
    batch_stats: batch-norm running averages (an empty dict for instance norm).
    opt_state: the optax state.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_key(seed: int) -> jax.Array:
  """The run's base key. The "rbg" generator: initializing the network with threefry compiles
  much slower on CPU (docs/research/implementation_notes.md), and training needs no
  cross-backend bit reproducibility."""
  return jax.random.key(seed, impl="rbg")
