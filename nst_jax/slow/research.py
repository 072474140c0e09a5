"""Research tools from the seed papers: what VGG19 layers keep of an image, textures, and units.

Synopsis::

  from nst_jax import config
  from nst_jax.core import vgg
  from nst_jax.slow import research
  params = vgg.load_vgg19(path)
  optim = config.OptimConfig(num_iters=100)
  contents, styles = research.reconstruct_all(params, content, style, optim)   # Gatys Fig. 1
  rows, row_titles, col_titles = research.figure_rows(content, style, contents, styles)
  texture = research.synthesize_texture(params, style, config.gatys())          # from noise
  units = research.visualize_units(params, "conv5_1", (0, 1, 2, 3), config.VisualizeConfig())
  units.images[0], units.history["activation"]     # [H, W, 3], [iters, 4]

Reconstructions and textures reuse the slow-transfer objective and optimizer (``objective``,
``optimize``, ``artistic``) with content-only or style-only loss configurations. Every
reconstruction has its own loss configuration (a static argument), and an image's cost grows
with its deepest layer, so they run one after another: on a CPU, stacking them into one vmapped
program would make every problem pay for the deepest layer (about twice the work) for no gain
in throughput. The units of one layer share a configuration and are optimized as one batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nst_jax import config
from nst_jax.config import LossConfig, OptimConfig, TransferConfig
from nst_jax.core import memory, objective, vgg
from nst_jax.core.errors import UserError
from nst_jax.slow import artistic, driver, optimize

# Gatys et al. 2016, Fig. 1. In their Caffe model the ReLUs run in place, so the blobs the paper
# calls "conv1_2" hold rectified values: pass the relu names to reproduce the figure exactly.
CONTENT_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@dataclasses.dataclass
class Reconstruction:
  """One image optimized from noise to match one representation of a target image."""
  label: str
  image: np.ndarray  # [H, W, 3] in [0, 1]
  history: dict[str, np.ndarray]  # term -> [iterations]
  nan_at: int | None = None


def content_config(layer: str, *, tv_weight: float = 0.0, pooling: str = "avg",
                   conv_impl: str = "auto") -> LossConfig:
  """A loss that only compares the features of one layer with the target's."""
  return LossConfig(content_layers=(layer,), content_layer_weights=(1.0,), style_layers=(),
                    style_layer_weights=(), content_weight=1.0, style_weight=0.0,
                    tv_weight=tv_weight, pooling=pooling, conv_impl=conv_impl)


def style_config(layers: Sequence[str], *, tv_weight: float = 0.0, pooling: str = "avg",
                 conv_impl: str = "auto") -> LossConfig:
  """A Gram loss over ``layers``, each weighted 1 / len(layers) (Gatys' w_l), no content."""
  layers = tuple(layers)
  return LossConfig(content_layers=(), content_layer_weights=(), style_layers=layers,
                    style_layer_weights=(1.0 / len(layers),) * len(layers), content_weight=0.0,
                    style_weight=1.0, tv_weight=tv_weight, pooling=pooling, conv_impl=conv_impl)


def growing_stacks(layers: Sequence[str]) -> list[tuple[str, ...]]:
  """("a", "b", "c") -> [("a",), ("a", "b"), ("a", "b", "c")]."""
  return [tuple(layers[:i + 1]) for i in range(len(layers))]


def reconstruct(vgg_params, image: np.ndarray, loss_cfg: LossConfig, optim_cfg: OptimConfig, *,
                seed: int = 0, progress: bool = True, label: str = "",
                max_memory: float | None = None) -> Reconstruction:
  """Optimizes uniform noise until its features match ``image``'s under ``loss_cfg``.

  With content layers (``content_config``) this inverts the feature maps; with style layers
  only (``style_config``) it matches their Gram matrices, which discards the arrangement.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    image: [H, W, 3] in [0, 1], the image whose representation is matched.
    loss_cfg: a content-only or style-only loss configuration.
    optim_cfg: the optimizer and number of iterations.
    seed: seed of the initial noise.
    progress: show a progress bar.
    label: the progress bar's label and ``Reconstruction.label``.
    max_memory: GB the run may use (``memory.budget_bytes``); more is refused (UserError).

  Returns:
    A ``Reconstruction`` of the same size as ``image``.

  References:
    Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR 2015;
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  """
  loss_cfg.check()
  check_reconstruction_size(image.shape[:2], loss_cfg.content_layers + loss_cfg.style_layers,
                            optim_cfg, max_memory)
  target = jnp.asarray(image)[None]  # [1, H, W, 3]
  # make_targets needs at least one style; with no style layers it contributes nothing.
  targets = objective.make_targets(vgg_params, target if loss_cfg.content_layers else None,
                                   [target], loss_cfg)
  x0 = artistic.initial_image("noise", None, image.shape[:2], seed=seed, noise_ratio=1.0)
  res = optimize.run(artistic.make_loss_fn(loss_cfg), jnp.asarray(x0)[None], vgg_params, targets,
                     optim_cfg, progress=progress, desc=label or "reconstruct")
  return Reconstruction(label, np.clip(np.asarray(res.image)[0], 0.0, 1.0), res.history,
                        res.nan_at)


def reconstruct_all(vgg_params, content: np.ndarray, style: np.ndarray, optim_cfg: OptimConfig, *,
                    content_layers: Sequence[str] = CONTENT_LAYERS,
                    style_layers: Sequence[str] = STYLE_LAYERS, tv_weight: float = 0.0,
                    pooling: str = "avg", seed: int = 0, conv_impl: str = "auto",
                    progress: bool = True, max_memory: float | None = None
                    ) -> tuple[list[Reconstruction], list[Reconstruction]]:
  """Content reconstructions from single layers and style reconstructions from growing stacks.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    content: [H, W, 3] content image in [0, 1].
    style: [h, w, 3] style image in [0, 1].
    optim_cfg: optimizer settings for every reconstruction.
    content_layers: one reconstruction per layer.
    style_layers: one reconstruction per prefix: (l1,), (l1, l2), ...
    tv_weight: total-variation weight (0 in the paper).
    pooling: "avg" (Gatys) or "max".
    seed: seed of the initial noise (the same for all).
    conv_impl: VGG's convolutions ("auto", "xla" or "cpu_fast", ``LossConfig.conv_impl``).
    progress: show progress bars.
    max_memory: GB a reconstruction may use (``memory.budget_bytes``); checked for both images
      before the first one starts.

  Returns:
    (content reconstructions, style reconstructions).

  References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016,
    Figure 1.
  """
  vgg.check_layers(tuple(content_layers) + tuple(style_layers))
  for image in (content, style):
    check_reconstruction_size(image.shape[:2], tuple(content_layers) + tuple(style_layers),
                              optim_cfg, max_memory)
  kw = dict(tv_weight=tv_weight, pooling=pooling, conv_impl=conv_impl)
  contents = [reconstruct(vgg_params, content, content_config(l, **kw), optim_cfg, seed=seed,
                          progress=progress, label=f"content {l}", max_memory=max_memory)
              for l in content_layers]
  styles = [reconstruct(vgg_params, style, style_config(s, **kw), optim_cfg, seed=seed,
                        progress=progress, label=f"style {stack_label(s)}",
                        max_memory=max_memory)
            for s in growing_stacks(style_layers)]
  return contents, styles


def check_reconstruction_size(hw: tuple[int, int], layers: Sequence[str], optim_cfg: OptimConfig,
                              max_memory: float | None = None) -> None:
  """Refuses an image too small for ``layers`` or too large for ``max_memory`` GB (UserError)."""
  memory.check_min_side(hw, layers)
  history = 0 if optim_cfg.optimizer == "adam" else optim_cfg.history_size
  memory.check_fits("reconstruct", hw, memory.budget_bytes(max_memory), layers=layers,
                    history=history)


def stack_label(layers: Sequence[str]) -> str:
  """("conv1_1",) -> "conv1_1"; ("conv1_1", "conv2_1", "conv3_1") -> "conv1_1..conv3_1"."""
  return layers[0] if len(layers) == 1 else f"{layers[0]}..{layers[-1]}"


def figure_rows(content: np.ndarray, style: np.ndarray, contents: Sequence[Reconstruction],
                styles: Sequence[Reconstruction]):
  """Figure 1's layout: the inputs in the first column, then one column per depth.

  Returns:
    ``(rows, row_titles, col_titles)`` for ``plots.save_image_grid``.
  """
  rows = [[content] + [r.image for r in contents], [style] + [r.image for r in styles]]
  n = max(len(contents), len(styles))
  col_titles = ["input"]
  for i in range(n):
    c = contents[i].label.split(" ", 1)[-1] if i < len(contents) else ""
    s = styles[i].label.split(" ", 1)[-1] if i < len(styles) else ""
    col_titles.append(f"content: {c}\nstyle: {s}".strip())
  return rows, ["content reconstructions", "style reconstructions"], col_titles


def synthesize_texture(vgg_params, style: np.ndarray, cfg: TransferConfig, *,
                       progress: bool = True, max_memory: float | None = None) -> driver.Output:
  """Texture synthesis: a style-only transfer from noise (coarse-to-fine with ``cfg.scales``).

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    style: [h, w, 3] in [0, 1], the example texture.
    cfg: the transfer configuration; its content settings are ignored, ``cfg.size`` is the
      long side of the output (the style's aspect ratio).
    progress: show a progress bar.
    max_memory: GB the run may use (``memory.budget_bytes``); more is refused (UserError).

  Returns:
    ``driver.Output`` with one image.

  References:
    Gatys, Ecker & Bethge, "Texture Synthesis Using Convolutional Neural Networks", NeurIPS 2015.
  """
  cfg = dataclasses.replace(cfg, init="noise", original_colors="")
  return artistic.stylize(vgg_params, [artistic.Problem(None, (style,))], cfg, progress=progress,
                          max_memory=max_memory)


# ----------------------------------------------------------------------------- unit visualization


@dataclasses.dataclass
class Visualization:
  images: list[np.ndarray]  # one [H, W, 3] per unit
  history: dict[str, np.ndarray]  # "activation": [iterations, units], before each step
  initial: np.ndarray  # [units] activations of the initial images
  final: np.ndarray  # [units] activations of the returned images


def layer_channels(vgg_params, layer: str) -> int:
  """Number of channels of a VGG19 layer (that of the last convolution at or before it)."""
  vgg.check_layers((layer,))
  names = vgg.VGG19_LAYERS[:vgg.VGG19_LAYERS.index(layer) + 1]
  conv = [n for n in names if n.startswith("conv")][-1]
  return int(vgg_params[conv]["kernel"].shape[-1])


def check_visualize(vgg_params, layer: str, units: Sequence[int], cfg: config.VisualizeConfig) -> None:
  """Validates the layer and units (UserError) and the settings (``config.ConfigError`` naming the
  key)."""
  channels = layer_channels(vgg_params, layer)
  if not units:
    raise UserError("give at least one unit")
  bad = [u for u in units if not 0 <= u < channels]
  if bad:
    raise UserError(f"unit(s) {bad} out of range: {layer} has channels 0..{channels - 1}")
  for key, ok, need in (("size", cfg.size >= 16, ">= 16"),
                        ("num_iters", cfg.num_iters >= 0, ">= 0"),
                        ("chunk", cfg.chunk >= 1, ">= 1"),
                        ("blur_every", cfg.blur_every >= 0, ">= 0"),
                        ("jitter", cfg.jitter >= 0, ">= 0"),
                        ("learning_rate", cfg.learning_rate > 0, "> 0"),
                        ("decay", 0 <= cfg.decay < 1, "in [0, 1)"),
                        ("blur_sigma", cfg.blur_sigma >= 0, ">= 0"),
                        ("spatial", cfg.spatial in ("mean", "center"), "mean or center"),
                        ("pooling", cfg.pooling in config.POOLINGS, "avg or max"),
                        ("conv_impl", cfg.conv_impl in config.CONV_IMPLS,
                         " or ".join(config.CONV_IMPLS))):
    if not ok:
      raise config.ConfigError(key, f"must be {need}, got {getattr(cfg, key)!r}")


def unit_activations(vgg_params, images: jax.Array, layer: str, units: jax.Array, *,
                     spatial: str = "mean", pooling: str = "max",
                     conv_impl: str = "auto") -> jax.Array:
  """Activation of channel ``units[i]`` of ``layer`` in image i.

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    images: [U, H, W, 3] RGB in [0, 1].
    layer: a VGG19 layer name.
    units: [U] integer channel indices.
    spatial: "mean" over all positions, or the "center" position.
    pooling: "max" or "avg".
    conv_impl: VGG's convolutions ("auto", "xla" or "cpu_fast").

  Returns:
    [U] activations.
  """
  feats = vgg.vgg_features(vgg_params, images, (layer,), pooling,
                           conv_impl=conv_impl)[layer]  # [U, h, w, C]
  chosen = jnp.take_along_axis(feats, units[:, None, None, None], axis=-1)[..., 0]  # [U, h, w]
  if spatial == "center":
    return chosen[:, chosen.shape[1] // 2, chosen.shape[2] // 2]
  return jnp.mean(chosen, axis=(1, 2))


def gaussian_kernel(sigma: float) -> np.ndarray:
  """Normalized 1-D Gaussian taps over +-ceil(3 sigma) (scipy's ``truncate=3``)."""
  radius = max(1, int(math.ceil(3 * sigma)))
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(images: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur of [B, H, W, C] images with reflected borders."""
  if sigma <= 0:
    return images
  k = jnp.asarray(gaussian_kernel(sigma))
  r, c = k.shape[0] // 2, images.shape[-1]
  x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
  for kernel in (k[:, None, None, None], k[None, :, None, None]):  # [kh, kw, 1, 1]
    x = jax.lax.conv_general_dilated(x, jnp.tile(kernel, (1, 1, 1, c)), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=c)
  return x


def make_ascent_solver(layer: str, cfg: config.VisualizeConfig) -> optimize.Solver:
  """One regularized ascent step per call: x <- clip(blur(decay(x + lr g / mean|g|))).

  The state is the step count and a random key (for jitter); ``aux`` is {"units": [U]}.
  """

  def objective_fn(x, vgg_params, units, shift):
    x = jnp.roll(x, shift, axis=(1, 2)) if cfg.jitter else x
    acts = unit_activations(vgg_params, x, layer, units, spatial=cfg.spatial, pooling=cfg.pooling,
                            conv_impl=cfg.conv_impl)
    return jnp.sum(acts), acts  # images are independent: d sum / d x_i = d act_i / d x_i

  def step(x, state, vgg_params, aux):
    shift = jax.random.randint(jax.random.fold_in(state["key"], state["step"]), (2,),
                               -cfg.jitter, cfg.jitter + 1)
    (_, acts), g = jax.value_and_grad(objective_fn, has_aux=True)(x, vgg_params, aux["units"],
                                                                  shift)
    g = g / (jnp.mean(jnp.abs(g), axis=(1, 2, 3), keepdims=True) + 1e-12)
    x = 0.5 + (1.0 - cfg.decay) * (x + cfg.learning_rate * g - 0.5)
    if cfg.blur_every:
      blur_now = (state["step"] + 1) % cfg.blur_every == 0
      x = jax.lax.cond(blur_now, lambda y: gaussian_blur(y, cfg.blur_sigma), lambda y: y, x)
    x = jnp.clip(x, 0.0, 1.0)
    return x, {"step": state["step"] + 1, "key": state["key"]}, {"activation": acts}

  def init(x, vgg_params, aux):
    return {"step": jnp.zeros((), jnp.int32), "key": jax.random.key(cfg.seed)}

  return optimize.Solver(init, step)


def visualize_units(vgg_params, layer: str, units: Sequence[int], cfg: config.VisualizeConfig, *,
                    progress: bool = True, max_memory: float | None = None) -> Visualization:
  """Activation maximization of several channels of one layer, optimized together as a batch.

  Starts from grey plus a little noise and climbs the channel's mean (or center) activation
  with L2 decay, periodic Gaussian blur, optional jitter and clipping to [0, 1].

  Args:
    vgg_params: from ``vgg.load_vgg19``.
    layer: e.g. "conv5_1" (pre-ReLU: a dead ReLU gives no gradient to climb).
    units: channel indices of ``layer``.
    cfg: ascent settings.
    progress: show a progress bar.
    max_memory: GB the run may use (``memory.budget_bytes``); more is refused (UserError).

  Returns:
    A ``Visualization`` (images, per-iteration activations, initial and final activations).

  References:
    Yosinski, Clune, Nguyen, Fuchs & Lipson, "Understanding Neural Networks Through Deep
    Visualization", ICML Deep Learning Workshop 2015; Erhan et al., "Visualizing Higher-Layer
    Features of a Deep Network", 2009.
  """
  check_visualize(vgg_params, layer, units, cfg)
  memory.check_fits("visualize", (cfg.size, cfg.size), memory.budget_bytes(max_memory),
                    batch=len(units), layers=(layer,))
  aux = {"units": jnp.asarray(units, jnp.int32)}
  noise = np.random.default_rng(cfg.seed).normal(0.0, 0.02, (len(units), cfg.size, cfg.size, 3))
  x = jnp.asarray(np.clip(0.5 + noise, 0.0, 1.0), jnp.float32)  # [U, S, S, 3]
  solver = make_ascent_solver(layer, cfg)
  measure = jax.jit(lambda x, p, u: unit_activations(p, x, layer, u, spatial=cfg.spatial,
                                                     pooling=cfg.pooling,
                                                     conv_impl=cfg.conv_impl))
  initial = np.asarray(measure(x, vgg_params, aux["units"]))
  x, history = _ascend(solver, x, vgg_params, aux, cfg, progress, desc=f"visualize {layer}")
  final = np.asarray(measure(x, vgg_params, aux["units"]))
  return Visualization([np.asarray(img) for img in x], history, initial, final)


def _ascend(solver, x, vgg_params, aux, cfg: config.VisualizeConfig, progress: bool, desc: str):
  """Runs ``cfg.num_iters`` steps in compiled chunks, with a progress bar between chunks."""
  chunk_fn = optimize.make_chunk_fn(solver, cfg.chunk)
  state = jax.jit(solver.init)(x, vgg_params, aux)
  pieces = []
  with tqdm(total=cfg.num_iters, desc=desc, disable=not progress, unit="it",
            dynamic_ncols=True) as bar:
    for start in range(0, cfg.num_iters, cfg.chunk):
      n = min(cfg.chunk, cfg.num_iters - start)
      x, state, hist = chunk_fn(x, state, vgg_params, aux, n)
      pieces.append({k: np.asarray(v)[:n] for k, v in hist.items()})
      bar.update(n)
      bar.set_postfix(activation=f"{float(np.mean(pieces[-1]['activation'][-1])):.4g}",
                      refresh=False)
  return x, optimize.concat_history(pieces) or {"activation": np.zeros((0, x.shape[0]))}


def grid_rows(images: Sequence[np.ndarray], columns: int) -> list[list[np.ndarray]]:
  """Splits a list of images into rows of at most ``columns``."""
  return [list(images[i:i + columns]) for i in range(0, len(images), columns)]
