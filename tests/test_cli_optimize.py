"""`nst-jax optimize` end to end, and its answers to bad input (one line, exit 2, no files)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nst_jax import cli


@pytest.fixture
def inputs(data_dir, vgg_path, tmp_path):
  content = data_dir / "content/classic_st/tubingen.jpg"
  style = data_dir / "styles/van_gogh_starry_night.jpg"
  return {"content": str(content), "style": str(style), "weights": str(vgg_path),
          "out": tmp_path / "out" / "result.png"}


def _args(inp, *extra, out=None):
  return ["optimize", "--content", inp["content"], "--style", inp["style"], "--vgg-weights",
          inp["weights"], "--out", str(out or inp["out"]), "--size", "40", "--iters", "6",
          "--chunk", "3", "--no-progress", *extra]


@pytest.mark.real_weights
def test_cli_writes_image_of_requested_size_history_and_plot(inputs, capsys):
  assert cli.main(_args(inputs, "--optimizer", "adam", "--loss-log",
                        str(inputs["out"].with_suffix(".json")))) == 0
  out = inputs["out"]
  w, h = Image.open(out).size
  assert max(w, h) == 40 and Image.open(out).mode == "RGB"
  plot = out.with_name("result_losses.png")
  assert Image.open(plot).format == "PNG"
  import json
  history = json.loads(out.with_suffix(".json").read_text())
  assert set(history) == {"content", "style", "tv", "total"} and len(history["total"]) == 6
  assert history["total"][-1] < history["total"][0]
  assert "wrote" in capsys.readouterr().err


@pytest.mark.real_weights
@pytest.mark.parametrize("extra, rows", [(["--iters", "0"], 0),
                                         pytest.param(["--size", "64", "--scales", "2",
                                                       "--level-iters", "0,3"], 3,
                                                      marks=pytest.mark.slow)])
def test_cli_levels_without_iterations_run_cleanly(inputs, capsys, extra, rows):
  # Issue 23: an iteration list with zeros runs (the level passes its image on), no traceback.
  assert cli.main(_args(inputs, *extra)) == 0, capsys.readouterr().err
  assert Image.open(inputs["out"]).mode == "RGB"
  log = inputs["out"].with_name("result_losses.csv")
  assert (len(log.read_text().splitlines()) - 1 if rows else log.exists()) == rows


def _expect_error(capsys, argv, match):
  code = cli.main(argv) if "optimize" in argv else None
  err = capsys.readouterr().err
  assert code == 2, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("bad", ["missing", "empty", "garbage", "truncated"])
def test_bad_images(inputs, capsys, tmp_path, bad):
  path = tmp_path / "bad.jpg"
  if bad == "empty":
    path.write_bytes(b"")
  elif bad == "garbage":
    path.write_bytes(b"not an image at all")
  elif bad == "truncated":
    path.write_bytes(open(inputs["content"], "rb").read()[:2000])
  inputs = dict(inputs, style=str(path))
  match = {"missing": "not found", "empty": "empty", "garbage": "not a readable image",
           "truncated": "corrupt or truncated"}[bad]
  _expect_error(capsys, _args(inputs), match)
  assert not inputs["out"].parent.exists()


@pytest.mark.parametrize("extra,match", [
    (["--style-weight", "-1"], "non-negative"),
    (["--optimizer", "sgd"], "invalid choice"),
    (["--style-layers", "relu9_1"], "unknown VGG19 layer"),
    (["--init", "nowhere.png"], "--init"),
    (["--style-blend-weights", "1,2"], "--style-blend-weights"),
    (["--max-pixels", "100"], "too large"),
    (["--size", "0"], "positive"),
])
def test_bad_flags(inputs, capsys, extra, match):
  with pytest.raises(SystemExit) if match in ("invalid choice", "non-negative", "positive") \
      else _nullcontext():
    _expect_error(capsys, _args(inputs, *extra), match)
  assert not inputs["out"].parent.exists()


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def test_argparse_errors_exit_2_with_one_line(inputs):
  proc = subprocess.run([sys.executable, "-m", "nst_jax.cli", *_args(inputs, "--optimizer", "sgd")],
                        capture_output=True, text=True)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert len([l for l in proc.stderr.splitlines() if "error" in l]) == 1


def test_missing_weights_name_the_fix(inputs, capsys, monkeypatch, tmp_path):
  monkeypatch.delenv("NST_JAX_VGG_WEIGHTS", raising=False)
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "empty_cache"))
  argv = [a for a in _args(inputs) if a not in ("--vgg-weights", inputs["weights"])]
  _expect_error(capsys, argv, "nst-jax weights download")
  _expect_error(capsys, _args(dict(inputs, weights=str(tmp_path / "no.npz"))), "not found")


def test_bad_output_extension(inputs, capsys, tmp_path):
  _expect_error(capsys, _args(inputs, out=tmp_path / "x.docx"), "extension")


@pytest.mark.real_weights
def test_nan_loss_stops_and_keeps_last_good_image(inputs, capsys):
  argv = _args(inputs, "--optimizer", "adam", "--learning-rate", "1e30", "--style-weight", "1e30")
  _expect_error(capsys, argv, "NaN")
  img = np.asarray(Image.open(inputs["out"]))
  assert img.shape[2] == 3
