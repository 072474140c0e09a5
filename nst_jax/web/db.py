"""The service's database: jobs and gallery items (SQLAlchemy 2 ORM, Alembic migrations).

Synopsis::

  db = Database("sqlite:///data/nst.db")   # or postgresql://user@host/nst, unchanged
  db.migrate()                             # alembic upgrade head (nst_jax/web/migrations)
  job = db.create_job(owner, "fast", {"model": "starry_small"}, content="<sha>.png")
  db.claim(job.id, worker="host:123")      # atomic: True for exactly one worker

A job's whole state lives here, not in the queue: the queue message only carries its id. A worker
claims a job with one conditional UPDATE (queued, or running with a stale heartbeat), writes
its progress under its own name, and finishes it only while it still holds it, so a worker that
lost its job (killed, or too slow to beat) can never write a second result.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Boolean, Float, Integer, String, Text, create_engine, event, func,
                        or_, select, update)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")


class Base(DeclarativeBase):
  pass


class Job(Base):
  """One stylization: its inputs (blob keys), parameters, state and progress."""
  __tablename__ = "jobs"
  id: Mapped[str] = mapped_column(String(32), primary_key=True)
  owner: Mapped[str] = mapped_column(String(64), index=True)
  kind: Mapped[str] = mapped_column(String(16))  # fast | artistic | photoreal | sr
  params: Mapped[dict] = mapped_column(JSON, default=dict)
  content_key: Mapped[str | None] = mapped_column(String(80))
  style_key: Mapped[str | None] = mapped_column(String(80))
  result_key: Mapped[str | None] = mapped_column(String(80))
  preview_key: Mapped[str | None] = mapped_column(String(80))
  status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
  iteration: Mapped[int] = mapped_column(Integer, default=0)
  total: Mapped[int] = mapped_column(Integer, default=0)
  start_iteration: Mapped[int] = mapped_column(Integer, default=0)  # this attempt's first
  loss: Mapped[float | None] = mapped_column(Float)
  eta_s: Mapped[float | None] = mapped_column(Float)
  error: Mapped[str | None] = mapped_column(Text)
  email: Mapped[str | None] = mapped_column(String(254))
  network: Mapped[str | None] = mapped_column(String(32), index=True)  # security.network_key
  email_status: Mapped[str | None] = mapped_column(String(200))  # "sent" | "failed: <why>"
  worker: Mapped[str | None] = mapped_column(String(128))
  attempts: Mapped[int] = mapped_column(Integer, default=0)
  created_at: Mapped[float] = mapped_column(Float, index=True)
  started_at: Mapped[float | None] = mapped_column(Float)
  finished_at: Mapped[float | None] = mapped_column(Float)
  heartbeat_at: Mapped[float | None] = mapped_column(Float)

  def to_dict(self) -> dict[str, Any]:
    keys = ("id", "kind", "params", "status", "iteration", "total", "start_iteration", "loss",
            "eta_s", "error", "attempts", "created_at", "started_at", "finished_at",
            "email_status")
    out = {k: getattr(self, k) for k in keys}
    out.update(content=self.content_key, style=self.style_key, result=self.result_key,
               preview=self.preview_key)
    return out


class GalleryItem(Base):
  """A result its owner shared, with the settings that made it."""
  __tablename__ = "gallery"
  id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
  job_id: Mapped[str | None] = mapped_column(String(32), index=True)
  owner: Mapped[str] = mapped_column(String(64), index=True)
  title: Mapped[str] = mapped_column(String(200), default="")
  method: Mapped[str] = mapped_column(String(16))
  settings: Mapped[dict] = mapped_column(JSON, default=dict)
  result_key: Mapped[str] = mapped_column(String(80))
  content_key: Mapped[str | None] = mapped_column(String(80))
  style_key: Mapped[str | None] = mapped_column(String(80))
  thumb_key: Mapped[str | None] = mapped_column(String(80))
  created_at: Mapped[float] = mapped_column(Float, index=True)
  hidden: Mapped[bool] = mapped_column(Boolean, default=False)  # by an administrator

  def to_dict(self) -> dict[str, Any]:
    return {"id": self.id, "job_id": self.job_id, "title": self.title, "method": self.method,
            "settings": self.settings, "result": self.result_key, "content": self.content_key,
            "style": self.style_key, "thumb": self.thumb_key, "created_at": self.created_at}


def _sqlite_pragmas(dbapi_conn, _record):
  """WAL and a busy timeout: the app and several workers write the same file."""
  cur = dbapi_conn.cursor()
  cur.execute("PRAGMA journal_mode=WAL")
  cur.execute("PRAGMA busy_timeout=30000")
  cur.execute("PRAGMA synchronous=NORMAL")
  cur.close()


def default_url(data_dir: Path) -> str:
  return f"sqlite:///{Path(data_dir).resolve() / 'nst.db'}"


def driver_url(url: str) -> str:
  """``url`` with a PostgreSQL driver that is installed: SQLAlchemy reads a plain
  ``postgresql://`` as psycopg2; without it, psycopg (3) is used."""
  if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
      and importlib.util.find_spec("psycopg") is not None:
    return "postgresql+psycopg://" + url[len("postgresql://"):]
  return url


class Database:
  """An engine and session factory on ``url``, with the service's queries."""

  def __init__(self, url: str):
    url = self.url = driver_url(url)
    self._watch_path = None  # a SQLite file: change_token watches it
    if url.startswith("sqlite"):
      path = url.split("///", 1)[-1]
      if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._watch_path = path
      self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
      event.listen(self.engine, "connect", _sqlite_pragmas)
    else:
      self.engine = create_engine(url, pool_pre_ping=True)
    self.session = sessionmaker(self.engine, expire_on_commit=False)
    self._watch_conn: sqlite3.Connection | None = None
    self._watch_lock = threading.Lock()

  def migrate(self) -> None:
    """``alembic upgrade head`` with the packaged migrations."""
    from alembic import command  # pylint: disable=import-outside-toplevel
    from alembic.config import Config  # pylint: disable=import-outside-toplevel
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
    with self.engine.begin() as conn:
      cfg.attributes["connection"] = conn
      command.upgrade(cfg, "head")

  # ------------------------------------------------------------------------------------ jobs
  def create_job(self, owner: str, kind: str, params: dict, *, content: str | None = None,
                 style: str | None = None, email: str | None = None, total: int = 0,
                 network: str | None = None) -> Job:
    job = Job(id=uuid.uuid4().hex, owner=owner, kind=kind, params=params, content_key=content,
              style_key=style, email=email or None, status="queued", total=total,
              network=network,
              created_at=time.time(), iteration=0, start_iteration=0, attempts=0)
    with self.session.begin() as s:
      s.add(job)
    return job

  def get_job(self, job_id: str) -> Job | None:
    with self.session() as s:
      return s.get(Job, job_id)

  def job_states(self, ids: list[str]) -> dict[str, tuple[str, int]]:
    """{id: (status, iteration)} of the jobs ``ids`` that exist, in one query."""
    with self.session() as s:
      rows = s.execute(select(Job.id, Job.status, Job.iteration).where(Job.id.in_(ids)))
      return {job_id: (status, iteration) for job_id, status, iteration in rows}

  @property
  def sqlite_file(self) -> Path | None:
    """The SQLite database's file (its writes can be watched), or None (another database, or
    an in-memory one)."""
    return None if self._watch_path is None else Path(self._watch_path)

  def change_token(self) -> int | None:
    """A number that changes whenever another connection commits to a SQLite database
    (``PRAGMA data_version`` on a private connection: no table read); None for other databases
    and in-memory ones, which must be read to see changes."""
    if self._watch_path is None:
      return None
    with self._watch_lock:
      if self._watch_conn is None:
        self._watch_conn = sqlite3.connect(self._watch_path, check_same_thread=False, timeout=30)
      return self._watch_conn.execute("PRAGMA data_version").fetchone()[0]

  def claim(self, job_id: str, worker: str, stale_s: float) -> bool:
    """Takes the job for ``worker`` if it is queued or its runner's heartbeat is stale."""
    now = time.time()
    stmt = update(Job).where(Job.id == job_id, or_(
        Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < now - stale_s))
    ).values(status="running", worker=worker, heartbeat_at=now, attempts=Job.attempts + 1,
             started_at=func.coalesce(Job.started_at, now))
    with self.session.begin() as s:
      return s.execute(stmt).rowcount == 1

  def _mine(self, job_id: str, worker: str):
    return update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == "running")

  def heartbeat(self, job_id: str, worker: str, **fields) -> bool:
    """Records progress (``fields``) while ``worker`` holds the job; False when it no longer
    does (cancelled, or taken over)."""
    with self.session.begin() as s:
      n = s.execute(self._mine(job_id, worker).values(heartbeat_at=time.time(), **fields))
      return n.rowcount == 1

  def finish(self, job_id: str, worker: str, status: str, **fields) -> bool:
    """Ends the job (done / failed) if ``worker`` still holds it; True when it did."""
    with self.session.begin() as s:
      n = s.execute(self._mine(job_id, worker).values(status=status, finished_at=time.time(),
                                                      eta_s=None, **fields))
      return n.rowcount == 1

  def cancel(self, job_id: str, owner: str) -> bool:
    """Cancels the owner's queued or running job; the worker stops at its next check."""
    stmt = update(Job).where(Job.id == job_id, Job.owner == owner, Job.status.in_(ACTIVE)
                             ).values(status="cancelled", finished_at=time.time(), eta_s=None)
    with self.session.begin() as s:
      return s.execute(stmt).rowcount == 1

  def set_fields(self, job_id: str, **fields) -> None:
    with self.session.begin() as s:
      s.execute(update(Job).where(Job.id == job_id).values(**fields))

  def queue_position(self, job: Job) -> int:
    """Jobs queued before this one (0: next, or not queued)."""
    if job.status != "queued":
      return 0
    with self.session() as s:
      return s.scalar(select(func.count()).select_from(Job).where(
          Job.status == "queued", Job.created_at < job.created_at)) or 0

  def active_count(self, owner: str | None = None, *, network: str | None = None) -> int:
    """Jobs queued or running: of ``owner``, of ``network``, or (neither given) in all."""
    query = select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))
    if owner is not None:
      query = query.where(Job.owner == owner)
    if network is not None:
      query = query.where(Job.network == network)
    with self.session() as s:
      return s.scalar(query) or 0

  def recoverable(self, stale_s: float, queued_older_than: float = 0.0) -> list[str]:
    """Ids of jobs a worker should (re-)enqueue: queued ones (older than the given seconds)
    and running ones whose heartbeat is stale, oldest first."""
    now = time.time()
    with self.session() as s:
      return list(s.scalars(select(Job.id).where(or_(
          (Job.status == "queued") & (Job.created_at <= now - queued_older_than),
          (Job.status == "running") & (Job.heartbeat_at < now - stale_s))
      ).order_by(Job.created_at)))

  def jobs_of(self, owner: str, limit: int = 20) -> list[Job]:
    with self.session() as s:
      return list(s.scalars(select(Job).where(Job.owner == owner)
                            .order_by(Job.created_at.desc()).limit(limit)))

  # --------------------------------------------------------------------------------- gallery
  def share(self, job: Job, owner: str, title: str, thumb: str | None, *,
            with_inputs: bool = False) -> GalleryItem:
    """The job's gallery item: the one it already has, else a new one (the result, and the
    content and style images only ``with_inputs``)."""
    with self.session.begin() as s:
      found = s.scalars(select(GalleryItem).where(GalleryItem.job_id == job.id)
                        .order_by(GalleryItem.id).limit(1)).first()
      if found is not None:
        return found
      item = GalleryItem(job_id=job.id, owner=owner, title=title[:200], method=job.kind,
                         settings=job.params, result_key=job.result_key,
                         content_key=job.content_key if with_inputs else None,
                         style_key=job.style_key if with_inputs else None, thumb_key=thumb,
                         created_at=time.time(), hidden=False)
      s.add(item)
    return item

  def item_of_job(self, job_id: str) -> GalleryItem | None:
    with self.session() as s:
      return s.scalars(select(GalleryItem).where(GalleryItem.job_id == job_id)
                       .order_by(GalleryItem.id).limit(1)).first()

  def hide_gallery_item(self, item_id: int) -> bool:
    with self.session.begin() as s:
      item = s.get(GalleryItem, item_id)
      if item is not None:
        item.hidden = True
      return item is not None

  def gallery_page(self, page: int, per_page: int) -> tuple[list[GalleryItem], int]:
    """Items of page ``page`` (1-based), newest first, and the number of items."""
    with self.session() as s:
      total = s.scalar(select(func.count()).select_from(GalleryItem)
                       .where(GalleryItem.hidden.is_(False))) or 0
      items = s.scalars(select(GalleryItem).where(GalleryItem.hidden.is_(False))
                        .order_by(GalleryItem.created_at.desc(), GalleryItem.id.desc())
                        .offset((page - 1) * per_page).limit(per_page))
      return list(items), total

  def gallery_item(self, item_id: int) -> GalleryItem | None:
    with self.session() as s:
      return s.get(GalleryItem, item_id)

  def delete_gallery_item(self, item_id: int, owner: str | None) -> GalleryItem | None:
    """Deletes the item if ``owner`` owns it (None: an administrator, any item); returns it
    (None: missing or not theirs)."""
    with self.session.begin() as s:
      item = s.get(GalleryItem, item_id)
      if item is None or (owner is not None and item.owner != owner):
        return None
      s.delete(item)
      return item

  def delete_job(self, job_id: str, owner: str) -> Job | None:
    """Deletes the owner's finished job; returns it (None: missing, not theirs or active)."""
    with self.session.begin() as s:
      job = s.get(Job, job_id)
      if job is None or job.owner != owner or job.status in ACTIVE:
        return None
      s.delete(job)
      return job

  def blob_in_use(self, key: str) -> bool:
    """Whether any job or gallery item still refers to the blob ``key``."""
    with self.session() as s:
      jobs = select(func.count()).select_from(Job).where(or_(
          Job.content_key == key, Job.style_key == key, Job.result_key == key,
          Job.preview_key == key))
      items = select(func.count()).select_from(GalleryItem).where(or_(
          GalleryItem.result_key == key, GalleryItem.content_key == key,
          GalleryItem.style_key == key, GalleryItem.thumb_key == key))
      return bool(s.scalar(jobs)) or bool(s.scalar(items))
