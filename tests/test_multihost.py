"""Multi-host training, really run: two local processes (CPU, gloo collectives over loopback)
train two steps of the smoke preset through ``nst-jax train --distributed`` and must end with the
parameters of one process training on the same global batch.

The reference is one process with two CPU devices: the same partitioned program, so the two runs
must agree to float tolerance (in practice bit for bit; against a single device Adam's first
steps differ by +-lr in the biases before instance norm, whose gradients are rounding noise; see
tests/test_multidevice.py). The losses of step 0 and 1 are compared too: they differ unless each
process reads its own part of the same global batch.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import config
from nst_jax.cli import main as cli_main
from nst_jax.core import checkpoint
from nst_jax.core.errors import UserError
from nst_jax.core import data, sharding
from nst_jax.fast import nets, train_state

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 400  # for all three processes; about 30 s of CPU time in all
STEPS = 2
# The smoke preset, checkpointed after each step, with VGG's first two blocks only (as in
# tests/test_multidevice.py): compiling the step is most of each process' time.
OVERRIDES = (f"num_steps={STEPS}", "checkpoint_every=1", "loss.content_layers=relu2_2",
             "loss.style_layers=relu1_1,relu2_1", "loss.style_layer_weights=1,1")


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_", "JAX_PROCESS_", "XLA_FLAGS"))}
  # Compiled programs are not shared with the single-process tests' cache: each run here
  # compiles its own (the 2-process and the 2-device programs must not stand in for each other).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return dict(env, JAX_PLATFORMS="cpu", **extra)


def _start_train(workdir: Path, vgg_path: Path, data_dir: Path, env: dict,
                 distributed: bool, log: Path) -> subprocess.Popen:
  argv = [sys.executable, "-m", "nst_jax.cli", "train", "--preset", "smoke", "--no-progress",
          "--style", str(data_dir / "styles" / "hokusai_great_wave.jpg"),
          "--data", str(data_dir / "train" / "t91"), "--workdir", str(workdir),
          "--vgg-weights", str(vgg_path)]
  argv += [a for kv in OVERRIDES for a in ("--set", kv)]
  argv += ["--distributed"] if distributed else []
  with open(log, "w") as f:  # a file, not a pipe: nothing blocks on a full pipe while we poll
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)


def _finish(procs: list[subprocess.Popen], logs: list[Path]) -> list[str]:
  """Waits for every process; past the deadline, or once one fails (its peer would wait for it
  in a collective), kills the rest. Returns their outputs."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while (any(p.poll() is None for p in procs) and time.monotonic() < deadline
           and not any(p.returncode for p in procs)):
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  outs = [log.read_text() for log in logs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, f"{p.args}\n{out[-3000:]}"
  return outs


def _load_params(workdir: Path, step: int):
  """The parameters and meta of the checkpoint at ``step``, on this process' first device."""
  cfg = config.train_smoke()
  model, tx = nets.make_model(cfg.net), train_state.make_optimizer(cfg)
  repl = sharding.replicated(sharding.make_mesh(jax.devices()[:1]))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                          train_state.abstract_train_state(model, tx))
  with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
    state, meta = ckpts.restore(step, abstract)
  return jax.device_get(state.params), meta


def _losses(workdir: Path) -> np.ndarray:
  return np.loadtxt(workdir / "losses.csv", delimiter=",", skiprows=1, ndmin=2)  # [steps, 1 + k]


@pytest.mark.slow  # two real processes (~40 s on 2 cores); by default: the batch-sharding
# tests below and test_engine's multi-host stop agreement
def test_two_processes_train_like_one_process_with_the_same_global_batch(vgg_path, data_dir,
                                                                          tmp_path, free_port):
  port = free_port()
  multi, single = tmp_path / "two_processes", tmp_path / "one_process"
  coordinator = f"127.0.0.1:{port}"
  logs = [tmp_path / f"log{i}.txt" for i in range(3)]
  procs = [_start_train(multi, vgg_path, data_dir, _env(
      JAX_COORDINATOR_ADDRESS=coordinator, JAX_COORDINATOR_BIND_ADDRESS=coordinator,
      JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), JAX_NUM_CPU_DEVICES="1",
      JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"), distributed=True, log=logs[i]) for i in range(2)]
  procs.append(_start_train(single, vgg_path, data_dir, _env(JAX_NUM_CPU_DEVICES="2"),
                            distributed=False, log=logs[2]))
  outs = _finish(procs, logs)

  # One set of checkpoints (written together), one config, one log; process 1 prints nothing.
  assert checkpoint.complete_steps(multi / checkpoint.CHECKPOINT_SUBDIR) == [1, STEPS]
  assert (multi / "config.json").is_file() and (multi / "samples.png").is_file()
  assert [f"trained {STEPS} steps" in out for out in outs] == [True, False, True]
  assert len(list((multi / "tb").iterdir())) == 1

  for step in (1, STEPS):
    got, meta = _load_params(multi, step)
    want, _ = _load_params(single, step)
    assert meta["step"] == step
    assert _max_abs_diff(got, want) < 1e-6
  moved = _max_abs_diff(_load_params(single, 1)[0], want)
  assert moved > 5e-4  # one Adam step of lr 1e-3
  loss_multi, loss_single = _losses(multi), _losses(single)
  assert loss_multi.shape == (STEPS, loss_single.shape[1])
  np.testing.assert_allclose(loss_multi, loss_single, rtol=1e-5)
  assert not np.allclose(loss_multi[0], loss_multi[1])  # two different batches


def _max_abs_diff(a, b) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """7 synthetic photos of a few sizes."""
  root = tmp_path_factory.mktemp("photos")
  rng = np.random.default_rng(0)
  for i in range(7):
    h, w = 12 + 2 * i, 20 - i
    Image.fromarray((rng.uniform(size=(h, w, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
  return root


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_parts_of_three_processes_make_the_global_batch(photos, prefetch):
  ds = data.FolderDataset(photos, size=8, seed=3)
  steps, local, count = 4, 2, 3  # 24 samples: several epochs of 7 photos
  whole = [ds.get_batch(s, local * count) for s in range(1, 1 + steps)]
  parts = []
  for p in range(count):
    with ds.batches(local, start_step=1, num_steps=steps, prefetch=prefetch, shard_index=p,
                    shard_count=count) as it:
      parts.append(list(it))
  for s in range(steps):
    np.testing.assert_array_equal(np.concatenate([parts[p][s] for p in range(count)]), whole[s])
  assert not np.array_equal(parts[0][0], parts[1][0])


def test_an_invalid_shard_is_a_user_error(photos):
  ds = data.FolderDataset(photos, size=8)
  with pytest.raises(UserError, match="shard 2 of 2"):
    ds.batches(1, shard_index=2, shard_count=2)


def test_distributed_args_come_from_the_environment():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": " 3 "}
  assert sharding.distributed_args(env) == {"coordinator_address": "10.0.0.1:1234",
                                            "num_processes": 4, "process_id": 3}
  assert sharding.distributed_args({}) == {}  # left to JAX's cluster detection
  with pytest.raises(UserError, match="JAX_PROCESS_ID must be an integer"):
    sharding.distributed_args(dict(env, JAX_PROCESS_ID="first"))


def test_a_bad_process_count_is_a_one_line_error_with_exit_code_2(monkeypatch, capsys, tmp_path):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  code = cli_main(["train", "--style", "s.jpg", "--data", str(tmp_path), "--workdir",
                   str(tmp_path / "w"), "--distributed"])
  err = capsys.readouterr().err
  assert code == 2
  assert err.count("\n") == 1 and "JAX_NUM_PROCESSES must be an integer" in err
