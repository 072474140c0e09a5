"""Shared fixtures. Shared data and weights are found through overridable paths:

- NST_JAX_SHARED: the shared folder (default: ../shared beside the repository);
- NST_JAX_VGG_WEIGHTS / NST_JAX_DATA override the weights file / data folder individually.
"""

import atexit
import gc
import os
import shutil
import socket
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from _pytest import unraisableexception

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NST_JAX_SHARED", REPO.parent / "shared"))
VGG_PATH = Path(os.environ.get("NST_JAX_VGG_WEIGHTS", SHARED / "weights" / "vgg19_conv.npz"))
DATA_DIR = Path(os.environ.get("NST_JAX_DATA", SHARED / "data"))

# One persistent XLA compilation cache for the whole run, shared by the pytest-xdist workers and
# the CLI subprocesses (they inherit the environment): many tests compile the same programs, and
# compiling, not computing, is most of the run's time on a 2-core CPU. A fresh directory per run
# unless JAX_COMPILATION_CACHE_DIR is set; the process that made it removes it.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = None
if _CACHE_ENV not in os.environ:
  _OWN_CACHE = os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="nst_jax_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])  # if jax came first
# For the same reason XLA's backend optimizations (LLVM's) are off in the tests, CLI subprocesses
# included: at test sizes they cost more compile time than they save in run time (~9 % of the
# run with -n 2 on 2 cores). Numerics are unchanged (no fast-math either way); tests whose run
# time dominates turn them back on (the ``xla_optimized`` fixture); set
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test the optimized programs everywhere.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
jax.config.update("jax_disable_most_optimizations",
                  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() not in ("0", "false", ""))
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))


# The longest tests of the default run (8-25 s each on 2 cores), longest first. They run before
# the rest: with pytest-xdist's "load" scheduling the first items are dealt to the workers in
# turn, so the long ones are shared out at the start and the run does not end on one worker
# finishing a long test while the other idles. Matched as substrings of the test ids.
LONG_FIRST = (
    "test_artistic.py::test_interrupted_run_resumes_exactly",
    "test_photoreal.py::test_cli_end_to_end[True]",
    "test_inference.py::test_smoothing_defaults_by_head_and_training",
    "test_web_jobs.py::test_a_killed_worker_s_slow_job_resumes_from_its_checkpoint",
)


def _long_rank(item) -> int:
  return next((i for i, name in enumerate(LONG_FIRST) if name in item.nodeid), len(LONG_FIRST))


def pytest_collection_modifyitems(config, items):
  items.sort(key=_long_rank)  # stable: the rest keep their order


def pytest_unconfigure(config):
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def vgg_path() -> Path:
  if not VGG_PATH.is_file():
    pytest.skip(f"VGG19 weights not found at {VGG_PATH} (set NST_JAX_VGG_WEIGHTS)")
  return VGG_PATH


@pytest.fixture(scope="session")
def vgg_params(vgg_path):
  from nst_jax.core import vgg
  return vgg.load_vgg19(vgg_path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
  if not DATA_DIR.is_dir():
    pytest.skip(f"shared data not found at {DATA_DIR} (set NST_JAX_DATA)")
  return DATA_DIR


@pytest.fixture
def xla_optimized():
  """XLA's optimizations back on for this test's in-process programs: for tests whose run time
  outweighs their compile time, e.g. the photoreal conjugate-gradient solves (25.5 s -> 18.4 s
  for the web photoreal job test alone)."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def pytest_sessionfinish(session):
  # An xdist worker still busy 5 s after the controller's shutdown gets a SIGINT from execnet.
  # What kept it busy was the garbage collections at the end (pytest collects to report
  # unraisable exceptions), each running JAX's gc callback over all of the run's compiled
  # programs; the SIGINT landing there was an unraisable KeyboardInterrupt warning. The
  # process exits next: no more cyclic GC and no JAX gc callback.
  # The controller waits for its workers to exit, so each also skips (measured on a 3-file run,
  # 2-3 s of the 5 s between the last test and the end): pytest's five final collections for
  # unraisable exceptions (``gc_collect_iterations_key``, the override point pytest keeps for
  # its own tests; nothing a worker finds after its last report reaches the controller), and,
  # once the interpreter exits, JAX's atexit clean-up, which destroys every compiled program of
  # the run (~1 s per thousand).
  if os.environ.get("PYTEST_XDIST_WORKER"):
    gc.disable()
    gc.callbacks[:] = [cb for cb in gc.callbacks
                       if getattr(cb, "__name__", "") != "_xla_gc_callback"]
    session.config.stash[unraisableexception.gc_collect_iterations_key] = 0
    atexit.register(os._exit, 0)  # registered last, so it runs first


@pytest.fixture(scope="session")
def free_port():
  """A function that returns a free TCP port on loopback, for the servers tests start."""
  def pick() -> int:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      return s.getsockname()[1]
  return pick


class SmtpCollector:
  """An aiosmtpd handler that keeps the messages it receives."""

  def __init__(self):
    self.envelopes = []

  # pylint: disable-next=invalid-name,unused-argument
  async def handle_DATA(self, server, session, envelope):
    self.envelopes.append(envelope)
    return "250 OK"


@pytest.fixture
def smtp_server(free_port):
  """A real SMTP server (aiosmtpd) on loopback: (controller, collector, logins). Logins are
  optional and succeed with the password "right"; every attempt lands in ``logins``."""
  controller_mod = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd not installed")
  handler, logins = SmtpCollector(), []

  def authenticator(server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
    from aiosmtpd.smtp import AuthResult  # pylint: disable=import-outside-toplevel
    logins.append((auth_data.login, auth_data.password))
    return AuthResult(success=auth_data.password == b"right")

  controller = controller_mod.Controller(handler, hostname="127.0.0.1", port=free_port(),
                                         authenticator=authenticator, auth_require_tls=False)
  controller.start()
  try:
    yield controller, handler, logins
  finally:
    controller.stop()


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope="session")
def arbitrary_cache(tmp_path_factory) -> Path:
  """A user cache (for $NST_JAX_CACHE) holding a tiny random arbitrary-style network (the web
  tests' "any painting"). Its weights are drawn with numpy on the shapes ``init_params`` gives,
  whose own initialization runs eagerly and took most of a minute on a busy 2-core CPU:
  He-normal kernels, unit gammas, zero biases."""
  from nst_jax import config  # pylint: disable=import-outside-toplevel
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import arbitrary  # pylint: disable=import-outside-toplevel
  tiny = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", embedding_dim=8, width=0.125,
                                num_residual=1, style_size=32)
  shapes = jax.eval_shape(lambda: arbitrary.init_params(jax.random.key(0), tiny))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    names = [str(getattr(k, "key", "")) for k in path]
    if names[-1] == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, (2.0 / fan_in) ** 0.5, leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if "gamma" in names else 0.0, np.float32)

  folder = tmp_path_factory.mktemp("arbitrary_cache")
  saved = os.environ.get("NST_JAX_CACHE")
  os.environ["NST_JAX_CACHE"] = str(folder)
  try:
    zoo.install_model("arbitrary", {"params": jax.tree_util.tree_map_with_path(draw, shapes)},
                      config.to_dict(tiny), kind="arbitrary", source="test", licence="Apache-2.0")
  finally:
    if saved is None:
      del os.environ["NST_JAX_CACHE"]
    else:
      os.environ["NST_JAX_CACHE"] = saved
  return folder
