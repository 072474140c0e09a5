"""The config package: each config checks itself (once per value), and the command line's common
flags are made from the config fields (their defaults written once, in the dataclass)."""

import argparse
import dataclasses
import functools

import pytest

from nst_jax import cli, config
from nst_jax.cli import common
from nst_jax.cli import optimize as optimize_command

OPTIMIZE = ["optimize", "--content", "c.png", "--style", "s.png", "--out", "o.png"]


@functools.cache
def _parser():
  return cli.build_parser()  # parsing leaves no state in it: one for all tests


def _actions(argv):
  args = _parser().parse_args(argv)
  return args, {a.dest: a for a in args._parser._actions}  # pylint: disable=protected-access


def test_the_generated_flags_defaults_are_the_dataclass_defaults():
  args, actions = _actions(OPTIMIZE)
  cfg = optimize_command.resolve_config(args)
  assert cfg == config.TransferConfig()  # the default preset is the dataclass's defaults
  flags = {**common.LOSS_FLAGS, **common.OPTIM_FLAGS}
  assert len(flags) == 13
  for dest, key in flags.items():
    default = common.format_value(
        config.value_of(config.TransferConfig(), key))
    cls = config.LossConfig if key.startswith("loss.") else config.OptimConfig
    field = {f.name: f for f in dataclasses.fields(cls)}[key.split(".")[1]]
    assert field.default == config.value_of(cfg, key)
    assert actions[dest].default is None  # the config's value applies, not the flag's
    assert actions[dest].help == (f"{field.metadata['flag']['help']} (default: {default}, "
                                  "from the preset gatys)")


def test_the_generated_flags_keep_their_names_types_and_choices():
  _, actions = _actions(OPTIMIZE)
  names = {d: tuple(actions[d].option_strings) for d in {**common.LOSS_FLAGS, **common.OPTIM_FLAGS}}
  assert names["iters"] == ("--iters",) and names["learning_rate"] == ("--learning-rate", "--lr")
  assert names["content_layer_weights"] == ("--content-layer-weights",)
  assert actions["style_weight"].type is common.non_negative_float
  assert actions["chunk"].type is common.positive_int and actions["iters"].type is int
  assert actions["style_loss"].choices == config.STYLE_LOSSES
  assert actions["optimizer"].choices == config.OPTIMIZERS
  assert actions["content_layers"].type is None and actions["content_layers"].metavar == "L1,L2"
  args, _ = _actions(OPTIMIZE + ["--lr", "0.5", "--iters", "7", "--style-layers", "relu1_1"])
  cfg = optimize_command.resolve_config(args)
  assert (cfg.optim.learning_rate, cfg.optim.num_iters) == (0.5, 7)
  assert (cfg.loss.style_layers, cfg.loss.style_layer_weights) == (("relu1_1",), (1.0,))


def test_a_check_runs_once_per_config_value_and_a_failure_every_time():
  check = config.TransferConfig.check
  check.cache_clear()
  cfg = config.TransferConfig(size=77)
  assert cfg.check() is cfg
  assert config.TransferConfig(size=77).check() == cfg  # an equal value: the cache
  assert (check.cache_info().misses, check.cache_info().hits) == (1, 1)
  bad = config.TransferConfig(size=8)
  for _ in range(2):
    with pytest.raises(config.ConfigError, match="size: must be >= 16, got 8"):
      bad.check()
  assert check.cache_info().misses == 3  # failures are not cached


def test_the_command_line_and_the_library_entry_check_a_config_once():
  config.TransferConfig.check.cache_clear()
  config.LossConfig.check.cache_clear()
  args, _ = _actions(OPTIMIZE + ["--size", "99"])
  cfg = optimize_command.build_config(args)  # the command line, before it reads any input
  cfg.check()  # what artistic.stylize does at its entry
  assert config.TransferConfig.check.cache_info().misses == 1
  assert config.LossConfig.check.cache_info().misses == 1


@pytest.mark.parametrize("cfg,key", [
    (config.LossConfig(style_layers=("relu9_9",)), "loss.style_layers"),
    (config.PhotoConfig(stages=3), "stages"),
    (config.ReconstructConfig(content_layers=()), "content_layers"),
    (config.TrainConfig(net=config.NetConfig(pixel_shuffle=True, output="affine")),
     "net.pixel_shuffle"),
    (config.TrainConfig(photo=config.PhotoTrainConfig(min_area=1.0)), "photo.min_area"),
    (config.TrainConfig(size=30), "size"),
    (config.Smoothing(method="box"), "method"),
    (config.sr_fast(3), None),
    (dataclasses.replace(config.sr_fast(4), size=30), "size"),
])
def test_each_config_names_its_bad_key(cfg, key):
  if key is None:
    assert cfg.check() is cfg
    return
  with pytest.raises(config.ConfigError) as e:
    cfg.check()
  assert e.value.key == key


def test_every_preset_passes_its_check():
  for presets in (config.PRESETS, config.TRAIN_PRESETS, config.SR_PRESETS):
    for make in presets.values():
      cfg = make()
      if hasattr(cfg, "check"):
        assert cfg.check() is cfg


def test_the_names_the_checks_use_are_the_librarys():
  """The checks live in the leaf config package, so they read its names; the library's own
  tuples must be the same (a style loss or colour space added to one only would be refused)."""
  from nst_jax.core import colors, losses, vgg  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import nets  # pylint: disable=import-outside-toplevel
  assert losses.STYLE_LOSSES == config.STYLE_LOSSES
  assert colors.SPACES == config.COLOR_MODES
  assert vgg.VGG19_LAYERS == config.VGG_LAYERS["vgg19"]
  assert nets.MULTIPLE == config.NET_MULTIPLE


def _cmd(name):
  import importlib  # pylint: disable=import-outside-toplevel
  return importlib.import_module(f"nst_jax.cli.{name}")


# command argv (its required flags), the module's flag map and the config its flags start from
COMMANDS = {
    "optimize": (OPTIMIZE, lambda: _cmd("optimize").FLAGS, config.gatys),
    "texture": (["texture", "--style", "s.png", "--out", "o.png"], lambda: _cmd("texture").FLAGS,
                lambda: _cmd("texture").make_base("gatys")),
    "photo": (["photo", "--content", "c.png", "--style", "s.png", "--out", "o.png"],
              lambda: _cmd("photo").FLAGS, config.PhotoConfig),
    "reconstruct": (["reconstruct", "--content", "c.png", "--style", "s.png", "--out", "o.png"],
                    lambda: _cmd("reconstruct").FLAGS, config.ReconstructConfig),
    "visualize": (["visualize", "--layer", "conv1_1", "--units", "0", "--out", "o.png"],
                  lambda: _cmd("visualize").FLAGS, lambda: _cmd("visualize").make_base()),
    "stylize": (["stylize", "--model", "m", "--content", "c.png", "--out", "o"], lambda: _cmd("stylize").FLAGS,
                config.Smoothing),
    "train": (["train", "--workdir", "w"], lambda: _cmd("train").FLAGS, config.thesis),
    "sr": (["sr", "train", "--workdir", "w"], lambda: _cmd("sr").TRAIN_FLAGS,
           lambda: config.SR_PRESETS["fast"](4)),
    "serve": (["serve"], lambda: _cmd("serve").FLAGS, config.WebConfig),
    "worker": (["worker"], lambda: _cmd("worker").FLAGS, config.WebConfig),
}
# The names users know of the flags made from config fields: generating them must not rename one.
LOSS_NAMES = ("--content-layers --content-layer-weights --style-layers --style-layer-weights "
              "--content-weight --style-weight --tv-weight --style-loss --pooling ")
OPTIM_NAMES = "--optimizer --iters --learning-rate --lr --chunk "
GENERATED_NAMES = {
    "optimize": LOSS_NAMES + OPTIM_NAMES + "--size --scales --level-iters --style-scale --init "
                "--noise-ratio --seed --original-colors",
    "texture": OPTIM_NAMES + "--size --scales --style-scale --seed --style-weight --tv-weight "
               "--style-layers --style-layer-weights --style-loss --pooling",
    "photo": LOSS_NAMES + OPTIM_NAMES + "--size --stages --stage-iters --style-scale "
             "--matting-weight --parameterization --affine-weight --regions --mask-pooling "
             "--smooth --no-smooth --smooth-method --smooth-weight --matting-budget "
             "--smooth-radius --smooth-eps --seed",
    "reconstruct": "--size --content-layers --style-layers --tv-weight --pooling --seed "
                   "--optimizer --learning-rate --lr --chunk",
    "visualize": "--size --iters --learning-rate --lr --decay --blur-every --blur-sigma --jitter "
                 "--spatial --pooling --seed --chunk",
    "stylize": "--smooth-method --smooth-weight --matting-budget --smooth-radius",
    "train": "--data",
    "sr": "--data --scale --init-from",
    "serve": "--host --port --workers --data-dir --database-url --queue-url --queue "
             "--storage-url --base-url --forwarded-allow-ips --secure-cookies --admin-token "
             "--smtp-host --smtp-port --smtp-sender",
    "worker": "--data-dir --database-url --queue-url --queue --storage-url --base-url "
              "--forwarded-allow-ips --secure-cookies --admin-token --smtp-host --smtp-port "
              "--smtp-sender",
}


def _subparser(parser, name):
  # pylint: disable=protected-access
  sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
  return sub.choices[name]


def _flag_field(cfg, key):
  """The dataclass field of a dotted key, if it is a ``config.flag_field``."""
  *head, last = key.split(".")
  for part in head:
    cfg = getattr(cfg, part)
  field = {f.name: f for f in dataclasses.fields(cfg)}[last]
  return field if "flag" in field.metadata else None


def _other_value(field, value):
  """(argv after the flag, the config value it gives): a value unlike ``value``."""
  spec = field.metadata["flag"]
  if spec["type"] in ("bool", "switch"):
    return [], True
  if spec["choices"]:
    other = next(c for c in spec["choices"] if c != value)
    return [str(other)], other
  if isinstance(value, tuple):
    return (["relu1_1"], ("relu1_1",)) if "layers" in field.name else (["3"], (3,))
  if isinstance(value, (int, float)):
    return [str(value + 1)], value + 1
  return ["x.png"], "x.png"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_generated_flag_keeps_its_name_and_sets_its_config_key(command):
  argv, flags, make_base = COMMANDS[command]
  flags, base = flags(), make_base()
  args, actions = _actions(argv)
  if command == "sr":  # `sr train`'s own parser
    actions = {a.dest: a for a in _subparser(args._parser, "train")._actions}
  generated = {d: k for d, k in flags.items() if _flag_field(base, k) and d in actions
               and actions[d].help.startswith(_flag_field(base, k).metadata["flag"]["help"])}
  names = {s for d in generated for s in actions[d].option_strings}
  if command == "serve":  # serve's TLS flags are not in FLAGS (set apart from the workers')
    names |= set(actions["ssl_certfile"].option_strings + actions["ssl_keyfile"].option_strings)
    generated = {**generated, "ssl_certfile": "ssl_certfile", "ssl_keyfile": "ssl_keyfile"}
  assert names == set(GENERATED_NAMES[command].split()) | (
      {"--ssl-certfile", "--ssl-keyfile"} if command == "serve" else set())
  assert config.override(base, common.flag_overrides(args, generated)) == base  # none given
  for dest, key in generated.items():
    field = _flag_field(base, key)
    action = actions[dest]
    assert action.default is None
    tail, expected = _other_value(field, config.value_of(base, key))
    given, _ = _actions(argv + [action.option_strings[0], *tail])
    cfg = config.override(base, common.flag_overrides(given, generated))
    assert config.value_of(cfg, key) == expected, (command, dest)


def test_a_flag_whose_value_may_be_left_out_takes_its_const():
  args, _ = _actions(OPTIMIZE + ["--original-colors"])
  assert optimize_command.resolve_config(args).original_colors == "yiq"
  args, _ = _actions(OPTIMIZE + ["--original-colors", "yuv"])
  assert optimize_command.resolve_config(args).original_colors == "yuv"
