"""Data parallelism on a 1-D device mesh ``("data",)``: batches sharded, state replicated.

Synopsis::

  from nst_jax.core import sharding
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
process then decodes its own ``global batch / process count`` images (``process_shard``) and
``shard_batch`` assembles the global array from the local pieces; on CPU the processes' collectives
go through gloo (``jax_cpu_collectives_implementation``, JAX's default).

References:
  JAX documentation, "Distributed arrays and automatic parallelization" and "Multi-process
  environments".
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst_jax.core.errors import UserError

DATA_AXIS = "data"


DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def distributed_args(environ: Mapping[str, str]) -> dict[str, Any]:
  """``jax.distributed.initialize``'s arguments from ``JAX_COORDINATOR_ADDRESS`` (host:port of
  process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; those unset are left to JAX's
  cluster detection (SLURM, Open MPI, Cloud TPU). JAX itself reads only the first of the three.

  Raises:
    UserError: a count or id that is not an integer.
  """
  address, count, index = (environ.get(name, "").strip() for name in DISTRIBUTED_ENV)
  out: dict[str, Any] = {"coordinator_address": address} if address else {}
  for key, name, value in (("num_processes", DISTRIBUTED_ENV[1], count),
                           ("process_id", DISTRIBUTED_ENV[2], index)):
    if value:
      try:
        out[key] = int(value)
      except ValueError:
        raise UserError(f"{name} must be an integer, got {value!r}") from None
  return out


def maybe_initialize_distributed(enabled: bool, environ: Mapping[str, str] | None = None) -> None:
  """Calls ``jax.distributed.initialize`` once when ``enabled`` (the ``--distributed`` flag), with
  ``distributed_args(environ)`` (default: ``os.environ``). Must come before any other JAX call.

  Raises:
    UserError: the arguments are incomplete or invalid, or the coordinator is unreachable.
  """
  if not enabled or jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(**distributed_args(os.environ if environ is None else environ))
  except (RuntimeError, ValueError, TypeError) as e:
    msg = str(e).strip().splitlines()
    raise UserError(f"jax.distributed.initialize() failed: {msg[0] if msg else type(e).__name__} "
                    "(set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run "
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
  """Places every leaf of ``tree`` on every device of ``mesh`` (of every process: each leaf must
  then be the same on all processes, which JAX checks)."""
  return jax.tree.map(functools.partial(_replicate_leaf, replicated(mesh)), tree)


def _replicate_leaf(target: NamedSharding, x: Any) -> Any:
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    # device_put moves typed keys to addressable devices only: move their data, then rewrap.
    data = jax.device_put(np.asarray(jax.random.key_data(x)), target)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  return jax.device_put(x, target)


def process_shard() -> dict[str, int]:
  """This process' part of each global batch: ``{"shard_index", "shard_count"}`` for
  ``data.IndexedDataset.batches``."""
  return {"shard_index": jax.process_index(), "shard_count": jax.process_count()}


def local_copy(tree: Any) -> Any:
  """A replicated tree's copy on this process' first device, for work one process does alone
  (samples, plots): a jitted function of the global arrays would wait for the other processes."""
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def is_main_process() -> bool:
  """Only process 0 writes logs, samples and plots (orbax coordinates checkpoints itself)."""
  return jax.process_index() == 0
