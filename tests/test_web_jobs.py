"""Jobs through the real queue and real worker processes: the atomic claim, a worker killed
mid-job (SIGKILL) and its job resumed from the optimizer checkpoint, jobs queued while the web
process is down, the completion e-mail, and the Redis queue.
"""

import email
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_jax import config

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
from nst_jax.web import db as web_db  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web import jobs, queue  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web.service import Service  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web.service import ServiceError  # noqa: E402  pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parent.parent
FINAL = ("done", "failed", "cancelled")
# The slow job of these tests and of test_web_browser.py's custom job: the same shapes (a 48x64
# photo and a 48x48 style at 40 px), so the run's XLA cache holds their programs once.
SLOW_JOB = {"kind": "artistic", "size": "40", "iterations": "20"}  # chunks of 5 iterations
# Adam: its programs compile in about a third of L-BFGS-B's time; resuming (the optimizer state
# in the checkpoint) is the same code path for every optimizer (slow/driver.py).
SLOW_OPTIMIZER = "adam"


def slow_images() -> dict:
  return {"content": png_bytes(48, 64), "style": png_bytes(48, 48, seed=1)}


def png_bytes(h: int, w: int, seed: int = 0) -> bytes:
  buf = io.BytesIO()
  rgb = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
  Image.fromarray(rgb).save(buf, "PNG")
  return buf.getvalue()


def start_worker(data_dir: Path, *extra: str, vgg_path=None) -> subprocess.Popen:
  """``python3 -m nst_jax.cli worker`` on ``data_dir`` (short heartbeats and polls)."""
  env = dict(os.environ)
  if vgg_path is not None:
    env["NST_JAX_VGG_WEIGHTS"] = str(vgg_path)
  argv = [sys.executable, "-m", "nst_jax.cli", "worker", "--data-dir", str(data_dir),
          "--set", "stale_s=2", "--set", "poll_s=0.05", *extra]
  # pylint: disable-next=consider-using-with
  return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
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


def test_one_heartbeat_thread_beats_each_running_job_until_it_ends_or_is_lost(tmp_path):
  import threading  # pylint: disable=import-outside-toplevel
  cfg = config.WebConfig(data_dir=str(tmp_path), stale_s=0.8)  # a beat every 0.2 s
  database = jobs.open_database(cfg)
  database.migrate()
  executor = jobs.Executor(cfg, db=database)
  first, second = (database.create_job("me", "fast", {}) for _ in range(2))

  def beats_of(job_id, lost):
    assert database.claim(job_id, executor.name, cfg.stale_s)
    database.set_fields(job_id, heartbeat_at=0.0)
    executor._beat(job_id, lost)  # pylint: disable=protected-access
    wait_for(lambda: database.get_job(job_id).heartbeat_at > 0, 10, what="a heartbeat")

  lost1 = threading.Event()
  beats_of(first.id, lost1)
  lost1.set()  # the job ended
  time.sleep(0.3)
  database.set_fields(first.id, heartbeat_at=0.0)
  lost2 = threading.Event()
  beats_of(second.id, lost2)
  assert database.get_job(first.id).heartbeat_at == 0.0  # no beat after its end
  assert [t.name for t in threading.enumerate()].count(f"heartbeat {executor.name}") == 1
  database.cancel(second.id, "me")  # no longer this worker's: the beat says so
  assert lost2.wait(5)


def test_the_sqlite_queue_commits_without_a_sync_in_wal_mode(tmp_path):
  huey = queue.make_huey(config.WebConfig(data_dir=str(tmp_path)))
  conn = huey.storage.conn
  assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
  assert conn.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL (huey's default: FULL)


@pytest.mark.slow  # beside it: the running job's cancellation, the artistic run's exact resume
def test_a_killed_worker_s_slow_job_resumes_from_its_checkpoint(tmp_path, vgg_path):
  """SIGKILL the worker mid-optimization: the next worker takes the job over (stale heartbeat),
  resumes from the optimizer checkpoint, and writes exactly one result."""
  cfg = config.WebConfig(data_dir=str(tmp_path), stale_s=2, checkpoint_every=2,
                         slow_optimizer=SLOW_OPTIMIZER)
  svc = service_for(cfg)
  # 20 iterations in chunks of 5 (each checkpointed): killed after the first chunk, with 3 to go.
  job = svc.submit("me", SLOW_JOB, slow_images())
  first = start_worker(tmp_path, "--set", "checkpoint_every=2", "--set",
                       f"slow_optimizer={SLOW_OPTIMIZER}", vgg_path=vgg_path)
  try:
    wait_for(lambda: svc.db.get_job(job.id).iteration >= 5, 300, first, "iteration 5")
    first.send_signal(signal.SIGKILL)
    first.wait()
  finally:
    stop(first)
  killed = svc.db.get_job(job.id)
  assert killed.status == "running" and killed.iteration < 20, "finished before the kill"
  assert (tmp_path / "work" / job.id).is_dir()  # the checkpoint the next worker resumes
  second = start_worker(tmp_path, "--set", "checkpoint_every=2", "--set",
                        f"slow_optimizer={SLOW_OPTIMIZER}", vgg_path=vgg_path)
  try:
    done = wait_for(lambda: (j := svc.db.get_job(job.id)).status in FINAL and j, 300, second,
                    "the job to end")
  finally:
    log = stop(second)
  assert done.status == "done", (done.error, log[-2000:])
  assert done.attempts == 2 and done.iteration == done.total == 20 and done.loss > 0
  assert done.start_iteration >= 5, "the second worker did not resume from the checkpoint"
  assert "re-enqueued 1 job(s)" in log
  result = Image.open(io.BytesIO(svc.store.get(done.result_key)))
  assert result.size == (40, 30)
  blobs = sorted(p.name for p in (tmp_path / "blobs").rglob("*.png"))
  assert blobs == sorted({done.content_key, done.style_key, done.result_key})  # one result,
  assert not (tmp_path / "work" / job.id).exists()  # no preview or checkpoint left


def test_jobs_queued_while_the_web_process_is_down_are_run_and_mailed(tmp_path, smtp_server):
  """The web process enqueues and goes away (one job recorded but never enqueued, as if it died
  in between); a worker started later runs all of them, and e-mails the one that asked."""
  from fastapi.testclient import TestClient  # pylint: disable=import-outside-toplevel
  from nst_jax.web import app as web_app  # pylint: disable=import-outside-toplevel
  smtp, handler, _ = smtp_server
  cfg = config.WebConfig(data_dir=str(tmp_path), base_url="http://nst.example:9000",
                         smtp=config.SmtpConfig(host="127.0.0.1", port=smtp.port))
  client = TestClient(web_app.create_app(cfg))  # the real queue: nothing runs in-process
  csrf = client.get("/api/session").json()["csrf_token"]
  # One shape for the three jobs (and test_web_app.py's): one compiled network, from the cache.
  ids = [client.post("/api/jobs", data={"model": "starry_small", "size": "48", "email": addr},
                     files={"content": ("x.png", png_bytes(40, 56, seed=i))},
                     headers={"X-CSRF-Token": csrf}).json()["id"]
         for i, addr in enumerate(["me@example.org", ""])]
  del client  # the web process is gone
  svc = service_for(cfg)
  orphan = svc.db.create_job("me", "fast", {"model": "starry_small", "style_index": 0,
                                            "size": 48}, content=svc.store.put(
                                                png_bytes(40, 56, seed=5), "png"))
  worker = start_worker(tmp_path, "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port),
                        "--base-url", "http://nst.example:9000")
  try:
    wait_for(lambda: all(svc.db.get_job(i).status in FINAL for i in [*ids, orphan.id]), 240,
             worker, "three jobs")
  finally:
    log = stop(worker)
  for job_id in [*ids, orphan.id]:
    job = svc.db.get_job(job_id)
    assert job.status == "done" and job.attempts == 1, (job.error, log[-2000:])
  assert len(handler.envelopes) == 1
  envelope = handler.envelopes[0]
  assert envelope.rcpt_tos == ["me@example.org"]
  body = email.message_from_bytes(envelope.content).get_payload(decode=True).decode()
  assert f"http://nst.example:9000/jobs/{ids[0]}" in body


@pytest.fixture
def redis_url(tmp_path, free_port):
  """A private ``redis-server`` on loopback (no persistence), or a skip."""
  import shutil  # pylint: disable=import-outside-toplevel
  binary = shutil.which("redis-server")
  if binary is None:
    pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
  port = free_port()
  # pylint: disable-next=consider-using-with
  proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
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
  job = svc.submit("me", {"model": "starry_small", "size": "48"},  # the cached shape
                   {"content": png_bytes(40, 56)})
  executor = jobs.Executor(cfg, db=svc.db, store=svc.store)
  huey, _ = queue.make_queue(cfg, executor=executor)
  assert type(huey).__name__ == "PriorityRedisHuey" and huey.pending_count() == 1
  task = huey.dequeue()
  huey.execute(task)
  done = svc.db.get_job(job.id)
  assert done.status == "done" and svc.store.exists(done.result_key)
  assert huey.pending_count() == 0


def test_cancelling_a_running_slow_job_stops_it_and_cleans_up(tmp_path, vgg_path,
                                                             monkeypatch):
  import threading  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("NST_JAX_VGG_WEIGHTS", str(vgg_path))
  cfg = config.WebConfig(data_dir=str(tmp_path), checkpoint_every=2,
                         slow_optimizer=SLOW_OPTIMIZER)
  database = jobs.open_database(cfg)
  database.migrate()
  svc = Service(cfg, database, jobs.open_store(cfg), lambda job_id: None)
  job = svc.submit("me", SLOW_JOB, slow_images())
  executor = jobs.Executor(cfg, db=database, store=svc.store)
  outcome = []
  runner = threading.Thread(target=lambda: outcome.append(executor.run(job.id)))
  runner.start()
  running = wait_for(lambda: (j := database.get_job(job.id)).iteration >= 5 and j, 300,
                     what="iteration 5")
  assert running.loss > 0 and running.preview_key and running.total == 20
  svc.cancel("me", job.id)
  runner.join(timeout=120)
  assert outcome == ["cancelled"]
  final = database.get_job(job.id)
  assert final.status == "cancelled" and final.result_key is None and final.iteration < 20
  assert final.preview_key is None and not svc.store.exists(running.preview_key)
  assert not (tmp_path / "work" / job.id).exists()


def test_serve_starts_the_app_and_stops_on_sigint(tmp_path, free_port):
  import httpx  # pylint: disable=import-outside-toplevel
  port = free_port()
  # pylint: disable-next=consider-using-with
  proc = subprocess.Popen([sys.executable, "-m", "nst_jax.cli", "serve", "--data-dir",
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


@pytest.mark.parametrize("queue_kind", ["sqlite", "redis"])
def test_sample_jobs_wait_behind_user_jobs(tmp_path, queue_kind, request):
  """A user model's sample job, enqueued first, is taken after a user's job enqueued later."""
  import shutil  # pylint: disable=import-outside-toplevel
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  url = request.getfixturevalue("redis_url") if queue_kind == "redis" else ""
  (tmp_path / "models").mkdir()
  shutil.copy(zoo.CHECKPOINTS_DIR / "starry_small.npz", tmp_path / "models" / "mine.npz")
  cfg = config.WebConfig(data_dir=str(tmp_path), queue_url=url)
  database = jobs.open_database(cfg)
  database.migrate()
  huey, tasks = queue.make_queue(cfg)
  svc = Service(cfg, database, jobs.open_store(cfg), tasks.run_job, tasks.run_sample)
  sample = svc.sample("user:mine", 0)
  user = svc.submit("me", {"model": "starry_small", "size": "32"}, {"content": png_bytes(32, 32)})
  assert huey.pending_count() == 2
  assert [huey.dequeue().args[0] for _ in range(2)] == [user.id, sample.id]


def test_an_artistic_job_may_start_from_the_net_and_without_its_weights_fails_on_one_line(
    tmp_path, monkeypatch):
  # Issue 35 sec. 5: init "net" (optimize --init net) from the custom form; the network's
  # weights are loaded before the VGG, so their absence fails the job at once, naming the import.
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "empty_cache"))
  cfg = config.WebConfig(data_dir=str(tmp_path), slow_optimizer=SLOW_OPTIMIZER)
  service = service_for(cfg)
  with pytest.raises(ServiceError, match="init must be content or net"):
    service.submit("me", {**SLOW_JOB, "init": "photo"}, slow_images())
  job = service.submit("me", {**SLOW_JOB, "init": "net"}, slow_images())
  assert job.params["init"] == "net"
  assert jobs.Executor(cfg).run(job.id) == "failed"
  assert "nst-jax models import magenta" in jobs.open_database(cfg).get_job(job.id).error
