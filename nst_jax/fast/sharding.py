"""Data parallelism on a 1-D device mesh ``("data",)``: batches sharded, state replicated.

Synopsis::

  from nst_jax.fast import sharding
  sharding.maybe_initialize_distributed(True)     # multi-host: before any other JAX call
  mesh = sharding.make_mesh()                     # all devices, of all processes
  state = jax.device_put(state, sharding.replicated(mesh))
  batch = sharding.shard_batch(mesh, local_batch) # [global B, H, W, 3], split along "data"
  step = jax.jit(train_step, in_shardings=(sharding.replicated(mesh), sharding.batch(mesh)),
                 out_shardings=..., donate_argnums=(0,))

Gradients of the batch-mean loss are summed across devices by the compiler (GSPMD); nothing in
the model code knows about devices.

Multi-host: start the same command on every host with ``--distributed`` (which calls
``jax.distributed.initialize()``; on Cloud TPU and SLURM the coordinator is found automatically,
elsewhere set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``). Each
process then decodes ``global batch / process count`` images and ``shard_batch`` assembles the
global array from the local pieces.

References:
  JAX documentation, "Distributed arrays and automatic parallelization" and "Multi-process
  environments".
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst_jax.core.errors import UserError

DATA_AXIS = "data"


def maybe_initialize_distributed(enabled: bool) -> None:
  """Calls ``jax.distributed.initialize()`` once when ``enabled`` (the ``--distributed`` flag)."""
  if not enabled:
    return
  try:
    jax.distributed.initialize()
  except (RuntimeError, ValueError) as e:
    msg = str(e)
    if "already" in msg and "initialize" in msg:
      return
    raise UserError(f"jax.distributed.initialize() failed: {msg.splitlines()[0]} (set "
                    "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run "
                    "under SLURM / on Cloud TPU)") from None


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, style targets)."""
  return NamedSharding(mesh, PartitionSpec())


def batch(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis is split over the ``"data"`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(mesh: Mesh, global_batch: int) -> int:
  """The per-process batch; raises ``UserError`` unless the batch splits evenly over devices."""
  n = mesh.devices.size
  if global_batch % n:
    raise UserError(f"batch_size {global_batch} must be a multiple of the number of devices ({n})")
  return global_batch // jax.process_count()


def shard_batch(mesh: Mesh, local_batch: np.ndarray) -> jax.Array:
  """Host batch [local B, ...] -> global array [local B * process count, ...] sharded on "data".

  Args:
    mesh: from ``make_mesh``.
    local_batch: this process' share of the global batch.

  Returns:
    A ``jax.Array`` with ``batch(mesh)`` sharding.
  """
  return jax.make_array_from_process_local_data(batch(mesh), local_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places every leaf of ``tree`` on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def is_main_process() -> bool:
  """Only process 0 writes logs, samples and plots (orbax coordinates checkpoints itself)."""
  return jax.process_index() == 0
