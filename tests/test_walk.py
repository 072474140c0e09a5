"""The walk of ``nst-jax stylize``: the library modules ("rooms") one command passes through, and
how often each check runs (issue 36: fewer rooms than the 12 of 2026-12-07, each check once).

The walk is traced, not read: ``sys.setprofile`` sees every Python call made while
``cli.stylize.run`` runs; a room is a module of ``nst_jax`` whose functions run there (the
``nst_jax.config`` package counts as one room, import-time code counts for none). A door is a
distinct (caller's room -> callee's room) pair. Run as a script to print the walk::

  PYTHONPATH=. python3 tests/test_walk.py
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, config
from nst_jax.core import model_file
from nst_jax.fast import inference, nets

MAX_ROOMS = 11  # issue 36: fewer than the 12 rooms of 2026-12-07 (14 by this count before)


def room_of(frame) -> str | None:
  """The room a frame runs in: its ``nst_jax`` module (config's package as one), else None."""
  name = frame.f_globals.get("__name__", "")
  if not name.startswith("nst_jax.") or frame.f_code.co_name == "<module>":
    return None
  return "nst_jax.config" if name.startswith("nst_jax.config") else name


@dataclasses.dataclass
class Walk:
  rooms: list[str] = dataclasses.field(default_factory=list)  # in the order first entered
  doors: set[tuple[str, str]] = dataclasses.field(default_factory=set)
  checks: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@contextlib.contextmanager
def traced():
  """Records the rooms, doors and check calls of the code run inside the ``with``."""
  walk = Walk()
  wrapper = config.TransferConfig.check.__code__  # check_once's cache lookup: not a check

  def profile(frame, event, arg):
    del arg
    if event != "call":
      return
    room = room_of(frame)
    if room is None:
      return
    if room not in walk.rooms:
      walk.rooms.append(room)
    caller = frame.f_back and room_of(frame.f_back)
    if caller and caller != room:
      walk.doors.add((caller, room))
    code = frame.f_code
    if code.co_name.startswith("check") and code is not wrapper:
      owner = frame.f_locals.get("self")
      what = type(owner).__name__ if owner is not None else room.rsplit(".", 1)[-1]
      walk.checks[f"{what}.{code.co_name}"] += 1

  sys.setprofile(profile)
  try:
    yield walk
  finally:
    sys.setprofile(None)


def write_model(path: Path) -> Path:
  """A tiny untrained style network's model file (what ``--model FILE.npz`` names)."""
  cfg = dataclasses.replace(config.train_smoke(), style="s.jpg", data="d")
  variables = nets.make_model(cfg.net).init(jax.random.key(0), np.zeros((1, 32, 32, 3)))
  model_file.save(path, {"params": variables["params"]}, dataclasses.asdict(cfg),
                  kind=inference.KIND, source="nst_jax", licence="test", dtype="float32")
  return path


def walk_stylize(tmp: Path) -> Walk:
  """The walk of ``nst-jax stylize --model TINY.npz --content PHOTO --out DIR``."""
  model = write_model(tmp / "tiny.npz")
  photo = tmp / "photo.png"
  Image.fromarray(np.full((24, 40, 3), 128, np.uint8)).save(photo)
  args = cli.build_parser().parse_args(["stylize", "--model", str(model), "--content",
                                        str(photo), "--out", str(tmp / "out")])
  for cls in (config.Smoothing, config.TrainConfig):
    cls.check.cache_clear()
  nets.options_checked.cache_clear()
  with traced() as walk:
    assert args._run(args) == 0  # pylint: disable=protected-access
  return walk


def test_the_walk_traces_rooms_doors_and_checks():
  def inner():
    return config.Smoothing(radius=3).check()

  config.Smoothing.check.cache_clear()
  with traced() as walk:
    inner()
    inner()  # the second is check_once's cache: no check body runs
  assert walk.rooms == ["nst_jax.config"] and walk.doors == set()
  assert walk.checks == {"Smoothing.check": 1}


# The check that runs twice on this walk, each time on another input: the memory budget for the
# file's header (before the photo is read and resized) and for the batch the network runs (where
# the library decides whether to tile). The network's options are checked on its first trace;
# later traces are a cache lookup.
TWICE = {"memory.check_fits"}


@pytest.mark.slow  # ~8 s of CPU (a compilation, traced); test_the_walk_traces_... is its sibling
def test_stylize_walks_through_few_rooms_and_checks_each_config_once(tmp_path):
  walk = walk_stylize(tmp_path)
  assert len(walk.rooms) <= MAX_ROOMS, walk.rooms
  assert {"nst_jax.cli.stylize", "nst_jax.fast.inference", "nst_jax.config"} <= set(walk.rooms)
  assert walk.checks["Smoothing.check"] == 1  # the command line's; the library's is the cache
  assert {k: v for k, v in walk.checks.items() if k not in TWICE} == {
      "Smoothing.check": 1, "memory.check_files_fit": 1, "inference.check_params_fit": 1,
      "inference.check_options": 1, "nets.check_options": 1}
  assert {k: walk.checks[k] for k in TWICE} == {k: 2 for k in TWICE}


if __name__ == "__main__":
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    w = walk_stylize(Path(d))
  print(f"{len(w.rooms)} rooms, {len(w.doors)} doors")
  for r in w.rooms:
    print(" ", r, "<-", ", ".join(sorted(a for a, b in w.doors if b == r)) or "-")
  print("checks:", dict(w.checks))
