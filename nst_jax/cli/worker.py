"""``nst-jax worker``: one worker process of the web service (runs queued jobs one at a time).

Synopsis::

  nst-jax worker --data-dir data                          # the embedded defaults (SQLite)
  nst-jax worker --database-url postgresql://db/nst --queue-url redis://q:6379/0 \\
      --storage-url file:///mnt/nst/blobs                  # one of N worker hosts

On start it re-enqueues the jobs a killed process left behind (queued, or running with a stale
heartbeat) and resumes slow jobs from their optimizer checkpoints. SIGINT/SIGTERM stop it; a
worker started by ``serve`` also stops when ``serve`` dies, however it died.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading

from nst_jax import config
from nst_jax.cli import common

PARENT_ENV = "NST_JAX_PARENT_PID"  # set by serve: the worker stops when that process is gone
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
HELP = "run one worker process of the web service (nst-jax serve starts them for you)"
SERVICE_FLAGS = ("data_dir", "database_url", "queue_url", "storage_url", "base_url",
                 "forwarded_allow_ips", "secure_cookies", "admin_token")  # WebConfig fields
# Flag (argparse dest) -> WebConfig key (serve's own flags included: --host, --port, --workers).
FLAGS = {**{d: k for d, k in common.field_flags(config.WebConfig).items()
            if not k.startswith("ssl_")}, **common.field_flags(config.SmtpConfig, "smtp.")}


def add_service_flags(parser: argparse.ArgumentParser) -> None:
  """The flags ``serve`` and ``worker`` share (defaults: ``config.WebConfig``)."""
  g = parser.add_argument_group("service")
  common.add_field_flags(g, config.WebConfig, only=SERVICE_FLAGS)
  common.add_field_flags(g, config.SmtpConfig)
  common.add_config_flags(parser, "WebConfig", example="limits.slow_max_iters=200",
                          saved="DATA_DIR/serve_config.json (written by serve)")
  common.annotate_defaults(parser, FLAGS, config.WebConfig())


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_service_flags(parser)


ADMIN_TOKEN_ENV = "NST_JAX_ADMIN_TOKEN"


def resolve_config(args: argparse.Namespace) -> config.WebConfig:
  base = config.WebConfig(admin_token=os.environ.get(ADMIN_TOKEN_ENV, ""))
  return common.resolve_config(args, base, common.flag_overrides(args, FLAGS))


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
  logging.getLogger("absl").setLevel(logging.ERROR)


def exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
  """Stops this process (SIGTERM: huey's consumer ends) when ``parent_pid`` is no longer its
  parent: at once on Linux (``PR_SET_PDEATHSIG``, the kernel's signal when the parent dies, even
  by SIGKILL), else within ``poll_s`` (a thread watches ``os.getppid()``, which changes when the
  parent is gone). No maintained package wraps prctl for this; ctypes reaches it directly.
  """
  if sys.platform.startswith("linux"):
    try:
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
      pass
  if os.getppid() != parent_pid:  # it died before the line above
    os.kill(os.getpid(), signal.SIGTERM)

  def watch() -> None:
    while os.getppid() == parent_pid:
      threading.Event().wait(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=watch, daemon=True, name="parent watch").start()


def run(args: argparse.Namespace) -> int:
  if os.environ.get(PARENT_ENV, "").isdigit():
    exit_with_parent(int(os.environ[PARENT_ENV]))
  cfg = resolve_config(args)
  setup_logging()
  os.umask(0o077)  # the data folder holds personal data (e-mail addresses, uploads)
  from nst_jax.web import queue  # pylint: disable=import-outside-toplevel
  queue.run_worker(cfg)
  return 0
