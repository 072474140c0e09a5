"""``nst-jax worker``: one worker process of the web service (runs queued jobs one at a time).

Synopsis::

  nst-jax worker --data-dir data                          # the embedded defaults (SQLite)
  nst-jax worker --database-url postgresql://db/nst --queue-url redis://q:6379/0 \\
      --storage-url file:///mnt/nst/blobs                  # one of N worker hosts

On start it re-enqueues the jobs a killed process left behind (queued, or running with a stale
heartbeat) and resumes slow jobs from their optimizer checkpoints. SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import logging

from nst_jax import config
from nst_jax.cli import common

HELP = "run one worker process of the web service (nst-jax serve starts them for you)"
# Flag (argparse dest) -> WebConfig key.
FLAGS = {"host": "host", "port": "port", "data_dir": "data_dir", "database_url": "database_url",
         "queue_url": "queue_url", "storage_url": "storage_url", "workers": "workers",
         "base_url": "base_url", "smtp_host": "smtp.host", "smtp_port": "smtp.port",
         "smtp_sender": "smtp.sender", "forwarded_allow_ips": "forwarded_allow_ips"}


def add_service_flags(parser: argparse.ArgumentParser) -> None:
  """The flags ``serve`` and ``worker`` share (defaults: ``config.WebConfig``)."""
  g = parser.add_argument_group("service")
  g.add_argument("--data-dir", metavar="DIR", help="the data folder (database, queue, images)")
  g.add_argument("--database-url", metavar="URL",
                 help="SQLAlchemy URL, e.g. postgresql://user@host/nst ('': SQLite in DATA_DIR)")
  g.add_argument("--queue-url", "--queue", dest="queue_url", metavar="URL",
                 help="redis://host:6379/0 for RedisHuey ('': huey's SQLite queue in DATA_DIR)")
  g.add_argument("--storage-url", metavar="URL",
                 help="file:///shared/folder for images shared by several hosts "
                 "('': DATA_DIR/blobs)")
  g.add_argument("--base-url", metavar="URL", help="the public address, for links in e-mails")
  g.add_argument("--forwarded-allow-ips", metavar="IPS",
                 help="proxies (comma-separated addresses or networks) whose X-Forwarded-For and "
                 "X-Forwarded-Proto are believed, as uvicorn names it ('': none)")
  g.add_argument("--smtp-host", metavar="HOST", help="send completion e-mails through this "
                 "SMTP server ('': no e-mail)")
  g.add_argument("--smtp-port", type=int, metavar="PORT", help="the SMTP server's port")
  g.add_argument("--smtp-sender", metavar="ADDRESS", help="the e-mails' From address")
  common.add_config_flags(parser, "WebConfig", example="limits.slow_max_iters=200",
                          saved="DATA_DIR/serve_config.json (written by serve)")
  common.annotate_defaults(parser, FLAGS, config.WebConfig())


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_service_flags(parser)


def resolve_config(args: argparse.Namespace) -> config.WebConfig:
  return common.resolve_config(args, config.WebConfig(), common.flag_overrides(args, FLAGS))


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
  logging.getLogger("absl").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
  cfg = resolve_config(args)
  setup_logging()
  from nst_jax.web import queue  # pylint: disable=import-outside-toplevel
  queue.run_worker(cfg)
  return 0
