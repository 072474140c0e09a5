"""Jobs through the real queue and real worker processes: the atomic claim, a worker killed
mid-job (SIGKILL) and its job resumed from the optimizer checkpoint, jobs queued while the web
process is down, the completion e-mail, and the Redis queue.
"""

import email
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_jax import config

pytest.importorskip("huey")
from nst_jax.web import db as web_db  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web import jobs, queue  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web.service import Service  # noqa: E402  pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parent.parent
FINAL = ("done", "failed", "cancelled")


def png_bytes(h: int, w: int, seed: int = 0) -> bytes:
  buf = io.BytesIO()
  rgb = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
  Image.fromarray(rgb).save(buf, "PNG")
  return buf.getvalue()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_worker(data_dir: Path, *extra: str, vgg_path=None) -> subprocess.Popen:
  """``python3 -m nst_jax.cli worker`` on ``data_dir`` (short heartbeats and polls)."""
  env = dict(os.environ)
  if vgg_path is not None:
    env["NST_JAX_VGG_WEIGHTS"] = str(vgg_path)
  argv = [sys.executable, "-m", "nst_jax.cli", "worker", "--data-dir", str(data_dir),
          "--set", "stale_s=2", "--set", "poll_s=0.05", *extra]
  return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                          stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = ""):
  end = time.time() + timeout
  while time.time() < end:
    value = predicate()
    if value:
      return value
    if proc is not None and proc.poll() is not None:
      pytest.fail(f"the worker exited ({proc.returncode}) waiting for {what}:\n"
                  f"{proc.stdout.read()[-3000:]}")
    time.sleep(0.1)
  pytest.fail(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> str:
  if proc.poll() is None:
    proc.send_signal(signal.SIGINT)
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  return proc.stdout.read()


def service_for(cfg: config.WebConfig) -> Service:
  """The web side of ``cfg`` without the web process: records jobs and enqueues them."""
  database = jobs.open_database(cfg)
  database.migrate()
  _, tasks = queue.make_queue(cfg)
  return Service(cfg, database, jobs.open_store(cfg), tasks.run_job)


def test_migrations_are_idempotent_and_make_the_tables(tmp_path):
  import sqlalchemy  # pylint: disable=import-outside-toplevel
  database = web_db.Database(f"sqlite:///{tmp_path / 'x.db'}")
  database.migrate()
  database.migrate()
  names = set(sqlalchemy.inspect(database.engine).get_table_names())
  assert {"jobs", "gallery", "alembic_version"} <= names


def test_claim_is_exclusive_and_a_stale_job_is_taken_over_without_a_second_result(tmp_path):
  database = web_db.Database(f"sqlite:///{tmp_path / 'x.db'}")
  database.migrate()
  job = database.create_job("me", "fast", {})
  assert database.claim(job.id, "w1", stale_s=60)
  assert not database.claim(job.id, "w2", stale_s=60)  # w1 beats: not stale
  assert database.heartbeat(job.id, "w1", iteration=3)
  assert not database.heartbeat(job.id, "w2")
  database.set_fields(job.id, heartbeat_at=time.time() - 100)  # w1 stalls
  assert database.recoverable(stale_s=60) == [job.id]
  assert database.claim(job.id, "w2", stale_s=60)
  assert not database.finish(job.id, "w1", "done", result_key="a.png")  # w1 lost it
  assert database.finish(job.id, "w2", "done", result_key="b.png")
  final = database.get_job(job.id)
  assert (final.status, final.result_key, final.attempts, final.worker) == ("done", "b.png", 2,
                                                                            "w2")
  assert not database.claim(job.id, "w3", stale_s=0)  # done is final


def test_a_killed_worker_s_slow_job_resumes_from_its_checkpoint(tmp_path, vgg_path):
  """SIGKILL the worker mid-optimization: the next worker takes the job over (stale heartbeat),
  resumes from the optimizer checkpoint, and writes exactly one result."""
  cfg = config.WebConfig(data_dir=str(tmp_path), stale_s=2, checkpoint_every=2)
  svc = service_for(cfg)
  # 40 iterations in chunks of 10 (each checkpointed): killed after the first chunk, with 3 to go.
  job = svc.submit("me", {"kind": "artistic", "size": "48", "iterations": "40"},
                   {"content": png_bytes(40, 56), "style": png_bytes(48, 48, seed=1)})
  first = start_worker(tmp_path, "--set", "checkpoint_every=2", vgg_path=vgg_path)
  try:
    wait_for(lambda: svc.db.get_job(job.id).iteration >= 10, 300, first, "iteration 10")
    first.send_signal(signal.SIGKILL)
    first.wait()
  finally:
    stop(first)
  killed = svc.db.get_job(job.id)
  assert killed.status == "running" and killed.iteration < 40, "finished before the kill"
  assert (tmp_path / "work" / job.id).is_dir()  # the checkpoint the next worker resumes
  second = start_worker(tmp_path, "--set", "checkpoint_every=2", vgg_path=vgg_path)
  try:
    done = wait_for(lambda: (j := svc.db.get_job(job.id)).status in FINAL and j, 300, second,
                    "the job to end")
  finally:
    log = stop(second)
  assert done.status == "done", (done.error, log[-2000:])
  assert done.attempts == 2 and done.iteration == done.total == 40 and done.loss > 0
  assert done.start_iteration >= 10, "the second worker did not resume from the checkpoint"
  assert "re-enqueued 1 job(s)" in log
  result = Image.open(io.BytesIO(svc.store.get(done.result_key)))
  assert result.size == (48, 34)
  blobs = sorted(p.name for p in (tmp_path / "blobs").rglob("*.png"))
  assert blobs == sorted({done.content_key, done.style_key, done.result_key})  # one result,
  assert not (tmp_path / "work" / job.id).exists()  # no preview or checkpoint left


class Collect:
  """An SMTP handler that keeps the messages."""

  def __init__(self):
    self.envelopes = []

  async def handle_DATA(self, server, session, envelope):  # pylint: disable=invalid-name,unused-argument
    self.envelopes.append(envelope)
    return "250 OK"


def test_jobs_queued_while_the_web_process_is_down_are_run_and_mailed(tmp_path):
  """The web process enqueues and goes away (one job recorded but never enqueued, as if it died
  in between); a worker started later runs all of them, and e-mails the one that asked."""
  controller_mod = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd not installed")
  from fastapi.testclient import TestClient  # pylint: disable=import-outside-toplevel
  from nst_jax.web import app as web_app  # pylint: disable=import-outside-toplevel
  handler = Collect()
  smtp = controller_mod.Controller(handler, hostname="127.0.0.1", port=free_port())
  smtp.start()
  cfg = config.WebConfig(data_dir=str(tmp_path), base_url="http://nst.example:9000",
                         smtp=config.SmtpConfig(host="127.0.0.1", port=smtp.port))
  client = TestClient(web_app.create_app(cfg))  # the real queue: nothing runs in-process
  csrf = client.get("/api/session").json()["csrf_token"]
  ids = [client.post("/api/jobs", data={"model": "starry_small", "size": "32", "email": addr},
                     files={"content": ("x.png", png_bytes(32, 40, seed=i))},
                     headers={"X-CSRF-Token": csrf}).json()["id"]
         for i, addr in enumerate(["me@example.org", ""])]
  del client  # the web process is gone
  svc = service_for(cfg)
  orphan = svc.db.create_job("me", "fast", {"model": "starry_small", "style_index": 0,
                                            "size": 32}, content=svc.store.put(
                                                png_bytes(32, 32), "png"))
  worker = start_worker(tmp_path, "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port),
                        "--base-url", "http://nst.example:9000")
  try:
    wait_for(lambda: all(svc.db.get_job(i).status in FINAL for i in [*ids, orphan.id]), 240,
             worker, "three jobs")
  finally:
    log = stop(worker)
    smtp.stop()
  for job_id in [*ids, orphan.id]:
    job = svc.db.get_job(job_id)
    assert job.status == "done" and job.attempts == 1, (job.error, log[-2000:])
  assert len(handler.envelopes) == 1
  envelope = handler.envelopes[0]
  assert envelope.rcpt_tos == ["me@example.org"]
  body = email.message_from_bytes(envelope.content).get_payload(decode=True).decode()
  assert f"http://nst.example:9000/jobs/{ids[0]}" in body


@pytest.fixture
def redis_url(tmp_path):
  """A private ``redis-server`` on loopback (no persistence), or a skip."""
  import shutil  # pylint: disable=import-outside-toplevel
  binary = shutil.which("redis-server")
  if binary is None:
    pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
  port = free_port()
  proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",  # pylint: disable=consider-using-with
                           "--appendonly", "no", "--dir", str(tmp_path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    import redis  # pylint: disable=import-outside-toplevel
    client = redis.Redis(host="127.0.0.1", port=port)
    wait_for(lambda: _pings(client), 10, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
  finally:
    proc.terminate()
    proc.wait(timeout=10)


def _pings(client) -> bool:
  try:
    return client.ping()
  except Exception:  # pylint: disable=broad-except
    return False


def test_a_job_through_the_redis_queue(tmp_path, redis_url):
  cfg = config.WebConfig(data_dir=str(tmp_path), queue_url=redis_url)
  svc = service_for(cfg)
  job = svc.submit("me", {"model": "starry_small", "size": "32"}, {"content": png_bytes(32, 32)})
  executor = jobs.Executor(cfg, db=svc.db, store=svc.store)
  huey, _ = queue.make_queue(cfg, executor=executor)
  assert type(huey).__name__ == "RedisHuey" and huey.pending_count() == 1
  task = huey.dequeue()
  huey.execute(task)
  done = svc.db.get_job(job.id)
  assert done.status == "done" and svc.store.exists(done.result_key)
  assert huey.pending_count() == 0


def test_cancelling_a_running_slow_job_stops_it_and_cleans_up(tmp_path, vgg_path,
                                                             monkeypatch):
  import threading  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("NST_JAX_VGG_WEIGHTS", str(vgg_path))
  cfg = config.WebConfig(data_dir=str(tmp_path), checkpoint_every=2)
  database = jobs.open_database(cfg)
  database.migrate()
  svc = Service(cfg, database, jobs.open_store(cfg), lambda job_id: None)
  job = svc.submit("me", {"kind": "artistic", "size": "48", "iterations": "40"},
                   {"content": png_bytes(40, 56), "style": png_bytes(48, 48, seed=1)})
  executor = jobs.Executor(cfg, db=database, store=svc.store)
  outcome = []
  runner = threading.Thread(target=lambda: outcome.append(executor.run(job.id)))
  runner.start()
  running = wait_for(lambda: (j := database.get_job(job.id)).iteration >= 10 and j, 300,
                     what="iteration 10")
  assert running.loss > 0 and running.preview_key and running.total == 40
  svc.cancel("me", job.id)
  runner.join(timeout=120)
  assert outcome == ["cancelled"]
  final = database.get_job(job.id)
  assert final.status == "cancelled" and final.result_key is None and final.iteration < 40
  assert final.preview_key is None and not svc.store.exists(running.preview_key)
  assert not (tmp_path / "work" / job.id).exists()


def test_serve_starts_the_app_and_stops_on_sigint(tmp_path):
  import httpx  # pylint: disable=import-outside-toplevel
  port = free_port()
  proc = subprocess.Popen([sys.executable, "-m", "nst_jax.cli", "serve", "--data-dir",  # pylint: disable=consider-using-with
                           str(tmp_path), "--port", str(port), "--workers", "0"], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  def page():
    try:
      return httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
      return None

  try:
    response = wait_for(page, 60, proc, "the server")
    assert response.status_code == 200 and 'id="upload"' in response.text
    assert (tmp_path / "nst.db").is_file()
    assert (tmp_path / "serve_config.json").stat().st_mode & 0o777 == 0o600
  finally:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    proc.stdout.read()


def test_periodic_recovery_enqueues_forgotten_jobs_once(tmp_path):
  cfg = config.WebConfig(data_dir=str(tmp_path), stale_s=30)
  database = jobs.open_database(cfg)
  database.migrate()
  executor = jobs.Executor(cfg, db=database)
  huey, tasks = queue.make_queue(cfg, executor=executor)
  forgotten = database.create_job("me", "fast", {})
  database.set_fields(forgotten.id, created_at=time.time() - 120)
  fresh = database.create_job("me", "fast", {})  # just submitted: its message is on its way
  dead = database.create_job("me", "fast", {})
  assert database.claim(dead.id, "gone", stale_s=30)
  database.set_fields(dead.id, heartbeat_at=time.time() - 60)
  tasks.recover.call_local()
  queued = sorted(huey.dequeue().args[0] for _ in range(huey.pending_count()))
  assert queued == sorted([forgotten.id, dead.id]) and fresh.id not in queued
  tasks.run_job(forgotten.id)  # a backlog: queued jobs wait their turn, stale ones don't
  tasks.recover.call_local()
  assert sorted(huey.dequeue().args[0] for _ in range(huey.pending_count())) == sorted(
      [forgotten.id, dead.id])
