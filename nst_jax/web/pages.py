"""The server-rendered pages (Jinja2, autoescaped) and their form posts.

Pages: ``/`` (stylize now), ``/custom`` (a custom job), ``/jobs/{id}`` (a job's progress and
result), ``/gallery`` and ``/gallery/{id}``, ``/models``. Forms post here with a hidden ``csrf``
field and are answered with a redirect (303) or the form again with the error and a 4xx status;
``static/app.js`` upgrades them to fetch + polling of ``/api/jobs/{id}``.
"""

from __future__ import annotations

import datetime
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from nst_jax import config
from nst_jax.web import api, catalog, uploads
from nst_jax.web.forms import check_csrf, checked_form, network_of, read_form
from nst_jax.web.service import ServiceError

router = APIRouter(include_in_schema=False)
PER_PAGE = 12
PAINTING_SIZE = 192  # px, long side of a painting's thumbnail (shown at 96-128 px)


def format_time(seconds: float | None) -> str:
  """A Unix time as the pages show it: '2026-12-07 19:30 UTC' (the server does not know the
  visitor's zone; the <time> element carries the exact value)."""
  if not seconds:
    return ""
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      "%Y-%m-%d %H:%M UTC")


def iso_time(seconds: float | None) -> str:
  if not seconds:
    return ""
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
      timespec="seconds")


def context(request: Request, **values) -> dict:
  """What every template gets: the CSRF token, the limits, the active page."""
  cfg = request.app.state.cfg
  return {"csrf": request.state.csrf, "limits": cfg.limits, "kinds": config.WEB_JOB_KINDS,
          "smtp": bool(cfg.smtp.host), **values}


def render(request: Request, name: str, status: int = 200, headers: dict | None = None,
           **values):
  return request.app.state.templates.TemplateResponse(
      request, name, context(request, **values), status_code=status, headers=headers)


def picker(cfg: config.WebConfig) -> dict:
  """What the style picker offers: the trained networks, and the arbitrary network's shared
  paintings when it is installed (then the default choice: the first painting, else an
  upload), else the line that says how to install it."""
  installed = catalog.arbitrary_installed()
  paintings = catalog.paintings(cfg) if installed else []
  default = ""
  if installed:
    default = f"{catalog.ARBITRARY}#{paintings[0]['stem'] if paintings else 'upload'}"
  return {"models": catalog.models(cfg), "arbitrary": installed, "paintings": paintings,
          "default_choice": default, "install_hint": catalog.INSTALL_HINT}


@router.get("/")
async def stylize_page(request: Request):
  return render(request, "stylize.html", title="Stylize now", page="stylize",
                **picker(request.app.state.cfg))


@router.get("/custom")
async def custom_page(request: Request):
  return render(request, "custom.html", title="Custom job", page="custom", form={},
                models=catalog.models(request.app.state.cfg))


@router.post("/jobs")
async def submit(request: Request):
  """The no-JS form post of both forms: a redirect to the job page, or the form with the error."""
  fields, files = await read_form(request)
  try:
    check_csrf(request, fields.get("csrf"))
    job = await run_in_threadpool(request.app.state.service.submit, request.state.client_id,
                                  fields, files, network_of(request))
  except ServiceError as e:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
    if fields.get("kind", "fast") == "fast":
      return render(request, "stylize.html", e.status, headers, title="Stylize now",
                    page="stylize", **picker(request.app.state.cfg), error=e.message)
    return render(request, "custom.html", e.status, headers, title="Custom job",
                  page="custom", form=fields, error=e.message,
                  models=catalog.models(request.app.state.cfg))
  return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs")
async def my_jobs_page(request: Request):
  """This client's newest jobs."""
  service = request.app.state.service
  mine = [api.job_json(request, j) for j in service.db.jobs_of(request.state.client_id, 50)]
  return render(request, "jobs.html", title="My jobs", page="jobs", jobs=mine)


@router.post("/jobs/{job_id}/delete")
async def delete_job(request: Request, job_id: str):
  await checked_form(request)
  request.app.state.service.delete_job(request.state.client_id, job_id)
  return RedirectResponse("/jobs", status_code=303)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str):
  job = request.app.state.service.job_of(job_id)
  return render(request, "job.html", title=f"Job {job.id[:8]}", page="job",
                job=api.job_json(request, job))


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str):
  await checked_form(request)
  request.app.state.service.cancel(request.state.client_id, job_id)
  return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/share")
async def share(request: Request, job_id: str):
  fields, _ = await checked_form(request)
  item = await run_in_threadpool(request.app.state.service.share, request.state.client_id,
                                 job_id, fields.get("title", ""),
                                 fields.get("publish", "result"))
  return RedirectResponse(f"/gallery/{item.id}", status_code=303)


@router.get("/gallery")
async def gallery_page(request: Request, page: int = 1):
  page = max(1, page)
  items, total = request.app.state.service.db.gallery_page(page, PER_PAGE)
  pages = max(1, -(-total // PER_PAGE))
  return render(request, "gallery.html", title="Gallery", page="gallery",
                items=[api.item_json(request, i) for i in items], number=page, pages=pages,
                total=total)


@router.get("/gallery/{item_id}")
async def gallery_item(request: Request, item_id: int):
  item = request.app.state.service.item(item_id)
  return render(request, "item.html", title=item.title, page="gallery",
                item=api.item_json(request, item))


@router.post("/gallery/{item_id}/delete")
async def delete_item(request: Request, item_id: int):
  await checked_form(request)
  request.app.state.service.delete_item(request.state.client_id, item_id)
  return RedirectResponse("/gallery", status_code=303)


PLACEHOLDER = ('<svg xmlns="http://www.w3.org/2000/svg" width="160" height="160">'
               '<rect width="160" height="160" fill="#ddd"/><text x="80" y="85" font-size="14" '
               'text-anchor="middle" fill="#666">rendering…</text></svg>')


@router.get("/models/{name}/{index}/painting.png")
async def model_painting(request: Request, name: str, index: int):
  """A thumbnail of the painting a model's style was trained on, when this host has the
  painting (``catalog.painting_file``), else the style's sample (a redirect)."""
  entry = catalog.find(request.app.state.cfg, name)
  if entry is None or not 0 <= index < len(entry["styles"]):
    raise ServiceError(404, "no such model or style")
  cache = request.app.state.paintings  # made once per process: a few KB each
  key = (name, index)
  if key not in cache:
    path = catalog.painting_file(request.app.state.cfg, entry, index)
    cache[key] = (await run_in_threadpool(uploads.thumbnail, path.read_bytes(),
                                          PAINTING_SIZE) if path is not None else None)
  if cache[key] is None:
    return RedirectResponse(f"/models/{name}/{index}/sample.png", status_code=302)
  return Response(cache[key], media_type="image/png",
                  headers={"Cache-Control": "public, max-age=86400"})


@router.get("/paintings/{stem}.png")
async def shared_painting(request: Request, stem: str):
  """A thumbnail of a shared painting the arbitrary network offers (``catalog.paintings``)."""
  cache = request.app.state.paintings
  key = ("shared", stem)
  if key not in cache:
    path = catalog.painting_path(request.app.state.cfg, stem)
    if path is None:
      raise ServiceError(404, "no such painting")
    cache[key] = await run_in_threadpool(uploads.thumbnail, path.read_bytes(), PAINTING_SIZE)
  return Response(cache[key], media_type="image/png",
                  headers={"Cache-Control": "public, max-age=86400"})


@router.get("/models/{name}/{index}/photo.png")
async def model_photo_sample(request: Request, name: str, index: int):
  """The model's style on the real photo ``WebConfig.sample_photo``, rendered once by a worker
  behind the users' jobs (a placeholder until then); 404 when no photo is configured."""
  return await _sample_response(request, name, index, photo=True)


@router.get("/models/{name}/{index}/sample.png")
async def model_sample(request: Request, name: str, index: int):
  """The model's style on the built-in sample photo: the shipped models' precomputed JPEG, a
  user model's rendered once by a worker (a placeholder until then)."""
  return await _sample_response(request, name, index, photo=False)


async def _sample_response(request: Request, name: str, index: int, *, photo: bool):
  job = await run_in_threadpool(partial(request.app.state.service.sample, name, index,
                                        photo=photo))
  if job is None:
    raise ServiceError(404, "no such model or style")
  if isinstance(job, Path):
    return FileResponse(job, media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400"})
  if job.status == "done":
    return RedirectResponse(api.blob_url(job.result_key), status_code=302)
  return Response(PLACEHOLDER, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/favicon.ico")
async def favicon():
  return FileResponse(Path(__file__).resolve().parent / "static" / "favicon.ico",
                      media_type="image/vnd.microsoft.icon",
                      headers={"Cache-Control": "public, max-age=86400"})


@router.get("/models")
async def models_page(request: Request):
  cfg = request.app.state.cfg
  return render(request, "models.html", title="Models", page="models",
                models=catalog.models(cfg), sample_photo=bool(cfg.sample_photo))
