"""The run driver shared by the slow methods: stages of optimization, resumable checkpoints.

Synopsis::

  from nst_jax.slow import driver
  stages = [driver.Stage(optim_cfg, inputs=lambda prev: (x0, aux), desc="level 1/2 256px"), ...]
  res = driver.run_stages(loss_fn, vgg_params, stages, digest_=driver.digest(cfg, arrays),
                          checkpoint="out/.a.png.ckpt", config=cfg)
  res.x, res.history, res.starts             # last stage's x, all iterations, stage offsets

Artistic transfer's coarse-to-fine levels and photorealistic transfer's two stages are both a
list of ``Stage``: each gets its initial image and its loss's aux from the previous stage's
result, runs ``optimize.run``, and is checkpointed (solver state included) every
``checkpoint_every`` iterations, so re-running the same command resumes where it stopped, to the
same result as an uninterrupted run. A stage with zero iterations passes its initial image on
unchanged.

Checkpoints (``Checkpointer``) go through orbax, as training's do (``core.checkpoint``): a hidden
folder next to the output, ``.NAME.ckpt/<n>/{state,meta}``, the arrays (x, the solver state, the
finished stages' images) and JSON (the run's digest, its resolved config, the stage, iteration
and loss histories). Each save is atomic, only the newest is kept, a checkpoint of another run
(another digest of config and inputs) is ignored and replaced, and the folder is removed when the
run completes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config as config_lib
from nst_jax.config import OptimConfig
from nst_jax.core import checkpoint
from nst_jax.core.errors import UserError
from nst_jax.slow import optimize


@dataclasses.dataclass
class Output:
  """What a slow method returns."""
  images: list[np.ndarray]  # one [H, W, 3] per problem
  history: dict[str, np.ndarray]  # term -> [iterations] summed over problems
  level_starts: list[int]  # iteration at which each coarse-to-fine level (or stage) starts
  nan_at: int | None = None
  seconds: float = 0.0


@dataclasses.dataclass
class Stage:
  """One optimization stage: its optimizer config, its inputs from the previous stage's x (None
  for the first), and its progress-bar label."""
  optim: OptimConfig
  inputs: Callable[[jax.Array | None], tuple[jax.Array, Any]]  # prev x -> (x0, aux)
  desc: str


@dataclasses.dataclass
class StagesResult:
  x: jax.Array  # the last stage's result (the last good x after a NaN)
  aux: Any  # the last stage's aux
  history: dict[str, np.ndarray]  # term -> [iterations, ...] over all stages
  starts: list[int]  # each stage's first iteration
  nan_at: int | None
  seconds: float


def fit_hw(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
  """(H, W) scaled so that the long side is ``long_side`` (each side at least 1)."""
  h, w = hw
  s = long_side / max(h, w)
  return max(1, round(h * s)), max(1, round(w * s))


def digest(cfg, arrays: Sequence[np.ndarray], extra: str = "") -> str:
  """Identifies a run (config, input pixels), so a checkpoint is resumed only by the same run."""
  h = hashlib.sha256(repr(cfg).encode())
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  h.update(extra.encode())
  return h.hexdigest()[:16]


class Checkpointer:
  """Saves (stage, iteration, x, solver state, history, finished stages) every N iterations.

  An orbax checkpoint folder (``core.checkpoint.Checkpoints``, one step kept), hidden next to
  the output (``.NAME.ckpt/``): ``<n>/state`` holds the arrays (x, the solver state as a state
  dict, the finished stages' results), ``<n>/meta`` JSON with the run's digest, its resolved
  config, the stage, the iteration and the loss histories. Saves are synchronous and atomic
  (orbax writes a temporary folder and renames it), so an interruption at any moment leaves the
  last whole save. ``load`` ignores another run's checkpoint (another digest), an unreadable one
  and an old single-file (msgpack) one; the first save replaces them. Removed when the run
  completes.
  """

  def __init__(self, path: str | os.PathLike | None, every: int, digest_: str,
               config: Any = None):
    self.path, self.every, self.digest = (Path(path) if path else None), every, digest_
    self.config = config_lib.to_dict(config) if dataclasses.is_dataclass(config) else config
    self._last = (None, 0)  # (stage, iteration) of the last save
    self._ckpts, self._step = None, 0  # the open manager, the last save's number

  def load(self) -> dict | None:
    """This run's newest save: ``{"stage", "iteration", "x", "state" (a state dict),
    "history", "done": {str(stage): {"x", "history"}}}``, or None."""
    steps = checkpoint.complete_steps(self.path) if self.path else []
    if not steps:
      return None
    try:
      with checkpoint.Checkpoints(None, directory=self.path, read_only=True) as ckpts:
        meta = ckpts.restore_meta(steps[-1])
        if meta.get("digest") != self.digest:
          return None
        arrays, _ = ckpts.restore(steps[-1])
    except UserError:
      return None
    self._step = steps[-1]
    done = {k: {"x": arrays["done"][k], "history": from_json_history(h)}
            for k, h in meta["done"].items()}
    return {"stage": meta["stage"], "iteration": meta["iteration"], "x": arrays["x"],
            "state": arrays["state"], "history": from_json_history(meta["history"]),
            "done": done}

  def save(self, stage, it, x, state, history, done_stages, force=False):
    # Iterations count from 0 at every stage, so a new stage always saves.
    if not self.path or not (force or stage != self._last[0] or it - self._last[1] >= self.every):
      return
    self._last, self._step = (stage, it), self._step + 1
    if self._ckpts is None:
      self._ckpts = self._open()
    arrays = {"x": np.asarray(x), "state": flax.serialization.to_state_dict(jax.device_get(state)),
              "done": {k: np.asarray(v["x"]) for k, v in done_stages.items()}}
    meta = {"digest": self.digest, "config": self.config, "stage": stage, "iteration": it,
            "history": to_json_history(history),
            "done": {k: to_json_history(v["history"]) for k, v in done_stages.items()}}
    self._ckpts.save(self._step, arrays, meta, force=True)

  def _open(self) -> checkpoint.Checkpoints:
    """A manager for this run's saves, after clearing an old file or another run's steps."""
    if self.path.is_file():
      self.path.unlink()  # an old single-file checkpoint
    elif self._step == 1:  # nothing of this run was loaded: whatever is there is another run's
      self._clear()
    return checkpoint.Checkpoints(None, directory=self.path, every=1, keep=1, asynchronous=False)

  def _clear(self) -> None:
    """Removes the checkpoint steps (whole or unfinished) in the folder, and it if then empty."""
    if not self.path.is_dir():
      return
    for entry in self.path.iterdir():
      if entry.is_dir() and (entry.name.isdigit() or ".orbax-checkpoint-tmp" in entry.name):
        shutil.rmtree(entry)
    if not any(self.path.iterdir()):
      self.path.rmdir()

  def close(self) -> None:
    if self._ckpts is not None:
      self._ckpts.close()
      self._ckpts = None

  def remove(self):
    self.close()
    if self.path and self.path.is_file():
      self.path.unlink()
    elif self.path:
      self._clear()


def to_json_history(hist: dict) -> dict:
  """A history ({term: float32 [iterations, ...]}) as JSON lists (float32 -> float is exact)."""
  return {k: np.asarray(v).tolist() for k, v in hist.items()}


def from_json_history(hist: dict) -> dict:
  return {k: np.asarray(v, np.float32) for k, v in hist.items()}


def join_history(earlier, hist):
  """A stage's history saved before an interruption, followed by the resumed part."""
  if not earlier:
    return hist
  if not hist:
    return earlier
  return {k: np.concatenate([np.asarray(earlier[k]), hist[k]]) for k in hist}


def history_length(hist: dict) -> int:
  """Iterations in a history (0 for the empty history of a stage with no iterations)."""
  return len(next(iter(hist.values()))) if hist else 0


def concat_levels(pieces):
  """Per-stage histories -> one history over all iterations, summed over problems."""
  pieces = [p for p in pieces if p]
  if not pieces:
    return {}
  joined = {k: np.concatenate([np.asarray(p[k]) for p in pieces]) for k in pieces[0]}
  return {k: v.sum(axis=tuple(range(1, v.ndim))) for k, v in joined.items()}


def run_stages(loss_fn: optimize.LossFn, shared, stages: Sequence[Stage], *, digest_: str,
               batched: bool = False, checkpoint: str | os.PathLike | None = None,
               checkpoint_every: int = 50, config: Any = None, progress: bool = True,
               on_chunk: Callable[[int, int, jax.Array, Any], None] | None = None,
               on_loss: Callable[[int, int, float], None] | None = None) -> StagesResult:
  """Runs ``stages`` in order, each from the previous one's result, resuming a checkpoint.

  Args:
    loss_fn: ``(x, shared, aux) -> (loss, terms)``, the same for every stage (one compilation).
    shared: the loss's shared arrays (VGG parameters).
    stages: the stages.
    digest_: identifies the run (``digest``); a checkpoint of another run is ignored.
    batched: the problems are stacked on a leading axis (``optimize.run``'s ``batched``).
    checkpoint: the checkpoint folder (``Checkpointer``; None: no checkpoints).
    checkpoint_every: iterations between checkpoints.
    config: the run's resolved config (a dataclass or JSON-able), saved beside the arrays.
    progress: show a progress bar per stage.
    on_chunk: ``(stage, iteration, x, aux)`` after every chunk.
    on_loss: ``(stage, iteration, total loss)`` after every chunk (summed over problems).

  Returns:
    A ``StagesResult``; after a NaN/Inf loss the run stops at that stage.
  """
  ckpt = Checkpointer(checkpoint, checkpoint_every, digest_, config)
  try:
    return _run_stages(loss_fn, shared, stages, ckpt, batched, progress, on_chunk, on_loss)
  finally:
    ckpt.close()


def restore_state(template: Any, saved: dict) -> Any:
  """A solver state from its saved state dict, with the structure, dtypes and weak types of
  ``template`` (``jax.ShapeDtypeStruct`` leaves), so the resumed chunks reuse the program an
  uninterrupted run compiled (a leaf that lost its weak type would compile it again)."""
  return jax.tree.map(restore_leaf, template,
                      flax.serialization.from_state_dict(template, saved))


def restore_leaf(t: jax.ShapeDtypeStruct, v) -> jax.Array:
  v = np.asarray(v, t.dtype).reshape(t.shape)
  if getattr(t, "weak_type", False) and v.ndim == 0:
    weak = jnp.asarray(v.item())  # a Python scalar is weakly typed, as the solver's counters
    if weak.dtype == t.dtype:
      return weak
  return jnp.asarray(v)


def _run_stages(loss_fn, shared, stages, ckpt: Checkpointer, batched, progress, on_chunk,
                on_loss=None):
  saved = ckpt.load() or {}
  done = saved.get("done", {})
  x, aux, pieces, starts, seconds = None, None, [], [], 0.0
  for index, stage in enumerate(stages):
    x0, aux = stage.inputs(x)
    starts.append(sum(history_length(p) for p in pieces))
    if str(index) in done:  # finished before an interruption
      if progress:
        print(f"{stage.desc}: done before the interruption (checkpoint {ckpt.path})",
              file=sys.stderr)
      pieces.append(done[str(index)]["history"])
      x = jnp.asarray(done[str(index)]["x"]).reshape(x0.shape)
      continue
    state, start, earlier = None, 0, None
    if saved.get("stage") == index:
      # The state's shapes only: no loss evaluation, no compilation.
      template = jax.eval_shape(lambda x0=x0, aux=aux, stage=stage: optimize.init_state(
          loss_fn, x0, shared, aux, stage.optim, batched=batched))
      state = restore_state(template, saved["state"])
      x0 = jnp.asarray(saved["x"], x0.dtype).reshape(x0.shape)
      start, earlier = int(saved["iteration"]), saved.get("history")
      if progress:
        print(f"{stage.desc}: resuming from iteration {start} (checkpoint {ckpt.path})",
              file=sys.stderr)

    def chunk_cb(it, xi, st, hist, index=index, earlier=earlier, aux=aux):
      ckpt.save(index, it, xi, st, join_history(earlier, hist), done)
      if on_loss is not None and hist and len(hist["total"]):
        on_loss(index, it, float(np.sum(np.asarray(hist["total"])[-1])))
      if on_chunk is not None:
        on_chunk(index, it, xi, aux)

    res = optimize.run(loss_fn, x0, shared, aux, stage.optim, batched=batched, state=state,
                       start=start, progress=progress, on_chunk=chunk_cb, desc=stage.desc)
    seconds += res.seconds
    hist = join_history(earlier, res.history)
    pieces.append(hist)
    x = res.image
    if res.nan_at is not None:
      return StagesResult(x, aux, concat_levels(pieces), starts, starts[-1] + res.nan_at,
                          seconds)
    done[str(index)] = {"history": hist, "x": np.asarray(x)}
  ckpt.remove()
  return StagesResult(x, aux, concat_levels(pieces), starts, None, seconds)
