"""The web application: pages, JSON API, storage, uploads and background jobs.

Its packages are the ``web`` extra (``pip install -e '.[web]'``); importing ``nst_jax.web``
without them raises ``errors.MissingExtra`` (a ``ModuleNotFoundError`` and a one-line
``UserError``) naming that command, before any submodule fails on its own import.
"""

from nst_jax.core import errors

# import name -> distribution (pyproject.toml's ``web`` extra); inotify_simple is optional.
REQUIRED = {"fastapi": "fastapi", "uvicorn": "uvicorn", "jinja2": "jinja2",
            "multipart": "python-multipart", "sqlalchemy": "sqlalchemy", "alembic": "alembic",
            "huey": "huey", "redis": "redis", "itsdangerous": "itsdangerous"}

errors.require_extra("web", REQUIRED, "the web application")
