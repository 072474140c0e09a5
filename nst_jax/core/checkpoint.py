"""A thin wrapper of orbax's ``CheckpointManager``: state + config JSON per step, for training runs
and the slow methods' resumable runs (``slow.driver``).

Synopsis::

  from nst_jax.core import checkpoint
  with checkpoint.Checkpoints(workdir, every=1000, keep=3) as ckpts:
    start = ckpts.latest_step()                         # None for a fresh run
    if start is not None:
      state, meta = ckpts.restore(start, abstract_state)
    ...
    ckpts.save(step, state, meta)                       # orbax keeps every 1000th, the last 3
  ckpts, step = checkpoint.open_checkpoint("runs/starry")   # inference: a read-only view
  params = ckpts.restore_leaves(step, lambda path: path[0] == "params")  # no optimizer state

Layout: ``WORKDIR/checkpoints/<step>/{state,meta}``; ``meta`` is JSON with the training config,
the style image's sha256 and the step, so one step folder rebuilds the network on its own. Orbax
writes each step into a temporary folder and renames it when complete, so a run killed at any
moment leaves only whole checkpoints (and unfinished temporaries, removed on the next start).

References:
  Orbax documentation, "Checkpointing with Orbax" and the ``CheckpointManager`` API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
import tensorstore as ts

from nst_jax.core.errors import UserError

CHECKPOINT_SUBDIR = "checkpoints"
ITEMS = ("state", "meta")


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
  return Path(workdir).expanduser() / CHECKPOINT_SUBDIR


class Checkpoints:
  """Saves every ``every`` steps (plus forced saves), keeps the newest ``keep``; restores.

  Args:
    workdir: the run's folder; checkpoints go to ``workdir/checkpoints``.
    every: the save interval in steps.
    keep: how many checkpoints to keep.
    read_only: open an existing folder for restoring only.
    directory: the checkpoints folder itself (``workdir`` is then ignored).
    asynchronous: save in the background (training); False: ``save`` returns once the step is
      on disk (a process interrupted right after a save still finds it).
  """

  def __init__(self, workdir: str | os.PathLike | None, *, every: int = 1000, keep: int = 3,
               read_only: bool = False, directory: str | os.PathLike | None = None,
               asynchronous: bool = True):
    self.directory = Path(directory) if directory else checkpoint_dir(workdir)
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    else:
      options = ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=keep,
                                             create=True, cleanup_tmp_directories=True,
                                             enable_async_checkpointing=asynchronous)
    try:
      self.manager = ocp.CheckpointManager(self.directory.resolve(), options=options,
                                           item_names=ITEMS)
    except (OSError, ValueError) as e:
      raise UserError(f"cannot open checkpoint folder {self.directory}: {e}") from None

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
    """Saves ``state`` and ``meta`` (JSON-able) at ``step`` if it is due (or ``force``).

    Returns:
      Whether a checkpoint was started (it completes in the background; see ``wait``).
    """
    return self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta, step=int(step)))),
                             force=force)

  def restore(self, step: int, abstract_state: Any = None) -> tuple[Any, dict]:
    """The state (with ``abstract_state``'s structure, shapes and shardings; None: as saved, with
    dicts for named tuples and numpy arrays for host arrays) and meta at ``step``."""
    self._check_readable(step)
    try:
      out = self.manager.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for missing or damaged files
      raise UserError(f"cannot restore checkpoint {self.directory / str(step)}: "
                      f"{_first_line(e)}") from None
    return out.state, dict(out.meta)

  def restore_leaves(self, step: int, keep: Callable[[tuple], bool]) -> Any:
    """The saved state's tree at ``step`` with only the arrays whose key path (a tuple of dict
    keys and list indices, e.g. ``("opt_state", 1, "ema_params", "conv1", "kernel")``) ``keep``
    accepts read, onto the default device; the others are None, never read (orbax's restore
    with placeholders): e.g. a network's parameters without its optimizer state."""
    path = (self.directory / str(int(step)) / "state").resolve()
    self._check_readable(step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
      with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
        saved = reader.metadata(path).item_metadata.tree
        target = jax.tree_util.tree_map_with_path(
            lambda p, m: (jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
                          if keep(key_names(p)) else ocp.PLACEHOLDER), saved)
        out = reader.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
    except Exception as e:  # as in ``restore``
      raise UserError(f"cannot restore checkpoint {path.parent}: {_first_line(e)}") from None
    return jax.tree.map(lambda a: None if a is ocp.PLACEHOLDER else a, out)

  def restore_partial(self, step: int, abstract_subtree: dict) -> dict:
    """Only the parts of the saved state named in ``abstract_subtree`` (a dict of some of the
    state's top-level fields, e.g. ``{"params": ...}``); the rest (optimizer state) is not read."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          abstract_subtree)
    self._check_readable(step)
    try:
      out = self.manager.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=target, partial_restore=True,
              restore_args=ocp.checkpoint_utils.construct_restore_args(target))))
    except Exception as e:  # as in ``restore``
      raise UserError(f"cannot restore checkpoint {self.directory / str(step)}: "
                      f"{_first_line(e)}") from None
    return dict(out.state)

  def restore_meta(self, step: int) -> dict:
    """Only the JSON meta of ``step`` (cheap: no arrays are read)."""
    try:
      out = self.manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # as above
      raise UserError(f"cannot read checkpoint metadata {self.directory / str(step)}: "
                      f"{_first_line(e)}") from None
    if not isinstance(out.meta, dict) or "config" not in out.meta:
      raise UserError(f"checkpoint {self.directory / str(step)} has no training config")
    return dict(out.meta)

  def _check_readable(self, step: int) -> None:
    """Opens ``step``'s array stores (OCDBT) and lists their keys synchronously, which reads
    their manifests and index nodes but no array data, so a damaged store is a ``UserError``
    here. Handed to orbax instead, its concurrent reads fail one by one: orbax raises at the
    first and closes its event loop, and the reads still in flight then complete onto the
    closed loop ("Event loop is closed", printed by the interpreter)."""
    folder = self.directory / str(int(step))
    for manifest in sorted(folder.glob("*/manifest.ocdbt")):
      try:
        store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{manifest.parent.resolve()}"}
                                ).result()
        store.list().result()
      except Exception as e:  # tensorstore raises ValueError and others for damaged files
        raise UserError(f"cannot restore checkpoint {folder}: {_first_line(e)}") from None

  def wait(self) -> None:
    """Blocks until background saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def key_names(path: tuple) -> tuple:
  """A ``jax.tree_util`` key path as plain names: dict keys, attribute names, list indices."""
  return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def complete_steps(folder: str | os.PathLike) -> list[int]:
  """The steps of the complete checkpoints in a checkpoints folder (orbax names unfinished ones
  ``<step>.orbax-checkpoint-tmp-*`` and renames them when done); [] if there is none."""
  folder = Path(folder)
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit() and (p / "state").is_dir() and (p / "meta").is_dir())


def latest_step(workdir: str | os.PathLike) -> int | None:
  """The newest complete checkpoint's step in a training workdir, or None (no orbax needed)."""
  steps = complete_steps(checkpoint_dir(workdir))
  return steps[-1] if steps else None


def locate(path: str | os.PathLike) -> tuple[Path, int]:
  """Finds the checkpoint a user names: a workdir, its ``checkpoints`` folder, or one step folder.

  Args:
    path: the ``--model`` argument.

  Returns:
    ``(checkpoints folder, step)``; for a workdir or checkpoints folder, the newest step.

  Raises:
    UserError: the path is missing or holds no complete checkpoint.
  """
  path = Path(path).expanduser()
  if not path.exists():
    raise UserError(f"checkpoint not found: {path}")
  if not path.is_dir():
    raise UserError(f"expected a checkpoint folder (a training workdir), got a file: {path}")
  if path.name.isdigit() and (path / "state").is_dir():
    return path.parent, int(path.name)
  for folder in (path / CHECKPOINT_SUBDIR, path):
    steps = complete_steps(folder)
    if steps:
      return folder, max(steps)
  raise UserError(f"no complete checkpoint in {path} (expected WORKDIR/{CHECKPOINT_SUBDIR}/STEP "
                  "from `nst-jax train`)")


def open_checkpoint(path: str | os.PathLike) -> tuple[Checkpoints, int]:
  """A read-only ``Checkpoints`` for the folder ``locate`` finds, and the step to read."""
  folder, step = locate(path)
  return Checkpoints(folder.parent, read_only=True, directory=folder), step
