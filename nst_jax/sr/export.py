"""Super-resolution models in the one model file format: SR's config, manifest fields, loading.

Synopsis::

  from nst_jax.sr import export
  path = export.export_npz(cfg, variables, "checkpoints/sr_fast_x4.npz")   # float16 storage
  cfg, variables = export.load_npz(path)                                    # float32 again
  export.update_manifest("checkpoints", "sr_fast_x4", path, cfg, metrics={...}, steps=12000)
  cfg, variables = export.load_model("sr_fast_x4")   # a name, an .npz or a training run

The file is ``core.model_file``'s (kind "sr", config the ``SRConfig``); names resolve through
``core.zoo`` (shipped, then installed, sha256-checked). What is SR's own is here: the
``SRConfig`` check, the manifest fields of an SR entry (scale, arch, loss, config, metrics,
steps, how it was trained) and reading a training run's parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from nst_jax import config
from nst_jax.core import checkpoint, model_file, zoo
from nst_jax.core.errors import UserError
from nst_jax.sr import nets

KIND = "sr"  # a file's (and a checkpoint meta's) "kind": what tells an SR model from a style net


def export_npz(cfg: config.SRConfig, variables: dict, path: str | os.PathLike, *,
               how: str = "", source: str = zoo.OWN_SOURCE,
               licence: str = zoo.OWN_LICENCE) -> Path:
  """Writes ``variables`` (``{"params", "batch_stats"?}``) in float16 with the config.

  Args:
    cfg: the model's config.
    variables: its variables.
    path: the ``.npz`` to write.
    how: how it was made (e.g. the training command), kept in the file's provenance.
    source: who made it.
    licence: its licence.

  Returns:
    The written path.
  """
  model_file.save(path, dict(variables), config.to_dict(cfg), kind=KIND, source=source,
                  licence=licence, how=how)
  return Path(path)


def load_npz(path: str | os.PathLike) -> tuple[config.SRConfig, dict]:
  """An exported model (any ``model_file`` layout): its config and its variables in float32.

  Raises:
    UserError: the file is missing, not a model file, not an SR model, or its config is bad.
  """
  model = model_file.load(path)
  if model.kind != KIND:
    raise UserError(f"{path} is not an exported super-resolution model (kind {model.kind!r})")
  try:
    cfg = config.from_dict(config.SRConfig, model.config).check()
  except config.ConfigError as e:
    raise UserError(f"{path} has a bad SR config: {e}") from None
  return cfg, model.variables


def config_of_meta(meta: dict, where) -> config.SRConfig:
  """The ``SRConfig`` of a training checkpoint's meta; UserError if it is not an SR model's."""
  if not isinstance(meta, dict) or meta.get("kind") != KIND:
    raise UserError(f"{where} is not a super-resolution model (a style-transfer network's "
                    "checkpoint?): train one with `nst-jax sr train`")
  try:
    return config.from_dict(config.SRConfig, meta.get("config")).check()
  except config.ConfigError as e:
    raise UserError(f"{where} has a bad SR config: {e}") from None


def load_checkpoint(path) -> tuple[config.SRConfig, dict]:
  """The config and variables of a training run (workdir, its ``checkpoints`` folder or one step
  folder): only the parameters (and batch statistics) are read, no optimizer is built.

  Raises:
    UserError: missing or damaged checkpoint, or not an SR model's.
  """
  ckpts, step = checkpoint.open_checkpoint(path)
  with ckpts:
    cfg = config_of_meta(ckpts.restore_meta(step), path)
    net = nets.make_net(cfg.net, cfg.scale)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            jax.eval_shape(lambda: nets.init_variables(net, jax.random.key(0))))
    return cfg, ckpts.restore_partial(step, abstract)


def load_model(model: str) -> tuple[config.SRConfig, dict]:
  """What ``--model`` names (``zoo.resolve``): an exported ``.npz``, a training run
  (``load_checkpoint``), or a shipped or installed SR model's name."""
  found = zoo.resolve(model, kind=KIND)
  if found.origin == "workdir":
    return load_checkpoint(found.path)
  return load_npz(found.path)


def update_manifest(folder: str | os.PathLike, name: str, path: str | os.PathLike,
                    cfg: config.SRConfig, **info) -> dict:
  """Adds (or replaces) ``name``'s entry in ``folder``'s manifest: the common fields
  (``zoo.manifest_entry``), then scale, arch, loss weights, config and ``info`` (steps, metrics,
  training time and device, ...). Returns the entry."""
  loss = dict(config.to_dict(cfg.loss))
  entry = zoo.manifest_entry(name, path, scale=cfg.scale, arch=cfg.net.arch, loss=loss,
                             config=config.to_dict(cfg), **info)
  return zoo.add_entry(folder, entry)
