"""One training engine for every trained network: state, sharded step, resume, loop, logging.

A wing describes its training as a small ``Task`` (its optimizer, its initialization, its step,
its data, its checkpoint meta and resume check, optionally its samples); ``train`` runs it. The
engine owns what every trainer shares: the ``TrainState`` (shapes from ``jax.eval_shape``), the
one jitted step over a 1-D ``("data",)`` mesh (batch sharded, state replicated and donated, never
retraced), orbax resumption (a run always restores its workdir's newest checkpoint, after the
task accepts its meta), ``config.json``, the loss log and TensorBoard (``train_logging``), the
progress bar, periodic checkpoints, and a checkpoint on Ctrl-C or SIGTERM before stopping.

Synopsis::

  from nst_jax.core import engine
  task = engine.Task(cfg=cfg, tx=optax.adam(1e-3),
                     init_variables=lambda key: model.init(key, jnp.zeros((1, 32, 32, 3))),
                     train_step=my_step,              # (state, batch, *consts) -> (state, metrics)
                     make_consts=lambda: (loss_params,), dataset=dataset,
                     meta={"kind": "mine", "config": dataclasses.asdict(cfg)},
                     check_resumable=lambda meta, workdir: engine.check_same_settings(
                         from_dict(meta["config"]), cfg, ("net", "size"), workdir))
  state = engine.train(task, "runs/mine")             # resumes if runs/mine has a checkpoint

  # the pieces, for custom loops and tests
  state = engine.init_train_state(task.init_variables, task.tx, engine.make_key(0), mesh)
  step = engine.jit_train_step(my_step, mesh, num_consts=1)
  state, metrics = step(state, sharding.shard_batch(mesh, batch), loss_params)

How to add a trainer (e.g. Ghiasi et al.'s arbitrary-style network: a style-prediction network
and a transformer network trained together on (photo, painting) pairs):

1. ``init_variables(key)`` returns one variables dict for everything that trains, e.g.
   ``{"params": {"predictor": ..., "transformer": ...}}``; the engine derives the state and its
   abstract shapes from it, so both networks are checkpointed and restored as one state.
2. ``train_step(state, batch, *consts)`` is un-jitted and pure: compute the loss of the batch
   (any pytree of arrays with a leading batch axis, e.g. ``(photos, paintings)``), take its
   gradient, and finish with ``apply_gradients``; ``apply_train`` runs a module in training mode.
   Random keys come in ``consts`` and advance with ``jax.random.fold_in(key, state.step)``.
3. ``dataset.batches(local_batch, start_step=, num_steps=, prefetch=, shard_index=,
   shard_count=)`` yields this process' part of each global batch as a pure function of the step
   (``core.data``), which makes a resumed run equal an uninterrupted one.
4. ``meta`` carries the config (so a checkpoint rebuilds the network) and ``check_resumable``
   raises a one-line ``UserError`` for a checkpoint of another run (``check_same_settings``).
5. The wing's ``train_and_evaluate(cfg, workdir)`` builds the task and returns ``train(task,
   workdir)``; its tests run one step of the task on mock data.

References:
  Flax examples (``train.py``: ``create_train_state``, ``train_step``, ``train_and_evaluate``)
  and big_vision (one jitted update with donation over a mesh).
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from nst_jax import config
from nst_jax.core import checkpoint, image_io, sharding, train_logging
from nst_jax.core.errors import UserError
from nst_jax.core.state import TrainState, make_key


@dataclasses.dataclass(frozen=True)
class Task:
  """What a wing supplies to ``train``: one kind of training run.

  Attributes:
    cfg: the run's config dataclass: ``num_steps``, ``batch_size`` (global), ``log_every``,
      ``checkpoint_every``, ``keep_checkpoints``, ``prefetch`` and ``seed`` drive the loop; it is
      written to ``config.json``.
    tx: the optimizer.
    init_variables: ``key -> {"params", "batch_stats"?}``, traceable (jitted and shape-evaluated).
    train_step: ``(state, batch, *consts) -> (new state, {name: scalar})``, un-jitted.
    make_consts: the step's other arguments (loss network, targets, keys), a tuple of host
      pytrees; called once, after the resume check, and replicated on the mesh.
    dataset: has ``batches(...)`` as ``core.data.IndexedDataset`` (see the module docstring).
    meta: what every checkpoint stores beside the state (JSON-able; carries the config).
    check_resumable: ``(saved meta, workdir) -> None``; raises ``UserError`` to refuse a resume.
    start_variables: a fine-tuning run's starting variables (called for a fresh run only; None:
      ``init_variables``' initialization).
    sample: ``variables -> images [N, H, W, 3]`` logged to TensorBoard every ``sample_every``
      steps and at the end (main process).
    sample_every: the sampling interval in steps.
    finish: ``(state, workdir) -> None``, called on the main process after the last step (e.g.
      a sheet of samples).
    name: the progress bar's label.
    unit: what the throughput counts (``"img"``: images per second).
  """
  cfg: Any
  tx: optax.GradientTransformation
  init_variables: Callable[[jax.Array], dict]
  train_step: Callable[..., tuple[TrainState, dict]]
  make_consts: Callable[[], Sequence[Any]]
  dataset: Any
  meta: dict
  check_resumable: Callable[[dict, Path], None]
  start_variables: Callable[[], dict | None] | None = None
  sample: Callable[[dict], Any] | None = None
  sample_every: int = 0
  finish: Callable[[TrainState, Path], None] | None = None
  name: str = "train"
  unit: str = "img"


# ------------------------------------------------------------------------------------------------
# The state and the step.


def make_schedule(*, learning_rate: float, num_steps: int, schedule: str = "constant",
                  warmup_steps: int = 0) -> optax.Schedule:
  """The learning rate per step: "constant", "cosine" (decay to 0 over ``num_steps``) or "step"
  (x0.1 at three quarters of ``num_steps``), after a linear warm-up of ``warmup_steps``."""
  lr, total, warm = learning_rate, max(num_steps, 1), warmup_steps
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0 if warm else lr, lr, warm,
                                              max(total, warm + 1))
  if schedule == "step":
    main = optax.piecewise_constant_schedule(lr, {int(0.75 * total) - warm: 0.1})
  else:
    main = optax.constant_schedule(lr)
  if not warm:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def create_train_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
  """The state at step 0 around ``variables`` (``{"params", "batch_stats"?}``)."""
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def init_train_state(init_variables: Callable[[jax.Array], dict],
                     tx: optax.GradientTransformation, key: jax.Array, mesh: jax.sharding.Mesh,
                     variables: dict | None = None) -> TrainState:
  """``create_train_state`` of ``init_variables(key)`` (or of given ``variables``, copied),
  compiled, replicated on ``mesh``.

  The step's input types include the sharding, so a state that is not already replicated on the
  mesh would make the step's second call (whose state is) trace again.
  """
  if variables is not None:  # own buffers (the step donates them), placed on every process
    variables = sharding.replicate(mesh, jax.tree.map(np.array, variables))

  def create(key, variables):
    return create_train_state(init_variables(key) if variables is None else variables, tx)

  return jax.jit(create, out_shardings=sharding.replicated(mesh))(key, variables)


def abstract_train_state(init_variables: Callable[[jax.Array], dict],
                         tx: optax.GradientTransformation,
                         mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """The state's structure as ``jax.ShapeDtypeStruct`` leaves (replicated on ``mesh`` if given);
  nothing is allocated."""
  shapes = jax.eval_shape(lambda: create_train_state(init_variables(make_key(0)), tx))
  if mesh is None:
    return shapes
  repl = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), shapes)


def variables_of(state: TrainState) -> dict:
  """``{"params", "batch_stats"?}`` for ``model.apply``: the averaged parameters when the
  optimizer keeps an average (an ``ema_params`` field in its state), else the last ones."""
  ema = optax.tree_utils.tree_get(state.opt_state, "ema_params")
  out = {"params": state.params if ema is None else ema}
  if state.batch_stats:
    out["batch_stats"] = state.batch_stats
  return out


def apply_train(model: nn.Module, variables: dict, *inputs):
  """The forward pass of training: ``(outputs, new batch_stats)`` (``{}`` without batch norm)."""
  if "batch_stats" in variables:
    out, updates = model.apply(variables, *inputs, train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]
  return model.apply(variables, *inputs, train=True), {}


def apply_gradients(state: TrainState, tx: optax.GradientTransformation, grads,
                    batch_stats) -> TrainState:
  """The state after one update of ``tx`` with ``grads`` (and the new batch statistics)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state)


def jit_train_step(step_fn: Callable, mesh: jax.sharding.Mesh, *, num_consts: int = 1) -> Callable:
  """Jits ``step_fn(state, batch, *consts)`` (``num_consts`` of them) for data parallelism.

  The batch (every leaf) is sharded over the mesh's "data" axis, everything else replicated; the
  state is donated, so its buffers are reused for the new state.
  """
  repl = sharding.replicated(mesh)
  return jax.jit(step_fn, in_shardings=(repl, sharding.batch(mesh)) + (repl,) * num_consts,
                 out_shardings=(repl, repl), donate_argnums=(0,))


# ------------------------------------------------------------------------------------------------
# The run: resume, loop, logging, checkpoints.


def check_same_settings(saved: Any, cfg: Any, names: Sequence[str], workdir) -> None:
  """Refuses (one-line ``UserError``) a checkpoint whose config differs from ``cfg`` in one of
  ``names`` (the fields that change the state's shapes or the meaning of its steps)."""
  for name in names:
    if getattr(saved, name) != getattr(cfg, name):
      raise UserError(f"{workdir} holds a run with a different {name} ({getattr(saved, name)}); "
                      "use a new --workdir, or the same settings to resume")


def restore_or_init(task: Task, ckpts: checkpoint.Checkpoints, workdir: Path,
                    mesh: jax.sharding.Mesh) -> tuple[TrainState, int]:
  """The newest checkpoint's state and step (after ``task.check_resumable`` accepts its meta), or
  a fresh state at step 0."""
  start = ckpts.latest_step()
  if start is None:
    variables = task.start_variables() if task.start_variables else None
    return init_train_state(task.init_variables, task.tx, make_key(task.cfg.seed), mesh,
                            variables), 0
  task.check_resumable(ckpts.restore_meta(start), workdir)
  state, _ = ckpts.restore(start, abstract_train_state(task.init_variables, task.tx, mesh))
  return state, start


def train(task: Task, workdir, *, mesh: jax.sharding.Mesh | None = None,
          progress: bool = True) -> TrainState:
  """Runs ``task`` to ``task.cfg.num_steps``, resuming from ``workdir``'s newest checkpoint.

  Writes ``workdir/config.json``, ``checkpoints/<step>/`` (every ``checkpoint_every`` steps and at
  the end), ``losses.csv``, ``losses.png`` and TensorBoard events in ``tb/``. Ctrl-C or SIGTERM
  saves a checkpoint of the last finished step before stopping (``KeyboardInterrupt``, or
  ``Terminated`` for SIGTERM).

  Args:
    task: the wing's description of the run.
    workdir: the run's folder; running again with the same config resumes.
    mesh: the device mesh (default: all devices).
    progress: show a progress bar (losses, throughput).

  Returns:
    The final ``TrainState``.
  """
  workdir = Path(workdir).expanduser()
  mesh = mesh or sharding.make_mesh()
  cfg = task.cfg
  local_batch = sharding.check_batch_size(mesh, cfg.batch_size)
  with checkpoint.Checkpoints(workdir, every=cfg.checkpoint_every,
                              keep=cfg.keep_checkpoints) as ckpts:
    state, start = restore_or_init(task, ckpts, workdir, mesh)
    if sharding.is_main_process():
      image_io.write_text(workdir / "config.json", config.to_json(cfg))
    consts = sharding.replicate(mesh, tuple(task.make_consts()))
    step_fn = jit_train_step(task.train_step, mesh, num_consts=len(consts))
    loop = Loop(task, workdir, mesh, ckpts, start)
    try:
      state = loop.run(state, lambda s, b: step_fn(s, b, *consts), local_batch, progress)
    finally:
      loop.log.close()
    ckpts.wait()
  return state


class Terminated(KeyboardInterrupt):
  """The run received SIGTERM; a checkpoint of its last finished step was saved."""


class StopSignal:
  """Turns SIGTERM into a request the loop honours between steps (main thread only; elsewhere,
  and outside the ``with`` block, SIGTERM keeps its handler)."""

  def __init__(self):
    self.received, self._installed, self._previous = False, False, None

  def __enter__(self) -> "StopSignal":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    self.received = True

  def __exit__(self, *exc) -> None:
    if self._installed:  # None: a handler not set from Python; the default stands in for it
      signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
      self._installed = False


class Loop:
  """The loop's bookkeeping: batches, progress bar, logs, samples, checkpoints."""

  def __init__(self, task: Task, workdir: Path, mesh: jax.sharding.Mesh,
               ckpts: checkpoint.Checkpoints, start: int):
    self.task, self.cfg, self.workdir, self.mesh = task, task.cfg, workdir, mesh
    self.ckpts, self.start = ckpts, start
    self.main = sharding.is_main_process()
    self.log = train_logging.TrainLog(workdir, start_step=start, enabled=self.main)

  def run(self, state: TrainState, step_fn: Callable, local_batch: int,
          progress: bool) -> TrainState:
    """Steps from ``self.start`` to ``cfg.num_steps``; returns the final state."""
    cfg, step = self.cfg, self.start
    clock = train_logging.Throughput(time.perf_counter())
    batches = self.task.dataset.batches(local_batch, start_step=step,
                                        num_steps=max(cfg.num_steps - step, 0),
                                        prefetch=cfg.prefetch, **sharding.process_shard())
    try:
      with StopSignal() as stop, batches, tqdm(
          total=cfg.num_steps, initial=step, desc=self.task.name, unit="step",
          disable=not (progress and self.main), dynamic_ncols=True) as bar:
        for batch in batches:  # this process' part: leaves [local B, ...]
          state, metrics = step_fn(state, jax.tree.map(
              functools.partial(sharding.shard_batch, self.mesh), batch))
          self.log.record(step, metrics)
          clock.add(cfg.batch_size, getattr(batches, "last_wait", 0.0))
          step += 1
          bar.update(1)
          self.periodic(step, state, clock, bar)
          if self.should_stop(stop, step):
            raise Terminated(f"SIGTERM at step {step}")
    except KeyboardInterrupt:
      self.save_on_interrupt(step, state)
      raise
    self.log.finish()
    if self.main and self.task.finish is not None:
      self.task.finish(state, self.workdir)
    return state

  def periodic(self, step: int, state: TrainState, clock: train_logging.Throughput, bar) -> None:
    """Logs, samples and checkpoints that fall due after ``step`` steps."""
    cfg, task, last = self.cfg, self.task, step == self.cfg.num_steps
    if step % cfg.log_every == 0 or last:
      losses = self.log.flush()
      rates = clock.rate(time.perf_counter())
      self.log.scalars(step, {"perf/" + k: v for k, v in rates.items()})
      bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items() if v},
                       f"{task.unit}/s": f"{rates['images_per_s']:.3g}",
                       "data_s": f"{rates['data_s_per_step']:.3f}"}, refresh=False)
    if (task.sample is not None and self.main
        and (last or (task.sample_every and step % task.sample_every == 0))):
      self.log.images(step, "samples",
                      np.asarray(task.sample(sharding.local_copy(variables_of(state)))))
    if step % cfg.checkpoint_every == 0 or last:
      self.log.save_history()  # before the checkpoint, so the CSV never lags behind it
      self.ckpts.save(step, state, task.meta, force=True)

  def should_stop(self, stop: StopSignal, step: int) -> bool:
    """Whether a SIGTERM asks the run to stop after ``step``. The processes of a multi-host run
    (a scheduler signals each of them) agree at logging steps, so that all of them save the same
    step together."""
    if jax.process_count() == 1:
      return stop.received
    if step % self.cfg.log_every and step != self.cfg.num_steps:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.asarray(stop.received))))

  def save_on_interrupt(self, step: int, state: TrainState) -> None:
    """Saves the last finished step, unless it is already saved (or the state is lost)."""
    try:
      self.log.save_history()
      self.ckpts.wait()  # a save in flight counts as saved once it lands
      if step not in self.ckpts.all_steps():
        self.ckpts.save(step, state, self.task.meta, force=True)
        self.ckpts.wait()
    except RuntimeError:  # the state's buffers were donated to a step that did not finish
      pass
