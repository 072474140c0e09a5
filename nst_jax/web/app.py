"""The ASGI application: ``create_app(cfg)`` -> FastAPI with the pages, the JSON API under
``/api`` (OpenAPI at ``/openapi.json``, docs at ``/docs``) and the static files.

Synopsis::

  app = create_app(config.WebConfig(data_dir="data"))   # migrates the database
  uvicorn.run(app, host="127.0.0.1", port=8000)          # `nst-jax serve` does this + workers

Every visitor gets a signed client id in a cookie on the first request (``security.Signer``);
it owns the jobs and gallery items it makes. Scripts may send it back as the
``X-Client-Token`` header instead. State-changing requests need a CSRF token (the form's hidden
``csrf`` field or the ``X-CSRF-Token`` header) unless they authenticate by that header, which a
cross-site page cannot set. Errors are one line: JSON ``{"detail": ...}`` under ``/api``, a page
elsewhere; never a 500 for bad input.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Callable

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from nst_jax import config
from nst_jax.web import api, jobs, pages, queue, security
from nst_jax.web.forms import TOKEN_HEADER
from nst_jax.web.service import Service, ServiceError
from nst_jax.web.watch import JobWatch

log = logging.getLogger("nst_jax.web.app")
HERE = Path(__file__).resolve().parent
COOKIE = "nst_client"
COOKIE_MAX_AGE = 365 * 24 * 3600
# Scripts and styles only from this site (no inline ones), no framing.
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")


HSTS = "max-age=31536000"  # a year; no includeSubDomains: the site may share a domain


def swagger_ui_dir() -> Path | None:
  """Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``; a version that reads
  OpenAPI 3.1) as the fastapi-offline package ships them, or None if it is not installed. Only
  its files are used: its page has an inline script, which the CSP would block."""
  spec = importlib.util.find_spec("fastapi_offline")
  if spec is None or not spec.submodule_search_locations:
    return None
  folder = Path(list(spec.submodule_search_locations)[0]) / "static"
  return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def make_private(data_dir: Path) -> None:
  """The data folder 0700 and its databases 0600: they hold e-mail addresses and uploads.
  (``serve`` and ``worker`` also set the umask to 077, so what they create later is private.)"""
  os.chmod(data_dir, 0o700)
  for path in data_dir.glob("*.db*"):
    if path.is_file():
      os.chmod(path, 0o600)


def create_app(cfg: config.WebConfig, *, enqueue: Callable[[str], object] | None = None
               ) -> FastAPI:
  """The application on ``cfg``'s database, storage and queue.

  Args:
    cfg: the service's config.
    enqueue: job id -> enqueued (default: the huey task ``run_job`` of ``cfg.queue_url``;
      tests pass an executor's ``run`` to run jobs in-process).
  """
  data_dir = Path(cfg.data_dir)
  data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
  db = jobs.open_database(cfg)
  db.migrate()
  make_private(data_dir)
  enqueue_low = None
  if enqueue is None:
    _, tasks = queue.make_queue(cfg)
    enqueue, enqueue_low = tasks.run_job, tasks.run_sample
  app = FastAPI(title="nst-jax", version="1", docs_url=None, redoc_url=None,
                description="Neural style transfer: fast networks, slow optimization, "
                "super-resolution, and a shared gallery.")
  app.state.cfg = cfg
  app.state.service = Service(cfg, db, jobs.open_store(cfg), enqueue, enqueue_low)
  app.state.signer = security.Signer(security.load_secret(data_dir))
  app.state.watch = JobWatch(db)
  app.state.paintings = {}  # (model, style index) -> thumbnail PNG, or None (no painting here)
  env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
  env.filters.update(datetime=pages.format_time, isotime=pages.iso_time)
  app.state.templates = Jinja2Templates(env=env)
  app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
  swagger = swagger_ui_dir()
  if swagger is not None:  # /docs's scripts from this site: offline, and under our CSP
    app.mount("/docs/assets", StaticFiles(directory=swagger), name="swagger-ui")

  @app.get("/docs", include_in_schema=False)
  async def docs(request: Request):
    return app.state.templates.TemplateResponse(request, "docs.html",
                                                {"swagger": swagger is not None})
  app.include_router(api.router)
  app.include_router(pages.router)

  @app.middleware("http")
  async def identify(request: Request, call_next):
    signer = request.app.state.signer
    header = request.headers.get(TOKEN_HEADER)
    client = signer.client_id(header) if header else None
    request.state.by_header = client is not None
    new_token = None
    if client is None:
      client = signer.client_id(request.cookies.get(COOKIE))
    if client is None:
      new_token = signer.new_client_token()
      client = signer.client_id(new_token)
    request.state.client_id = client
    request.state.csrf = signer.csrf_token(client)
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", CSP)
    secure = cfg.secure_cookies or request.url.scheme == "https"
    if secure:  # browsers ignore it over plain HTTP; behind TLS it keeps them on HTTPS
      response.headers.setdefault("Strict-Transport-Security", HSTS)
    if new_token is not None:
      response.set_cookie(COOKIE, new_token, max_age=COOKIE_MAX_AGE, httponly=True,
                          samesite="lax", secure=secure)
    return response

  if cfg.forwarded_allow_ips:  # the client's address (per-IP limits) and scheme from the proxy
    # Added last, so it is the outermost: every other layer sees the proxy's client and scheme.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=cfg.forwarded_allow_ips)

  @app.exception_handler(ServiceError)
  async def service_error(request: Request, exc: ServiceError):
    return error_response(request, exc.status, exc.message, exc.retry_after)

  @app.exception_handler(StarletteHTTPException)
  async def http_error(request: Request, exc: StarletteHTTPException):
    return error_response(request, exc.status_code, str(exc.detail))

  @app.exception_handler(RequestValidationError)
  async def validation_error(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    return error_response(request, 422, f"{where}: {first.get('msg', 'invalid request')}")

  return app


def error_response(request: Request, status: int, message: str, retry_after: int | None = None):
  """JSON under /api, else the error page; a Retry-After header when it says when to retry."""
  headers = {"Retry-After": str(retry_after)} if retry_after else None
  if request.url.path.startswith("/api/"):
    return JSONResponse({"detail": message}, status_code=status, headers=headers)
  templates = request.app.state.templates
  return templates.TemplateResponse(request, "error.html", pages.context(
      request, title="Error", status=status, message=message, retry_after=retry_after),
      status_code=status, headers=headers)
