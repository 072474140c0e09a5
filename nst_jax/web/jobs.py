"""Running jobs in a worker process: fast stylization, artistic and photorealistic optimization,
super-resolution; progress, cancellation, resumption and the completion e-mail.

Synopsis::

  executor = Executor(cfg)          # one per worker process: networks and VGG loaded once
  executor.run(job_id)              # "done" | "failed" | "cancelled" | "busy" | "skipped"

A job is run only after ``db.Database.claim`` gave it to this worker. A background thread (one
per executor, started with its first job) beats the job's heartbeat; each chunk of a slow job
writes iteration / total, the loss, an ETA and a preview, and stops the job when the database
says it is no longer this worker's (cancelled, or taken over after a stall). Slow jobs
checkpoint their optimizer under ``<data_dir>/work/<job id>/``, so a worker killed mid-job
leaves a run the next one resumes; the folder is removed when the job ends. The result is
written only while the job is still held, so a job has exactly one result.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from queue import SimpleQueue  # the standard library's (not nst_jax.web.queue)

import numpy as np

from nst_jax import config
from nst_jax.core.errors import UserError
from nst_jax.web import catalog, clips, storage, uploads
from nst_jax.web.db import Database, default_url

log = logging.getLogger("nst_jax.web.jobs")
PREVIEW_EVERY_S = 1.0  # at most one intermediate preview per this many seconds


class Stopped(Exception):
  """The job was cancelled or taken over: stop without writing a result."""


def open_database(cfg: config.WebConfig) -> Database:
  return Database(cfg.database_url or default_url(Path(cfg.data_dir)))


def open_store(cfg: config.WebConfig) -> storage.Storage:
  return storage.open_storage(cfg.storage_url or None, Path(cfg.data_dir))


def release_blobs(db: Database, store: storage.Storage, keys) -> None:
  """Deletes the blobs no job or gallery item refers to any more."""
  for key in {k for k in keys if k}:
    if not db.blob_in_use(key):
      store.delete(key)


class Executor:
  """Runs jobs for one worker process (networks and weights loaded once, kept)."""

  def __init__(self, cfg: config.WebConfig, db: Database | None = None,
               store: storage.Storage | None = None):
    self.cfg = cfg
    self.db = db or open_database(cfg)
    self.store = store or open_store(cfg)
    self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    self.stylizers: dict[str, object] = {}
    self._paintings: dict[str, np.ndarray] = {}  # shared paintings' squares, by stem
    self._vgg = None
    self._upscaler = None
    self._arbitrary = None  # the arbitrary-style network of init "net" jobs
    self._beats: SimpleQueue | None = None  # (job id, lost) for the heartbeat thread

  # ------------------------------------------------------------------------------- lifecycle
  def run(self, job_id: str) -> str:
    """Claims and runs one job; returns how it ended ("busy": another live worker has it)."""
    if not self.db.claim(job_id, self.name, self.cfg.stale_s):
      job = self.db.get_job(job_id)
      return "busy" if job is not None and job.status == "running" else "skipped"
    job = self.db.get_job(job_id)
    lost = threading.Event()
    self._beat(job_id, lost)
    outcome = "failed"
    try:
      result = self.execute(job, lost)
      key = self.store.put(result, clips.RESULT_EXT if job.kind == "video" else "png")
      if self.db.finish(job_id, self.name, "done", result_key=key, iteration=job.total or 0):
        outcome = "done"
        self._email(job)
      else:
        outcome = "cancelled"
        release_blobs(self.db, self.store, [key])
    except Stopped:
      outcome = "cancelled"
    except (UserError, uploads.UploadError, config.ConfigError) as e:
      self.db.finish(job_id, self.name, "failed", error=str(e).splitlines()[0][:500])
    except Exception as e:  # pylint: disable=broad-except  (one job must not kill the worker)
      log.exception("job %s failed", job_id)
      self.db.finish(job_id, self.name, "failed",
                     error=f"internal error ({type(e).__name__}); the service logged it")
    finally:
      lost.set()  # ends the job's heartbeats (a late one changes nothing: not "running")
      # Slow jobs leave a checkpoint folder and a preview (fast ones nothing: no more queries).
      now = self.db.get_job(job_id) if job.kind in ("artistic", "photoreal") else None
      if now is not None and now.status != "running":  # ended (not taken over): clean up
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)
        if now.preview_key:
          self.db.set_fields(job_id, preview_key=None)
          release_blobs(self.db, self.store, [now.preview_key])
    log.info("job %s (%s): %s", job_id, job.kind, outcome)
    return outcome

  def _beat(self, job_id: str, lost: threading.Event) -> None:
    """Beats ``job_id``'s heartbeat until ``lost`` is set (by the job's end, or here when the
    job is no longer this worker's). One thread serves all jobs: starting one per job delays a
    fast job (``Thread.start`` waits for the new thread to run)."""
    if self._beats is None:
      self._beats = SimpleQueue()
      threading.Thread(target=self._beat_loop, daemon=True, name=f"heartbeat {self.name}").start()
    self._beats.put((job_id, lost))

  def _beat_loop(self) -> None:
    every = max(0.2, min(5.0, self.cfg.stale_s / 4))
    while True:
      job_id, lost = self._beats.get()
      while not lost.wait(every):
        if not self.db.heartbeat(job_id, self.name):
          lost.set()

  def work_dir(self, job_id: str) -> Path:
    return Path(self.cfg.data_dir) / "work" / job_id

  def _email(self, job) -> None:
    smtp = self.cfg.smtp
    if not (job.email and smtp.host):
      return
    from nst_jax.web import mail  # pylint: disable=import-outside-toplevel
    base = self.cfg.base_url or f"http://{self.cfg.host}:{self.cfg.port}"
    link = f"{base.rstrip('/')}/jobs/{job.id}"
    try:
      mail.send_job_done(smtp.host, smtp.port, smtp.sender, job.email,
                         f"Your {job.kind} style transfer is done",
                         f"Your job {job.id} is done.\n\nSee and download the result: {link}\n",
                         starttls=smtp.starttls, username=smtp.username or None,
                         password=smtp.password or None)
      status = "sent"
    except Exception as e:  # pylint: disable=broad-except  (the result stands without e-mail)
      log.warning("job %s: e-mail failed: %s", job.id, e)
      status = f"failed: {type(e).__name__}"
    self.db.set_fields(job.id, email_status=status)  # the job page tells its owner

  # ------------------------------------------------------------------------------- execution
  def execute(self, job, lost: threading.Event) -> bytes:
    """The job's result: PNG bytes (a video job's: MP4)."""
    if job.kind == "video":
      return self.run_video(job, lost)
    if job.kind == "fast":
      return self.run_fast(job)
    if job.kind == "sr":
      return self.run_sr(job)
    if job.kind in ("artistic", "photoreal"):
      return self.run_slow(job, lost)
    raise UserError(f"unknown job kind {job.kind!r}")

  def image(self, key: str | None, size: int | None = None, *,
            reduce_for: int | None = None) -> np.ndarray:
    """An input image, resized to the long side ``size`` (or only reduced for ``reduce_for``,
    see ``uploads.decode_png``)."""
    if not key:
      raise UserError("the job has no input image")
    image = uploads.decode_png(self.store.get(key), reduce_for=reduce_for or size)
    if size and max(image.shape[:2]) != size:
      from nst_jax.core import image_io, memory  # pylint: disable=import-outside-toplevel
      image = image_io.resize_array(image, memory.scaled_hw(image.shape[:2], size))
    return image

  def stylizer(self, name: str):
    """The network called ``name`` (catalogue), loaded once per process."""
    if name not in self.stylizers:
      entry = catalog.find(self.cfg, name)
      if entry is None:
        raise UserError(f"no model {name!r} (see /api/models)")
      from nst_jax.fast import inference  # pylint: disable=import-outside-toplevel
      self.stylizers[name] = inference.Stylizer.from_any(entry["path"])
    return self.stylizers[name]

  def any_stylizer(self):
    """The arbitrary-style network, loaded once per process (its embeddings are kept by the
    paintings' pixels, so a painting used again is not embedded again)."""
    if catalog.ARBITRARY not in self.stylizers:
      from nst_jax.fast import inference  # pylint: disable=import-outside-toplevel
      self.stylizers[catalog.ARBITRARY] = inference.Stylizer.from_any(catalog.ARBITRARY)
    return self.stylizers[catalog.ARBITRARY]

  def painting(self, job, size: int) -> np.ndarray:
    """The central square, at the network's style ``size``, of the job's painting (all that the
    embedding reads): its upload, shrunk in 8 bits first as a photo is (``uploads.decode_png``),
    or a shared painting's, kept per painting."""
    from nst_jax.fast import any_style  # pylint: disable=import-outside-toplevel
    stem = job.params.get("painting")
    if not stem:
      if not job.style_key:
        raise UserError("the job has no painting")
      png = self.store.get(job.style_key)
      w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
      reduce_for = -(-size * max(w, h) // max(1, min(w, h)))  # the short side stays >= 2 size
      return any_style.square_crop(uploads.decode_png(png, reduce_for=reduce_for), size)
    if stem not in self._paintings:
      path = catalog.painting_path(self.cfg, stem)
      if path is None:
        raise UserError(f"the painting {stem!r} is no longer offered on this server")
      from nst_jax.core import image_io  # pylint: disable=import-outside-toplevel
      self._paintings[stem] = any_style.square_crop(image_io.load_image(path), size)
    return self._paintings[stem]

  def run_fast(self, job) -> bytes:
    p = job.params
    if p["model"] == catalog.ARBITRARY:
      stylizer = self.any_stylizer()
      stylizer.set_style(image=self.painting(job, stylizer.net.cfg.style_size))
    else:
      stylizer = self.stylizer(p["model"])
      stylizer.set_style(index=int(p.get("style_index", 0)))
    image = self.image(job.content_key, p.get("size"))
    out = stylizer(image, strength=float(p.get("strength", 1.0)),
                   original_colors="yiq" if p.get("keep_colors") else "")
    return uploads.encode_png(out)  # ``finish`` records iteration = total

  def run_sr(self, job) -> bytes:
    if self._upscaler is None:
      from nst_jax.sr import upscale  # pylint: disable=import-outside-toplevel
      self._upscaler = upscale.Upscaler.load("sr_fast_x4")
    out = self._upscaler(self.image(job.content_key))
    return uploads.encode_png(np.clip(out, 0.0, 1.0))

  def run_video(self, job, lost: threading.Event) -> bytes:
    """A clip stylized frame by frame (``clips.run_video``): the MP4; its preview strip becomes
    the job's preview. Progress is frames done / the clip's frames."""

    def on_frame(done: int) -> None:
      if lost.is_set() or not self.db.heartbeat(job.id, self.name, iteration=done):
        raise Stopped()

    mp4, strip = clips.run_video(self, job, on_frame)
    self.db.set_fields(job.id, preview_key=self.store.put(strip, "png"))
    return mp4

  def vgg(self):
    if self._vgg is None:
      from nst_jax.core import paths, vgg  # pylint: disable=import-outside-toplevel
      self._vgg = vgg.load_vgg19(paths.resolve_vgg_weights(None))
    return self._vgg

  def run_slow(self, job, lost: threading.Event) -> bytes:
    """Artistic (Gatys) or photorealistic (Luan) optimization, resumable, with progress."""
    p = job.params
    iters, size = int(p["iterations"]), int(p["size"])
    chunk = max(1, min(10, iters // 4))
    optim = config.OptimConfig(optimizer=self.cfg.slow_optimizer, num_iters=iters, chunk=chunk)
    content = self.image(job.content_key, reduce_for=size)
    style = self.image(job.style_key, reduce_for=size)
    work = self.work_dir(job.id)
    work.mkdir(parents=True, exist_ok=True)
    progress = Progress(self, job, iters, chunk, lost)
    common = dict(progress=False, checkpoint=work / "optimizer.ckpt",
                  checkpoint_every=self.cfg.checkpoint_every, on_chunk=progress.on_chunk,
                  on_loss=progress.on_loss)
    if job.kind == "artistic":
      from nst_jax.slow import artistic  # pylint: disable=import-outside-toplevel
      cfg = config.TransferConfig(size=size, optim=optim, init=p.get("init", "content"))
      problem = artistic.Problem(content, [style])
      if cfg.init == "net":  # before the VGG: missing weights fail the job on one line
        problem = self.net_start(problem, artistic.first_level_hw(problem, cfg))
      out = artistic.stylize(self.vgg(), [problem], cfg, **common)
    else:
      from nst_jax.slow import photoreal  # pylint: disable=import-outside-toplevel
      cfg = config.PhotoConfig(size=size, optim=optim)
      masks = [self.masks(p.get(k), image.shape[:2], k.replace("_", " "))
               for k, image in (("content_mask", content), ("style_mask", style))]
      out = photoreal.stylize(self.vgg(), content, style, cfg, content_masks=masks[0],
                              style_masks=masks[1], **common)
    if out.nan_at is not None:
      raise UserError(f"the loss became NaN/Inf at iteration {out.nan_at}; try a smaller size")
    return uploads.encode_png(np.clip(out.images[0], 0.0, 1.0))

  def net_start(self, problem, hw: tuple[int, int]):
    """``problem`` with its ``init`` image (as ``nst-jax optimize --init net``): the content at
    ``hw`` stylized by the arbitrary network (loaded once) with the style's embedding."""
    if self._arbitrary is None:
      from nst_jax.fast import arbitrary  # pylint: disable=import-outside-toplevel
      self._arbitrary = arbitrary.load_arbitrary()
    from nst_jax.core import image_io  # pylint: disable=import-outside-toplevel
    net = self._arbitrary
    image = net.stylize(image_io.resize_array(problem.content, hw), net.embed(problem.styles[0]))
    return dataclasses.replace(problem, init=np.asarray(image, np.float32))

  def masks(self, key: str | None, hw: tuple[int, int], name: str):
    """[R, H, W] region masks of a colour-coded mask image for an image of size ``hw`` (as
    ``nst-jax photo`` reads them; errors name the ``name``d upload, not the storage path), or
    None."""
    if not key:
      return None
    from nst_jax.core import regions  # pylint: disable=import-outside-toplevel
    path = self.store.path(key)
    if path is None:
      raise UserError("the mask image is not available on this worker")
    return regions.load_color_mask(path, size_hw=hw, name=f"the {name}")


class Progress:
  """A slow job's chunk callbacks: iteration, loss, ETA and preview into the database."""

  def __init__(self, executor: Executor, job, iters: int, chunk: int, lost: threading.Event):
    self.ex, self.job, self.iters, self.chunk, self.lost = executor, job, iters, chunk, lost
    self.stages = 2 if job.kind == "photoreal" else 1
    self.total = iters * self.stages
    self.loss = None
    self.first = None  # (global iteration, time) of this attempt's first chunk
    self.last_preview = 0.0
    executor.db.heartbeat(job.id, executor.name, total=self.total)

  def on_loss(self, _stage, _it, loss: float) -> None:
    self.loss = loss if np.isfinite(loss) else None

  def on_chunk(self, stage: int, it: int, images) -> None:
    if self.lost.is_set():
      raise Stopped()
    db, now = self.ex.db, time.time()
    done = stage * self.iters + it
    fields = {"iteration": done, "loss": self.loss}
    if self.first is None:  # the first chunk includes the compilation: no rate yet
      self.first = (done, now)
      fields["start_iteration"] = max(0, done - self.chunk)
    rate = (done - self.first[0]) / max(now - self.first[1], 1e-3)
    fields["eta_s"] = (self.total - done) / rate if rate > 0 else None
    old = None
    if now - self.last_preview >= PREVIEW_EVERY_S:
      self.last_preview = now
      fields["preview_key"] = self.ex.store.put(uploads.encode_png(
          np.clip(np.asarray(images[0]), 0.0, 1.0)), "png")
      old = db.get_job(self.job.id).preview_key
    if not db.heartbeat(self.job.id, self.ex.name, **fields):
      raise Stopped()
    if old and old != fields.get("preview_key"):
      release_blobs(db, self.ex.store, [old])
