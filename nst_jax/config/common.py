"""The names every config shares (layers, losses, optimizers, choices), the constants, the
error, and the perceptual objective and optimizer configs every slow and fast method uses."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------- names
VGG_BLOCKS = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}  # convolutions per block
LOSS_NETWORKS = ("vgg16", "vgg19")  # the loss networks (core/vgg.py), by VGG_BLOCKS' names


def _vgg_layer_names(blocks) -> tuple[str, ...]:
  names = []
  for b, n in enumerate(blocks, start=1):
    for i in range(1, n + 1):
      names += [f"conv{b}_{i}", f"relu{b}_{i}"]
    names.append(f"pool{b}")
  return tuple(names)


# Every layer of each loss network: convX_Y (before the ReLU), reluX_Y, poolX.
VGG_LAYERS = {arch: _vgg_layer_names(blocks) for arch, blocks in VGG_BLOCKS.items()}
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
THESIS_STYLE_LAYERS = GATYS_STYLE_LAYERS
JOHNSON_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
LUAN_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")  # pre-ReLU
PHOTO_STYLE_LAYERS = LUAN_STYLE_LAYERS
STYLE_LOSSES = ("gram", "mean", "mean_std", "mmd_poly", "mmd_gauss")
POOLINGS = ("avg", "max")
OPTIMIZERS = ("lbfgsb", "lbfgs", "adam", "lbfgsb_jaxopt")
INITS = ("content", "noise", "mix", "net")  # "net": an image the caller supplies (fast start)
COLOR_MODES = ("yiq", "yuv")  # original_colors: keep the content's chroma in this space
CONV_IMPLS = ("auto", "xla", "cpu_fast")  # "auto": cpu_fast on the CPU backend, else xla
# What VGG's backward pass keeps from its forward one (core/vgg.py ``vgg_features``; the same
# gradients): none (autodiff's float pre-activations) | masks (1-bit ReLU masks) | blocks (each
# block recomputed in the backward pass, jax.checkpoint).
REMATS = ("none", "masks", "blocks")
SCHEDULES = ("constant", "cosine", "step")
NORMALIZATIONS = ("instance", "batch")  # the transform net's (fast/nets.py)
UPSAMPLES = ("resize", "transpose")
PADDINGS = ("reflect", "zero")
NET_OUTPUTS = ("rgb", "affine")
AFFINE_LOSSES = ("residual", "energy")
MASK_POOLINGS = ("avg", "max", "bilinear")
SMOOTH_METHODS = ("affine", "guided")
PARAMETERIZATIONS = ("guided", "pixels", "affine")  # what photoreal's penalized stages optimize

# ------------------------------------------------------------------------------------ constants
EVAL_EPS = 1e-4  # the matting Laplacian's regulariser for ratios and the affine step
AFFINE_WEIGHT = 1.2  # the smooth local affine post-step's default weight (docs/photoreal.md)
FAST_MATTING_BUDGET = 2.0  # fast photoreal's default post-step budget: 2x the photo's energy
PHOTO_AFFINE_WEIGHT = 1e3  # calibrated in docs/fast_photoreal.md ("Calibration")
# The photoreal training preset scores outputs after the smooth local affine step at this weight
# (docs/fast_photoreal.md, "Training through the post-step").
PHOTO_AFFINE_OUTPUT = 50.0


class ConfigError(ValueError):
  """A config value no run can use, or an unknown key; ``key`` is the dotted config key."""

  def __init__(self, key: str, message: str):
    super().__init__(f"{key}: {message}")
    self.key = key
    self.message = message


def check_once(method):
  """Makes a config's ``check`` run its body once per distinct config value (and arguments).

  Configs are frozen and hashable, so a value that passed once passes again: the command line
  checks a config before it reads any input, the library checks it again at its entry, and the
  second is a cache lookup. A failing check is not cached (it raises every time). The decorated
  method returns the config, so ``cfg = build().check()`` reads naturally.
  """
  cached = functools.lru_cache(maxsize=256)(method)

  @functools.wraps(method)
  def check(self, *args, **kwargs):
    cached(self, *args, **kwargs)
    return self

  check.cache_clear, check.cache_info = cached.cache_clear, cached.cache_info
  return check


# How the command line parses a flag's value; "bool": --x / --no-x; "switch": --x sets True.
FLAG_TYPES = ("non_negative", "positive", "int", "float", "bool", "switch")


def flag_field(default, *, help: str, name: str = "", type: str = "", choices: tuple = (),
               metavar: str = "", aliases: tuple[str, ...] = (), const=None):
  """A config field that the command line also offers as a flag: the default, written once here,
  and the flag's help beside it (``cli.common.add_field_flags`` makes the flags from them).

  Args:
    default: the field's default (immutable).
    help: the flag's help text; the command line appends the default.
    name: the flag's name without ``--`` (default: the field's, with dashes).
    type: one of ``FLAG_TYPES`` (default: the value stays a string for ``override`` to parse).
    choices: the allowed values, if the flag lists them.
    metavar: the flag's value's name in the help.
    aliases: other names of the flag.
    const: if given, the flag's value may be left out and is then this.
  """
  assert not type or type in FLAG_TYPES, type
  return field(default=default, metadata={"flag": {
      "help": help, "name": name, "type": type, "choices": choices, "metavar": metavar,
      "aliases": aliases, "const": const}})


# -------------------------------------------------------------- the objective and its optimizer
@dataclass(frozen=True)
class LossConfig:
  """Weights and layers of the perceptual objective (neural-style's vocabulary)."""
  content_layers: tuple[str, ...] = flag_field(
      ("relu4_2",), help="VGG19 layers of the content loss", metavar="L1,L2")
  content_layer_weights: tuple[float, ...] = flag_field(
      (1.0,), help="one weight per content layer (all 1 when only --content-layers is given)",
      metavar="W1,W2")
  style_layers: tuple[str, ...] = flag_field(
      GATYS_STYLE_LAYERS, help="VGG19 layers of the style loss", metavar="L1,L2")
  style_layer_weights: tuple[float, ...] = flag_field(
      (1.0, 1.0, 1.0, 1.0, 1.0),
      help="one weight per style layer (all 1 when only --style-layers is given)",
      metavar="W1,W2")
  content_weight: float = flag_field(1.0, help="weight of the content loss", type="non_negative")
  # Gatys-normalized Grams of caffe-scale features are large
  style_weight: float = flag_field(1e-3, help="weight of the style loss", type="non_negative")
  # TV of [0, 1] pixels is small
  tv_weight: float = flag_field(1e4, help="weight of the total variation", type="non_negative")
  style_loss: str = flag_field("gram", help="statistics the style matches", choices=STYLE_LOSSES)
  pooling: str = flag_field("avg", help="VGG19's pooling layers", choices=POOLINGS)  # avg: Gatys
  conv_impl: str = "auto"  # VGG's convolutions: auto | xla | cpu_fast (see CONV_IMPLS)
  remat: str = "masks"  # what VGG's backward pass keeps: none | masks | blocks (see REMATS)
  # vgg19 | vgg16 (LOSS_NETWORKS; the layers must be VGG_LAYERS of it); vgg16 (Johnson et al.'s
  # loss network): feed-forward training only, slow transfer runs on VGG19.
  loss_network: str = "vgg19"

  @check_once
  def check(self, prefix: str = "loss.", networks=("vgg19",)) -> LossConfig:
    """Validates the loss network, layer names, per-layer weight counts, loss kind and weights.

    Args:
      prefix: the config keys' prefix.
      networks: the loss networks the caller can run (slow transfer: VGG19; feed-forward
        training: ``LOSS_NETWORKS``).

    Raises:
      ConfigError: naming the bad key, ``prefix`` + the field.
    """
    if self.loss_network not in networks:
      raise ConfigError(f"{prefix}loss_network", f"{self.loss_network!r} is not one of "
                        f"{', '.join(networks)} here")
    last = {"vgg19": "5_4", "vgg16": "5_3"}[self.loss_network]
    for name in ("content", "style"):
      layers, weights = getattr(self, f"{name}_layers"), getattr(self, f"{name}_layer_weights")
      bad = [l for l in layers if l not in VGG_LAYERS[self.loss_network]]
      if bad:
        raise ConfigError(f"{prefix}{name}_layers", f"unknown {self.loss_network.upper()} "
                          f"layer(s) {', '.join(bad)}; valid names are conv1_1 ... conv{last}, "
                          f"relu1_1 ... relu{last}, pool1 ... pool5")
      if len(layers) != len(weights):
        raise ConfigError(f"{prefix}{name}_layer_weights",
                          f"{len(layers)} {name} layers but {len(weights)} {name} layer weights")
      if any(w < 0 for w in weights):
        raise ConfigError(f"{prefix}{name}_layer_weights", f"must be non-negative, got {weights}")
    for name in ("content_weight", "style_weight", "tv_weight"):
      if not getattr(self, name) >= 0:
        raise ConfigError(prefix + name, f"must be non-negative, got {getattr(self, name)}")
    if self.style_loss not in STYLE_LOSSES:
      raise ConfigError(f"{prefix}style_loss", f"unknown style loss {self.style_loss!r}; "
                        f"expected one of {', '.join(STYLE_LOSSES)}")
    if self.pooling not in POOLINGS:
      raise ConfigError(f"{prefix}pooling", f"unknown pooling {self.pooling!r}; expected avg or "
                        "max")
    if self.conv_impl not in CONV_IMPLS:
      raise ConfigError(f"{prefix}conv_impl", f"unknown conv_impl {self.conv_impl!r}; expected "
                        f"one of {', '.join(CONV_IMPLS)}")
    if self.remat not in REMATS:
      raise ConfigError(f"{prefix}remat", f"unknown remat {self.remat!r}; expected one of "
                        f"{', '.join(REMATS)}")


@dataclass(frozen=True)
class OptimConfig:
  """The per-image optimizer."""
  # lbfgsb (lean free-variable L-BFGS-B, [0, 1] box; slow/lbfgsb.py) | lbfgs (optax + projection)
  # | adam | lbfgsb_jaxopt (jaxopt's L-BFGS-B, slower per iteration)
  optimizer: str = flag_field("lbfgsb", help="the per-image optimizer", choices=OPTIMIZERS)
  num_iters: int = flag_field(500, help="iterations per level", name="iters", type="int")
  # Adam only; pixels are in [0, 1]
  learning_rate: float = flag_field(0.02, help="Adam step size", type="non_negative",
                                    aliases=("lr",))
  history_size: int = 20  # L-BFGS memory
  # iterations per compiled chunk, between progress updates
  chunk: int = flag_field(10, help="iterations per compiled chunk", type="positive")
