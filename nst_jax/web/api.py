"""The JSON API (``/api``): jobs, blobs, the gallery and the models; see ``/openapi.json``.

Synopsis (a script; the cookie jar keeps the client id)::

  s = httpx.Client(base_url="http://127.0.0.1:8000")
  csrf = s.get("/api/session").json()["csrf_token"]
  job = s.post("/api/jobs", data={"model": "starry_small"}, files={"content": open(p, "rb")},
               headers={"X-CSRF-Token": csrf}).json()
  s.get(f"/api/jobs/{job['id']}").json()["status"]       # queued | running | done | ...
  s.get(f"/api/jobs/{job['id']}", params={"wait": 10})    # answers when it changes, or after wait
  png = s.get(job["result_url"]).content                  # once done
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from nst_jax.web import catalog, storage
from nst_jax.web.db import GalleryItem, Job
from nst_jax.web.forms import check_csrf, checked_form, network_of
from nst_jax.web.service import ServiceError

router = APIRouter(prefix="/api", tags=["api"])
MAX_WAIT_S = 30.0  # the longest long poll (GET /api/jobs/{id}?wait=...)


def blob_url(key: str | None) -> str | None:
  return f"/api/blobs/{key}" if key else None


def job_json(request: Request, job: Job) -> dict:
  """A job as the API shows it (no owner id, no e-mail address)."""
  out = job.to_dict()
  out.update(mine=job.owner == request.state.client_id,
             queue_position=request.app.state.service.position(job),
             result_url=blob_url(job.result_key), preview_url=blob_url(job.preview_key),
             content_url=blob_url(job.content_key), style_url=blob_url(job.style_key),
             page_url=f"/jobs/{job.id}", email=bool(job.email))
  if job.params.get("painting") and not job.style_key:  # a shared painting (arbitrary network)
    out["style_url"] = f"/paintings/{job.params['painting']}.png"
  if job.kind == "video":  # the result is an MP4; the preview, a strip of its frames
    out["strip_url"] = blob_url(job.preview_key)
  if job.status == "done":
    out["result_size"] = request.app.state.service.image_size(job.result_key)
    item = request.app.state.service.db.item_of_job(job.id)
    out["gallery_url"] = f"/gallery/{item.id}" if item is not None and not item.hidden else None
  return out


def item_json(request: Request, item: GalleryItem) -> dict:
  out = item.to_dict()
  out.update(mine=item.owner == request.state.client_id, result_url=blob_url(item.result_key),
             thumb_url=blob_url(item.thumb_key), content_url=blob_url(item.content_key),
             style_url=blob_url(item.style_key), page_url=f"/gallery/{item.id}")
  return out


@router.get("/session")
async def session(request: Request) -> dict:
  """This client's id and CSRF token (for scripts that keep the cookie)."""
  return {"client_id": request.state.client_id, "csrf_token": request.state.csrf}


@router.post("/jobs", status_code=201)
async def submit_job(request: Request) -> dict:
  """Submits a job (multipart): ``kind`` (fast | artistic | photoreal | sr | video),
  ``content`` file, ``style`` file (slow methods), ``model``, ``style_index``, ``strength``,
  ``keep_colors``, ``size``, ``iterations``, ``email``, ``content_mask``/``style_mask`` files
  (photoreal).

  Any painting: ``model=arbitrary`` with a ``style_image`` file or ``painting=<stem>`` (one of
  ``GET /api/paintings``); ``strength`` is then Ghiasi's (0: the photo's own style, 1: the
  painting's). 409 while the arbitrary network is not installed (the message says how).

  A video: ``kind=video``, the clip as ``content`` (within ``video_max_seconds`` /
  ``video_max_frames`` and the image byte and pixel limits), a trained ``model`` and
  ``style_index``, ``size``, ``strength``, ``keep_colors``, ``temporal`` (default on); the
  result is an MP4 and ``strip_url`` a strip of its frames."""
  fields, files = await checked_form(request)
  job = await run_in_threadpool(request.app.state.service.submit, request.state.client_id,
                                fields, files, network_of(request))
  return job_json(request, job)


@router.get("/jobs")
async def my_jobs(request: Request) -> list[dict]:
  """This client's newest jobs."""
  service = request.app.state.service
  return [job_json(request, j) for j in service.db.jobs_of(request.state.client_id)]


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: str, wait: float = 0.0) -> dict:
  """A job's state and progress: status, iteration / total, loss, eta_s, queue_position.

  ``wait`` (seconds, at most ``MAX_WAIT_S``): a long poll; the answer comes as soon as the job's
  status or iteration changes (or it ends), else after ``wait`` seconds, so a client learns of
  the result within milliseconds without polling itself (``watch.JobWatch``: one watcher per
  process looks for commits and reads all waited jobs in one query).
  """
  service = request.app.state.service
  job = await run_in_threadpool(service.job_of, job_id)
  deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_S)
  while job.status in ("queued", "running") and time.monotonic() < deadline:
    seen = (job.status, job.iteration)
    await request.app.state.watch.wait(job_id, seen, deadline - time.monotonic())
    job = await run_in_threadpool(service.job_of, job_id)
    if (job.status, job.iteration) != seen:
      break
  return job_json(request, job)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> dict:
  check_csrf(request, None)
  return job_json(request, request.app.state.service.cancel(request.state.client_id, job_id))


@router.delete("/jobs/{job_id}", status_code=204)
async def delete_job(request: Request, job_id: str) -> Response:
  """Deletes a finished job of this client and its files (those no gallery item shows)."""
  check_csrf(request, None)
  request.app.state.service.delete_job(request.state.client_id, job_id)
  return Response(status_code=204)


MEDIA_TYPES = {"png": "image/png", "mp4": "video/mp4"}  # by key extension; others: bytes


@router.get("/blobs/{key}", response_class=FileResponse)
async def get_blob(request: Request, key: str):
  """A stored file by its content key ('<sha256>.png', a video job's '<sha256>.mp4')."""
  store = request.app.state.service.store
  try:
    storage.check_key(key)
    media = MEDIA_TYPES.get(key.rpartition(".")[2], "application/octet-stream")
    path = store.path(key)
    if path is None:
      return Response(store.get(key), media_type=media,
                      headers={"Cache-Control": "public, max-age=31536000, immutable"})
  except (ValueError, KeyError):
    raise ServiceError(404, "no such image") from None
  if not path.is_file():
    raise ServiceError(404, "no such image")
  return FileResponse(path, media_type=media,
                      headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/models")
async def models(request: Request) -> list[dict]:
  """The style networks (shipped and user-trained) and their styles."""
  return [catalog.public(m) for m in catalog.models(request.app.state.cfg)]


@router.get("/paintings")
async def paintings(request: Request) -> dict:
  """The arbitrary network (any painting): whether it is installed (else ``install`` says how)
  and the shared paintings it offers by ``stem`` (``model=arbitrary``, ``painting=<stem>``)."""
  installed = catalog.arbitrary_installed()
  return {"installed": installed, "install": None if installed else catalog.INSTALL_HINT,
          "paintings": [{**p, "thumb_url": f"/paintings/{p['stem']}.png"}
                        for p in catalog.paintings(request.app.state.cfg)]}


@router.get("/gallery")
async def gallery(request: Request, page: int = 1, per_page: int = 12) -> dict:
  """Shared results, newest first."""
  page, per_page = max(1, page), min(max(1, per_page), 100)
  items, total = request.app.state.service.db.gallery_page(page, per_page)
  return {"items": [item_json(request, i) for i in items], "page": page, "per_page": per_page,
          "total": total}


@router.post("/gallery", status_code=201)
async def share(request: Request) -> dict:
  """Shares a finished job of this client (form fields ``job_id``, ``title``, ``publish``:
  ``result`` (the default) publishes the result only, ``all`` also the content and style
  images). Sharing a job again answers its existing item."""
  fields, _ = await checked_form(request)
  item = await run_in_threadpool(request.app.state.service.share, request.state.client_id,
                                 fields.get("job_id", ""), fields.get("title", ""),
                                 fields.get("publish", "result"))
  return item_json(request, item)


@router.get("/gallery/{item_id}")
async def gallery_item(request: Request, item_id: int) -> dict:
  return item_json(request, request.app.state.service.item(item_id))


@router.delete("/gallery/{item_id}", status_code=204)
async def delete_item(request: Request, item_id: int) -> Response:
  """Deletes this client's own item (403 for anybody else's) and its files; with
  ``Authorization: Bearer <admin token>``, any item."""
  if is_admin(request):
    request.app.state.service.delete_item(None, item_id)
    return Response(status_code=204)
  check_csrf(request, None)
  request.app.state.service.delete_item(request.state.client_id, item_id)
  return Response(status_code=204)


@router.post("/gallery/{item_id}/hide", status_code=204)
async def hide_item(request: Request, item_id: int) -> Response:
  """Hides any item from the gallery (its files stay): ``Authorization: Bearer <admin
  token>`` only."""
  if not is_admin(request):
    raise ServiceError(403, "hiding gallery items needs the administrator's token")
  request.app.state.service.hide_item(item_id)
  return Response(status_code=204)


def is_admin(request: Request) -> bool:
  """Whether the request carries the administrator's bearer token (a header: no CSRF)."""
  scheme, _, token = request.headers.get("authorization", "").partition(" ")
  return scheme.lower() == "bearer" and request.app.state.service.is_admin(token.strip())
