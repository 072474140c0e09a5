"""Import rules of benchmarks/ (scripts share bench_common, never each other or the CLI), and the
GPU suite run end to end at toy sizes (slow)."""

import ast
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
# Not yet ported to bench_common (they import siblings and edit sys.path); drop them from here as
# they are ported.
NOT_PORTED = {"optimize_bench.py", "optimize_bench_worker.py", "torch_reference.py",
              "conv_loop_profile.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_PORTED)


def _goal_count() -> int:
  """The number of goals in gpu_report.py's GOALS table (read, not imported)."""
  tree = ast.parse((BENCH / "gpu_report.py").read_text())
  table = next(n.value for n in tree.body if isinstance(n, ast.Assign)
               and getattr(n.targets[0], "id", "") == "GOALS")
  return len(table.elts)


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


@pytest.mark.slow
def test_the_gpu_suite_runs_every_step_at_toy_sizes_from_a_bundle(tmp_path, vgg_path, data_dir):
  """`SMOKE=1 benchmarks/gpu_device.sh`: the device tool's path (weights, images and env from a
  bundle, not ../shared), every step at toy sizes on the CPU, a report with every goal's number
  from the expected backend, and one archive of the results."""
  bundle, back, results = tmp_path / "bundle", tmp_path / "back", tmp_path / "res" / "gpu"
  env = dict(os.environ, NST_JAX_VGG_WEIGHTS=str(vgg_path), NST_JAX_DATA=str(data_dir),
             PYTHONPATH=os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")]))
  subprocess.run([sys.executable, str(BENCH / "gpu_bundle.py"), "--out", str(bundle),
                  "--no-wheels"], env=env, check=True, timeout=120)
  manifest = json.loads((bundle / "MANIFEST.json").read_text())
  with np.load(bundle / "cache" / "vgg19_conv.npz") as w:
    assert w["conv5_1/kernel"].dtype == np.float16 and np.any(w["conv5_1/kernel"])
    assert not np.any(w["conv5_4/kernel"])  # unused by every benchmark: zeros compress away
  assert manifest["vgg19"]["zeroed"] == ["conv5_2", "conv5_3", "conv5_4"]

  env = {k: v for k, v in os.environ.items() if not k.startswith("NST_JAX_")}
  proc = subprocess.run(["bash", str(BENCH / "gpu_device.sh")], capture_output=True, text=True,
                        timeout=900, env=dict(env, SMOKE="1", BUNDLE=str(bundle), OUT=str(back),
                                              RESULTS=str(results)))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = json.loads((back / "summary.json").read_text())
  assert [s["step"] for s in summary] == ["optimize", "slowmem", "matting", "inference",
                                          "inference_bf16", "train", "train_bf16", "photoreal",
                                          "sr", "arbitrary", "video", "tile", "report"]
  assert all(s["exit"] == 0 for s in summary)
  report = json.loads((back / "gpu_report.json").read_text())
  assert report["problems"] == [] and len(report["rows"]) == _goal_count()
  assert all(r["value"] > 0 and r["backend"] == "cpu" for r in report["rows"])
  with tarfile.open(back / "gpu_results.tgz") as tar:
    names = set(tar.getnames())
  assert {"gpu/sr_speed_bench.json", "gpu/photo_timing.json", "gpu/optimize.log"} <= names
  # The same results read as a GPU run's: every number is flagged as the CPU's, exit code 1.
  proc = subprocess.run([sys.executable, str(BENCH / "gpu_report.py"), str(results)],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 1 and proc.stderr.count("expected 'gpu'") == _goal_count()
