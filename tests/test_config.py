"""The config package: each config checks itself (once per value), and the command line's common
flags are made from the config fields (their defaults written once, in the dataclass)."""

import dataclasses

import pytest

from nst_jax import cli, config
from nst_jax.cli import common
from nst_jax.cli import optimize as optimize_command

OPTIMIZE = ["optimize", "--content", "c.png", "--style", "s.png", "--out", "o.png"]


def _actions(argv):
  parser = cli.build_parser()
  args = parser.parse_args(argv)
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
