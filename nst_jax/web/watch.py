"""Long polls without per-client polling: one watcher per web process looks for database changes
and wakes the requests whose job changed.

Synopsis::

  watch = JobWatch(db)                                  # app.state.watch
  await watch.wait(job.id, (job.status, job.iteration), timeout=10.0)   # then read the job

While anyone waits, the watcher asks the database whether anything was committed since its last
look (SQLite's ``PRAGMA data_version`` on a connection of its own: microseconds, no table read);
only then, or at least every ``fallback`` seconds (every database, PostgreSQL included), it reads
the waited jobs' (status, iteration) in one query and wakes the waiters whose job moved on.

When to look: on Linux, a SQLite database's writes are announced by inotify (a commit writes its
``-wal`` file), so the watcher sleeps until a write and then looks every ``tick`` seconds for
``burst`` seconds (the write's event may come just before the commit is visible); between
commits it only makes the ``fallback`` reads. Elsewhere (another OS, ``inotify_simple`` missing,
a database on another host) it looks every ``tick`` seconds while anyone waits, a cost taken
from a worker computing beside it (docs/research/implementation_notes.md). Either way a change
reaches its waiters within about ``tick`` instead of a per-client backoff's, and the database
sees one query per change, not one per client per look.

References:
  SQLite, "PRAGMA data_version", https://www.sqlite.org/pragma.html#pragma_data_version.
  Linux inotify(7); inotify_simple, https://inotify-simple.readthedocs.io.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from nst_jax.web.db import Database

log = logging.getLogger("nst_jax.web.watch")


class FileWrites:
  """Sets an asyncio event whenever one of ``names`` in ``folder`` is written (inotify)."""

  def __init__(self, folder: Path, names: set[str], changed: asyncio.Event):
    from inotify_simple import INotify, flags  # pylint: disable=import-outside-toplevel
    self.names, self.changed = names, changed
    self.loop = asyncio.get_running_loop()
    self.inotify = INotify(nonblocking=True)
    try:
      self.inotify.add_watch(str(folder), flags.MODIFY | flags.CREATE | flags.MOVED_TO)
      self.loop.add_reader(self.inotify.fileno(), self._on_events)
    except BaseException:
      self.inotify.close()
      raise

  def _on_events(self) -> None:
    if any(e.name in self.names for e in self.inotify.read(timeout=0)):
      self.changed.set()

  def close(self) -> None:
    if not self.loop.is_closed():
      self.loop.remove_reader(self.inotify.fileno())
    self.inotify.close()

  @classmethod
  def of_database(cls, db: Database, changed: asyncio.Event) -> FileWrites | None:
    """Watches a local SQLite database's file and its write-ahead log; None where inotify is
    not available (the caller looks on a timer)."""
    path = db.sqlite_file
    if path is None or not sys.platform.startswith("linux"):
      return None
    try:
      return cls(path.parent, {path.name, path.name + "-wal"}, changed)
    except (ImportError, OSError) as e:
      log.info("no inotify (%s): long polls look for changes every tick", e)
      return None


class JobWatch:
  """Waits for changes of jobs' (status, iteration), for all the long polls of one process."""

  def __init__(self, db: Database, tick: float = 0.002, fallback: float = 0.05,
               burst: float = 0.02, events: bool = True):
    self.db, self.tick, self.fallback, self.burst = db, tick, fallback, burst
    self.events = events  # False: look every tick (no inotify)
    self._waiters: dict[str, list[tuple[tuple, asyncio.Future]]] = {}
    self._task: asyncio.Task | None = None
    # Kept open: closing an inotify descriptor waits for the kernel (an RCU grace period,
    # docs/research/implementation_notes.md) and would stall the event loop after every long poll.
    self._writes: FileWrites | None = None
    self._changed: asyncio.Event | None = None
    self.reads = 0  # batched job reads so far (tests, benchmarks)
    self.looks = 0  # change_token calls so far (tests, benchmarks)

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

  def _file_writes(self) -> tuple[FileWrites | None, asyncio.Event]:
    """(the database's write watch on this event loop, or None; its event)."""
    loop = asyncio.get_running_loop()
    if self._changed is None or (self._writes is not None and self._writes.loop is not loop):
      if self._writes is not None:
        self._writes.close()  # another loop's (tests)
      self._changed = asyncio.Event()
      self._writes = FileWrites.of_database(self.db, self._changed) if self.events else None
    return self._writes, self._changed

  async def _run(self) -> None:
    token, last_read = self.db.change_token(), 0.0
    writes, changed = self._file_writes() if token is not None else (None, None)
    burst_until = time.monotonic() + self.burst  # a first look: a change may precede us
    while self._waiters:
      if token is None:  # no change signal: timed reads
        await asyncio.sleep(self.fallback)
      elif writes is None or time.monotonic() < burst_until:
        await asyncio.sleep(self.tick)
      else:  # sleep until a write (or the fallback), then look every tick for a burst
        try:
          await asyncio.wait_for(changed.wait(), self.fallback)
        except asyncio.TimeoutError:
          pass
        if changed.is_set():
          changed.clear()
          burst_until = time.monotonic() + self.burst
      new = self.db.change_token()
      self.looks += 1
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
