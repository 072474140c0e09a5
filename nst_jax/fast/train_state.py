"""The training state of a feed-forward network: its optimizer (Adam, schedules, a parameter
average) and its initialization; the state itself, its abstract shapes and the loop are
``core.engine``'s.

Synopsis::

  from nst_jax import config
  from nst_jax.fast import nets, train_state
  cfg = config.train_smoke()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = train_state.create_train_state(model, tx, train_state.make_key(cfg.seed))
  variables = train_state.variables_of(state)    # what inference applies (the average if kept)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nst_jax.config import TrainConfig
from nst_jax.core import engine
from nst_jax.core.engine import variables_of  # noqa: F401  (this wing's API)
from nst_jax.core.state import TrainState, make_key  # the training state every wing shares
from nst_jax.fast import multistyle


class EmaParamsState(NamedTuple):
  """``params_ema``'s optimizer state: the running average of the parameters."""
  ema_params: Any


def params_ema(decay: float) -> optax.GradientTransformation:
  """Keeps ``decay * ema + (1 - decay) * new_params`` after each update, in the optimizer state
  (so checkpoints and resumption carry it); the updates pass through unchanged. Last in a chain,
  where the updates are final. Starts from the initial parameters, so it needs no debiasing."""

  def init(params):
    return EmaParamsState(ema_params=jax.tree.map(jnp.copy, params))  # own buffers: donation

  def update(updates, state, params=None):
    new_params = optax.apply_updates(params, updates)
    return updates, EmaParamsState(optax.incremental_update(new_params, state.ema_params,
                                                            1.0 - decay))

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015) with ``engine.make_schedule``; the paper's choice, learning rate 1e-3.
  With ``cfg.ema_decay`` it also averages the parameters (``params_ema``).
  With ``cfg.base_model`` (adding styles to a trained network) only the new styles'
  normalization rows move (``multistyle.add_style_optimizer``)."""
  adam = optax.adam(engine.make_schedule(learning_rate=cfg.learning_rate, num_steps=cfg.num_steps,
                                         schedule=cfg.schedule, warmup_steps=cfg.warmup_steps))
  tx = optax.chain(adam, params_ema(cfg.ema_decay)) if cfg.ema_decay else adam
  if cfg.base_model:
    num_new = len(cfg.styles) or 1
    tx = multistyle.add_style_optimizer(tx, first_new=cfg.net.num_styles - num_new)
  return tx


def init_variables(model: nn.Module, key: jax.Array, *, size: int = 64) -> dict:
  """The network's variables (shapes do not depend on the dummy image side ``size``)."""
  return model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, *,
                       size: int = 64) -> TrainState:
  """Initializes the network and the optimizer: a ``TrainState`` at step 0 (un-jitted).

  Args:
    model: a ``nets.TransformNet``.
    tx: the optimizer.
    key: initialization key.
    size: the dummy image side used for initialization.
  """
  return engine.create_train_state(init_variables(model, key, size=size), tx)


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                     mesh: jax.sharding.Mesh) -> TrainState:
  """``create_train_state``, compiled, with the state replicated on ``mesh``
  (``engine.init_train_state``)."""
  return engine.init_train_state(functools.partial(init_variables, model), tx, key, mesh)


def init_from_params(params, tx: optax.GradientTransformation,
                     mesh: jax.sharding.Mesh) -> TrainState:
  """A step-0 ``TrainState`` around given parameters (instance norm: no batch statistics),
  replicated on ``mesh`` (on copies: the train step donates the state's buffers)."""
  return engine.init_train_state(None, tx, make_key(0), mesh, {"params": params})


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation) -> TrainState:
  """The ``TrainState``'s structure as ``jax.ShapeDtypeStruct`` leaves; nothing is allocated."""
  return engine.abstract_train_state(functools.partial(init_variables, model), tx)
