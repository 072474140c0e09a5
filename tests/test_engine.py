"""Tests for nst_jax.core.engine with a tiny fake task: a linear model on mock (x, y) pairs.

What every trainer relies on: steps update the state without recompiling, a resumed run equals an
uninterrupted one bit for bit, a workdir of another run is refused in one line, Ctrl-C and
SIGTERM save the last finished step, and the state's abstract shapes match the real ones.
"""

import dataclasses
import functools
import json
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nst_jax import config
from nst_jax.core import checkpoint, engine, sharding
from nst_jax.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class FakeConfig:
  width: int = 3
  num_steps: int = 4
  batch_size: int = 2
  log_every: int = 1
  checkpoint_every: int = 2
  keep_checkpoints: int = 5
  prefetch: int = 0
  seed: int = 0


class FakeBatches:
  """Batches ``start_step, ...`` as a pure function of the step; ``hook(step)`` runs before each
  batch is returned (to interrupt a run)."""

  def __init__(self, width, batch_size, start_step, num_steps, hook):
    self.width, self.batch_size, self.hook = width, batch_size, hook
    self.steps = iter(range(start_step, start_step + num_steps))
    self.last_wait = 0.0

  def __iter__(self):
    return self

  def __next__(self):
    step = next(self.steps)
    self.hook(step)
    x = np.random.default_rng(step).normal(size=(self.batch_size, self.width)).astype(np.float32)
    return {"x": x, "y": x.sum(axis=1, keepdims=True)}  # a pytree batch, as pairs would be

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass


@dataclasses.dataclass
class FakeData:
  width: int
  hook: object = lambda step: None

  def batches(self, batch_size, *, start_step, num_steps, prefetch, shard_index, shard_count):
    del prefetch, shard_index, shard_count
    return FakeBatches(self.width, batch_size, start_step, num_steps, self.hook)


def make_task(cfg=FakeConfig(), hook=lambda step: None, traces=None):
  """A linear model y = x w + b (Adam), its loss, and a resume check on ``width``."""
  model = nn.Dense(1)
  traces = {"n": 0} if traces is None else traces

  def init_variables(key):
    return model.init(key, jnp.zeros((1, cfg.width)))

  def train_step(state, batch, scale, key):
    traces["n"] += 1  # runs once per trace, not per step

    def loss_fn(params):
      pred = model.apply({"params": params}, batch["x"])  # [B, 1]
      noise = jax.random.normal(jax.random.fold_in(key, state.step), pred.shape)
      return scale * jnp.mean(jnp.square(pred + 1e-3 * noise - batch["y"]))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return engine.apply_gradients(state, tx, grads, {}), {"total": loss}

  tx = optax.adam(0.1)
  return engine.Task(
      cfg=cfg, tx=tx, init_variables=init_variables, train_step=train_step,
      make_consts=lambda: (jnp.float32(2.0), engine.make_key(cfg.seed)),
      dataset=FakeData(cfg.width, hook), meta={"kind": "fake", "config": dataclasses.asdict(cfg)},
      check_resumable=lambda meta, workdir: engine.check_same_settings(
          FakeConfig(**meta["config"]), cfg, ("width",), workdir), name="fake")


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """A four-step run: (workdir, final state, traces of its step)."""
  workdir, traces = tmp_path_factory.mktemp("full"), {"n": 0}
  state = engine.train(make_task(traces=traces), workdir, progress=False)
  return workdir, state, traces["n"]


def test_steps_train_the_state_without_recompiling_and_write_the_run(uninterrupted):
  workdir, state, traces = uninterrupted
  assert traces == 1  # one trace for all four steps
  assert int(state.step) == 4
  assert checkpoint.complete_steps(workdir / "checkpoints") == [2, 4]
  losses = np.loadtxt(workdir / "losses.csv", delimiter=",", skiprows=1)[:, 1]
  assert losses.shape == (4,) and np.all(np.isfinite(losses))
  initial = engine.init_train_state(make_task().init_variables, make_task().tx,
                                    engine.make_key(0), sharding.make_mesh())
  assert all(np.all(a != b) for a, b in zip(_leaves(state.params), _leaves(initial.params)))
  assert json.loads((workdir / "config.json").read_text()) == config.to_dict(FakeConfig())
  with checkpoint.Checkpoints(workdir, read_only=True) as ckpts:
    assert ckpts.restore_meta(4) == {"kind": "fake", "config": dataclasses.asdict(FakeConfig()),
                                     "step": 4}


def test_resumed_run_equals_uninterrupted(uninterrupted, tmp_path):
  workdir, state, _ = uninterrupted
  engine.train(make_task(FakeConfig(num_steps=2)), tmp_path, progress=False)
  resumed = engine.train(make_task(), tmp_path, progress=False)
  for a, b in zip(_leaves(resumed), _leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert (tmp_path / "losses.csv").read_text() == (workdir / "losses.csv").read_text()


def test_a_workdir_of_another_run_is_refused_in_one_line(uninterrupted):
  workdir, _, _ = uninterrupted
  with pytest.raises(UserError, match="different width") as e:
    engine.train(make_task(FakeConfig(width=5, num_steps=6)), workdir, progress=False)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_an_interrupted_run_saves_its_last_step_and_resumes_exactly(uninterrupted, tmp_path, how):
  _, state, _ = uninterrupted

  def interrupt(step):
    if step == 1 and how == "sigterm":
      os.kill(os.getpid(), signal.SIGTERM)  # honoured once step 1 is done
    elif step == 1:
      raise KeyboardInterrupt  # before step 1 runs

  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(engine.Terminated if how == "sigterm" else KeyboardInterrupt):
    engine.train(make_task(hook=interrupt), tmp_path, progress=False)
  assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back
  assert checkpoint.latest_step(tmp_path) == (2 if how == "sigterm" else 1)
  resumed = engine.train(make_task(), tmp_path, progress=False)
  for a, b in zip(_leaves(resumed), _leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)


def test_the_abstract_state_matches_a_real_one_and_starts_from_given_variables():
  task, mesh = make_task(), sharding.make_mesh()
  state = engine.init_train_state(task.init_variables, task.tx, engine.make_key(0), mesh)
  abstract = engine.abstract_train_state(task.init_variables, task.tx, mesh)
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
    assert (a.shape, a.dtype, a.sharding) == (b.shape, b.dtype, b.sharding)
  given = {"params": jax.tree.map(lambda p: p + 1.0, state.params)}
  started = engine.init_train_state(task.init_variables, task.tx, engine.make_key(0), mesh, given)
  for a, b in zip(_leaves(started.params), _leaves(given["params"]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert started.params["kernel"] is not given["params"]["kernel"]  # own buffers: donation
  assert int(started.step) == 0 and started.batch_stats == {}


def test_schedules():
  make = functools.partial(engine.make_schedule, learning_rate=1e-3, num_steps=100)
  assert float(make()(77)) == pytest.approx(1e-3)
  step = make(schedule="step")
  assert float(step(74)) == pytest.approx(1e-3) and float(step(76)) == pytest.approx(1e-4)
  cos = make(schedule="cosine", warmup_steps=10)
  assert float(cos(0)) == 0.0 and float(cos(10)) == pytest.approx(1e-3)
  assert float(cos(100)) == pytest.approx(0.0, abs=1e-9) and 0 < float(cos(55)) < 1e-3
  # Without warm-up, "cosine" is optax's cosine decay bit for bit (what SR runs trained with).
  ours, optax_cosine = make(schedule="cosine"), optax.cosine_decay_schedule(1e-3, 100)
  for step in (0, 1, 37, 99, 100, 119):
    assert float(ours(step)) == float(optax_cosine(step))


def test_processes_of_a_multi_host_run_agree_to_stop_at_a_logging_step(tmp_path, monkeypatch):
  cfg = FakeConfig(num_steps=10, log_every=4)
  loop = engine.Loop(make_task(cfg), tmp_path, sharding.make_mesh(), None, 0)
  stop = engine.StopSignal()  # this process got no signal; the other one did
  monkeypatch.setattr(engine.jax, "process_count", lambda: 2)
  monkeypatch.setattr(engine.multihost_utils, "process_allgather",
                      lambda x: np.stack([x, np.asarray(True)]))
  assert [s for s in range(1, 11) if loop.should_stop(stop, s)] == [4, 8, 10]
  loop.log.close()
