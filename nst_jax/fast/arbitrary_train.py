"""Training the arbitrary-style networks (Ghiasi et al. 2017) on (photo, painting) pairs.

Synopsis::

  from nst_jax import config
  from nst_jax.fast import arbitrary_train
  cfg = config.override(config.arbitrary_train(), {"data": "photos/", "styles": "paintings/"})
  state = arbitrary_train.train_and_evaluate(cfg, "runs/any")   # resumes if runs/any has one
  model = arbitrary_train.load_checkpoint("runs/any")           # an ``arbitrary.ArbitraryModel``
  arbitrary_train.export(model.params, cfg, "any.npz")          # the one model file format

  # the pieces, for custom loops and tests
  task = arbitrary_train.make_task(cfg, vgg_params)             # what train_and_evaluate runs
  step = engine.jit_train_step(task.train_step, mesh, num_consts=1)
  state, metrics = step(state, (photos, paintings), vgg_params)

One step: the prediction network embeds each painting of the batch, the transfer network
stylizes the photo beside it with that embedding, and the loss is the perceptual loss of the
other fast networks (``training.perceptual_loss_terms``: the photo's VGG features as content
targets, the painting's Gram matrices, computed inside the step, as style targets, TV); one Adam
update moves both networks. Photos and paintings are drawn as a pure function of the step
(``PairedDataset``), so a resumed run equals an uninterrupted one. ``init_from`` "magenta"
fine-tunes the imported released networks. At the end the run exports ``<workdir>/arbitrary.npz``
(kind "arbitrary", what ``magenta.load`` and ``nst-jax stylize --model`` read); the workdir itself
loads too (``inference.Stylizer.from_any``).

References:
  Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary
  neural artistic stylization network", BMVC 2017.
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import config
from nst_jax.config import ArbitraryTrainConfig, LossConfig
from nst_jax.core import checkpoint, data, engine, image_io, model_file, objective, vgg16_weights
from nst_jax.core.errors import UserError
from nst_jax.core.state import TrainState
from nst_jax.fast import arbitrary, magenta, training

KIND = magenta.KIND
EXPORT_NAME = "arbitrary.npz"  # the model file a finished run writes into its workdir
# What must agree for a checkpoint to be resumed (the state's shapes and the steps' meaning).
RESUME_FIELDS = ("net", "loss", "init_from", "size", "style_size", "crop", "batch_size")
# The network fields a starting model must share with ``cfg.net`` (the parameters' shapes).
SHAPE_FIELDS = ("predictor", "embedding_dim", "width", "num_residual")


# ------------------------------------------------------------------------------------------------
# The data: (photo, painting) pairs, a pure function of the step.


def painting_paths(styles: Sequence[str]) -> list[Path]:
  """Every painting ``styles`` names: image files, and the images below folders (sorted).

  Raises:
    UserError: a path that does not exist, or no image at all.
  """
  out = []
  for item in styles:
    path = Path(item).expanduser()
    if path.is_dir():
      out += sorted(p for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in data.DATA_SUFFIXES)
    elif path.is_file():
      out.append(path)
    else:
      raise UserError(f"painting or folder not found: {path}")
  if not out:
    raise UserError(f"no paintings ({', '.join(data.DATA_SUFFIXES)}) in {', '.join(styles)}")
  return out


class PaintingDataset(data.IndexedDataset):
  """A list of image files as an ``IndexedDataset`` (the paintings of a run)."""

  def __init__(self, paths: Sequence[Path], *, size: int, crop: str, seed: int):
    super().__init__(size=size, crop=crop, seed=seed)
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def _load(self, index: int):
    return image_io.open_image(self.paths[index])

  def _describe(self, index: int) -> str:
    return str(self.paths[index])


class PairedBatches:
  """Two ``BatchIterator``s in step: yields ``(photos [B, H, W, 3], paintings [B, h, w, 3])``."""

  def __init__(self, photos, paintings):
    self.parts = (photos, paintings)
    self.last_wait = 0.0

  def __iter__(self) -> "PairedBatches":
    return self

  def __next__(self) -> tuple[np.ndarray, np.ndarray]:
    batch = tuple([next(it) for it in self.parts])  # StopIteration ends this iterator too
    self.last_wait = sum(it.last_wait for it in self.parts)
    return batch

  def close(self) -> None:
    for it in self.parts:
      it.close()

  def __enter__(self) -> "PairedBatches":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@dataclasses.dataclass(frozen=True)
class PairedDataset:
  """Photos and paintings drawn together; each stream is its own pure function of the step."""

  photos: data.IndexedDataset
  paintings: data.IndexedDataset

  def get_batch(self, step: int, batch_size: int, **shard) -> tuple[np.ndarray, np.ndarray]:
    """The pair of batches at ``step`` (synchronous)."""
    return (self.photos.get_batch(step, batch_size, **shard),
            self.paintings.get_batch(step, batch_size, **shard))

  def batches(self, batch_size: int, **kwargs) -> PairedBatches:
    """``IndexedDataset.batches`` of both streams, zipped."""
    return PairedBatches(self.photos.batches(batch_size, **kwargs),
                         self.paintings.batches(batch_size, **kwargs))


def make_dataset(cfg: ArbitraryTrainConfig) -> PairedDataset:
  """The run's pairs: photos of ``cfg.data`` at ``size``, paintings of ``cfg.styles`` at
  ``style_size`` (another seed, so that the two orders are independent)."""
  photos = data.make_dataset(cfg.data, size=cfg.size, crop=cfg.crop, seed=cfg.seed)
  paintings = PaintingDataset(painting_paths(cfg.styles), size=cfg.style_size, crop=cfg.crop,
                              seed=cfg.seed + 1)
  return PairedDataset(photos, paintings)


# ------------------------------------------------------------------------------------------------
# The loss and the step.


def make_style_targets(vgg_params, paintings: jax.Array, loss_cfg: LossConfig) -> dict:
  """Per-example style targets of a batch of paintings [B, h, w, 3]: leaves [B, ...]."""
  paintings = jax.lax.stop_gradient(paintings)
  return {"styles": (objective.make_style_targets(vgg_params, paintings, loss_cfg),),
          "blend": jnp.ones((1,), jnp.float32)}


def loss_terms(params: dict, vgg_params, photos: jax.Array, paintings: jax.Array,
               cfg: ArbitraryTrainConfig) -> dict:
  """The weighted loss terms of each pair.

  Args:
    params: ``{"predictor": ..., "transfer": ...}``.
    vgg_params: the loss network's parameters.
    photos: [B, H, W, 3] in [0, 1], H and W multiples of four.
    paintings: [B, h, w, 3] in [0, 1], fed to the predictor as they are.
    cfg: the run (``net``, ``loss``).

  Returns:
    ``{"content", "style", "tv", "total"}``, each float32 [B].
  """
  predictor, transfer = arbitrary.make_networks(cfg.net)
  embedding = predictor.apply({"params": params["predictor"]}, paintings)  # [B, E]
  outputs = transfer.apply({"params": params["transfer"]}, photos, embedding)  # [B, H, W, 3]
  targets = make_style_targets(vgg_params, paintings, cfg.loss)
  return training.perceptual_loss_terms(vgg_params, outputs, photos, targets, cfg.loss)


def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array], vgg_params, *,
               tx: optax.GradientTransformation,
               cfg: ArbitraryTrainConfig) -> tuple[TrainState, dict]:
  """One Adam update of both networks on a batch of pairs (un-jitted; ``engine.jit_train_step``).

  Returns:
    ``(new state, {"content", "style", "tv", "total"} batch means before the update)``.
  """
  photos, paintings = batch

  def loss_fn(params):
    terms = loss_terms(params, vgg_params, photos, paintings, cfg)
    return jnp.mean(terms["total"]), terms

  grads, terms = jax.grad(loss_fn, has_aux=True)(state.params)
  new_state = engine.apply_gradients(state, tx, grads, {})
  return new_state, {k: jnp.mean(v) for k, v in terms.items()}


def make_optimizer(cfg: ArbitraryTrainConfig) -> optax.GradientTransformation:
  """Adam with ``engine.make_schedule`` of the run's learning rate."""
  return optax.adam(engine.make_schedule(learning_rate=cfg.learning_rate,
                                         num_steps=cfg.num_steps, schedule=cfg.schedule,
                                         warmup_steps=cfg.warmup_steps))


def init_variables(cfg: config.ArbitraryConfig, key: jax.Array) -> dict:
  """Randomly initialized ``{"params": {"predictor", "transfer"}}`` (``arbitrary.init_params``)."""
  return {"params": arbitrary.init_params(key, cfg)}


# ------------------------------------------------------------------------------------------------
# The run: checks, starting weights, meta, export, the engine's task.


def check_config(cfg: ArbitraryTrainConfig) -> None:
  """Refuses (``UserError``) a run without data or paintings, or with sizes the networks cannot
  take."""
  if not cfg.data or not cfg.styles:
    raise UserError("arbitrary-style training needs photos and paintings (--data, --style "
                    "FOLDER_OR_PAINTING ...)")
  if cfg.size < 4 or cfg.size % 4 or cfg.style_size < 2:
    raise UserError(f"size must be a multiple of 4 and style_size at least 2, got {cfg.size}, "
                    f"{cfg.style_size}")
  arbitrary.make_networks(cfg.net)  # an unknown predictor or a bad network size


def start_params(cfg: ArbitraryTrainConfig) -> dict | None:
  """The parameters a fresh run starts from: the imported released networks ("magenta"), a
  model file's, or None (random, ``init_from`` "").

  Raises:
    UserError: no imported model (naming the import command), or one whose networks differ from
      ``cfg.net`` in shape.
  """
  if not cfg.init_from:
    return None
  model = magenta.load(None if cfg.init_from == "magenta" else cfg.init_from)
  for name in SHAPE_FIELDS:
    if getattr(model.cfg, name) != getattr(cfg.net, name):
      raise UserError(f"{cfg.init_from} has net.{name}={getattr(model.cfg, name)}, the run "
                      f"{getattr(cfg.net, name)}; set net.{name} to match, or init_from=''")
  return jax.tree.map(np.asarray, model.params)


def run_meta(cfg: ArbitraryTrainConfig) -> dict:
  """What each checkpoint stores beside the state: the model's kind and the run's config."""
  return {"kind": KIND, "config": dataclasses.asdict(cfg)}


def check_resumable(meta: dict, cfg: ArbitraryTrainConfig, workdir) -> None:
  """Refuses (one-line ``UserError``) a checkpoint of another kind of run or other settings."""
  if meta.get("kind") != KIND:
    raise UserError(f"{workdir} holds a {meta.get('kind', 'style')!r} run, not an arbitrary-style "
                    "one; use a new --workdir")
  saved = config.from_dict(ArbitraryTrainConfig, meta["config"])
  engine.check_same_settings(saved, cfg, RESUME_FIELDS, workdir)


def export(params: dict, cfg: ArbitraryTrainConfig, path, *, step: int | None = None) -> dict:
  """Writes the networks as an "arbitrary" model file (float32; ``magenta.load`` reads it, so
  does ``nst-jax stylize --model PATH --style-image PAINTING``); returns ``model_file.save``'s
  manifest fields."""
  how = f"nst-jax train --preset arbitrary (init_from={cfg.init_from or 'random'}, step {step})"
  info = {"origin": "nst_jax", "license": "Apache-2.0", "step": step,
          "init_from": cfg.init_from, "styles": list(cfg.styles), "data": cfg.data}
  return model_file.save(path, {"params": jax.tree.map(np.asarray, params)},
                         config.to_dict(cfg.net), kind=KIND, source="nst_jax",
                         licence="Apache-2.0", how=how, meta={"provenance": info, "step": step},
                         dtype="float32")


def load_checkpoint(path) -> arbitrary.ArbitraryModel:
  """The networks of a training workdir's newest checkpoint (or of a given step folder).

  Raises:
    UserError: no readable checkpoint, or one of another kind of run.
  """
  ckpts, step = checkpoint.open_checkpoint(path)
  with ckpts:
    meta = ckpts.restore_meta(step)
    if meta.get("kind") != KIND:
      raise UserError(f"{path} holds no arbitrary-style run")
    tree = ckpts.restore_leaves(step, lambda p: p[0] == "params")
  cfg = config.from_dict(ArbitraryTrainConfig, meta["config"])
  params = jax.tree.map(np.asarray, tree["params"])
  return arbitrary.ArbitraryModel(params, cfg.net, None, {"origin": "nst_jax", "step": step})


def make_task(cfg: ArbitraryTrainConfig, vgg_params=None) -> engine.Task:
  """The engine's task for the run ``cfg`` describes: its pairs, loss network (``vgg_params``;
  default: ``cfg.loss.loss_network``'s from the usual weights path), step, starting weights,
  checkpoint meta, resume check and export."""
  check_config(cfg)
  dataset = make_dataset(cfg)
  if vgg_params is None:
    vgg_params = vgg16_weights.load_loss_network(cfg.loss.loss_network)
  tx = make_optimizer(cfg)

  def finish(state: TrainState, workdir: Path) -> None:
    export(engine.variables_of(state)["params"], cfg, workdir / EXPORT_NAME,
           step=int(state.step))

  return engine.Task(
      cfg=cfg, tx=tx, init_variables=functools.partial(init_variables, cfg.net),
      train_step=functools.partial(train_step, tx=tx, cfg=cfg),
      make_consts=lambda: (vgg_params,), dataset=dataset, meta=run_meta(cfg),
      check_resumable=lambda meta, workdir: check_resumable(meta, cfg, workdir),
      start_variables=(lambda: {"params": start_params(cfg)}) if cfg.init_from else None,
      finish=finish, name="arbitrary", unit="pair")


def train_and_evaluate(cfg: ArbitraryTrainConfig, workdir, *, vgg_params=None,
                       progress: bool = True, mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Trains both networks as ``cfg`` says, resuming from ``workdir``'s newest checkpoint.

  Writes what every run writes (``engine.train``: ``config.json``, ``checkpoints/``, losses,
  TensorBoard) and, at the end, ``workdir/arbitrary.npz``.

  Args:
    cfg: the run (``data`` and ``styles`` must be set).
    workdir: the run's folder; running again with the same config resumes.
    vgg_params: the loss network's parameters (default: loaded from the usual weights path).
    progress: show a progress bar.
    mesh: the device mesh (default: all devices).

  Returns:
    The final ``TrainState``.
  """
  return engine.train(make_task(cfg, vgg_params), workdir, mesh=mesh, progress=progress)
