"""Import rules of benchmarks/: scripts share bench_common, never each other or the CLI."""

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
# Not yet ported to bench_common (they import siblings and edit sys.path); drop them from here as
# they are ported.
NOT_PORTED = {"optimize_bench.py", "optimize_bench_worker.py", "torch_reference.py",
              "conv_loop_profile.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_PORTED)


def imported_modules(tree: ast.AST) -> set[str]:
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
  return names


def problems(source: str, siblings: set[str]) -> list[str]:
  """What breaks the rules in one script's source."""
  tree = ast.parse(source)
  out = [f"imports {m}" for m in sorted(imported_modules(tree))
         if m.startswith("nst_jax.cli") or m in siblings - {"bench_common"}]
  if any(isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
         and n.value.id == "sys" for n in ast.walk(tree)):
    out.append("edits sys.path")
  return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_import_only_bench_common_and_the_library(name):
  siblings = {p.stem for p in BENCH.glob("*.py")}
  assert problems((BENCH / name).read_text(), siblings) == []


def test_the_rules_would_catch_a_violation():
  bad = "import sys\nsys.path.insert(0, '.')\nimport photo_eval\nfrom nst_jax.cli.train import x\n"
  assert problems(bad, {"photo_eval", "bench_common"}) == [
      "imports nst_jax.cli.train", "imports photo_eval", "edits sys.path"]
  assert problems("import bench_common\nfrom nst_jax.core import vgg\n", {"bench_common"}) == []
