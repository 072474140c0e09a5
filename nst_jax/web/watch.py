"""Long polls without per-client polling: one watcher per web process looks for database changes
and wakes the requests whose job changed.

Synopsis::

  watch = JobWatch(db)                                  # app.state.watch
  await watch.wait(job.id, (job.status, job.iteration), timeout=10.0)   # then read the job

While anyone waits, the watcher asks the database every ``tick`` seconds whether anything was
committed since its last look (SQLite's ``PRAGMA data_version`` on a connection of its own:
microseconds, no table read); only then, or at least every ``fallback`` seconds (every database,
PostgreSQL included), it reads the waited jobs' (status, iteration) in one query and wakes the
waiters whose job moved on. A change reaches its waiters within ~``tick`` instead of a
per-client backoff's 10-50 ms, and the database sees one query per change, not one per client
per look.

References:
  SQLite, "PRAGMA data_version", https://www.sqlite.org/pragma.html#pragma_data_version.
"""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from nst_jax.web.db import Database


class JobWatch:
  """Waits for changes of jobs' (status, iteration), for all the long polls of one process."""

  def __init__(self, db: Database, tick: float = 0.002, fallback: float = 0.05):
    self.db, self.tick, self.fallback = db, tick, fallback
    self._waiters: dict[str, list[tuple[tuple, asyncio.Future]]] = {}
    self._task: asyncio.Task | None = None
    self.reads = 0  # batched job reads so far (tests, benchmarks)

  async def wait(self, job_id: str, seen: tuple, timeout: float) -> None:
    """Returns once job ``job_id``'s (status, iteration) differs from ``seen``, or after
    ``timeout`` seconds; the caller reads the job again either way."""
    future = asyncio.get_running_loop().create_future()
    self._waiters.setdefault(job_id, []).append((seen, future))
    if self._task is None or self._task.done():
      self._task = asyncio.create_task(self._run())
    try:
      await asyncio.wait_for(asyncio.shield(future), timeout)
    except asyncio.TimeoutError:
      pass
    finally:
      entries = self._waiters.get(job_id, [])
      entries[:] = [e for e in entries if e[1] is not future]
      if not entries:
        self._waiters.pop(job_id, None)

  async def _run(self) -> None:
    token, last_read = self.db.change_token(), 0.0
    tick = self.tick if token is not None else self.fallback  # no change signal: timed reads
    while self._waiters:
      await asyncio.sleep(tick)
      new = self.db.change_token()
      now = time.monotonic()
      if (new is None or new == token) and now - last_read < self.fallback:
        continue
      token, last_read = new, now
      ids = list(self._waiters)
      states = await run_in_threadpool(self.db.job_states, ids)
      self.reads += 1
      for job_id in ids:
        for seen, future in self._waiters.get(job_id, []):
          if states.get(job_id) != seen and not future.done():
            future.set_result(None)
