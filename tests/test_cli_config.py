"""The command line's one configuration system: preset < --config < explicit flags < --set.

Most tests build configs without running anything (``resolve_config`` of each command); one runs
``optimize`` for 0 iterations at 32 px and reruns it from the config it wrote.
"""

import json
import subprocess
import sys

import pytest

from nst_jax import cli, config
from nst_jax.cli import common
from nst_jax.cli import optimize as optimize_command

# Command -> (required flags, a --set item, its key, the value it must give).
REQUIRED = {
    "optimize": ["--content", "c.png", "--style", "s.png", "--out", "o.png"],
    "texture": ["--style", "s.png", "--out", "o.png"],
    "reconstruct": ["--content", "c.png", "--style", "s.png", "--out", "o.png"],
    "visualize": ["--layer", "conv1_1", "--units", "0", "--out", "o.png"],
    "photo": ["--content", "c.png", "--style", "s.png", "--out", "o.png"],
    "train": ["--style", "s.png", "--data", "d", "--workdir", "w"],
    "stylize": ["--model", "m", "--content", "c.png", "--out", "o"],
}
SETS = {
    "optimize": ("loss.style_weight=5", "loss.style_weight", 5.0),
    "texture": ("optim.num_iters=7", "optim.num_iters", 7),
    "reconstruct": ("content_layers=conv1_1,conv2_1", "content_layers", ("conv1_1", "conv2_1")),
    "visualize": ("jitter=3", "jitter", 3),
    "photo": ("num_regions=4", "num_regions", 4),
    "train": ("net.width=0.5", "net.width", 0.5),
    "stylize": ("method=guided", "method", "guided"),
}


def _parse(argv):
  return cli.build_parser().parse_args(argv)


def _value(cfg, key):
  for part in key.split("."):
    cfg = getattr(cfg, part)
  return cfg


def _resolve(argv):
  args = _parse(argv)
  return args._resolve(args)  # pylint: disable=protected-access


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_set_sets_a_dotted_key_on_every_command(command):
  item, key, value = SETS[command]
  plain = _resolve([command, *REQUIRED[command]])
  cfg = _resolve([command, *REQUIRED[command], "--set", item])
  assert _value(cfg, key) == value != _value(plain, key)
  # Everything else is untouched.
  assert [k for k in config.keys(cfg) if _value(cfg, k) != _value(plain, k)] == [key]


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_bad_key_lists_the_valid_keys_on_one_line_with_exit_2(command, capsys, tmp_path):
  argv = [a.replace("o.png", str(tmp_path / "o.png")) for a in REQUIRED[command]]
  assert cli.main([command, *argv, "--set", "no_such.key=1"]) == 2
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in err, err
  valid = config.keys(_resolve([command, *REQUIRED[command]]))
  assert "--set no_such.key: unknown config key; valid keys: " + ", ".join(valid) in lines[0]
  assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_written_config_round_trips_through_config_flag(command, tmp_path):
  item, _, _ = SETS[command]
  cfg = _resolve([command, *REQUIRED[command], "--set", item, "--set", "seed=3"]
                 if command not in ("stylize",) else [command, *REQUIRED[command], "--set", item])
  path = common.write_config(tmp_path / "run_config.json", cfg)
  again = _resolve([command, *REQUIRED[command], "--config", str(path)])
  assert again == cfg
  assert config.from_json(type(cfg), path.read_text()) == cfg


def test_precedence_preset_then_config_then_flags_then_set(tmp_path):
  saved = tmp_path / "partial.json"
  saved.write_text(json.dumps({"size": 100, "loss": {"style_weight": 7.0}}))
  base = ["optimize", *REQUIRED["optimize"], "--preset", "smoke"]
  cfg = _resolve(base)
  assert (cfg.size, cfg.loss.style_weight, cfg.optim.num_iters) == (64, 1e-3, 20)
  cfg = _resolve(base + ["--config", str(saved)])
  assert (cfg.size, cfg.loss.style_weight, cfg.optim.num_iters) == (100, 7.0, 20)
  cfg = _resolve(base + ["--config", str(saved), "--size", "200", "--style-weight", "8"])
  assert (cfg.size, cfg.loss.style_weight) == (200, 8.0)
  # --set wins, wherever it stands on the line.
  cfg = _resolve(base[:1] + ["--set", "size=300"] + base[1:]
                 + ["--config", str(saved), "--size", "200"])
  assert cfg.size == 300


@pytest.mark.parametrize("argv,match", [
    (["photo", "--set", "stages=3"], "--stages (stages): must be 1 or 2, got 3"),
    (["optimize", "--set", "optim.num_iters=-1"], "--iters (optim.num_iters): must be >= 0"),
    (["optimize", "--init", "nowhere.png"], "--init (init): must be one of"),
    (["optimize", "--set", "optim.history_size=x"], "--set optim.history_size: bad value 'x'"),
    (["optimize", "--set", "size"], "--set expects KEY=VALUE, got 'size'"),
    (["texture", "--set", "loss.style_layers=relu9_9", "--set", "loss.style_layer_weights=1"],
     "--style-layers (loss.style_layers): unknown VGG19 layer(s) relu9_9"),
    (["train", "--set", "ema_decay=1"], "--set ema_decay: must be in [0, 1)"),
    (["stylize", "--smooth-radius", "-1"], "--smooth-radius (radius): must be >= 0"),
])
def test_library_config_errors_name_the_flag(argv, match, capsys, tmp_path):
  required = [a.replace("o.png", str(tmp_path / "o.png")) for a in REQUIRED[argv[0]]]
  assert cli.main(argv[:1] + required + argv[1:]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and match in err, err


def test_missing_or_broken_config_file_is_one_line(capsys, tmp_path):
  broken = tmp_path / "broken.json"
  broken.write_text("{not json")
  for path, match in ((tmp_path / "none.json", "cannot read --config"), (broken, "bad JSON")):
    argv = ["optimize", *REQUIRED["optimize"], "--config", str(path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_set_help_lists_keys_with_values_without_required_flags(capsys):
  assert cli.main(["optimize", "--set", "help", "--preset", "smoke", "--iters", "7"]) == 0
  lines = capsys.readouterr().out.splitlines()
  cfg = config.override(config.smoke(), {"optim.num_iters": 7})
  assert [l.split(" = ")[0] for l in lines] == config.keys(cfg)
  assert "size = 64" in lines and "optim.num_iters = 7" in lines
  assert "loss.style_layers = relu1_1,relu2_1,relu3_1,relu4_1,relu5_1" in lines


def test_train_presets_include_the_small_cpu_network(capsys):
  assert cli.main(["train", "--preset", "lite", "--set", "help"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert {"net.pixel_shuffle = True", "net.width = 0.25", "net.num_residual = 5"} <= set(lines)
  assert not config.thesis().net.pixel_shuffle  # the other presets keep the paper's layers


def test_help_shows_defaults_presets_and_where_the_keys_are(capsys):
  with pytest.raises(SystemExit):
    cli.main(["optimize", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "--size SIZE long side of the output (px) (default: 512, from the preset gatys)" in text
  assert "smoke: A tiny, fast configuration for tests." in text
  assert "nst_jax/config/slow.py, TransferConfig" in text and "'--set help'" in text
  assert "--checkpoint-every N save progress every N iterations" in text
  assert "(default: 50)" in text


def test_stylize_bucket_default_is_the_library_one():
  from nst_jax.cli import stylize  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import inference  # pylint: disable=import-outside-toplevel
  assert stylize.DEFAULT_BUCKET == inference.DEFAULT_BUCKET


_NO_JAX = """
import sys
from nst_jax import cli
for argv in ([], *[[c] for c in cli.COMMANDS]):
  try:
    cli.main(argv + ["--help"])
  except SystemExit:
    pass
print(sorted(m for m in sys.modules if m == "jax" or m.startswith("jax.")))
"""


def test_help_does_not_import_jax():
  proc = subprocess.run([sys.executable, "-c", _NO_JAX], capture_output=True, text=True,
                        check=True)
  assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


@pytest.mark.real_weights
def test_rerun_from_the_written_config_reproduces_it(data_dir, vgg_path, tmp_path, capsys):
  content = str(data_dir / "content/classic_st/tubingen.jpg")
  style = str(data_dir / "styles/van_gogh_starry_night.jpg")
  common_args = ["--content", content, "--style", style, "--vgg-weights", str(vgg_path),
                 "--no-progress"]
  first = tmp_path / "a.png"
  assert cli.main(["optimize", *common_args, "--out", str(first), "--size", "32", "--iters",
                   "0", "--set", "loss.tv_weight=5", "--set", "seed=4"]) == 0, capsys.readouterr()
  written = tmp_path / "a_config.json"
  cfg = config.from_json(config.TransferConfig, written.read_text())
  assert (cfg.size, cfg.optim.num_iters, cfg.loss.tv_weight, cfg.seed) == (32, 0, 5.0, 4)
  args = _parse(["optimize", *common_args, "--out", str(tmp_path / "b.png"), "--config",
                 str(written)])
  assert optimize_command.build_config(args) == cfg
