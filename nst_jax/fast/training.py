"""Training feed-forward style networks with perceptual losses (Johnson et al. 2016).

Synopsis::

  from nst_jax import config
  from nst_jax.fast import nets, train_state, training
  cfg = config.override(config.thesis(), {"style": "starry.jpg", "data": "photos/"})
  state = training.train_and_evaluate(cfg, "runs/starry")     # resumes if runs/starry has one
  task = training.make_task(cfg, vgg_params)                  # what train_and_evaluate runs

  # the pieces, for custom loops and tests
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  state = train_state.init_train_state(model, tx, train_state.make_key(0), mesh)
  style_targets = training.make_style_targets(vgg_params, style_image, cfg.loss)
  step = training.jit_train_step(functools.partial(training.train_step, model=model, tx=tx,
                                                   cfg=cfg), mesh)
  state, metrics = step(state, batch, vgg_params, style_targets, jax.random.key(0))

One step: the network stylizes a batch of photos; the loss is the perceptual loss of the core
library (``objective.loss_terms``) with the batch's own VGG features as content targets and the
style image's Gram matrices (computed once) as style targets; Adam updates the parameters. A
multi-style network draws one style per example (``multistyle``); the photorealistic preset adds
its masked style terms and affine loss (``photo_train``). ``make_task`` hands the run to the
training engine (``core.engine``: the step jitted once over a 1-D device mesh, resume, logging,
checkpoints, samples).

References:
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
  Super-Resolution", ECCV 2016.
  Ulyanov, Lebedev, Vedaldi & Lempitsky, "Texture Networks", ICML 2016.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax.config import LossConfig, TrainConfig
from nst_jax.core import digest, engine, image_io, objective, plots, vgg, vgg16_weights
from nst_jax.core.errors import UserError
from nst_jax.core import data, sharding
from nst_jax.fast import multistyle, nets, photo_train, train_state


def make_style_targets(vgg_params, style: jax.Array, loss_cfg: LossConfig) -> dict:
  """The style half of the objective's targets, from one style image [1, h, w, 3] (once).

  Returns:
    ``{"styles": ({layer: target},), "blend": [1.]}``; the content half comes from each batch.
  """
  return {"styles": (objective.make_style_targets(vgg_params, style, loss_cfg),),
          "blend": jnp.ones((1,), jnp.float32)}


def perceptual_loss_terms(vgg_params, outputs: jax.Array, inputs: jax.Array, style_targets: dict,
                          loss_cfg: LossConfig, *, compute_dtype=jnp.float32) -> dict:
  """The weighted loss terms of stylized ``outputs`` against their ``inputs`` and the style.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    outputs: [B, H, W, 3] the network's outputs in [0, 1].
    inputs: [B, H, W, 3] the photos (content targets; no gradient flows into them).
    style_targets: from ``make_style_targets``.
    loss_cfg: the objective's layers and weights.
    compute_dtype: VGG's compute dtype (bfloat16 for mixed precision); terms are float32.

  Returns:
    ``{"content", "style", "tv", "total"}``, each float32 [B].
  """
  inputs = jax.lax.stop_gradient(inputs.astype(compute_dtype))
  content = vgg.vgg_features(vgg_params, inputs, loss_cfg.content_layers, loss_cfg.pooling,
                             conv_impl=loss_cfg.conv_impl)
  targets = {"content": content, **style_targets}
  terms = objective.loss_terms(vgg_params, outputs.astype(compute_dtype), targets, loss_cfg)
  return {k: v.astype(jnp.float32) for k, v in terms.items()}


def training_loss_terms(vgg_params, outputs: jax.Array, inputs: jax.Array, style_targets: dict,
                        cfg: TrainConfig | LossConfig, *, compute_dtype=jnp.float32) -> dict:
  """The run's loss terms: ``perceptual_loss_terms``, or with ``cfg.photo`` set the masked style
  terms and the affine loss of ``photo_train`` (style targets from ``setup_style_targets``).

  Returns:
    ``{"content", "style", "tv"[, "affine"], "total"}``, each float32 [B].
  """
  if isinstance(cfg, LossConfig):
    cfg = TrainConfig(loss=cfg)
  if cfg.photo.guided_output:
    outputs = photo_train.guided_outputs(outputs, inputs)
  if cfg.photo.affine_output:
    outputs = photo_train.affine_outputs(outputs, inputs, cfg.photo.affine_output)
  if cfg.photo.regions:
    terms = photo_train.masked_loss_terms(vgg_params, outputs, inputs, style_targets, cfg,
                                          compute_dtype=compute_dtype)
  else:
    terms = perceptual_loss_terms(vgg_params, outputs, inputs, style_targets, cfg.loss,
                                  compute_dtype=compute_dtype)
  if cfg.photo.affine_weight:
    terms = photo_train.add_affine_term(terms, outputs, inputs, cfg.photo)
  return terms


def setup_style_targets(cfg: TrainConfig, vgg_params, style: np.ndarray, dataset=None) -> dict:
  """The style targets of a run (computed once): plain Grams, or with ``cfg.photo.regions`` the
  masked Grams under regions fitted on the style and ``cfg.photo.fit_photos`` photos of
  ``dataset`` (``photo_train.fit_regions``)."""
  style_b = jnp.asarray(style)[None]
  if not cfg.photo.regions:
    return jax.jit(make_style_targets, static_argnums=2)(vgg_params, style_b, cfg.loss)
  photos = dataset.get_batch(0, cfg.photo.fit_photos)
  regions = photo_train.fit_regions(vgg_params, style, photos, cfg)
  return jax.jit(photo_train.make_style_targets, static_argnums=3)(vgg_params, style_b, regions,
                                                                   cfg)


def per_example_styles(model: nn.Module, style_targets: dict, key: jax.Array, batch: int):
  """A multi-style network's draw: each example's targets and its style weights [B, S].

  One-style networks keep the targets as they are (weights None); otherwise each example draws
  one of the stacked targets' styles (``multistyle.draw_styles``)."""
  num_styles = getattr(model, "num_styles", 1)
  if num_styles == 1:
    return style_targets, None
  idx, weights = multistyle.draw_styles(key, batch, multistyle.num_targets(style_targets),
                                        num_styles)
  return multistyle.gather_style_targets(style_targets, idx), weights


def train_step(state: train_state.TrainState, images: jax.Array, vgg_params, style_targets: dict,
               key: jax.Array, *, model: nn.Module, tx: optax.GradientTransformation,
               cfg: TrainConfig) -> tuple[train_state.TrainState, dict]:
  """One Adam update on a batch of photos (un-jitted; see ``jit_train_step``).

  Args:
    state: the current state.
    images: [B, H, W, 3] photos in [0, 1] (the global batch, sharded on "data").
    vgg_params: VGG19 parameters.
    style_targets: from ``make_style_targets``.
    key: the run's base key; the step's key is ``fold_in(key, state.step)``.
    model: the network.
    tx: the optimizer.
    cfg: the training config (loss, ``bf16``, ``input_noise``).

  Returns:
    ``(new state, {"content", "style", "tv", "total"} batch means before the update)``.
  """
  compute_dtype = jnp.bfloat16 if cfg.bf16 else jnp.float32
  net_in = images
  if cfg.input_noise:
    noise = jax.random.normal(jax.random.fold_in(key, state.step), images.shape, images.dtype)
    net_in = jnp.clip(images + cfg.input_noise * noise, 0.0, 1.0)
  style_key = jax.random.fold_in(jax.random.fold_in(key, state.step), 1)
  style_targets, style_weights = per_example_styles(model, style_targets, style_key,
                                                    images.shape[0])

  def loss_fn(params):
    variables = dict(train_state.variables_of(state), params=params)
    outputs, batch_stats = engine.apply_train(model, variables, net_in,
                                              style_weights)  # [B, H, W, 3]
    terms = training_loss_terms(vgg_params, outputs, images, style_targets, cfg,
                                compute_dtype=compute_dtype)
    return jnp.mean(terms["total"]), (terms, batch_stats)

  grads, (terms, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  new_state = engine.apply_gradients(state, tx, grads, batch_stats)
  return new_state, {k: jnp.mean(v) for k, v in terms.items()}


def jit_train_step(step_fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """Jits ``step_fn(state, images, vgg_params, style_targets, key)`` for data parallelism
  (``engine.jit_train_step``: the batch sharded, the rest replicated, the state donated)."""
  return engine.jit_train_step(step_fn, mesh, num_consts=3)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, cfg: TrainConfig,
                    mesh: jax.sharding.Mesh) -> Callable:
  """``jit_train_step`` of ``train_step`` bound to ``model``, ``tx`` and ``cfg``."""
  return jit_train_step(functools.partial(train_step, model=model, tx=tx, cfg=cfg), mesh)


def eval_loss_terms(model: nn.Module, variables: dict, vgg_params, style_targets: dict,
                    images: jax.Array, loss_cfg: LossConfig | TrainConfig) -> dict:
  """The loss terms of the network (inference mode) on held-out photos; [B] each."""
  outputs = model.apply(variables, images, train=False)
  return training_loss_terms(vgg_params, outputs, images, style_targets, loss_cfg)


def evaluate(model: nn.Module, variables: dict, vgg_params, style_targets: dict,
             images: np.ndarray, loss_cfg: LossConfig | TrainConfig, *,
             batch_size: int = 4) -> dict[str, float]:
  """Mean loss terms over ``images`` [N, H, W, 3], in batches (one compilation).

  ``loss_cfg`` is the ``LossConfig`` of an artistic run or a whole ``TrainConfig`` (needed for
  the photorealistic terms)."""
  fn = jax.jit(functools.partial(eval_loss_terms, model, loss_cfg=loss_cfg))
  sums: dict[str, float] = {}
  for i in range(0, len(images), batch_size):
    terms = jax.device_get(fn(variables, vgg_params, style_targets,
                              jnp.asarray(images[i:i + batch_size])))
    for k, v in terms.items():
      sums[k] = sums.get(k, 0.0) + float(np.sum(v))
  return {k: v / len(images) for k, v in sums.items()}


# ------------------------------------------------------------------------------------------------
# The training run: the engine's task (resume checks, meta, samples).


def run_meta(cfg: TrainConfig, style_sha256: str | Sequence[str]) -> dict:
  """What each checkpoint stores beside the state: the config, the style images' hashes
  (``style_sha256``: the one image's, or a hash of all of them) and ``styles`` (name, sha256)."""
  hashes = [style_sha256] if isinstance(style_sha256, str) else list(style_sha256)
  names = [multistyle.style_name(p) for p in multistyle.style_paths(cfg)] or [""] * len(hashes)
  combined = hashes[0] if len(hashes) == 1 else hashlib.sha256(" ".join(hashes).encode()).hexdigest()
  return {"config": dataclasses.asdict(cfg), "style_sha256": combined,
          "styles": [{"name": n, "sha256": h} for n, h in zip(names, hashes)]}


def check_resumable(meta: dict, cfg: TrainConfig, style_sha256: str, workdir) -> None:
  """Refuses to resume a run whose network, loss or style differ from ``cfg``'s (UserError)."""
  saved = nets.config_from_dict(meta["config"])
  if meta.get("style_sha256") != style_sha256:
    raise UserError(f"{workdir} holds a run trained on another style image (sha256 "
                    f"{str(meta.get('style_sha256'))[:12]}...); use a new --workdir")
  engine.check_same_settings(saved, cfg, ("net", "loss", "photo", "size", "batch_size", "bf16"),
                             workdir)
  if bool(saved.ema_decay) != bool(cfg.ema_decay):  # the optimizer state's structure differs
    raise UserError(f"{workdir} holds a run with ema_decay={saved.ema_decay}; an average can "
                    "be neither added to nor dropped from a run: use a new --workdir")


def add_style_params(cfg: TrainConfig):
  """An add-style run's starting parameters: ``cfg.base_model``'s (a workdir, checkpoint, zoo
  file or name) with a row per new style in every normalization layer; and the base's
  ``styles`` metadata (name, sha256 of each of its styles)."""
  from nst_jax.fast import inference  # pylint: disable=import-outside-toplevel  (no cycle at import)
  base = inference.Stylizer.from_any(cfg.base_model)
  num_new = cfg.net.num_styles - getattr(base.model, "num_styles", 1)
  if num_new != len(multistyle.style_paths(cfg)) or "batch_stats" in base.variables:
    raise UserError(f"{cfg.base_model} cannot take {len(multistyle.style_paths(cfg))} new style(s) "
                    f"as net.num_styles={cfg.net.num_styles} (it has "
                    f"{getattr(base.model, 'num_styles', 1)}; instance norm only)")
  base_styles = base.meta.get("styles") or [{"name": n, "sha256": ""} for n in base.style_names]
  return multistyle.add_style_rows(base.variables["params"], num_new), base_styles


def make_task(cfg: TrainConfig, vgg_params=None) -> engine.Task:
  """The engine's task for the run ``cfg`` describes: the style images, the data, the loss
  network (``vgg_params``; default: ``cfg.loss.loss_network``'s from the usual weights path),
  the network, its step, checkpoint meta, resume check and sample sheet.

  Raises:
    UserError: no style or data, or loss-network weights of another architecture.
  """
  cfg.check()
  style_paths = multistyle.style_paths(cfg)
  if not style_paths or not cfg.data:
    raise UserError("training needs a style image and training data (--style, --data)")
  styles = [image_io.load_image(p, size=cfg.style_size) for p in style_paths]  # [h, w, 3] each
  meta = run_meta(cfg, [digest.file_digest(p) for p in style_paths])
  if cfg.base_model:  # the network's styles: the base's, then the new ones
    meta["styles"] = add_style_params(cfg)[1] + meta["styles"]
  dataset = data.make_dataset(cfg.data, size=cfg.size, crop=cfg.crop, seed=cfg.seed)
  if vgg_params is None:  # cfg.loss.loss_network: VGG19 or VGG16
    vgg_params = vgg16_weights.load_loss_network(cfg.loss.loss_network)
  elif vgg_params and vgg.architecture_of(vgg_params) != cfg.loss.loss_network:
    raise UserError(f"loss.loss_network is {cfg.loss.loss_network} but the weights given are "
                    f"{vgg.architecture_of(vgg_params)}")
  model, tx = nets.make_model(cfg.net, bf16=cfg.bf16), train_state.make_optimizer(cfg)
  samples = Samples(model, dataset.get_batch(0, cfg.num_samples)) if cfg.num_samples else None
  return engine.Task(
      cfg=cfg, tx=tx, init_variables=functools.partial(train_state.init_variables, model),
      train_step=functools.partial(train_step, model=model, tx=tx, cfg=cfg),
      make_consts=lambda: (vgg_params, setup_all_style_targets(cfg, vgg_params, styles, dataset),
                           train_state.make_key(cfg.seed)),
      dataset=dataset, meta=meta,
      check_resumable=lambda saved, workdir: check_resumable(saved, cfg, meta["style_sha256"],
                                                             workdir),
      start_variables=(lambda: {"params": add_style_params(cfg)[0]}) if cfg.base_model else None,
      sample=samples, sample_every=cfg.sample_every,
      finish=samples.save_sheet if samples else None)


def train_and_evaluate(cfg: TrainConfig, workdir, *, vgg_params=None, progress: bool = True,
                       mesh: jax.sharding.Mesh | None = None) -> train_state.TrainState:
  """Trains the network ``cfg`` describes, resuming from ``workdir``'s latest checkpoint.

  Writes ``workdir/config.json``, ``checkpoints/<step>/`` (every ``cfg.checkpoint_every`` steps
  and at the end), ``losses.csv``, ``losses.png``, ``samples.png`` and TensorBoard events in
  ``tb/``. Ctrl-C (or SIGTERM) saves a checkpoint before stopping (``engine.train``).

  Args:
    cfg: the run (``cfg.style`` and ``cfg.data`` must be set).
    workdir: the run's folder; running again with the same config resumes.
    vgg_params: the loss network's parameters, ``cfg.loss.loss_network``'s (default: loaded
      from the usual weights path, ``vgg16_weights.load_loss_network``).
    progress: show a progress bar.
    mesh: the device mesh (default: all devices).

  Returns:
    The final ``train_state.TrainState``.
  """
  return engine.train(make_task(cfg, vgg_params), workdir, mesh=mesh, progress=progress)


def setup_all_style_targets(cfg: TrainConfig, vgg_params, styles: Sequence[np.ndarray],
                            dataset=None) -> dict:
  """A one-style network's targets (``setup_style_targets``), or a multi-style network's: every
  style's Gram targets stacked (leaves [S, ...], ``multistyle.stack_style_targets``)."""
  if cfg.net.num_styles == 1:
    return setup_style_targets(cfg, vgg_params, styles[0], dataset)
  fn = jax.jit(make_style_targets, static_argnums=2)
  return multistyle.stack_style_targets(
      [fn(vgg_params, jnp.asarray(s)[None], cfg.loss) for s in styles])


class Samples:
  """The run's sample photos, stylized for TensorBoard and for ``samples.png`` at the end."""

  def __init__(self, model: nn.Module, photos: np.ndarray):
    self.photos = photos  # [N, H, W, 3]
    self.stylize = jax.jit(lambda variables, images: model.apply(variables, images, train=False))

  def __call__(self, variables: dict) -> jax.Array:
    return self.stylize(variables, jnp.asarray(self.photos))

  def save_sheet(self, state: train_state.TrainState, workdir: Path) -> None:
    out = np.asarray(self(sharding.local_copy(train_state.variables_of(state))))
    plots.save_image_grid(workdir / "samples.png", [list(self.photos), list(out)],
                          row_titles=["photo", f"step {int(state.step)}"])
