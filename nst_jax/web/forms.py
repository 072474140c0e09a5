"""Request helpers of the pages and the API: the CSRF check and reading a multipart form."""

from __future__ import annotations

from fastapi import Request
from starlette.formparsers import FormParser, MultiPartParser

from nst_jax.web.service import ServiceError

TOKEN_HEADER = "x-client-token"
CSRF_HEADER = "x-csrf-token"


def network_of(request: Request) -> str:
  """The client's network key for the per-IP limits: its address as the server sees it, which
  is the X-Forwarded-For address only from a trusted proxy (``WebConfig.forwarded_allow_ips``,
  uvicorn's ``ProxyHeadersMiddleware``)."""
  host = request.client.host if request.client else None
  return request.app.state.signer.network_key(host)


def check_csrf(request: Request, token: str | None) -> None:
  """Refuses (403) a state-changing request without a valid CSRF token, unless the client
  authenticated by header."""
  if request.state.by_header:
    return
  token = token or request.headers.get(CSRF_HEADER)
  if not request.app.state.signer.check_csrf(request.state.client_id, token):
    raise ServiceError(403, "the form expired or came from another site (missing or bad CSRF "
                       "token); reload the page and try again")


class BodyTooLarge(Exception):
  """The request body went past its limit while it was being read."""


async def bounded(stream, limit: int):
  """The chunks of ``stream`` until more than ``limit`` bytes came: then ``BodyTooLarge``.

  Starlette spools a multipart body to a temporary file whatever its size and checks nothing
  while it reads, and a chunked request announces no length; counting here stops the upload at
  the limit, and the parser closes (removes) its temporary files when the stream raises.
  """
  total = 0
  async for chunk in stream:
    total += len(chunk)
    if total > limit:
      raise BodyTooLarge()
    yield chunk


def body_limit(cfg) -> int:
  """The most bytes a form post may have: every image field at the upload limit, and 1 MB."""
  return len(FILE_FIELDS) * (int(cfg.limits.max_upload_mb * 1e6) + 1) + 1_000_000


FILE_FIELDS = ("content", "style", "content_mask", "style_mask", "style_image")


async def read_form(request: Request, file_fields=FILE_FIELDS) -> tuple[dict, dict]:
  """(text fields, uploaded bytes by field) of a multipart or urlencoded body; files are read
  up to the upload limit plus one byte (more is refused by ``uploads.clean_upload``); a body
  over ``body_limit`` is refused (413) as soon as it passes it, announced or not."""
  cfg = request.app.state.cfg
  limit = int(cfg.limits.max_upload_mb * 1e6) + 1
  too_large = ServiceError(413, f"the request is too large (at most "
                           f"{cfg.limits.max_upload_mb:g} MB per image)")
  declared = request.headers.get("content-length", "")
  if declared.isdigit() and int(declared) > body_limit(cfg):
    raise too_large
  content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
  parser = {"multipart/form-data": MultiPartParser,
            "application/x-www-form-urlencoded": FormParser}.get(content_type)
  if parser is None:
    return {}, {}
  kwargs = {"max_files": 8, "max_fields": 50} if parser is MultiPartParser else {}
  try:
    form = await parser(request.headers, bounded(request.stream(), body_limit(cfg)),
                        **kwargs).parse()
  except BodyTooLarge:
    raise too_large from None
  except Exception as e:  # pylint: disable=broad-except  (a malformed body is the client's)
    raise ServiceError(400, f"could not read the form ({type(e).__name__})") from None
  try:
    fields, files = {}, {}
    for key, value in form.multi_items():
      if hasattr(value, "read"):
        if key in file_fields:
          data = await value.read(limit)
          if data:
            files[key] = data
      else:
        fields[key] = value
  finally:
    await form.close()  # the spooled files go at once, not when the request object goes
  return fields, files


async def checked_form(request: Request) -> tuple[dict, dict]:
  """``read_form``'s (fields, files) of a state-changing post, after the CSRF check."""
  fields, files = await read_form(request)
  check_csrf(request, fields.get("csrf"))
  return fields, files
