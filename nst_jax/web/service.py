"""What the pages and the JSON API share: submitting, cancelling, sharing and deleting, with the
limits and the ownership rules; errors are ``ServiceError`` (an HTTP status and one line).

Synopsis::

  svc = Service(cfg, db, store, enqueue=tasks.run_job)
  job = svc.submit(client_id, {"kind": "fast", "model": "starry_small"}, {"content": png})
  svc.cancel(client_id, job.id); svc.share(client_id, job.id, "title"); svc.delete_item(...)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from nst_jax import config
from nst_jax.web import catalog, uploads
from nst_jax.web.db import Database, GalleryItem, Job
from nst_jax.web.jobs import release_blobs
from nst_jax.web.security import RateLimiter
from nst_jax.web.storage import Storage

EMAIL = re.compile(r"[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}")
MIN_SIZE = 32


class ServiceError(Exception):
  """A refused request: ``status`` (4xx) and a one-line ``message`` for the user."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def _number(fields: dict, name: str, kind, default, low, high):
  raw = fields.get(name)
  if raw in (None, ""):
    return default
  try:
    value = kind(raw)
  except (TypeError, ValueError):
    raise ServiceError(400, f"{name} must be a number, got {str(raw)[:40]!r}") from None
  if not low <= value <= high:
    raise ServiceError(400, f"{name} must be between {low} and {high}, got {value}")
  return value


def _flag(fields: dict, name: str) -> bool:
  return str(fields.get(name, "")).lower() in ("1", "true", "on", "yes")


class Service:
  """The rules of the service over its database, storage and queue."""

  def __init__(self, cfg: config.WebConfig, db: Database, store: Storage,
               enqueue: Callable[[str], object],
               enqueue_low: Callable[[str], object] | None = None):
    """``enqueue_low`` enqueues the service's own jobs (user models' samples) behind every user
    job (default: ``enqueue``)."""
    self.cfg, self.db, self.store, self.enqueue = cfg, db, store, enqueue
    self.enqueue_low = enqueue_low or enqueue
    lim = cfg.limits
    self.limiter = RateLimiter(lim.rate_per_minute, max(1, lim.rate_per_minute))

  # ----------------------------------------------------------------------------------- uploads
  def upload(self, files: dict, name: str, *, required: bool = True) -> uploads.CleanImage | None:
    data = files.get(name)
    if not data:
      if required:
        raise ServiceError(400, f"please choose a {name.replace('_', ' ')} image to upload")
      return None
    lim = self.cfg.limits
    try:
      return uploads.clean_upload(data, max_bytes=int(lim.max_upload_mb * 1e6),
                                  max_pixels=lim.max_upload_pixels)
    except uploads.UploadError as e:
      raise ServiceError(e.status, f"{name.replace('_', ' ')} image: {e.message}") from None

  # -------------------------------------------------------------------------------------- jobs
  def submit(self, owner: str, fields: dict, files: dict) -> Job:
    """Validates a job request, stores its images, records and enqueues it.

    Args:
      owner: the client id.
      fields: form fields (strings): kind, model, style_index, strength, keep_colors, size,
        iterations, init (artistic: content or net), email.
      files: uploaded bytes by field: content, style, content_mask, style_mask.
    """
    kind = fields.get("kind") or "fast"
    if kind not in config.WEB_JOB_KINDS:
      raise ServiceError(400, f"unknown method {kind[:20]!r}; one of "
                         f"{', '.join(config.WEB_JOB_KINDS)}")
    if not self.limiter.allow(owner):
      raise ServiceError(429, "too many requests: please wait a minute before submitting again")
    if self.db.active_count(owner) >= self.cfg.limits.queue_quota:
      raise ServiceError(429, f"you already have {self.cfg.limits.queue_quota} jobs queued or "
                         "running; wait for one to finish (or cancel one)")
    params, total = self.params(kind, fields)
    content = self.upload(files, "content")
    if kind == "sr" and max(content.width, content.height) > self.cfg.limits.sr_max_input:
      raise ServiceError(413, f"super-resolution takes images up to "
                         f"{self.cfg.limits.sr_max_input} px on the long side (this one is "
                         f"{max(content.width, content.height)} px); the output is 4x larger")
    style = self.upload(files, "style", required=kind in ("artistic", "photoreal"))
    if kind == "photoreal":
      masks = [self.upload(files, k, required=False) for k in ("content_mask", "style_mask")]
      if (masks[0] is None) != (masks[1] is None):
        raise ServiceError(400, "give both masks (content and style) or neither")
      if masks[0] is not None:
        params["content_mask"] = self.store.put(masks[0].png, "png")
        params["style_mask"] = self.store.put(masks[1].png, "png")
    email = (fields.get("email") or "").strip()
    if email and not EMAIL.fullmatch(email):
      raise ServiceError(400, "that e-mail address does not look valid")
    job = self.db.create_job(owner, kind, params, content=self.store.put(content.png, "png"),
                             style=self.store.put(style.png, "png") if style else None,
                             email=email or None, total=total)
    self.enqueue(job.id)
    return job

  def params(self, kind: str, fields: dict) -> tuple[dict, int]:
    """The job's parameters within the limits, and its total iterations."""
    lim = self.cfg.limits
    if kind == "fast":
      name = fields.get("model") or "starry_small"
      if "#" in name:  # the page's picker: "model#style index"
        name, _, index = name.partition("#")
        fields = {**fields, "style_index": index}
      entry = catalog.find(self.cfg, name)
      if entry is None:
        raise ServiceError(400, f"unknown model {name[:60]!r} (see the Models page)")
      wanted = (fields.get("style_name") or "").strip()
      if wanted and fields.get("style_index") in (None, ""):  # by (part of) its name
        hits = [i for i, s in enumerate(entry["styles"]) if wanted.lower() in s.lower()]
        if len(hits) != 1:
          raise ServiceError(400, f"style_name {wanted[:40]!r} matches {len(hits)} of the "
                             f"model's styles ({', '.join(entry['styles'])})")
        fields = {**fields, "style_index": hits[0]}
      index = _number(fields, "style_index", int, 0, 0, max(0, len(entry["styles"]) - 1))
      return {"model": name, "style_index": index,
              "style": entry["styles"][index] if entry["styles"] else "",
              "strength": _number(fields, "strength", float, 1.0, 0.0, 1.0),
              "keep_colors": _flag(fields, "keep_colors"),
              "size": _number(fields, "size", int, min(512, lim.fast_max_size), MIN_SIZE,
                              lim.fast_max_size)}, 1
    if kind == "sr":
      return {"scale": 4, "model": "sr_fast_x4"}, 1
    size = _number(fields, "size", int, min(256, lim.slow_max_size), MIN_SIZE, lim.slow_max_size)
    iters = _number(fields, "iterations", int, min(100, lim.slow_max_iters), 1,
                    lim.slow_max_iters)
    params = {"size": size, "iterations": iters}
    if kind == "artistic" and fields.get("init"):  # "net": as optimize --init net
      if fields["init"] not in ("content", "net"):
        raise ServiceError(400, f"init must be content or net, got {fields['init'][:20]!r}")
      params["init"] = fields["init"]
    return params, iters * (2 if kind == "photoreal" else 1)

  def job_of(self, job_id: str) -> Job:
    job = self.db.get_job(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id or "") else None
    if job is None:
      raise ServiceError(404, "no such job")
    return job

  def owned_job(self, owner: str, job_id: str, verb: str) -> Job:
    """The job ``job_id`` if ``owner`` submitted it (404 unknown, 403 someone else's)."""
    job = self.job_of(job_id)
    if job.owner != owner:
      raise ServiceError(403, f"only the client that submitted a job may {verb} it")
    return job

  def cancel(self, owner: str, job_id: str) -> Job:
    job = self.owned_job(owner, job_id, "cancel")
    if not self.db.cancel(job_id, owner):
      raise ServiceError(409, f"the job is already {job.status}")
    return self.db.get_job(job_id)

  def delete_job(self, owner: str, job_id: str) -> None:
    self.owned_job(owner, job_id, "delete")
    deleted = self.db.delete_job(job_id, owner)
    if deleted is None:
      raise ServiceError(409, "cancel the job before deleting it")
    release_blobs(self.db, self.store, [deleted.content_key, deleted.style_key,
                                        deleted.result_key, deleted.preview_key,
                                        *(deleted.params.get(k) for k in ("content_mask",
                                                                           "style_mask"))])

  def sample(self, name: str, index: int) -> Path | Job | None:
    """Model ``name``'s style ``index`` on ``catalog.sample_photo``: a shipped model's
    precomputed file; for a user-trained model the job rendering it: the finished one, else the
    one in progress (or failed), else a new one (enqueued behind the users' jobs). None for an
    unknown model or style."""
    entry = catalog.find(self.cfg, name)
    if entry is None or not 0 <= index < max(1, len(entry["styles"])):
      return None
    shipped = catalog.shipped_sample(entry, index)
    if shipped is not None:
      return shipped
    ours = [j for j in self.db.jobs_of(catalog.SAMPLE_OWNER, limit=10_000)
            if j.params.get("model") == name and j.params.get("style_index") == index]
    for status in ("done", "running", "queued", "failed"):
      found = [j for j in ours if j.status == status]
      if found:
        return found[0]
    photo = self.store.put(uploads.encode_png(catalog.sample_photo()), "png")
    job = self.db.create_job(catalog.SAMPLE_OWNER, "fast", {
        "model": name, "style_index": index, "strength": 1.0, "keep_colors": False,
        "size": catalog.SAMPLE_SIZE, "sample": True}, content=photo, total=1)
    self.enqueue_low(job.id)
    return self.db.get_job(job.id)

  def position(self, job: Job) -> int:
    return self.db.queue_position(job)

  # ----------------------------------------------------------------------------------- gallery
  def share(self, owner: str, job_id: str, title: str) -> GalleryItem:
    job = self.owned_job(owner, job_id, "share")
    if job.status != "done" or not job.result_key:
      raise ServiceError(409, "only a finished job can be shared")
    title = " ".join((title or "").split())[:200] or f"{job.kind} #{job.id[:8]}"
    thumb = self.store.put(uploads.thumbnail(self.store.get(job.result_key)), "png")
    return self.db.share(job, owner, title, thumb)

  def item(self, item_id: int) -> GalleryItem:
    item = self.db.gallery_item(item_id)
    if item is None:
      raise ServiceError(404, "no such gallery item")
    return item

  def delete_item(self, owner: str, item_id: int) -> None:
    item = self.item(item_id)
    if item.owner != owner:
      raise ServiceError(403, "only the client that shared an item may delete it")
    deleted = self.db.delete_gallery_item(item_id, owner)
    if deleted is None:
      raise ServiceError(404, "no such gallery item")
    release_blobs(self.db, self.store, [deleted.result_key, deleted.content_key,
                                        deleted.style_key, deleted.thumb_key])
