"""The web app's video job in-process (TestClient, the job run by an in-process executor): a
tiny clip through the API to an MP4 and its strip, the job page, and refused uploads (4xx with
one line, never 5xx)."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from nst_jax import config

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
pytest.importorskip("av")  # the video extra
from fastapi.testclient import TestClient  # pylint: disable=wrong-import-position

from nst_jax.core import video_io  # pylint: disable=wrong-import-position
from nst_jax.fast import video as fast_video  # pylint: disable=wrong-import-position
from nst_jax.web import app as web_app  # pylint: disable=wrong-import-position
from nst_jax.web import clips, jobs  # pylint: disable=wrong-import-position

FPS = 4
SIZE = 48  # the clips' and the outputs' long side


def pan_frames(n: int, hw=(36, 48)) -> list[np.ndarray]:
  """n uint8 frames of a smooth random texture moving 2 px right per frame."""
  rng = np.random.default_rng(0)
  small = rng.random((hw[0] // 4, hw[1] // 4 + n, 3)).astype(np.float32)
  big = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(
      ((hw[1] // 4 + n) * 4, hw[0]), Image.Resampling.BILINEAR))
  return [np.ascontiguousarray(big[:, 2 * t:2 * t + hw[1]]) for t in range(n)]


def clip_bytes(tmp_path, n: int, name="clip.mp4") -> bytes:
  path = tmp_path / name
  with video_io.VideoWriter(path, fps=FPS) as out:
    for frame in pan_frames(n):
      out.write(frame)
  return path.read_bytes()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
  cfg = config.WebConfig(data_dir=str(tmp_path_factory.mktemp("web")),
                         limits=config.WebLimits(max_upload_mb=0.05, rate_per_minute=1000,
                                                 queue_quota=3, video_max_seconds=2.0,
                                                 video_max_frames=10))
  holder = {}
  app = web_app.create_app(cfg, enqueue=lambda job_id: holder["ex"].run(job_id))
  holder["ex"] = jobs.Executor(cfg, db=app.state.service.db, store=app.state.service.store)
  return app, lambda: TestClient(app), holder["ex"]


def post(client, data: bytes, **fields):
  csrf = client.get("/api/session").json()["csrf_token"]
  return client.post("/api/jobs", data={"kind": "video", "model": "starry_small", **fields},
                     files={"content": ("clip.mp4", data)}, headers={"X-CSRF-Token": csrf})


def test_a_clip_becomes_the_librarys_consistent_mp4_with_a_strip(service, tmp_path):
  _, new_client, executor = service
  client = new_client()
  r = post(client, clip_bytes(tmp_path, 6), size=str(SIZE))
  assert r.status_code == 201, r.text
  job = client.get(f"/api/jobs/{r.json()['id']}").json()
  assert job["status"] == "done", job
  assert job["iteration"] == job["total"] == 6 and job["params"]["temporal"] is True
  got = client.get(job["result_url"])
  assert got.headers["content-type"] == "video/mp4"
  (tmp_path / "out.mp4").write_bytes(got.content)
  info = video_io.probe(tmp_path / "out.mp4")
  assert (info.width, info.height, info.fps) == (48, 36, FPS)
  # The library's consistent output on the decoded input frames, through the same encoder (at
  # 48 px H.264 itself changes the textured frames by ~0.05 on average; per-frame output would
  # differ from the consistent one by ~0.03).
  stylizer = executor.stylizer("starry_small")  # the worker's: its compiled programs
  stylizer.set_style(index=0)
  source = list(video_io.read_frames(tmp_path / "clip.mp4", size=SIZE))
  with video_io.VideoWriter(tmp_path / "want.mp4", fps=FPS) as out:
    for frame in fast_video.stylize_frames(stylizer, source, temporal=True):
      out.write(frame)
  frames, want = (list(video_io.read_frames(tmp_path / n)) for n in ("out.mp4", "want.mp4"))
  assert len(frames) == len(want) == 6
  for a, b in zip(frames, want):
    assert np.abs(a.astype(np.float32) - b).mean() / 255 < 0.002
  strip = Image.open(io.BytesIO(client.get(job["strip_url"]).content))
  assert strip.height == clips.STRIP_HEIGHT and strip.width == 4 * round(48 * 128 / 36)
  page = client.get(job["page_url"]).text
  assert re.search(r'<video id="result" src="/api/blobs/[0-9a-f]{64}\.mp4"', page)
  assert 'id="strip"' in page and 'download="nst-' in page and 'id="share"' not in page
  assert "Video clip" in client.get("/custom").text


def test_the_strip_picks_first_last_and_between():
  assert clips.strip_picks(6) == [0, 2, 3, 5] and clips.strip_picks(2) == [0, 1]
  assert clips.strip_picks(1) == [0]


@pytest.mark.parametrize("make,status,words", [
    (lambda tmp: b"", 400, "choose a video clip"),
    (lambda tmp: b"this is not a video at all, only some words", 415, "not a video"),
    (lambda tmp: Image.new("RGB", (40, 40)).tobytes()[:4000], 415, "not a video"),
    (lambda tmp: clip_bytes(tmp, 12), 413, "above the limit of 2 s"),  # 3 s at 4 frames/s
    (lambda tmp: clip_bytes(tmp, 300)[:200], 415, "not a video"),  # truncated header
])
def test_bad_clips_are_4xx_with_one_line(service, tmp_path, make, status, words):
  _, new_client, _ = service
  r = post(new_client(), make(tmp_path))
  assert r.status_code == status, r.text
  assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
  assert str(tmp_path) not in r.json()["detail"]  # no server path in the message


def test_an_image_or_too_many_frames_or_bytes_are_refused(service, tmp_path):
  _, new_client, _ = service
  buf = io.BytesIO()
  Image.fromarray(pan_frames(1)[0]).save(buf, "PNG")
  r = post(new_client(), buf.getvalue())
  assert r.status_code == 415 and "not a video" in r.json()["detail"], r.text
  limits = config.WebLimits(video_max_seconds=100.0, video_max_frames=5)
  with pytest.raises(clips.uploads.UploadError) as info:
    clips.clean_clip(clip_bytes(tmp_path, 8), limits)
  assert info.value.status == 413 and "8 frames, above the limit of 5" in info.value.message
  with pytest.raises(clips.uploads.UploadError) as info:
    clips.clean_clip(b"\0" * 60_000, config.WebLimits(max_upload_mb=0.05))
  assert info.value.status == 413
  # A header that under-counts: the worker stops one frame past the limit.
  with pytest.raises(clips.UserError, match="more than 3 frames"):
    list(clips.capped(iter(pan_frames(5)), 3))
  r = post(new_client(), clip_bytes(tmp_path, 4), method="slow")
  assert r.status_code == 400 and "fast method only" in r.json()["detail"]
