"""What the pages and the JSON API share: submitting, cancelling, sharing and deleting, with the
limits and the ownership rules; errors are ``ServiceError`` (an HTTP status and one line).

Synopsis::

  svc = Service(cfg, db, store, enqueue=tasks.run_job)
  job = svc.submit(client_id, {"kind": "fast", "model": "starry_small"}, {"content": png})
  svc.cancel(client_id, job.id); svc.share(client_id, job.id, "title"); svc.delete_item(...)
"""

from __future__ import annotations

import hmac
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
PAINTING_FIELD = "style_image"  # the arbitrary network's uploaded painting


class ServiceError(Exception):
  """A refused request: ``status`` (4xx) and a one-line ``message`` for the user."""

  def __init__(self, status: int, message: str, retry_after: int | None = None):
    super().__init__(message)
    self.status, self.message, self.retry_after = status, message, retry_after


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
    self.ip_limiter = RateLimiter(lim.ip_rate_per_minute, max(1, lim.ip_rate_per_minute))
    self.mail_limiter = RateLimiter(lim.mails_per_hour / 60, max(1, lim.mails_per_hour))
    self.decodes = uploads.DecodeBudget(lim.decode_budget_mb << 20, lim.max_decodes,
                                        lim.decode_wait_s)

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
                                  max_pixels=lim.max_upload_pixels, budget=self.decodes)
    except uploads.UploadError as e:
      raise ServiceError(e.status, f"{name.replace('_', ' ')} image: {e.message}",
                         e.retry_after) from None

  # -------------------------------------------------------------------------------------- jobs
  def submit(self, owner: str, fields: dict, files: dict, network: str | None = None) -> Job:
    """Validates a job request, stores its images, records and enqueues it.

    Args:
      owner: the client id.
      network: the client's network key (``Signer.network_key``) for the per-IP limits.
      fields: form fields (strings): kind, model, style_index, strength, keep_colors, size,
        iterations, init (artistic: content or net), email; painting (a shared painting's
        stem, for the arbitrary network).
      files: uploaded bytes by field: content, style, content_mask, style_mask, style_image
        (the arbitrary network's painting).
    """
    kind = fields.get("kind") or "fast"
    if kind not in config.WEB_JOB_KINDS:
      raise ServiceError(400, f"unknown method {kind[:20]!r}; one of "
                         f"{', '.join(config.WEB_JOB_KINDS)}")
    self.check_limits(owner, network)
    if kind == "fast" and not fields.get("model") and (files.get(PAINTING_FIELD)
                                                       or fields.get("painting")):
      fields = {**fields, "model": catalog.ARBITRARY}  # a painting implies the network
    params, total = self.params(kind, fields)
    if kind == "video":
      return self.submit_video(owner, network, fields, files, params)
    content = self.upload(files, "content")
    if kind == "sr" and max(content.width, content.height) > self.cfg.limits.sr_max_input:
      raise ServiceError(413, f"super-resolution takes images up to "
                         f"{self.cfg.limits.sr_max_input} px on the long side (this one is "
                         f"{max(content.width, content.height)} px); the output is 4x larger")
    if params.get("model") == catalog.ARBITRARY and kind == "fast":
      style = self.painting_upload(params, fields, files)
    else:
      style = self.upload(files, "style", required=kind in ("artistic", "photoreal"))
    if kind == "photoreal":
      masks = [self.upload(files, k, required=False) for k in ("content_mask", "style_mask")]
      if (masks[0] is None) != (masks[1] is None):
        raise ServiceError(400, "give both masks (content and style) or neither")
      if masks[0] is not None:
        params["content_mask"] = self.store.put(masks[0].png, "png")
        params["style_mask"] = self.store.put(masks[1].png, "png")
    email = self.check_email(fields.get("email"), network)
    job = self.db.create_job(owner, kind, params, content=self.store.put(content.png, "png"),
                             style=self.store.put(style.png, "png") if style else None,
                             email=email or None, total=total, network=network)
    self.enqueue(job.id)
    return job

  def submit_video(self, owner: str, network: str | None, fields: dict, files: dict,
                   params: dict) -> Job:
    """A video job: the clip checked from its header (``clips.clean_clip``), one step per
    frame."""
    from nst_jax.web import clips  # pylint: disable=import-outside-toplevel  (PyAV)
    data = files.get("content")
    if not data:
      raise ServiceError(400, "please choose a video clip to upload")
    try:
      clip = clips.clean_clip(data, self.cfg.limits)
    except uploads.UploadError as e:
      raise ServiceError(e.status, f"video: {e.message}", e.retry_after) from None
    email = self.check_email(fields.get("email"), network)
    job = self.db.create_job(owner, "video", params,
                             content=self.store.put(clip.data, clips.UPLOAD_EXT),
                             email=email or None, total=max(1, clip.frames), network=network)
    self.enqueue(job.id)
    return job

  def video_params(self, fields: dict) -> dict:
    """A video job's style network (a trained one), strength, colours, size and ``temporal``
    (on unless the field says 0/false/off)."""
    if (fields.get("method") or "fast") != "fast":
      raise ServiceError(400, f"video jobs run the fast method only, got "
                         f"{str(fields['method'])[:20]!r}")
    params, _ = self.params("fast", {**fields, "size": None})
    if params["model"] == catalog.ARBITRARY:
      raise ServiceError(400, "video jobs use a trained style network (see the Models page), "
                         "not the any-painting network")
    lim = self.cfg.limits
    params["size"] = _number(fields, "size", int, min(256, lim.video_max_size), MIN_SIZE,
                             lim.video_max_size)
    params["temporal"] = str(fields.get("temporal", "1")).lower() not in ("0", "false", "off",
                                                                         "no")
    params["method"] = "fast"
    return params

  def check_email(self, raw: str | None, network: str | None) -> str:
    """The notification address, or "" for none: refused (400) when this server sends no
    e-mail, (429) past ``mails_per_hour`` for the address or for the network."""
    email = (raw or "").strip()
    if not email:
      return ""
    if not self.cfg.smtp.host:
      raise ServiceError(400, "this server sends no e-mail (no SMTP server is configured); "
                         "leave the address out and keep the job page's link instead")
    if not EMAIL.fullmatch(email):
      raise ServiceError(400, "that e-mail address does not look valid")
    if not (self.mail_limiter.allow("to:" + email.lower())
            and self.mail_limiter.allow(f"from:{network}")):
      raise ServiceError(429, "too many e-mails requested for this address or from your "
                         "network; leave the address out or try again later", retry_after=600)
    return email

  def check_limits(self, owner: str, network: str | None) -> None:
    """The service's bound, then the network's and the client's: 503 or 429 with Retry-After.

    A new cookie makes a new client, so the per-client limits alone bound nothing; the network
    (the IP address, or its IPv6 /64) is what a client cannot renew at will.
    """
    lim = self.cfg.limits
    if self.db.active_count() >= lim.max_queued:
      raise ServiceError(503, "the service is busy: too many jobs are waiting; please try "
                         "again in a minute", retry_after=60)
    if network is not None:
      if not self.ip_limiter.allow(network):
        raise ServiceError(429, "too many requests from your network: please wait a minute "
                           "before submitting again", retry_after=60)
      if self.db.active_count(network=network) >= lim.ip_queue_quota:
        raise ServiceError(429, f"your network already has {lim.ip_queue_quota} jobs queued or "
                           "running; wait for one to finish", retry_after=30)
    if not self.limiter.allow(owner):
      raise ServiceError(429, "too many requests: please wait a minute before submitting again",
                         retry_after=60)
    if self.db.active_count(owner) >= lim.queue_quota:
      raise ServiceError(429, f"you already have {lim.queue_quota} jobs queued or "
                         "running; wait for one to finish (or cancel one)", retry_after=30)

  def painting_upload(self, params: dict, fields: dict, files: dict):
    """The arbitrary network's uploaded painting (``style_image``), or None when the job names
    a shared painting (an upload beside it: refused from the API, ignored from the picker)."""
    if not params["painting"]:
      return self.upload({"painting": files.get(PAINTING_FIELD)}, "painting")
    if files.get(PAINTING_FIELD) and "#" not in (fields.get("model") or ""):
      raise ServiceError(400, "give either a painting to upload (style_image) or a shared "
                         "painting's name (painting), not both")
    return None

  def arbitrary_params(self, fields: dict, choice: str | None) -> dict:
    """The arbitrary network's job parameters: ``painting`` is the shared painting's stem (the
    picker's "arbitrary#<stem>" or the ``painting`` field), "" for an upload (409 until the
    network is installed)."""
    if not catalog.arbitrary_installed():
      raise ServiceError(409, f"the any-painting network is not installed on this server; "
                         f"to install it: {catalog.INSTALL_HINT}")
    stem = (fields.get("painting") or "") if choice is None else choice
    stem = "" if stem == "upload" else stem.strip()
    if stem and catalog.painting_path(self.cfg, stem) is None:
      raise ServiceError(400, f"unknown painting {stem[:60]!r} (see /api/paintings)")
    return {"model": catalog.ARBITRARY, "painting": stem, **self.fast_params(fields)}

  def fast_params(self, fields: dict) -> dict:
    """The fast path's strength, colours and size within the limits."""
    lim = self.cfg.limits
    return {"strength": _number(fields, "strength", float, 1.0, 0.0, 1.0),
            "keep_colors": _flag(fields, "keep_colors"),
            "size": _number(fields, "size", int, min(512, lim.fast_max_size), MIN_SIZE,
                            lim.fast_max_size)}

  def params(self, kind: str, fields: dict) -> tuple[dict, int]:
    """The job's parameters within the limits, and its total iterations."""
    lim = self.cfg.limits
    if kind == "fast":
      name = fields.get("model") or "starry_small"
      choice = None
      if "#" in name:  # the page's picker: "model#style index" (or "arbitrary#<painting>")
        name, _, choice = name.partition("#")
      if name == catalog.ARBITRARY:
        return self.arbitrary_params(fields, choice), 1
      if choice is not None:
        fields = {**fields, "style_index": choice}
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
              **self.fast_params(fields)}, 1
    if kind == "sr":
      return {"scale": 4, "model": "sr_fast_x4"}, 1
    if kind == "video":
      return self.video_params(fields), 1  # the total is the clip's frame count
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

  def sample(self, name: str, index: int, *, photo: bool = False) -> Path | Job | None:
    """Model ``name``'s style ``index`` on ``catalog.sample_photo``: a shipped model's
    precomputed file; for a user-trained model the job rendering it: the finished one, else the
    one in progress (or failed), else a new one (enqueued behind the users' jobs). ``photo``:
    on the real photo ``WebConfig.sample_photo`` instead, rendered by a job for every model.
    None for an unknown model or style, or ``photo`` without a configured photo."""
    entry = catalog.find(self.cfg, name)
    if entry is None or not 0 <= index < max(1, len(entry["styles"])):
      return None
    if photo and not self.cfg.sample_photo:
      return None
    shipped = None if photo else catalog.shipped_sample(entry, index)
    if shipped is not None:
      return shipped
    ours = [j for j in self.db.jobs_of(catalog.SAMPLE_OWNER, limit=10_000)
            if j.params.get("model") == name and j.params.get("style_index") == index
            and bool(j.params.get("photo")) == photo]
    for status in ("done", "running", "queued", "failed"):
      found = [j for j in ours if j.status == status]
      if found:
        return found[0]
    if photo:
      clean = self.upload({"photo": Path(self.cfg.sample_photo).read_bytes()}, "photo")
      content = self.store.put(clean.png, "png")
    else:
      content = self.store.put(uploads.encode_png(catalog.sample_photo()), "png")
    params = {"model": name, "style_index": index, "strength": 1.0, "keep_colors": False,
              "size": catalog.PHOTO_SAMPLE_SIZE if photo else catalog.SAMPLE_SIZE,
              "sample": True, **({"photo": True} if photo else {})}
    job = self.db.create_job(catalog.SAMPLE_OWNER, "fast", params, content=content, total=1)
    self.enqueue_low(job.id)
    return self.db.get_job(job.id)

  def image_size(self, key: str | None) -> list[int] | None:
    """[width, height] of a stored PNG, read from its header alone, or None."""
    if not key:
      return None
    path = self.store.path(key)
    try:
      if path is None:
        head = self.store.get(key)[:24]
      else:
        with path.open("rb") as f:
          head = f.read(24)
    except (OSError, KeyError):
      return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
      return None
    return [int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")]

  def position(self, job: Job) -> int:
    return self.db.queue_position(job)

  # ----------------------------------------------------------------------------------- gallery
  def share(self, owner: str, job_id: str, title: str, publish: str = "result") -> GalleryItem:
    """Publishes a finished job once (sharing it again gives the same item): its result alone,
    or (``publish="all"``) with the content and style images."""
    job = self.owned_job(owner, job_id, "share")
    if job.status != "done" or not job.result_key:
      raise ServiceError(409, "only a finished job can be shared")
    if job.kind == "video":
      raise ServiceError(409, "video results are not shown in the gallery; download the MP4 "
                         "from the job page instead")
    if publish not in ("result", "all", "", None):
      raise ServiceError(400, "publish must be 'result' (the result only) or 'all' (with the "
                         "content and style images)")
    existing = self.db.item_of_job(job.id)
    if existing is not None:
      return existing
    title = " ".join((title or "").split())[:200] or f"{job.kind} #{job.id[:8]}"
    thumb = self.store.put(uploads.thumbnail(self.store.get(job.result_key)), "png")
    return self.db.share(job, owner, title, thumb, with_inputs=publish == "all")

  def item(self, item_id: int, *, admin: bool = False) -> GalleryItem:
    item = self.db.gallery_item(item_id)
    if item is None or (item.hidden and not admin):
      raise ServiceError(404, "no such gallery item")
    return item

  def is_admin(self, token: str | None) -> bool:
    """Whether ``token`` is the administrator's (``WebConfig.admin_token``; constant time)."""
    want = self.cfg.admin_token
    return bool(want and token) and hmac.compare_digest(str(token).encode(), want.encode())

  def hide_item(self, item_id: int) -> None:
    """An administrator's: the item leaves the gallery (its page answers 404), kept on disk."""
    if not self.db.hide_gallery_item(item_id):
      raise ServiceError(404, "no such gallery item")

  def delete_item(self, owner: str | None, item_id: int) -> None:
    """Deletes ``owner``'s item (None: an administrator, any item) and its unused files."""
    item = self.item(item_id, admin=owner is None)
    if owner is not None and item.owner != owner:
      raise ServiceError(403, "only the client that shared an item may delete it")
    deleted = self.db.delete_gallery_item(item_id, owner)
    if deleted is None:
      raise ServiceError(404, "no such gallery item")
    release_blobs(self.db, self.store, [deleted.result_key, deleted.content_key,
                                        deleted.style_key, deleted.thumb_key])
