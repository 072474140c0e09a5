"""The task queue (huey): one task, ``run_job(job_id)``; the job's state lives in the database.

Synopsis::

  huey, tasks = make_queue(cfg)     # SqliteHuey under cfg.data_dir, or PriorityRedisHuey
  tasks.run_job(job.id)             # the web app enqueues (tasks.run_sample: behind user jobs)
  run_worker(cfg)                   # `nst-jax worker`: recover, then consume until a signal

The queue only carries job ids, so it may lose or repeat a message without harm: a worker claims
a job in the database before it runs it (``db.Database.claim``), and on start (and every minute)
re-enqueues the jobs that are queued but forgotten, or running under a dead worker (a heartbeat
older than ``cfg.stale_s``). A claimed job whose runner still beats is retried after that delay.

References:
  huey, https://huey.readthedocs.io (SqliteHuey, RedisHuey, the consumer).
"""

from __future__ import annotations

import logging
import threading
import time
import types
from pathlib import Path
from urllib.parse import urlparse

from huey import PriorityRedisHuey, SqliteHuey, crontab
from huey.storage import SqliteStorage

from nst_jax import config
from nst_jax.core.errors import UserError

log = logging.getLogger("nst_jax.web.queue")
QUEUE_NAME = "nst_jax"
USER_PRIORITY, SAMPLE_PRIORITY = 10, 0  # huey: higher runs first


def queue_url(cfg: config.WebConfig) -> str:
  """The queue's URL, the default filled in."""
  if cfg.queue_url:
    return cfg.queue_url
  return f"sqlite:///{Path(cfg.data_dir).resolve() / 'queue.db'}"


class QueueStorage(SqliteStorage):
  """huey's SQLite storage with ``synchronous=NORMAL`` (WAL): a commit waits for no fsync.

  huey's default (FULL) syncs the write-ahead log on every enqueue and dequeue (slow when other
  processes write: docs/research/implementation_notes.md); a power loss may now drop the last
  messages, which the queue tolerates by design (``enqueue_forgotten``). SQLite's NORMAL keeps
  the database consistent across crashes (https://www.sqlite.org/pragma.html#pragma_synchronous).
  """

  def _create_connection(self):
    conn = super()._create_connection()
    conn.execute("pragma synchronous=NORMAL")
    return conn


def make_huey(cfg: config.WebConfig, *, immediate: bool = False):
  """A huey instance for ``cfg.queue_url`` (sqlite:///FILE or redis://HOST:PORT/DB; both honour
  task priorities, the Redis one needs Redis >= 5)."""
  url = queue_url(cfg)
  scheme = urlparse(url).scheme
  if scheme in ("redis", "rediss", "unix"):
    return PriorityRedisHuey(QUEUE_NAME, url=url, results=False, immediate=immediate)
  if scheme == "sqlite":
    path = Path(url.split("///", 1)[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, immediate=immediate,
                      timeout=30, storage_class=QueueStorage)
  raise UserError(f"unsupported queue URL {url!r} (expected sqlite:///FILE or redis://HOST:PORT)")


def make_queue(cfg: config.WebConfig, *, immediate: bool = False, executor=None):
  """(huey, tasks): ``tasks.run_job`` and ``tasks.recover`` registered on a new huey.

  Args:
    cfg: the service's config.
    immediate: run tasks at once in the caller (tests), not through the storage.
    executor: what runs a job in this process (``jobs.Executor``); None in the web app, which
      only enqueues (a worker passes its own).
  """
  huey = make_huey(cfg, immediate=immediate)
  tasks = types.SimpleNamespace()

  def run(job_id: str, task) -> None:
    if executor is None:
      raise RuntimeError("this process only enqueues jobs")
    outcome = executor.run(job_id)
    if outcome == "busy":  # another worker holds it; look again once its heartbeat may be stale
      job = executor.db.get_job(job_id)
      beat = job.heartbeat_at if job is not None and job.heartbeat_at else time.time()
      task.schedule((job_id,), delay=min(cfg.stale_s + 1,
                                         max(0.2, beat + cfg.stale_s - time.time() + 0.2)))

  # Users' jobs first: a worker takes the highest priority waiting; the service's own jobs
  # (user models' style samples) wait behind them.
  @huey.task(name="run_job", priority=USER_PRIORITY)
  def run_job(job_id: str) -> None:
    run(job_id, tasks.run_job)

  @huey.task(name="run_sample", priority=SAMPLE_PRIORITY)
  def run_sample(job_id: str) -> None:
    run(job_id, tasks.run_sample)

  @huey.periodic_task(crontab(minute="*"), name="recover")
  def recover() -> None:
    if executor is None:
      return
    # Queued jobs are forgotten only if the queue holds nothing (else they wait their turn):
    # re-enqueuing them on every tick would pile up duplicate messages behind a long backlog.
    idle = huey.pending_count() == 0
    enqueue_forgotten(executor.db, tasks, cfg, queued_older_than=60.0 if idle else 1e12)

  tasks.run_job, tasks.run_sample, tasks.recover = run_job, run_sample, recover
  return huey, tasks


def enqueue_forgotten(db, tasks, cfg: config.WebConfig, *, queued_older_than: float = 0.0,
                      all_running: bool = False) -> list[str]:
  """Enqueues the jobs a dead process may have left: queued ones (older than the given seconds)
  and running ones with a stale heartbeat (``all_running``: every running one; a live runner's
  are retried later); returns their ids."""
  ids = db.recoverable(-1e12 if all_running else cfg.stale_s, queued_older_than)
  for job_id in ids:
    job = db.get_job(job_id)
    (tasks.run_sample if job is not None and job.params.get("sample") else tasks.run_job)(job_id)
  if ids:
    log.info("re-enqueued %d job(s): %s", len(ids), ", ".join(ids))
  return ids


def migrate(db, attempts: int = 5) -> None:
  """``db.migrate()``, retried: the app and other workers may be migrating the same database."""
  for attempt in range(attempts):
    try:
      db.migrate()
      return
    except Exception:  # pylint: disable=broad-except  (a concurrent first migration)
      if attempt == attempts - 1:
        raise
      time.sleep(1.0 + attempt)


def warm_up() -> None:
  """Imports JAX (and starts its CPU backend) and the job modules while the worker migrates,
  recovers and waits for its first job, which would otherwise pay for them (seconds)."""
  # pylint: disable=import-outside-toplevel,unused-import
  try:
    import jax
    jax.numpy.zeros(1).block_until_ready()
    from nst_jax.fast import inference  # noqa: F401
    from nst_jax.slow import artistic  # noqa: F401
  except Exception:  # pylint: disable=broad-except  (the job imports them again, and says why)
    log.warning("warm-up imports failed", exc_info=True)


def run_worker(cfg: config.WebConfig) -> None:
  """One worker process: recovers forgotten jobs, then runs jobs one at a time until SIGINT or
  SIGTERM (huey's consumer)."""
  from nst_jax.web import jobs  # pylint: disable=import-outside-toplevel  (imports JAX lazily)
  threading.Thread(target=warm_up, daemon=True, name="warm-up").start()
  executor = jobs.Executor(cfg)
  migrate(executor.db)
  huey, tasks = make_queue(cfg, executor=executor)
  enqueue_forgotten(executor.db, tasks, cfg, all_running=True)
  poll = max(cfg.poll_s, 0.001)
  # A constant poll: huey's default backoff lets an idle worker sleep between looks, a
  # large share of a fast job (benchmarks/web_overhead.py). A look is one indexed SQLite read, so
  # polling every ``poll_s`` costs little of a core (docs/research/implementation_notes.md).
  consumer = huey.create_consumer(workers=1, worker_type="thread", initial_delay=poll,
                                  backoff=1.0, max_delay=poll,
                                  periodic=True, scheduler_interval=1)
  log.info("worker %s: queue %s, database %s", executor.name, queue_url(cfg), executor.db.url)
  consumer.run()
