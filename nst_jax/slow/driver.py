"""The run driver shared by the slow methods: stages of optimization, resumable checkpoints.

Synopsis::

  from nst_jax.slow import driver
  stages = [driver.Stage(optim_cfg, inputs=lambda prev: (x0, aux), desc="level 1/2 256px"), ...]
  res = driver.run_stages(loss_fn, vgg_params, stages, digest=driver.digest(cfg, arrays),
                          checkpoint="out/.a.png.ckpt")
  res.x, res.history, res.starts             # last stage's x, all iterations, stage offsets

Artistic transfer's coarse-to-fine levels and photorealistic transfer's two stages are both a
list of ``Stage``: each gets its initial image and its loss's aux from the previous stage's
result, runs ``optimize.run``, and is checkpointed (solver state included) every
``checkpoint_every`` iterations, so re-running the same command resumes where it stopped. A
stage with zero iterations passes its initial image on unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.config import OptimConfig
from nst_jax.core import image_io
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

  One file, written atomically (a temporary file renamed over it), hidden next to the output
  (``.NAME.ckpt``); removed when the run completes.
  """

  def __init__(self, path: str | os.PathLike | None, every: int, digest_: str):
    self.path, self.every, self.digest = (Path(path) if path else None), every, digest_
    self._last = (None, 0)  # (stage, iteration) of the last save

  def load(self) -> dict | None:
    if not self.path or not self.path.is_file():
      return None
    raw = flax.serialization.msgpack_restore(self.path.read_bytes())
    return raw if raw.get("digest") == self.digest else None

  def save(self, stage, it, x, state, history, done_stages, force=False):
    # Iterations count from 0 at every stage, so a new stage always saves.
    if not self.path or not (force or stage != self._last[0] or it - self._last[1] >= self.every):
      return
    self._last = (stage, it)
    data = {"digest": self.digest, "level": stage, "iteration": it, "x": np.asarray(x),
            "state": flax.serialization.to_state_dict(jax.device_get(state)),
            "history": history, "done": done_stages}
    blob = flax.serialization.msgpack_serialize(data)
    image_io.atomic_write(self.path, lambda tmp: Path(tmp).write_bytes(blob))

  def remove(self):
    if self.path and self.path.is_file():
      self.path.unlink()


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
               checkpoint_every: int = 50, progress: bool = True,
               on_chunk: Callable[[int, int, jax.Array, Any], None] | None = None
               ) -> StagesResult:
  """Runs ``stages`` in order, each from the previous one's result, resuming a checkpoint.

  Args:
    loss_fn: ``(x, shared, aux) -> (loss, terms)``, the same for every stage (one compilation).
    shared: the loss's shared arrays (VGG parameters).
    stages: the stages.
    digest_: identifies the run (``digest``); a checkpoint of another run is ignored.
    batched: the problems are stacked on a leading axis (``optimize.run``'s ``batched``).
    checkpoint: the checkpoint file (None: no checkpoints).
    checkpoint_every: iterations between checkpoints.
    progress: show a progress bar per stage.
    on_chunk: ``(stage, iteration, x, aux)`` after every chunk.

  Returns:
    A ``StagesResult``; after a NaN/Inf loss the run stops at that stage.
  """
  ckpt = Checkpointer(checkpoint, checkpoint_every, digest_)
  saved = ckpt.load() or {}
  done = saved.get("done", {})
  x, aux, pieces, starts, seconds = None, None, [], [], 0.0
  for index, stage in enumerate(stages):
    x0, aux = stage.inputs(x)
    starts.append(sum(history_length(p) for p in pieces))
    if str(index) in done:  # finished before an interruption
      if progress:
        print(f"{stage.desc}: done before the interruption (checkpoint {checkpoint})",
              file=sys.stderr)
      pieces.append(done[str(index)]["history"])
      x = jnp.asarray(done[str(index)]["x"]).reshape(x0.shape)
      continue
    state, start, earlier = None, 0, None
    if saved.get("level") == index:
      template = optimize.init_state(loss_fn, x0, shared, aux, stage.optim, batched=batched)
      state = flax.serialization.from_state_dict(template, saved["state"])
      x0, start, earlier = jnp.asarray(saved["x"]), int(saved["iteration"]), saved.get("history")
      if progress:
        print(f"{stage.desc}: resuming from iteration {start} (checkpoint {checkpoint})",
              file=sys.stderr)

    def chunk_cb(it, xi, st, hist, index=index, earlier=earlier, aux=aux):
      ckpt.save(index, it, xi, st, join_history(earlier, hist), done)
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
