"""The web application in-process (TestClient): pages, the fast path upload -> job -> result,
API errors, bad uploads, CSRF, ownership, limits and the gallery.

Jobs run in-process (``create_app(enqueue=executor.run)``) with the smallest shipped network on
tiny images; the queue and worker processes are tested in test_web_jobs.py.
"""

import io
import re
import time

import numpy as np
import pytest
from PIL import Image

from nst_jax import config

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
from fastapi.testclient import TestClient  # noqa: E402  pylint: disable=wrong-import-position

from nst_jax.web import app as web_app  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web import jobs  # noqa: E402  pylint: disable=wrong-import-position


def png_bytes(h: int, w: int, seed: int = 0) -> bytes:
  buf = io.BytesIO()
  rgb = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
  Image.fromarray(rgb).save(buf, "PNG")
  return buf.getvalue()


def csrf_of(client: TestClient) -> str:
  return client.get("/api/session").json()["csrf_token"]


def client_id_of(client: TestClient) -> str:
  """The client id of a test client (its cookie's)."""
  return client.get("/api/session").json()["client_id"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
  """An app whose jobs run in-process at once, and a factory of clients (one identity each)."""
  cfg = config.WebConfig(data_dir=str(tmp_path_factory.mktemp("web")),
                         limits=config.WebLimits(max_upload_mb=0.05, queue_quota=3,
                                                 rate_per_minute=1000))
  holder = {}
  app = web_app.create_app(cfg, enqueue=lambda job_id: holder["ex"].run(job_id))
  svc = app.state.service
  holder["ex"] = jobs.Executor(cfg, db=svc.db, store=svc.store)
  return app, lambda: TestClient(app)


@pytest.fixture(scope="module")
def done_job(service):
  """(client, job json) of one finished fast job (48 px, starry_small)."""
  _, new_client = service
  client = new_client()
  r = client.post("/api/jobs", data={"model": "starry_small", "size": "48"},
                  files={"content": ("photo.png", png_bytes(40, 56))},
                  headers={"X-CSRF-Token": csrf_of(client)})
  assert r.status_code == 201, r.text
  job = client.get(f"/api/jobs/{r.json()['id']}").json()
  assert job["status"] == "done", job
  return client, job


@pytest.mark.parametrize("path", ["/", "/custom", "/gallery", "/models", "/jobs",
                                  "/openapi.json", "/docs"])
def test_pages_render(service, path):
  _, new_client = service
  r = new_client().get(path)
  assert r.status_code == 200
  if path == "/":
    for element in ("upload", "model", "strength", "keep-colors", "size", "submit", "progress",
                    "result", "share", "drop"):
      assert f'id="{element}"' in r.text, element
    assert 'value="zoo8#7"' in r.text and "The Great Wave off Kanagawa" in r.text
    assert "Katsushika Hokusai" in r.text and "/models/zoo8/1/painting.png" in r.text
  if path == "/openapi.json":
    assert "/api/jobs" in r.json()["paths"]


def test_first_visit_gets_a_signed_client_cookie(service):
  _, new_client = service
  client = new_client()
  assert "nst_client" not in client.cookies
  first = client.get("/api/session").json()
  assert client.cookies.get("nst_client")
  assert client.get("/api/session").json()["client_id"] == first["client_id"]
  forged = new_client()
  forged.cookies.set("nst_client", client.cookies.get("nst_client")[:-2] + "xx")
  assert forged.get("/api/session").json()["client_id"] != first["client_id"]


def test_fast_job_result_is_the_networks_output(service, done_job):
  from nst_jax.core import image_io  # pylint: disable=import-outside-toplevel
  from nst_jax.fast import inference  # pylint: disable=import-outside-toplevel
  from nst_jax.web import uploads  # pylint: disable=import-outside-toplevel
  client, job = done_job
  assert (job["iteration"], job["total"], job["mine"]) == (1, 1, True)
  r = client.get(job["result_url"])
  assert r.status_code == 200 and r.headers["content-type"] == "image/png"
  result = np.asarray(Image.open(io.BytesIO(r.content)))
  assert result.shape == (34, 48, 3)  # long side 48, aspect kept
  photo = uploads.decode_png(png_bytes(40, 56))
  expected = inference.Stylizer.from_any("starry_small")(image_io.resize_array(photo, (34, 48)))
  assert np.abs(result / 255.0 - expected).max() <= 1 / 255 + 1e-6


def test_super_resolution_job_is_the_upscalers_output(service):
  from nst_jax.sr import upscale  # pylint: disable=import-outside-toplevel
  from nst_jax.web import uploads  # pylint: disable=import-outside-toplevel
  _, new_client = service
  client = new_client()
  csrf = csrf_of(client)
  r = client.post("/api/jobs", data={"kind": "sr"}, files={"content": ("x.png", png_bytes(24, 32))},
                  headers={"X-CSRF-Token": csrf})
  job = client.get(f"/api/jobs/{r.json()['id']}").json()
  assert job["status"] == "done", job
  result = np.asarray(Image.open(io.BytesIO(client.get(job["result_url"]).content)))
  assert result.shape == (96, 128, 3)
  expected = upscale.Upscaler.load("sr_fast_x4")(uploads.decode_png(png_bytes(24, 32)))
  assert np.abs(result / 255.0 - np.clip(expected, 0, 1)).max() <= 1 / 255 + 1e-6
  flat = io.BytesIO()
  Image.new("RGB", (600, 40), (90, 120, 200)).save(flat, "PNG")  # small file, large image
  too_big = client.post("/api/jobs", data={"kind": "sr"}, headers={"X-CSRF-Token": csrf},
                        files={"content": ("x.png", flat.getvalue())})
  assert too_big.status_code == 413 and "super-resolution takes images up to" in too_big.text


def _small_png(path, long_side: int, resample=Image.BILINEAR) -> bytes:
  image = Image.open(path).convert("RGB")
  scale = long_side / max(image.size)
  buf = io.BytesIO()
  image.resize((round(image.width * scale), round(image.height * scale)), resample).save(buf, "PNG")
  return buf.getvalue()


@pytest.mark.slow  # by default: test_photoreal's CLI with masks and the fast-job tests here
@pytest.mark.real_weights
@pytest.mark.usefixtures("xla_optimized")
def test_photoreal_job_with_masks_is_the_librarys_output(service, data_dir, vgg_path, vgg_params,
                                                         monkeypatch, tmp_path):
  # A custom photorealistic job with the pair's colour-coded masks: the result is what
  # ``photoreal.stylize`` gives for the same images, masks and settings (4 iterations per stage
  # in chunks of 1 at 32 px); a mask of another aspect ratio fails the job with one line.
  from nst_jax.core import regions  # pylint: disable=import-outside-toplevel
  from nst_jax.slow import photoreal  # pylint: disable=import-outside-toplevel
  from nst_jax.web import uploads  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("NST_JAX_VGG_WEIGHTS", str(vgg_path))
  photo = data_dir / "photo"
  files = {"content": _small_png(photo / "input/in1.png", 64),
           "style": _small_png(photo / "style/tar1.png", 64),
           "content_mask": _small_png(photo / "segmentation/in1.png", 64, Image.NEAREST),
           "style_mask": _small_png(photo / "segmentation/tar1.png", 64, Image.NEAREST)}
  _, new_client = service
  client = new_client()
  csrf = csrf_of(client)

  def submit(**replace):
    parts = {k: (f"{k}.png", replace.get(k, v)) for k, v in files.items()}
    r = client.post("/api/jobs", data={"kind": "photoreal", "size": "32", "iterations": "4"},
                    files=parts, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    return client.get(f"/api/jobs/{r.json()['id']}").json()

  job = submit()
  assert job["status"] == "done", job
  result = np.asarray(Image.open(io.BytesIO(client.get(job["result_url"]).content)))
  content, style = (uploads.decode_png(files[k]) for k in ("content", "style"))
  for k in ("content_mask", "style_mask"):
    (tmp_path / f"{k}.png").write_bytes(files[k])
  cm = regions.load_color_mask(tmp_path / "content_mask.png", size_hw=content.shape[:2])
  sm = regions.load_color_mask(tmp_path / "style_mask.png", size_hw=style.shape[:2])
  assert len(cm) >= 2  # the pair's masks hold several regions
  cfg = config.PhotoConfig(size=32, optim=config.OptimConfig(
      optimizer=config.WebConfig().slow_optimizer, num_iters=4, chunk=1))
  expected = photoreal.stylize(vgg_params, content, style, cfg,
                               content_masks=cm, style_masks=sm, progress=False).images[0]
  assert result.shape == expected.shape and max(result.shape[:2]) == 32
  assert np.abs(result / 255.0 - np.clip(expected, 0, 1)).max() <= 1 / 255 + 1e-6
  wide = io.BytesIO()
  Image.open(io.BytesIO(files["content_mask"])).resize((64, 20), Image.NEAREST).save(wide, "PNG")
  failed = submit(content_mask=wide.getvalue())
  assert failed["status"] == "failed", failed
  assert failed["error"].startswith("the content mask is 64x20, which does not match the image's")
  assert "/" not in failed["error"]  # the upload named, not its storage path


def test_job_page_shows_result_download_and_share(done_job):
  client, job = done_job
  page = client.get(job["page_url"]).text
  for element in ("result", "download", "share", "share-title", "progress", "status"):
    assert f'id="{element}"' in page, element
  assert 'id="cancel"' not in page  # finished


@pytest.mark.parametrize("data,status,words", [
    (b"", 400, "choose a content image"),
    (b"this is not an image at all", 415, "content image"),
    (png_bytes(8, 8), 400, "content image"),  # below the minimum side
    (png_bytes(200, 200, seed=3), 413, "content image"),  # > max_upload_mb (50 kB)
])
def test_bad_uploads_are_4xx_with_a_message(service, data, status, words):
  _, new_client = service
  client = new_client()
  csrf = csrf_of(client)
  r = client.post("/api/jobs", data={"model": "starry_small"},
                  files={"content": ("x.png", data)}, headers={"X-CSRF-Token": csrf})
  assert r.status_code == status, r.text
  assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
  page = client.post("/jobs", data={"model": "starry_small", "csrf": csrf, "kind": "fast"},
                     files={"content": ("x.png", data)})
  assert page.status_code == status
  assert re.search(r'id="error"[^>]*>[^<]*' + re.escape(words), page.text)


@pytest.mark.parametrize("fields,status,words", [
    ({"model": "no_such_model"}, 400, "unknown model"),
    ({"model": "../../etc/passwd"}, 400, "unknown model"),
    ({"model": "starry_small", "size": "99999"}, 400, "size must be between"),
    ({"model": "starry_small", "strength": "abc"}, 400, "strength must be a number"),
    ({"model": "zoo8", "style_index": "8"}, 400, "style_index"),
    ({"model": "zoo8", "style_name": "van_gogh"}, 400, "matches 2 of the model's styles"),
    ({"kind": "nonsense"}, 400, "unknown method"),
    ({"kind": "artistic", "iterations": "100000"}, 400, "iterations must be between"),
    ({"kind": "artistic"}, 400, "choose a style image"),
])
def test_bad_parameters_are_400(service, fields, status, words):
  _, new_client = service
  client = new_client()
  r = client.post("/api/jobs", data=fields, files={"content": ("x.png", png_bytes(32, 32))},
                  headers={"X-CSRF-Token": csrf_of(client)})
  assert r.status_code == status, r.text
  assert words in r.json()["detail"]


@pytest.mark.parametrize("path", ["/api/jobs/0123456789abcdef0123456789abcdef",
                                  "/api/jobs/../../etc", "/api/blobs/nothere.png",
                                  "/api/blobs/" + "0" * 64 + ".png", "/api/gallery/99999",
                                  "/jobs/xyz", "/gallery/99999"])
def test_unknown_things_are_404(service, path):
  _, new_client = service
  assert new_client().get(path).status_code == 404


def test_a_style_is_picked_by_index_or_name(tmp_path):
  cfg = config.WebConfig(data_dir=str(tmp_path))
  client = TestClient(web_app.create_app(cfg, enqueue=lambda job_id: None))
  csrf, photo = csrf_of(client), png_bytes(32, 32)
  for fields in ({"model": "zoo8#3"}, {"model": "zoo8", "style_index": "3"},
                 {"model": "zoo8", "style_name": "UDNIE"}):
    r = client.post("/api/jobs", data=fields, files={"content": ("x.png", photo)},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    assert (r.json()["params"]["style_index"], r.json()["params"]["style"]) == (3, "picabia_udnie")
    client.post(f"/api/jobs/{r.json()['id']}/cancel", headers={"X-CSRF-Token": csrf})


def test_csrf_is_required_on_state_changes(service):
  _, new_client = service
  client = new_client()
  files = {"content": ("x.png", png_bytes(32, 32))}
  for headers in ({}, {"X-CSRF-Token": "forged"}):
    r = client.post("/api/jobs", data={"model": "starry_small"}, files=files, headers=headers)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
  other = new_client()
  stolen = csrf_of(other)  # another client's token is not this client's
  r = client.post("/jobs", data={"csrf": stolen, "kind": "fast"}, files=files)
  assert r.status_code == 403 and "CSRF" in r.text


def test_a_script_authenticated_by_header_needs_no_csrf(service):
  _, new_client = service
  token = new_client().get("/").cookies.get("nst_client")
  script = new_client()
  r = script.post("/api/jobs", data={"model": "starry_small", "size": "48"},
                  files={"content": ("x.png", png_bytes(40, 56))},
                  headers={"X-Client-Token": token})
  assert r.status_code == 201 and r.json()["mine"]


def test_ownership_share_and_delete(service, done_job):
  _, new_client = service
  owner, job = done_job
  other = new_client()
  other_csrf = csrf_of(other)
  assert other.post(f"/api/jobs/{job['id']}/cancel",
                    headers={"X-CSRF-Token": other_csrf}).status_code in (403, 409)
  r = other.post("/api/gallery", data={"job_id": job["id"]}, headers={"X-CSRF-Token": other_csrf})
  assert r.status_code == 403
  title = "<script>alert('x')</script> & friends"
  r = owner.post("/api/gallery", data={"job_id": job["id"], "title": title},
                 headers={"X-CSRF-Token": csrf_of(owner)})
  assert r.status_code == 201, r.text
  item = r.json()
  assert item["result"] == job["result"] and item["mine"]
  for client in (owner, other):  # the title is escaped on every page that shows it
    for page in ("/gallery", item["page_url"]):
      text = client.get(page).text
      assert "<script>alert" not in text and "&lt;script&gt;alert" in text
  assert 'id="delete"' in owner.get(item["page_url"]).text
  assert 'id="delete"' not in other.get(item["page_url"]).text
  store = service[0].state.service.store
  assert store.exists(item["thumb"])
  assert other.delete(f"/api/gallery/{item['id']}",
                      headers={"X-CSRF-Token": other_csrf}).status_code == 403
  assert other.post(f"/gallery/{item['id']}/delete", data={"csrf": other_csrf}).status_code == 403
  assert owner.get(item["page_url"]).status_code == 200
  r = owner.post(f"/gallery/{item['id']}/delete", data={"csrf": csrf_of(owner)},
                 follow_redirects=False)
  assert r.status_code == 303
  assert owner.get(item["page_url"]).status_code == 404
  # Its own file is gone (a thumbnail of a small result is the result itself, still in use).
  assert store.exists(item["thumb"]) == (item["thumb"] == job["result"])
  assert store.exists(job["result"])  # the job still shows the result


def test_gallery_is_newest_first_and_paginated(service, done_job):
  app, new_client = service
  owner, job = done_job
  csrf = csrf_of(owner)
  job_ids = [job["id"]] + [owner.post(  # one item per job: two more jobs
      "/api/jobs", data={"model": "starry_small", "size": "48"},
      files={"content": ("p.png", png_bytes(40, 56, seed=i))},
      headers={"X-CSRF-Token": csrf}).json()["id"] for i in (1, 2)]
  ids = [owner.post("/api/gallery", data={"job_id": j, "title": f"t{i}"},
                    headers={"X-CSRF-Token": csrf}).json()["id"] for i, j in enumerate(job_ids)]
  first = new_client().get("/api/gallery", params={"per_page": 2}).json()
  assert [i["id"] for i in first["items"]] == ids[::-1][:2] and first["total"] >= 3
  second = new_client().get("/api/gallery", params={"per_page": 2, "page": 2}).json()
  assert second["items"][0]["id"] == ids[0]
  for item_id in ids:
    assert owner.delete(f"/api/gallery/{item_id}", headers={"X-CSRF-Token": csrf}
                        ).status_code == 204
  assert app.state.service.db.gallery_page(1, 10)[1] == 0


def test_a_long_poll_answers_when_the_job_changes(tmp_path):
  """GET /api/jobs/{id}?wait=S holds the answer until the job's status or iteration changes
  (here: another thread cancels it) or S seconds pass; an ended job is answered at once."""
  import threading  # pylint: disable=import-outside-toplevel
  cfg = config.WebConfig(data_dir=str(tmp_path))
  app = web_app.create_app(cfg, enqueue=lambda job_id: None)  # no worker: the job stays queued
  client = TestClient(app)
  csrf = csrf_of(client)
  job_id = client.post("/api/jobs", data={"model": "starry_small"},
                       files={"content": ("x.png", png_bytes(32, 32))},
                       headers={"X-CSRF-Token": csrf}).json()["id"]
  start = time.monotonic()
  assert client.get(f"/api/jobs/{job_id}", params={"wait": 0.4}).json()["status"] == "queued"
  assert time.monotonic() - start >= 0.4  # nothing changed: held for the whole wait
  timer = threading.Timer(0.3, lambda: app.state.service.db.set_fields(job_id, status="cancelled"))
  timer.start()
  start = time.monotonic()
  assert client.get(f"/api/jobs/{job_id}", params={"wait": 20}).json()["status"] == "cancelled"
  assert 0.3 <= time.monotonic() - start < 5.0  # answered on the change, not after 20 s
  start = time.monotonic()
  assert client.get(f"/api/jobs/{job_id}", params={"wait": 20}).json()["status"] == "cancelled"
  assert time.monotonic() - start < 5.0  # an ended job: at once
  timer.join()


@pytest.mark.parametrize("events", [True, False], ids=["inotify", "ticks"])
def test_one_watcher_reads_the_database_once_per_change_for_all_waiters(tmp_path, events):
  """``watch.JobWatch`` behind the long polls: 20 requests wait on 20 jobs; while nothing is
  committed the watcher reads no job (SQLite's data_version is unchanged) and, with inotify,
  does not even look; one commit from another connection (a worker's) costs one batched read
  and wakes exactly that job's waiter, within milliseconds."""
  import asyncio  # pylint: disable=import-outside-toplevel
  if events:
    pytest.importorskip("inotify_simple", reason="inotify_simple is not installed (Linux only)")
  from nst_jax.web.db import Database  # pylint: disable=import-outside-toplevel
  from nst_jax.web.watch import JobWatch  # pylint: disable=import-outside-toplevel
  db = Database(f"sqlite:///{tmp_path / 'w.db'}")
  db.migrate()
  ids = [db.create_job("owner", "fast", {}).id for _ in range(20)]
  worker_db = Database(db.url)
  # No timed reads: only changes cause reads (and, with inotify, looks).
  watch = JobWatch(db, tick=0.002, fallback=60.0, events=events)
  assert Database("sqlite:///:memory:").change_token() is None  # must be read to see changes

  async def scenario():
    waits = {i: asyncio.create_task(watch.wait(i, ("queued", 0), timeout=30)) for i in ids}
    await asyncio.sleep(0.1)  # the watcher's first looks
    looks = watch.looks
    await asyncio.sleep(0.2)  # ~100 ticks
    quiet = watch.reads, watch.looks - looks
    committed = time.monotonic()
    await asyncio.to_thread(worker_db.set_fields, ids[7], status="running")
    done, _ = await asyncio.wait(waits.values(), timeout=10,
                                 return_when=asyncio.FIRST_COMPLETED)
    latency = time.monotonic() - committed
    await asyncio.sleep(0.1)  # any other waiter wrongly woken would be done by now
    woken = [i for i, t in waits.items() if t.done()]
    for t in waits.values():
      t.cancel()
    return quiet, done, woken, latency

  (quiet_reads, quiet_looks), done, woken, latency = asyncio.run(scenario())
  assert quiet_reads == 1  # the watcher's first look only
  assert quiet_looks == 0 if events else quiet_looks >= 20  # 0.2 s: ~100 ticks without inotify
  assert len(done) == 1 and woken == [ids[7]] and latency < 2.0
  assert watch.reads == 2  # one read for the commit, for all 20 waiters


def test_quota_rate_limit_and_cancel(tmp_path):
  """Jobs that are never run (no worker): the queue quota, the rate limit, cancelling."""
  cfg = config.WebConfig(data_dir=str(tmp_path), limits=config.WebLimits(
      queue_quota=2, rate_per_minute=3))
  queued = []
  client = TestClient(web_app.create_app(cfg, enqueue=queued.append))
  csrf = csrf_of(client)

  def submit():
    return client.post("/api/jobs", data={"model": "starry_small"},
                       files={"content": ("x.png", png_bytes(32, 32))},
                       headers={"X-CSRF-Token": csrf})

  first, second, third = submit(), submit(), submit()
  assert (first.status_code, second.status_code) == (201, 201)
  assert third.status_code == 429 and "2 jobs queued" in third.json()["detail"]
  assert len(queued) == 2
  assert client.get(f"/api/jobs/{second.json()['id']}").json()["queue_position"] == 1
  r = client.post(f"/api/jobs/{first.json()['id']}/cancel", headers={"X-CSRF-Token": csrf})
  assert r.status_code == 200 and r.json()["status"] == "cancelled"
  fourth = submit()  # the quota has room again, but the rate limit (3 a minute) is spent
  assert fourth.status_code == 429 and "too many requests" in fourth.json()["detail"]
  executor = jobs.Executor(cfg)
  assert executor.run(first.json()["id"]) == "skipped"  # a cancelled job is never run
  assert client.post(f"/api/jobs/{first.json()['id']}/cancel",
                     headers={"X-CSRF-Token": csrf}).status_code == 409
  r = client.delete(f"/api/jobs/{first.json()['id']}", headers={"X-CSRF-Token": csrf})
  assert r.status_code == 204
  assert client.get(f"/api/jobs/{first.json()['id']}").status_code == 404
  page = client.get("/jobs").text  # my jobs: the one left
  assert second.json()["id"][:8] in page and first.json()["id"][:8] not in page


def test_shipped_models_samples_are_committed_files(service):
  """Every style of every shipped network has its small precomputed sample (no job, no worker):
  a JPEG of the sample picture's size, served as it is."""
  from nst_jax.web import catalog  # pylint: disable=import-outside-toplevel
  _, new_client = service
  client = new_client()
  shipped = [m for m in client.get("/api/models").json() if m["source"] == "shipped"]
  assert {m["name"] for m in shipped} >= {"starry_small", "zoo8"}
  for m in shipped:
    for i in range(len(m["styles"])):
      path = catalog.sample_file(m["name"], i)
      assert path.is_file() and path.stat().st_size < 8000, path  # the zoo stays small
      r = client.get(f"/models/{m['name']}/{i}/sample.png", follow_redirects=False)
      assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
      assert r.content == path.read_bytes()
      assert Image.open(io.BytesIO(r.content)).size == (catalog.SAMPLE_SIZE,) * 2
  assert not service[0].state.service.db.jobs_of(catalog.SAMPLE_OWNER)  # nothing rendered
  assert client.get("/models/starry_small/1/sample.png").status_code == 404
  assert client.get("/models/nope/0/sample.png").status_code == 404
  assert "/models/zoo8/7/sample.png" in client.get("/models").text


def test_user_models_samples_are_rendered_once_then_served(tmp_path):
  """A user-trained model's sample is a (low-priority) job, rendered once; here the network is
  a copy of starry_small, so the result is the committed sample of starry_small (up to JPEG)."""
  import shutil  # pylint: disable=import-outside-toplevel
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  from nst_jax.web import catalog  # pylint: disable=import-outside-toplevel
  (tmp_path / "models").mkdir()
  shutil.copy(zoo.CHECKPOINTS_DIR / "starry_small.npz", tmp_path / "models" / "mine.npz")
  cfg = config.WebConfig(data_dir=str(tmp_path))
  holder, low = {}, []
  app = web_app.create_app(cfg, enqueue=lambda job_id: None)
  svc = app.state.service
  svc.enqueue_low = lambda job_id: (low.append(job_id), holder["ex"].run(job_id))
  holder["ex"] = jobs.Executor(cfg, db=svc.db, store=svc.store)
  client = TestClient(app)
  r = client.get("/models/user:mine/0/sample.png", follow_redirects=False)
  assert r.status_code == 302 and r.headers["location"].startswith("/api/blobs/")
  assert len(low) == 1  # through the low-priority queue
  again = client.get("/models/user:mine/0/sample.png", follow_redirects=False)
  assert again.headers["location"] == r.headers["location"] and len(low) == 1  # the same job
  rendered = np.asarray(Image.open(io.BytesIO(client.get(r.headers["location"]).content)))
  assert rendered.shape == (catalog.SAMPLE_SIZE, catalog.SAMPLE_SIZE, 3)
  shipped = np.asarray(Image.open(catalog.sample_file("starry_small", 0)).convert("RGB"))
  assert np.abs(rendered / 255.0 - shipped / 255.0).mean() < 0.03
  assert client.get("/models/user:mine/1/sample.png").status_code == 404


def test_security_headers_and_an_oversized_request(service):
  _, new_client = service
  client = new_client()
  r = client.get("/")
  assert "script-src" not in r.headers["content-security-policy"]  # default-src 'self' covers it
  assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
  assert r.headers["x-content-type-options"] == "nosniff"
  big = client.post("/api/jobs", content=b"x" * 1000,
                    headers={"X-CSRF-Token": csrf_of(client), "Content-Length": "999999999",
                             "Content-Type": "multipart/form-data; boundary=b"})
  assert big.status_code == 413 and "too large" in big.json()["detail"]


def test_user_trained_models_in_the_data_folder_are_offered(tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  from nst_jax.core import zoo  # pylint: disable=import-outside-toplevel
  (tmp_path / "models").mkdir()
  shutil.copy(zoo.CHECKPOINTS_DIR / "starry_small.npz", tmp_path / "models" / "mine.npz")
  (tmp_path / "models" / "junk.npz").write_bytes(b"not a model")
  queued = []
  client = TestClient(web_app.create_app(config.WebConfig(data_dir=str(tmp_path)),
                                         enqueue=queued.append))
  models = {m["name"]: m for m in client.get("/api/models").json()}
  assert models["user:mine"]["styles"] == ["van_gogh_starry_night"]
  assert "user:junk" not in models and "path" not in models["user:mine"]
  assert 'value="user:mine#0"' in client.get("/").text
  r = client.post("/api/jobs", data={"model": "user:mine"},
                  files={"content": ("x.png", png_bytes(32, 32))},
                  headers={"X-CSRF-Token": csrf_of(client)})
  assert r.status_code == 201 and queued == [r.json()["id"]]


def test_deleting_the_job_and_its_gallery_item_removes_their_files(service):
  app, new_client = service
  store = app.state.service.store
  client = new_client()
  csrf = csrf_of(client)
  job = client.post("/api/jobs", data={"model": "starry_small", "size": "48"},
                    files={"content": ("x.png", png_bytes(40, 56, seed=7))},
                    headers={"X-CSRF-Token": csrf}).json()
  job = client.get(f"/api/jobs/{job['id']}").json()
  assert job["status"] == "done"
  item = client.post("/api/gallery", data={"job_id": job["id"], "publish": "all"},
                     headers={"X-CSRF-Token": csrf}).json()
  assert new_client().post(f"/jobs/{job['id']}/delete", data={"csrf": csrf}).status_code == 403
  r = client.post(f"/jobs/{job['id']}/delete", data={"csrf": csrf}, follow_redirects=False)
  assert r.status_code == 303
  assert client.get(job["page_url"]).status_code == 404
  # The gallery item still shows the photo and the result: they stay until it goes too.
  assert store.exists(job["content"]) and store.exists(job["result"])
  assert client.delete(f"/api/gallery/{item['id']}", headers={"X-CSRF-Token": csrf}
                       ).status_code == 204
  assert not store.exists(job["content"]) and not store.exists(job["result"])


def test_a_chunked_upload_is_stopped_at_the_limit_and_its_spool_removed(service):
  """No Content-Length: the body is counted while it streams; 413 once past the limit, with no
  more of it read and the parser's temporary file closed."""
  import asyncio  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  from nst_jax.web import forms  # pylint: disable=import-outside-toplevel
  app, new_client = service
  client = new_client()
  token = client.cookies.get("nst_client") or (client.get("/api/session"),
                                               client.cookies.get("nst_client"))[1]
  limit = forms.body_limit(app.state.cfg)
  chunk = b"--b\r\nContent-Disposition: form-data; name=\"content\"; filename=\"x.png\"\r\n\r\n"
  sent, messages = [0], []

  async def receive():
    if sent[0] > 100 * limit:
      return {"type": "http.request", "body": b"", "more_body": False}
    body = chunk if sent[0] == 0 else b"\0" * 65536
    sent[0] += len(body)
    return {"type": "http.request", "body": body, "more_body": True}

  async def send(message):
    messages.append(message)

  scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
           "scheme": "http", "path": "/api/jobs", "raw_path": b"/api/jobs", "query_string": b"",
           "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
           "headers": [(b"content-type", b"multipart/form-data; boundary=b"),
                       (b"transfer-encoding", b"chunked"),
                       (b"x-client-token", token.encode())]}
  fds = len(os.listdir("/proc/self/fd"))
  asyncio.run(app(scope, receive, send))
  assert messages[0]["status"] == 413
  assert limit < sent[0] <= limit + 65536 + len(chunk)  # read up to the limit, no further
  assert len(os.listdir("/proc/self/fd")) == fds  # the spooled file is closed


def test_limits_per_network_and_a_global_bound_hold_against_fresh_cookies(tmp_path):
  """Every submission with a new cookie (a new client): the network's quota and rate, then the
  service's bound, answer 429 / 503 with Retry-After; X-Forwarded-For counts only from a
  trusted proxy."""
  def app_with(sub, **limits):
    cfg = config.WebConfig(data_dir=str(tmp_path / sub), forwarded_allow_ips=limits.pop(
        "proxy", ""), limits=config.WebLimits(rate_per_minute=1000, **limits))
    return web_app.create_app(cfg, enqueue=lambda job_id: None)

  def submit(app, ip=None, page=False):
    client = TestClient(app)  # a fresh cookie every time
    headers = {"X-CSRF-Token": csrf_of(client), **({"X-Forwarded-For": ip} if ip else {})}
    return client.post("/jobs" if page else "/api/jobs", data={"model": "starry_small"},
                       files={"content": ("x.png", png_bytes(32, 32))}, headers=headers)

  app = app_with("quota", ip_queue_quota=3, ip_rate_per_minute=1000)
  assert [submit(app).status_code for _ in range(3)] == [201] * 3
  refused = submit(app, ip="198.51.100.1")  # no trusted proxy: the header changes nothing
  assert refused.status_code == 429 and "your network" in refused.json()["detail"]
  assert int(refused.headers["retry-after"]) > 0
  page = submit(app, page=True)  # the page: the form again, friendly, with Retry-After
  assert page.status_code == 429 and "your network" in page.text and page.headers["retry-after"]

  app = app_with("rate", ip_rate_per_minute=2)
  assert [submit(app).status_code for _ in range(3)] == [201, 201, 429]

  app = app_with("proxy", proxy="testclient", ip_queue_quota=1, max_queued=4)
  assert submit(app, ip="198.51.100.1").status_code == 201
  assert submit(app, ip="198.51.100.1").status_code == 429  # that network's quota
  assert submit(app, ip="198.51.100.2").status_code == 201  # another network behind the proxy
  assert submit(app, ip="2001:db8::1").status_code == 201
  assert submit(app, ip="2001:db8::2").status_code == 429  # the same IPv6 /64
  assert submit(app, ip="198.51.100.3").status_code == 201
  busy = submit(app, ip="198.51.100.4")  # four jobs wait in all: the service's bound
  assert busy.status_code == 503 and busy.headers["retry-after"] == "60"


def test_api_docs_are_served_from_this_site_under_the_csp(service):
  _, new_client = service
  client = new_client()
  r = client.get("/docs")
  assert r.status_code == 200 and "frame-ancestors 'none'" in r.headers["content-security-policy"]
  scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', r.text)
  assert scripts and all(s.startswith("/") for s in scripts), scripts  # no CDN
  assert "<script>" not in r.text  # no inline script (the CSP would block it)
  for path in scripts:
    if path != "/favicon.ico":
      asset = client.get(path)
      assert asset.status_code == 200 and len(asset.content) > 100, path
  assert client.get("/redoc").status_code == 404  # it would load from a CDN


@pytest.mark.parametrize("secure,scheme", [(False, "http"), (True, "http"), (False, "https")])
def test_secure_cookies_and_hsts_when_served_over_tls(tmp_path, secure, scheme):
  cfg = config.WebConfig(data_dir=str(tmp_path), secure_cookies=secure,
                         forwarded_allow_ips="testclient")
  client = TestClient(web_app.create_app(cfg, enqueue=lambda job_id: None))
  r = client.get("/api/session", headers={"X-Forwarded-Proto": scheme})
  on = secure or scheme == "https"
  assert ("secure" in r.headers["set-cookie"].lower()) == on
  assert ("strict-transport-security" in r.headers) == on


def test_sharing_publishes_the_result_only_by_default_once_and_an_admin_moderates(tmp_path):
  cfg = config.WebConfig(data_dir=str(tmp_path), admin_token="s3cret-admin-token",
                         limits=config.WebLimits(rate_per_minute=1000))
  app = web_app.create_app(cfg, enqueue=lambda job_id: None)
  db, store = app.state.service.db, app.state.service.store
  owner, other = TestClient(app), TestClient(app)
  csrf = csrf_of(owner)
  seeds = iter(range(100))

  def finished_job():  # recorded as done: sharing, not stylizing, is tested
    job = db.create_job(client_id_of(owner), "fast", {"model": "starry_small"},
                        content=store.put(png_bytes(40, 56, seed=next(seeds)), "png"), total=1)
    db.set_fields(job.id, status="done", iteration=1,
                  result_key=store.put(png_bytes(34, 48, seed=next(seeds)), "png"))
    return job.id

  job = finished_job()
  page = owner.get(f"/jobs/{job}").text
  assert 'name="publish" value="result" checked' in page and "my photo" in page
  first = owner.post("/api/gallery", data={"job_id": job}, headers={"X-CSRF-Token": csrf})
  again = owner.post("/api/gallery", data={"job_id": job, "publish": "all"},
                     headers={"X-CSRF-Token": csrf})
  assert first.status_code == again.status_code == 201
  item = first.json()
  assert again.json()["id"] == item["id"]  # idempotent: one item per job
  assert item["content_url"] is None and item["style_url"] is None  # the result only
  assert owner.get("/api/gallery").json()["total"] == 1
  page = owner.get(f"/jobs/{job}").text
  assert 'id="share"' not in page and f'href="/gallery/{item["id"]}"' in page

  with_inputs = owner.post("/api/gallery", data={"job_id": finished_job(), "publish": "all"},
                           headers={"X-CSRF-Token": csrf}).json()
  assert with_inputs["content_url"] and owner.get(with_inputs["content_url"]).status_code == 200

  admin = {"Authorization": "Bearer s3cret-admin-token"}
  assert other.post(f"/api/gallery/{item['id']}/hide").status_code == 403
  assert other.post(f"/api/gallery/{item['id']}/hide",
                    headers={"Authorization": "Bearer wrong"}).status_code == 403
  assert other.post(f"/api/gallery/{item['id']}/hide", headers=admin).status_code == 204
  assert other.get(f"/gallery/{item['id']}").status_code == 404
  assert owner.get("/api/gallery").json()["total"] == 1  # only the other item shows
  assert other.delete(f"/api/gallery/{with_inputs['id']}", headers=admin).status_code == 204
  assert owner.get("/api/gallery").json()["total"] == 0


def test_paintings_and_human_names_of_the_styles(tmp_path):
  """The picker shows each style's painting (a thumbnail made from the style image this host
  has, checked against the manifest's sha256) with its title and painter; without the painting
  it falls back to the stylized sample."""
  from nst_jax.web import catalog  # pylint: disable=import-outside-toplevel
  assert catalog.style_title("munch_the_scream") == {"title": "The Scream",
                                                     "painter": "Edvard Munch", "year": "1893"}
  assert catalog.style_title("my_cat_sketch")["title"] == "My cat sketch"
  styles = tmp_path / "styles"
  styles.mkdir()
  painting = np.zeros((300, 200, 3), np.uint8)
  painting[:, :, 2] = 200
  Image.fromarray(painting).save(styles / "van_gogh_starry_night.jpg")
  client = TestClient(web_app.create_app(config.WebConfig(
      data_dir=str(tmp_path / "d"), styles_dir=str(styles)), enqueue=lambda job_id: None))
  # The file is not the manifest's Starry Night (another sha256): the sample instead.
  r = client.get("/models/starry_small/0/painting.png", follow_redirects=False)
  assert r.status_code == 302 and r.headers["location"].endswith("/sample.png")
  entry = {"name": "mine", "styles": ["van_gogh_starry_night"], "style_sha256": [None]}
  assert catalog.painting_file(config.WebConfig(styles_dir=str(styles)), entry, 0) is not None
  assert client.get("/models/nope/0/painting.png").status_code == 404
  assert client.get("/favicon.ico").status_code == 200


def test_job_pages_say_what_is_happening(tmp_path):
  """The job page in each state: the queue position only while queued, a moving bar and words
  instead of '0 / 1' or 'iteration 0' while a fast job runs or a slow one compiles, no empty
  preview, results at their own size with a before/after slider, confirmations, dates."""
  cfg = config.WebConfig(data_dir=str(tmp_path))
  app = web_app.create_app(cfg, enqueue=lambda job_id: None)
  db, store = app.state.service.db, app.state.service.store
  client = TestClient(app)
  owner = client.get("/api/session").json()["client_id"]
  photo = store.put(png_bytes(40, 56), "png")

  def page(kind="fast", total=1, **fields):
    job = db.create_job(owner, kind, {"size": 48}, content=photo, total=total)
    if fields:
      db.set_fields(job.id, **fields)
    return client.get(f"/jobs/{job.id}").text

  queued = page()
  assert 'id="queue-info" ' in queued and "job(s) ahead" in queued
  assert 'id="preview-box" hidden' in queued  # no empty "Preview" caption
  assert re.search(r'id="cancel-form"[^>]+data-confirm="Cancel', queued)
  fast = page(status="running")
  assert 'id="queue-info" hidden' in fast and "Running…" in fast
  assert re.search(r'<progress id="progress" max="100"\s*>', fast)  # indeterminate
  slow = page("artistic", 100, status="running")
  assert "Preparing: compiling" in slow
  later = page("artistic", 100, status="running", iteration=40)
  assert "Preparing" not in later and 'value="40"' in later
  result = store.put(png_bytes(34, 48, seed=3), "png")
  done = page(status="done", result_key=result, iteration=1)
  assert 'width="48" height="34"' in done and "Download full resolution (48×34 px)" in done
  assert 'id="compare-slider"' in done and 'id="compare-before"' in done
  assert re.search(r'id="delete-job-form"[^>]+data-confirm="Delete', done)
  jobs_page = client.get("/jobs").text
  assert "<th>Submitted</th>" in jobs_page and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC",
                                                            jobs_page)
  custom = client.get("/custom").text  # fields by method (app.js hides the others)
  assert re.search(r'data-kinds="artistic photoreal">Size', custom)
  assert re.search(r'data-kinds="artistic photoreal">Iterations', custom)
  assert re.search(r'data-kinds="artistic photoreal">Style image', custom)
  assert 'rel="icon" href="/favicon.ico"' in client.get("/").text


def test_styles_are_shown_on_a_real_photo_when_one_is_configured(tmp_path):
  """``sample_photo``: each style rendered once on that photo by a low-priority job (every model,
  shipped ones too) and shown on the Models page; without it the route is 404."""
  photo = tmp_path / "street.png"
  photo.write_bytes(png_bytes(60, 80, seed=5))
  cfg = config.WebConfig(data_dir=str(tmp_path / "d"), sample_photo=str(photo))
  app = web_app.create_app(cfg, enqueue=lambda job_id: None)
  svc, low = app.state.service, []
  executor = jobs.Executor(cfg, db=svc.db, store=svc.store)
  executor.execute = lambda job, lost: png_bytes(8, 8, seed=len(low))  # the routing is tested
  svc.enqueue_low = lambda job_id: (low.append(job_id), executor.run(job_id))
  client = TestClient(app)
  r = client.get("/models/zoo8/3/photo.png", follow_redirects=False)
  assert r.status_code == 302 and r.headers["location"].startswith("/api/blobs/")
  job = svc.db.get_job(low[0])
  assert job.params["photo"] and job.params["size"] == 256 and job.params["style_index"] == 3
  assert svc.store.get(job.content_key) == png_bytes(60, 80, seed=5)  # a bare PNG, kept as is
  again = client.get("/models/zoo8/3/photo.png", follow_redirects=False)
  assert again.headers["location"] == r.headers["location"] and len(low) == 1
  assert client.get("/models/zoo8/3/sample.png").headers["content-type"] == "image/jpeg"
  assert "/models/zoo8/3/photo.png" in client.get("/models").text
  plain = TestClient(web_app.create_app(config.WebConfig(data_dir=str(tmp_path / "e")),
                                        enqueue=lambda job_id: None))
  assert plain.get("/models/zoo8/3/photo.png").status_code == 404
  assert "photo.png" not in plain.get("/models").text
