"""The house rules of the package layout, checked on its import graph (``ast``, no imports run).

- ``config`` (a package, one module per wing) is a leaf: its modules import each other only;
- ``core`` imports no wing (``slow``, ``fast``) and not ``cli``;
- the wings do not import each other; nothing outside ``cli`` imports ``cli``;
- ``web`` (the service) may use core and the wings, not ``cli``; only ``cli`` imports ``web``;
- no module uses another module's ``_private`` names, nor a third-party library's (a private
  module such as ``jaxopt._src``, or a subclass of a library class reaching into its private
  attributes) beyond the listed, tested exceptions;
- no module is much above 400 lines.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nst_jax"
WINGS = ("slow", "fast", "sr")
MAX_LINES = 430


def _modules() -> dict[str, Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
  """(imported module, names taken from it) for every import, at any depth of the file."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out += [(a.name, []) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        full = f"{node.module}.{a.name}"
        # ``from nst_jax.core import vgg`` imports the module nst_jax.core.vgg.
        out.append((full, []) if full in MODULES else (node.module, [a.name]))
  return [(m, names) for m, names in out if m == "nst_jax" or m.startswith("nst_jax.")]


def _family(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _edges():
  for name, path in MODULES.items():
    for target, names in _imports(path):
      yield name, target, names


def test_the_layout_exists():
  for family in ("core", "slow", "fast", "sr", "cli", "web"):
    assert f"nst_jax.{family}" in MODULES
  assert "nst_jax.config" in MODULES


CONFIG_MODULES = sorted(n for n in MODULES if n == "nst_jax.config" or n.startswith("nst_jax.config."))


def test_config_is_a_leaf():
  assert len(CONFIG_MODULES) > 1  # the package and its modules (the check is not vacuous)
  bad = [(name, target) for name in CONFIG_MODULES for target, _ in _imports(MODULES[name])
         if target not in MODULES or not target.startswith("nst_jax.config.")]
  assert bad == []


@pytest.mark.parametrize("family,forbidden", [
    ("core", ("slow", "fast", "sr", "cli", "web")),
    ("slow", ("fast", "sr", "cli", "web")),
    ("fast", ("slow", "sr", "cli", "web")),
    ("sr", ("slow", "fast", "cli", "web")),
    ("web", ("cli",)),
])
def test_import_rules(family, forbidden):
  bad = [(src, dst) for src, dst, _ in _edges()
         if _family(src) == family and _family(dst) in forbidden]
  assert bad == []


def test_only_cli_imports_web():
  bad = [(src, dst) for src, dst, _ in _edges()
         if _family(dst) == "web" and _family(src) not in ("web", "cli")]
  assert bad == []


def test_nothing_outside_cli_imports_cli():
  bad = [(src, dst) for src, dst, _ in _edges() if _family(dst) == "cli" and _family(src) != "cli"]
  assert bad == []


def _module_aliases(tree: ast.AST) -> dict[str, str]:
  """Local name -> package module, for ``from nst_jax.x import mod [as alias]`` imports."""
  aliases = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nst_jax"):
      for a in node.names:
        if f"{node.module}.{a.name}" in MODULES:
          aliases[a.asname or a.name] = f"{node.module}.{a.name}"
  return aliases


def test_no_module_uses_another_modules_private_names():
  bad = []
  for name, path in MODULES.items():
    tree = ast.parse(path.read_text())
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        bad.append(f"{name}: {node.value.id}.{node.attr}")
    for target, names in _imports(path):
      bad += [f"{name}: from {target} import {n}" for n in names
              if n.startswith("_") and not n.startswith("__")]
  assert bad == []


# Third-party private names the package relies on, each with the test that fails if it moves.
THIRD_PARTY_PRIVATE = {
    # jaxopt's ZoomLineSearch re-runs the loss at the start for an aux it never returns; the
    # subclass skips that forward pass (BENCHMARKS.md, "The solver zoo").
    "nst_jax.slow.optimize: _ZoomKeepingAux reaches self._fun_with_aux":
        "tests/test_optimize.py::test_the_zoom_search_keeping_aux_saves_jaxopts_forward_pass_"
        "and_nothing_else",
    # The standard library: argparse has no public way to reach a parser's subcommands; the
    # ``--set help`` path runs in the CLI tests.
    "nst_jax.cli: argparse._SubParsersAction": "tests/test_cli_config.py (--set help)",
}


def _third_party_private_uses(name: str, tree: ast.AST) -> list[str]:
  """``lib._x`` (a private module or name of a library), and ``self._x`` in a class derived from
  a library class (``lib.Base``) where ``_x`` is not defined in the class's own body."""
  packages = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
              for a in node.names if not a.name.startswith("nst_jax")}
  out = [f"{name}: from {node.module} import" for node in ast.walk(tree)
         if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("nst_jax")
         and any(_is_private(part) for part in node.module.split("."))]
  out += [f"{name}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
          if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in packages and _is_private(node.attr)]
  for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
    if not any(isinstance(b, ast.Attribute) and isinstance(b.value, ast.Name)
               and b.value.id in packages for b in cls.bases):
      continue
    own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    own |= {t.id for n in cls.body if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Name)}
    out += sorted({f"{name}: {cls.name} reaches self.{node.attr}" for node in ast.walk(cls)
                   if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                   and node.value.id == "self" and _is_private(node.attr)
                   and node.attr not in own})
  return out


def _is_private(attr: str) -> bool:
  return attr.startswith("_") and not attr.startswith("__")


def test_third_party_private_names_are_only_the_listed_tested_ones():
  found = [u for name, path in MODULES.items()
           for u in _third_party_private_uses(name, ast.parse(path.read_text()))]
  assert sorted(set(found)) == sorted(THIRD_PARTY_PRIVATE)


def test_the_third_party_check_sees_a_subclass_reaching_into_its_base():
  source = ("import jaxopt\nimport optax\nfrom jax._src import core\n"
            "class Search(jaxopt.ZoomLineSearch):\n  _mine = 1\n"
            "  def _own(self):\n    return self._mine, self._fun_with_aux, self.__class__\n"
            "optax._src\n")
  assert _third_party_private_uses("fake", ast.parse(source)) == [
      "fake: from jax._src import", "fake: optax._src",
      "fake: Search reaches self._fun_with_aux"]


def test_modules_stay_small():
  sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
  assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_the_rules_would_catch_a_violation(tmp_path):
  """The checker itself: a wing importing its sibling, and a private call, are seen."""
  source = "from nst_jax.slow import optimize\nfrom nst_jax.core import vgg\nvgg._conv(1, 2)\n"
  path = tmp_path / "fake.py"
  path.write_text(source)
  assert ("nst_jax.slow.optimize", []) in _imports(path)
  tree = ast.parse(source)
  assert _module_aliases(tree) == {"optimize": "nst_jax.slow.optimize", "vgg": "nst_jax.core.vgg"}
  assert _family("nst_jax.slow.optimize") == "slow"


def test_config_defines_each_name_once():
  """One catalogue, one meaning per name: a preset defined twice (in one config module, or in two
  that ``config/__init__.py`` star-imports) silently replaces the first."""
  names = []
  for name in CONFIG_MODULES:
    tree = ast.parse(MODULES[name].read_text())
    names += [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    names += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
              if isinstance(t, ast.Name) and not t.id.startswith("__")]
  assert len(names) > 60  # every module is read (the check is not vacuous)
  assert sorted({n for n in names if names.count(n) > 1}) == []
