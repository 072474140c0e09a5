"""The docs tell the truth about the tree: every repository path that README.md, the user guides,
BENCHMARKS.md, checkpoints/README.md and the docstrings name exists, and README's layout section
names every module of the package."""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nst_jax"
TOP = r"(?:nst_jax|tests|benchmarks|docs|checkpoints|\.ci)"
WING = r"(?:core|slow|fast|sr|web|cli)"  # ``fast/layers.py`` means nst_jax/fast/layers.py
# A path, and the characters after it: ``results/web_overhead{_run1,}.json`` or
# ``checkpoints/<name>.npz`` name a family of files by their common start.
PATH = re.compile(rf"(?<![\w./-])({TOP}/[\w*./-]*[\w*/]|{WING}/[\w*]+\.py)(\.?.?)")
FAMILY = ("{", "<", "[")


def _docs() -> list[Path]:
  return [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md")),
          REPO / "checkpoints" / "README.md"]


def _sources() -> list[Path]:
  return sorted([*PACKAGE.rglob("*.py"), *(REPO / "tests").glob("*.py"),
                 *(REPO / "benchmarks").glob("*.py"), REPO / "optimize.py", REPO / "train.py"])


def _docstrings(path: Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      text = ast.get_docstring(node, clean=False)
      if text:
        yield text


def _comments(path: Path):
  """Each comment block (consecutive comment lines joined, so a number split over two lines
  is seen whole)."""
  block, last = [], None
  for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
    if tok.type == tokenize.COMMENT:
      if last is not None and tok.start[0] != last + 1 and block:
        yield " ".join(block)
        block = []
      block.append(tok.string.lstrip("#").strip())
      last = tok.start[0]
  if block:
    yield " ".join(block)


def _named_paths():
  for path in _docs():
    for ref, after in PATH.findall(path.read_text()):
      yield path, ref, after
  for path in _sources():
    for text in _docstrings(path):
      for ref, after in PATH.findall(text):
        yield path, ref, after


def _exists(ref: str, after: str, files: list[str]) -> bool:
  ref = ref.rstrip(".")
  if not re.match(TOP, ref):
    ref = "nst_jax/" + ref
  if after.lstrip(".")[:1] in FAMILY:
    return any(f.startswith(ref) for f in files)
  return any(REPO.glob(ref)) if "*" in ref else (REPO / ref).exists()


# A measurement or a pointer to an issue in a docstring (they go to BENCHMARKS.md or
# docs/research/): "issue 23", "~7 + 17 ms", "0.2 s", "68 hours", "1.6x faster". Shapes such as
# [B, 2h, 2w, C] and "3 s^2 channels" are not timings; years in references are not issues.
ISSUE = re.compile(r"\b[Ii]ssues? #?\d+|(?<![\w&])#\d+\b")
TIMING = re.compile(r"(?<![\w.^])\d+(?:\.\d+)?(?:\s?(?:ms|µs|us|seconds?|minutes?|mins?|hours?)"
                    r"|\s(?:s|h))(?![\w^])|\b\d+(?:\.\d+)?x (?:faster|slower|cheaper)\b")


def _measurements(text: str) -> list[str]:
  return [m.group(0) for rx in (ISSUE, TIMING) for m in rx.finditer(text)]


def test_no_docstring_or_comment_cites_an_issue_or_a_measurement():
  found = sorted({f"{path.relative_to(REPO)}: {m}" for path in sorted(PACKAGE.rglob("*.py"))
                  for text in (*_docstrings(path), *_comments(path))
                  for m in _measurements(text)})
  assert not found, ("measurements and issue numbers belong in BENCHMARKS.md or docs/research/, "
                     "not docstrings or comments:\n" + "\n".join(found))


def test_the_comment_scan_joins_a_block_and_splits_blocks(tmp_path):
  src = tmp_path / "m.py"
  src.write_text("x = 1  # takes 38.6\n# ms at 2x3\ny = 2\n\n# second block\n")
  assert list(_comments(src)) == ["takes 38.6 ms at 2x3", "second block"]
  assert _measurements(next(_comments(src))) == ["38.6 ms"]


def test_the_measurement_check_sees_timings_and_issues_but_not_shapes_or_years():
  assert _measurements("spares ~7 + 17 ms at 512 px (issue 23); 0.2 s; 68 hours; 1.6x faster; "
                       "see #12") == ["issue 23", "#12", "17 ms", "0.2 s", "68 hours",
                                      "1.6x faster"]
  assert _measurements("[B, 2h, 2w, O] -> [H - 2s, W - 2s]; 3 s^2 channels; Gatys et al. 2016, "
                       "CVPR 2017; 512 px; every 10 steps; &#12;") == []


def test_every_repository_path_named_in_the_docs_and_docstrings_exists():
  files = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if ".git" not in p.parts]
  named = list(_named_paths())
  assert len(named) > 100  # the scan finds the references (it is not vacuous)
  missing = sorted({f"{p.relative_to(REPO)}: {ref}" for p, ref, after in named
                    if not _exists(ref, after, files)})
  assert not missing, "paths named but not in the tree:\n" + "\n".join(missing)


def test_the_path_check_catches_a_missing_file():
  files = ["nst_jax/core/zoo.py", "benchmarks/results/web_overhead_run1.json"]
  assert _exists("core/zoo.py", "", files)
  assert not _exists("nst_jax/train_config.py", "", files)
  assert _exists("benchmarks/results/web_overhead", "{", files)
  assert not _exists("benchmarks/results/web_overhead", " ", files)
  found = [m[0] for m in PATH.findall("see `nst_jax/conv.py`, fast/layers.py and ../shared/x.py")]
  assert found == ["nst_jax/conv.py", "fast/layers.py"]


def _layout_entries() -> dict[str, str]:
  """README's layout block: each top-level entry (``core/``, ``config/``) -> its text."""
  text = (REPO / "README.md").read_text()
  block = re.search(r"## Layout\n[^#]*?```\n(.*?)```", text, re.S)
  assert block, "README.md has no '## Layout' code block"
  entries, current = {}, None
  for line in block.group(1).splitlines():
    head = re.match(r"  (\S+)", line)
    if head and not line.startswith("   "):
      current = head.group(1)
      entries[current] = line[len(head.group(0)):]
    elif current is not None:
      entries[current] += " " + line
  return entries


def _modules_of(folder: Path) -> list[str]:
  names = [p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")]
  return sorted(names + [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()
                         or (p.is_dir() and any(p.glob("*.py")))])


@pytest.mark.parametrize("folder", sorted(p.name for p in PACKAGE.iterdir()
                                          if (p / "__init__.py").is_file()))
def test_the_readme_layout_names_every_module(folder):
  entries = _layout_entries()
  assert f"{folder}/" in entries, f"README layout has no '{folder}/' entry"
  words = set(re.findall(r"[A-Za-z_][\w]*", entries[f"{folder}/"]))
  missing = [m for m in _modules_of(PACKAGE / folder) if m not in words]
  assert not missing, f"README layout's '{folder}/' does not name: {', '.join(missing)}"


def test_the_readme_layout_names_only_modules_that_exist():
  entries = _layout_entries()
  for folder in [e[:-1] for e in entries if e.endswith("/") and e != "nst_jax/"]:
    assert (PACKAGE / folder).is_dir() or (REPO / folder).is_dir(), folder
