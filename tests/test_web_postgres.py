"""The service's database on PostgreSQL, unchanged: migrations, the atomic claim and a job from
upload to result. A private server (initdb + pg_ctl on loopback, fsync off) is started for the
module; skipped with the reason when PostgreSQL or the psycopg driver is missing."""

import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_jax import config

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
pytest.importorskip("psycopg", reason="psycopg is missing (pip install -e '.[web,webtest]')")
from fastapi.testclient import TestClient  # noqa: E402  pylint: disable=wrong-import-position

from nst_jax.web import app as web_app  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web import db as web_db  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web import jobs  # noqa: E402  pylint: disable=wrong-import-position


def _pg_bin(name: str) -> str | None:
  found = shutil.which(name)
  if found:
    return found
  versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
  return str(versions[-1]) if versions else None


@pytest.fixture(scope="module")
def postgres_url(free_port):
  """postgresql://nst@127.0.0.1:PORT/postgres of a throwaway server (as 'nobody' under root:
  PostgreSQL refuses to run as root)."""
  initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
  if initdb is None or pg_ctl is None:
    pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
  root = Path(tempfile.mkdtemp(prefix="nst_pg_"))
  prefix = []
  if os.geteuid() == 0:
    shutil.chown(root, "nobody")
    prefix = ["runuser", "-u", "nobody", "--"]
  port = free_port()

  def run(*argv):
    subprocess.run([*prefix, *argv], check=True, capture_output=True)

  try:
    run(initdb, "-D", str(root / "data"), "-A", "trust", "-U", "nst")
    run(pg_ctl, "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
  except subprocess.CalledProcessError as e:
    shutil.rmtree(root, ignore_errors=True)
    pytest.skip(f"could not start PostgreSQL: {e.stderr.decode(errors='replace')[-200:]}")
  try:
    yield f"postgresql://nst@127.0.0.1:{port}/postgres"
  finally:
    subprocess.run([*prefix, pg_ctl, "-D", str(root / "data"), "-m", "immediate", "stop"],
                   capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def test_migrations_and_the_atomic_claim_on_postgres(postgres_url):
  database = web_db.Database(postgres_url)
  assert database.engine.dialect.name == "postgresql"
  database.migrate()
  database.migrate()
  job = database.create_job("me", "fast", {"model": "starry_small", "nested": {"a": [1, 2]}})
  assert database.get_job(job.id).params == {"model": "starry_small", "nested": {"a": [1, 2]}}
  assert database.claim(job.id, "w1", stale_s=60) and not database.claim(job.id, "w2", 60)
  database.set_fields(job.id, heartbeat_at=time.time() - 100)
  assert database.recoverable(stale_s=60) == [job.id]
  assert database.claim(job.id, "w2", stale_s=60)
  assert not database.finish(job.id, "w1", "done", result_key="a.png")
  assert database.finish(job.id, "w2", "done", result_key="b.png")
  assert database.get_job(job.id).attempts == 2


def test_a_fast_job_end_to_end_on_postgres(postgres_url, tmp_path):
  cfg = config.WebConfig(data_dir=str(tmp_path), database_url=postgres_url)
  holder = {}
  app = web_app.create_app(cfg, enqueue=lambda job_id: holder["ex"].run(job_id))
  holder["ex"] = jobs.Executor(cfg, db=app.state.service.db, store=app.state.service.store)
  client = TestClient(app)
  csrf = client.get("/api/session").json()["csrf_token"]
  buf = io.BytesIO()
  Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(
      buf, "PNG")
  r = client.post("/api/jobs", data={"model": "starry_small", "size": "48"},
                  files={"content": ("x.png", buf.getvalue())}, headers={"X-CSRF-Token": csrf})
  assert r.status_code == 201, r.text
  job = client.get(f"/api/jobs/{r.json()['id']}").json()
  assert job["status"] == "done"
  assert Image.open(io.BytesIO(client.get(job["result_url"]).content)).size == (48, 34)
  item = client.post("/api/gallery", data={"job_id": job["id"], "title": "pg"},
                     headers={"X-CSRF-Token": csrf}).json()
  assert client.get("/api/gallery").json()["items"][0]["id"] == item["id"]
