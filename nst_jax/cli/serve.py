"""``nst-jax serve``: the web application and its workers, with embedded defaults.

Synopsis::

  nst-jax serve --data-dir data                  # http://127.0.0.1:8000, SQLite, 1 worker
  nst-jax serve --workers 2 --port 8080 --set limits.slow_max_size=768
  nst-jax serve --database-url postgresql://db/nst --queue-url redis://q:6379/0 \\
      --storage-url file:///mnt/nst/blobs --workers 0   # app only; workers on other hosts

The resolved config is written to ``DATA_DIR/serve_config.json`` (mode 0600); the workers
(``nst-jax worker --config`` it) are restarted when one dies. Ctrl-C or SIGTERM stops
everything; a worker whose ``serve`` died anyhow (SIGKILL included) stops itself
(``worker.exit_with_parent``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from nst_jax import config
from nst_jax.cli import common, worker

HELP = "serve the web application (pages + JSON API) and start its workers"
FLAGS = worker.FLAGS
log = logging.getLogger("nst_jax.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_field_flags(parser, config.WebConfig,
                         only=("host", "port", "workers", "ssl_certfile", "ssl_keyfile"))
  worker.add_service_flags(parser)


def resolve_config(args: argparse.Namespace) -> config.WebConfig:
  cfg = worker.resolve_config(args)
  tls = {k: getattr(args, k) for k in ("ssl_certfile", "ssl_keyfile") if getattr(args, k, None)}
  return dataclasses.replace(cfg, **tls) if tls else cfg


def write_private(path: Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
  with os.fdopen(fd, "w") as f:
    f.write(text)


class Workers:
  """N ``nst-jax worker`` subprocesses, restarted when one exits, until ``stop``."""

  def __init__(self, n: int, config_path: Path):
    self.argv = [sys.executable, "-m", "nst_jax.cli", "worker", "--config", str(config_path)]
    self.procs = [self._start() for _ in range(n)]
    self.stopping = threading.Event()
    self.thread = threading.Thread(target=self._watch, daemon=True)
    self.thread.start()

  def _start(self) -> subprocess.Popen:
    env = {**os.environ, worker.PARENT_ENV: str(os.getpid())}
    return subprocess.Popen(self.argv, env=env)  # pylint: disable=consider-using-with

  def _watch(self) -> None:
    while not self.stopping.wait(2.0):
      for i, proc in enumerate(self.procs):
        if proc.poll() is not None and not self.stopping.is_set():
          log.warning("worker %d exited (%s); starting another", proc.pid, proc.returncode)
          self.procs[i] = self._start()

  def stop(self) -> None:
    self.stopping.set()
    for proc in self.procs:
      proc.terminate()
    for proc in self.procs:
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()


def run(args: argparse.Namespace) -> int:
  cfg = resolve_config(args)
  worker.setup_logging()
  os.umask(0o077)  # the data folder holds personal data (e-mail addresses, uploads)
  from nst_jax.web import app as web_app  # pylint: disable=import-outside-toplevel
  import uvicorn  # pylint: disable=import-outside-toplevel  # after: nst_jax.web names the extra
  data_dir = Path(cfg.data_dir)
  path = data_dir / "serve_config.json"
  write_private(path, config.to_json(cfg) + "\n")
  application = web_app.create_app(cfg)  # migrates the database before the workers start
  workers = Workers(max(0, cfg.workers), path)
  scheme = "https" if cfg.ssl_certfile else "http"
  print(f"nst-jax: serving {scheme}://{cfg.host}:{cfg.port}/ (data {data_dir.resolve()}, "
        f"{cfg.workers} worker(s))", file=sys.stderr)
  try:
    # The app applies the proxy headers itself (WebConfig.forwarded_allow_ips): uvicorn's own
    # default would trust X-Forwarded-For from 127.0.0.1, i.e. from anybody without a proxy.
    uvicorn.run(application, host=cfg.host, port=cfg.port, log_level="info",
                proxy_headers=False, ssl_certfile=cfg.ssl_certfile or None,
                ssl_keyfile=cfg.ssl_keyfile or None)
  finally:
    workers.stop()
  return 0
