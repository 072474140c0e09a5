"""Request helpers of the pages and the API: the CSRF check and reading a multipart form."""

from __future__ import annotations

from fastapi import Request

from nst_jax.web.service import ServiceError

TOKEN_HEADER = "x-client-token"
CSRF_HEADER = "x-csrf-token"


def check_csrf(request: Request, token: str | None) -> None:
  """Refuses (403) a state-changing request without a valid CSRF token, unless the client
  authenticated by header."""
  if request.state.by_header:
    return
  token = token or request.headers.get(CSRF_HEADER)
  if not request.app.state.signer.check_csrf(request.state.client_id, token):
    raise ServiceError(403, "the form expired or came from another site (missing or bad CSRF "
                       "token); reload the page and try again")


async def read_form(request: Request, file_fields=("content", "style", "content_mask",
                                                   "style_mask")) -> tuple[dict, dict]:
  """(text fields, uploaded bytes by field) of a multipart or urlencoded body; files are read
  up to the upload limit plus one byte (more is refused by ``uploads.clean_upload``)."""
  limit = int(request.app.state.cfg.limits.max_upload_mb * 1e6) + 1
  declared = request.headers.get("content-length", "")
  if declared.isdigit() and int(declared) > len(file_fields) * limit + 1_000_000:
    raise ServiceError(413, f"the request is too large (at most "
                       f"{request.app.state.cfg.limits.max_upload_mb:g} MB per image)")
  try:
    form = await request.form(max_files=8, max_fields=50)
  except Exception as e:  # pylint: disable=broad-except  (a malformed body is the client's)
    raise ServiceError(400, f"could not read the form ({type(e).__name__})") from None
  fields, files = {}, {}
  for key, value in form.multi_items():
    if hasattr(value, "read"):
      if key in file_fields:
        data = await value.read(limit)
        if data:
          files[key] = data
    else:
      fields[key] = value
  return fields, files


async def checked_form(request: Request) -> tuple[dict, dict]:
  """``read_form``'s (fields, files) of a state-changing post, after the CSRF check."""
  fields, files = await read_form(request)
  check_csrf(request, fields.get("csrf"))
  return fields, files
