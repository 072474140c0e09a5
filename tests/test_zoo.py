"""Tests for nst_jax.core.zoo (the model registry and its one resolver) and ``nst-jax models``:
the resolver's order, installing into the user cache, sha256 checks, the shipped manifest.
numpy only: no network is built."""

from pathlib import Path

import numpy as np
import pytest

from nst_jax import cli
from nst_jax.core import digest, model_file, zoo
from nst_jax.core.errors import UserError


def _variables(value=1.0):
  return {"params": {"dense": {"kernel": np.full((2, 3), value, np.float32)}}}


@pytest.fixture
def registries(tmp_path, monkeypatch):
  """An empty shipped folder ($NST_JAX_MODELS) and user cache ($NST_JAX_CACHE); cwd a folder."""
  monkeypatch.setenv(zoo.SHIPPED_ENV, str(tmp_path / "shipped"))
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "cache"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  return tmp_path


def _ship(folder, name, kind="style", value=2.0):
  info = model_file.save(folder / f"{name}.npz", _variables(value), {}, kind=kind,
                         source=zoo.OWN_SOURCE, licence=zoo.OWN_LICENCE)
  return zoo.add_entry(folder, zoo.manifest_entry(name, folder / info["file"]))


def test_install_then_resolve_by_name(registries):
  entry = zoo.install_model("magenta_arbitrary", _variables(), {"bottleneck": 100},
                            kind="arbitrary", source="magenta", licence="Apache-2.0",
                            how="converted from a test")
  path = zoo.user_dir() / "magenta_arbitrary.npz"
  assert entry["sha256"] == digest.file_digest(path) and entry["dtype"] == "float32"
  assert (entry["kind"], entry["source"], entry["licence"]) == ("arbitrary", "magenta",
                                                                 "Apache-2.0")
  assert zoo.read_manifest(zoo.user_dir()) == [entry]
  found = zoo.resolve("magenta_arbitrary", kind="arbitrary")
  assert (found.path, found.origin, found.entry) == (path, "installed", entry)
  model = model_file.load(found.path, kind="arbitrary")
  np.testing.assert_array_equal(model.variables["params"]["dense"]["kernel"], 1.0)
  assert model.config == {"bottleneck": 100} and model.provenance["source"] == "magenta"
  zoo.install_model("magenta_arbitrary", _variables(3.0), {}, kind="arbitrary", source="m",
                    licence="l")  # again: replaced, still one entry
  assert len(zoo.read_manifest(zoo.user_dir())) == 1
  with pytest.raises(UserError, match="'arbitrary' model, not 'style'"):
    zoo.resolve("magenta_arbitrary", kind="style")


def test_install_refuses_bad_and_shipped_names(registries):
  _ship(registries / "shipped", "starry")
  for name in ("starry", "../up", "", "a b", "x.npz"):
    with pytest.raises(UserError):
      zoo.install_model(name, _variables(), {}, kind="style", source="s", licence="l")
  assert not zoo.user_dir().exists() or not any(zoo.user_dir().glob("*.npz"))


def test_resolver_order_path_workdir_shipped_installed(registries):
  zoo.install_model("dup", _variables(), {}, kind="style", source="s", licence="l")
  assert zoo.resolve("dup").origin == "installed"
  _ship(registries / "shipped", "dup")  # a later release ships the name: it wins
  assert zoo.resolve("dup").origin == "shipped"
  (registries / "cwd" / "dup").mkdir()  # a training workdir of that name
  assert zoo.resolve("dup") == (Path("dup"), "workdir", None)
  (registries / "cwd" / "dup").rmdir()
  (registries / "cwd" / "dup").write_bytes(b"a model file")  # a file: loaded as given
  assert zoo.resolve("dup") == (Path("dup"), "file", None)


def test_named_files_are_sha256_checked_and_unknown_names_listed(registries):
  _ship(registries / "shipped", "ok")
  zoo.install_model("mine", _variables(), {}, kind="sr", source="s", licence="l")
  path = zoo.user_dir() / "mine.npz"
  path.write_bytes(path.read_bytes()[:-7] + b"garbage")
  with pytest.raises(UserError, match="corrupt or replaced"):
    zoo.resolve("mine")
  path.unlink()
  with pytest.raises(UserError, match="missing"):
    zoo.resolve("mine")
  with pytest.raises(UserError, match=r"not found.*known: ok, mine") as e:
    zoo.resolve("nope")
  assert len(str(e.value).splitlines()) == 1
  with pytest.raises(UserError, match=r"known: ok;"):
    zoo.resolve("nope", kind="style")


def test_a_bad_manifest_is_a_user_error(registries):
  (registries / "shipped").mkdir()
  (registries / "shipped" / zoo.MANIFEST_NAME).write_text('{"models": [{"file": "x"}]}')
  with pytest.raises(UserError, match="not a model manifest"):
    zoo.resolve("x")


def test_models_lists_shipped_then_installed(registries, capsys):
  _ship(registries / "shipped", "ours")
  zoo.install_model("theirs", _variables(), {}, kind="arbitrary", source="magenta",
                    licence="Apache-2.0")
  assert cli.main(["models", "--verify"]) == 0
  lines = capsys.readouterr().out.splitlines()
  entries = zoo.list_models()
  assert len(lines) == 2
  for line, entry in zip(lines, entries):
    assert line.split()[:5] == [entry["name"], entry["kind"], entry["origin"], entry["source"],
                                entry["licence"]]
    assert f"sha256:{entry['sha256'][:12]}" in line
  assert cli.main(["models", "--kind", "arbitrary"]) == 0
  assert capsys.readouterr().out.split()[0] == "theirs"


def test_models_lists_each_shipped_model_with_its_scale_and_training_crop(capsys, tmp_path,
                                                                         monkeypatch):
  monkeypatch.delenv(zoo.SHIPPED_ENV, raising=False)
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))  # no installed models
  assert cli.main(["models"]) == 0
  lines = capsys.readouterr().out.splitlines()
  entries = zoo.read_manifest()
  assert len(lines) == len(entries)
  for line, entry in zip(lines, entries):
    size = entry.get("train_size") or entry["config"]["size"]  # sr entries: the HR crop
    assert line.split()[:3] == [entry["name"], entry["kind"], "shipped"]
    assert f"@{size}px" in line
    assert (f" x{entry.get('scale')} " in line) == (entry["kind"] == "sr")


def test_every_shipped_model_is_in_the_current_format(monkeypatch):
  monkeypatch.delenv(zoo.SHIPPED_ENV, raising=False)
  for entry in zoo.read_manifest():
    found = zoo.resolve(entry["name"], kind=entry["kind"])  # sha256-checked
    header = model_file.read_header(found.path)
    assert (header["format"], header["dtype"], header["kind"]) == (
        model_file.FORMAT, "float16", entry["kind"])
    assert entry["source"] == header["provenance"]["source"] == zoo.OWN_SOURCE
    assert entry["licence"] == header["licence"] and header["provenance"]["how"]


def test_the_web_catalogue_offers_shipped_installed_and_user_files(registries):
  from nst_jax import config  # pylint: disable=import-outside-toplevel
  from nst_jax.web import catalog  # pylint: disable=import-outside-toplevel
  _ship(registries / "shipped", "ours")
  _ship(registries / "shipped", "upscaler", kind="sr")  # another kind: not offered
  zoo.install_model("theirs", _variables(), {}, kind="style", source="s", licence="l",
                    meta={"styles": [{"name": "wave"}]})
  (registries / "data" / "models").mkdir(parents=True)
  model_file.save(registries / "data" / "models" / "mine.npz", _variables(), {},
                  kind="style", source="me", licence="l")
  (registries / "data" / "models" / "junk.npz").write_bytes(b"not a model")
  offered = catalog.models(config.WebConfig(data_dir=str(registries / "data")))
  assert [(m["name"], m["source"], m["path"]) for m in offered] == [
      ("ours", "shipped", "ours"), ("theirs", "installed", "theirs"),
      ("user:mine", "user", str(registries / "data" / "models" / "mine.npz"))]
  assert offered[1]["styles"] == ["wave"]
