"""End-to-end tests in a real browser: Playwright (sync API) driving Debian's Chromium against
``nst-jax serve`` started on a free loopback port with a fresh data folder.

- stylize now: upload a photo, stylize with the shipped ``starry_small`` network, see the result;
  and with "any painting" (a tiny arbitrary network): upload a painting too, see the result;
- custom job: an artistic optimization (tiny) whose progress bar reaches 100 %;
- gallery: share a result; another client (a second browser context, so another cookie) sees no
  delete button and is refused (403) when it posts the delete anyway; the owner deletes it.

A screenshot of each page is written to ``$NST_JAX_WEB_SCREENSHOTS`` (``docs/web`` to refresh
the docs' images) or a temporary folder. Skipped, with the reason, when Playwright or
/usr/bin/chromium is missing.
"""

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import VGG_PATH
from PIL import Image

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) not installed")
httpx = pytest.importorskip("httpx", reason="httpx not installed")

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
  pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; apt-get install chromium)",
              allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
START_TIMEOUT = 120  # s: the first start imports JAX in the app and the worker on a busy CPU
JOB_TIMEOUT = 90_000  # ms: compiling the network (fast) or VGG + L-BFGS (custom) on 2 cores
# The tiny shapes of the other web tests (the fast job of test_web_app.py, the slow jobs of
# test_web_jobs.py), so that the worker finds their programs in the run's XLA cache.
FAST_PHOTO, FAST_SIZE, FAST_OUT = (40, 56), 48, (48, 34)  # photo h, w; long side; result w, h
CUSTOM_SIZE, CUSTOM_ITERS = 40, 20  # 4 chunks of 5 iterations: progress in quarters
SLOW_OPTIMIZER = "adam"  # as test_web_jobs.py: compiles in a third of L-BFGS-B's time


def _png(pixels: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, "PNG")
  return buf.getvalue()


def _photo(h=48, w=64) -> bytes:
  """A small colourful 'photo': a sky gradient over a green hill with a red sun."""
  y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
  img = np.stack([0.3 + 0.2 * y, 0.5 + 0.3 * y, 0.9 - 0.2 * y], -1)
  img[y > 0.6 + 0.1 * np.sin(6 * x)] = [0.2, 0.6, 0.2]
  img[(x - 0.75) ** 2 + (y - 0.25) ** 2 < 0.01] = [0.9, 0.2, 0.1]
  return _png((img * 255).astype(np.uint8))


def _style(h=48, w=48) -> bytes:
  """Diagonal colour stripes."""
  y, x = np.mgrid[0:h, 0:w]
  band = ((x + y) // 6) % 3
  palette = np.array([[230, 180, 40], [30, 60, 160], [200, 40, 90]], np.uint8)
  return _png(palette[band])


def _serve_env(cache: Path) -> dict:
  """The server's environment: ``cache`` as the user cache, and the VGG weights the tests use
  (conftest's ``VGG_PATH``) when $NST_JAX_VGG_WEIGHTS is not set, since that cache has none."""
  env = {**os.environ, "NST_JAX_CACHE": str(cache)}
  if "NST_JAX_VGG_WEIGHTS" not in env and VGG_PATH.is_file():
    env["NST_JAX_VGG_WEIGHTS"] = str(VGG_PATH)
  return env


@pytest.fixture(scope="module")
def service(tmp_path_factory, free_port, arbitrary_cache):
  """``nst-jax serve`` (the app and one worker: two would only compete for a 2-core CPU; the
  shipped models' samples are files, so nothing waits for the worker but the jobs) on a free
  port, with a tiny arbitrary network as the user cache's ("any painting"); yields its base URL.

  ``$NST_JAX_WEB_URL`` names a service already running instead (e.g. a deployment).
  """
  if os.environ.get("NST_JAX_WEB_URL"):
    yield os.environ["NST_JAX_WEB_URL"].rstrip("/")
    return
  data = tmp_path_factory.mktemp("web_data")
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  log = open(data / "serve.log", "wb")
  proc = subprocess.Popen(
      [sys.executable, "-m", "nst_jax.cli", "serve", "--data-dir", str(data), "--host",
       "127.0.0.1", "--port", str(port), "--workers", "1", "--set",
       f"slow_optimizer={SLOW_OPTIMIZER}"],
      cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
      env=_serve_env(arbitrary_cache))
  try:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
      assert proc.poll() is None, (data / "serve.log").read_text()[-3000:]
      try:
        if httpx.get(url + "/api/models", timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert time.monotonic() < deadline, "the service did not start: " + (
          data / "serve.log").read_text()[-3000:]
      time.sleep(0.25)
    yield url
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGTERM)
      try:
        proc.wait(20)
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def browser():
  with sync_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    try:
      yield b
    finally:
      b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
  folder = os.environ.get("NST_JAX_WEB_SCREENSHOTS")
  out = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
  out.mkdir(parents=True, exist_ok=True)
  return out


BROKEN_IMAGES = """async () => {
  const imgs = [...document.images].filter((i) => i.getAttribute('src'));
  imgs.forEach((i) => { i.loading = 'eager'; });
  await Promise.all(imgs.map((i) => i.complete ? null : new Promise((done) => {
    i.addEventListener('load', done); i.addEventListener('error', done); })));
  return imgs.filter((i) => i.naturalWidth === 0).map((i) => i.getAttribute('src'));
}"""


def _screenshot(page, folder: Path, name: str) -> Path:
  """A full-page screenshot reduced to a 64-colour PNG (small enough to commit), once every
  image on the page has loaded (a broken image fails the test)."""
  assert page.evaluate(BROKEN_IMAGES) == [], f"broken images on {page.url}"
  img = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
  path = folder / f"{name}.png"
  img.quantize(64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
  assert path.stat().st_size > 1000
  return path


def _submit_and_wait_for_the_result(page):
  """Submit "Stylize now" and wait until the result image is shown at the expected size."""
  page.click("#submit")
  page.wait_for_function("() => { const r = document.getElementById('result');"
                         " return r && !r.closest('[hidden]') && r.complete &&"
                         " r.naturalWidth > 0; }")
  size = page.evaluate("() => [document.getElementById('result').naturalWidth,"
                       " document.getElementById('result').naturalHeight]")
  assert size == list(FAST_OUT)


@pytest.fixture(scope="module")
def owner(browser, service):
  """The first client: one browser context (its own cookie jar)."""
  ctx = browser.new_context(base_url=service, viewport={"width": 1000, "height": 760})
  ctx.set_default_timeout(JOB_TIMEOUT)
  yield ctx
  ctx.close()


# Records every value the progress bar shows, across the reload the job page does when the job
# ends (sessionStorage lives as long as the tab).
SAMPLER = """
(() => {
  const seen = JSON.parse(sessionStorage.getItem('progress-seen') || '[]');
  setInterval(() => {
    const bar = document.getElementById('progress');
    if (bar && seen[seen.length - 1] !== bar.value) {
      seen.push(bar.value);
      sessionStorage.setItem('progress-seen', JSON.stringify(seen));
    }
  }, 50);
})();
"""


@pytest.fixture(scope="module")
def custom_job(owner, shots, tmp_path_factory):
  """Submits a tiny artistic optimization first (the worker starts on it while the browser
  goes on to the fast job); returns its job page."""
  folder = tmp_path_factory.mktemp("custom")
  (folder / "content.png").write_bytes(_photo())
  (folder / "style.png").write_bytes(_style())
  page = owner.new_page()
  page.goto("/custom")
  page.select_option("#method", "artistic")
  page.set_input_files("#content", str(folder / "content.png"))
  page.set_input_files("#style", str(folder / "style.png"))
  page.fill("#size", str(CUSTOM_SIZE))
  page.fill("#iterations", str(CUSTOM_ITERS))
  _screenshot(page, shots, "custom_form")
  page.add_init_script(SAMPLER)
  page.click("#submit")
  page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
  # While it runs: words, not 'iteration 0' (compiling) and the queue line gone once it started.
  page.wait_for_function("() => ['running', 'done'].includes("
                         "document.getElementById('status')?.textContent)")
  if page.locator("#status").inner_text() == "running":
    assert page.locator("#queue-info").is_hidden()
    assert page.locator("#preview-box").is_hidden() or page.locator("#preview").get_attribute(
        "src")
    _screenshot(page, shots, "job_running")
  return page


@pytest.fixture(scope="module")
def fast_result(owner, shots, tmp_path_factory, custom_job):
  """Stylize now: upload, pick starry_small, see the result; returns (page, job id)."""
  photo = tmp_path_factory.mktemp("upload") / "holiday.jpg"  # a PNG named .jpg: content decides
  photo.write_bytes(_photo(*FAST_PHOTO))
  page = owner.new_page()
  page.goto("/")
  value = page.locator('#model option[value^="starry_small#"]').first \
      .get_attribute("value")
  assert value and value.startswith("starry_small")
  page.select_option("#model", value)
  page.set_input_files("#upload", str(photo))
  page.fill("#size", str(FAST_SIZE))
  _submit_and_wait_for_the_result(page)
  assert page.locator("#progress").evaluate("p => p.value") == 100
  job_id = page.get_attribute("#job-link", "href").rsplit("/", 1)[-1]
  _screenshot(page, shots, "stylize_result")
  return page, job_id


def test_stylize_now_shows_the_result(fast_result, service):
  page, job_id = fast_result
  href = page.get_attribute("#download", "href")
  png = httpx.get(service + href).content
  with Image.open(io.BytesIO(png)) as img:
    assert img.format == "PNG" and img.size == FAST_OUT
  job = page.evaluate(f"() => fetch('/api/jobs/{job_id}').then(r => r.json())")
  assert job["status"] == "done" and job["mine"] and job["params"]["model"] == "starry_small"


def test_any_painting_uploaded_on_the_page_gives_the_result(owner, service, shots,
                                                            tmp_path_factory):
  """Stylize now with "Your painting": the arbitrary network is the default choice; the upload
  tile asks for the painting, reveals its file field and previews it; the result comes back."""
  if not httpx.get(service + "/api/paintings").json()["installed"]:
    pytest.skip("the service has no arbitrary network (NST_JAX_WEB_URL without it)")
  folder = tmp_path_factory.mktemp("any_painting")
  (folder / "photo.png").write_bytes(_photo(*FAST_PHOTO))
  (folder / "stripes.png").write_bytes(_style())
  page = owner.new_page()
  page.goto("/")
  assert page.input_value("#model").startswith("arbitrary#")  # the default choice
  assert page.locator("#painting-box").is_hidden()  # until "Your painting" is picked
  with page.expect_file_chooser() as chooser:  # the tile asks for the painting at once
    page.click("#pick-upload")
  assert page.input_value("#model") == "arbitrary#upload"
  assert page.locator("#pick-upload").get_attribute("class").split().count("picked") == 1
  assert page.locator("#painting-box").is_visible()
  chooser.value.set_files(str(folder / "stripes.png"))
  page.wait_for_function("() => document.getElementById('painting-preview').naturalWidth > 0")
  page.set_input_files("#upload", str(folder / "photo.png"))
  page.fill("#size", str(FAST_SIZE))
  page.fill("#strength", "0.8")
  assert "photo's own style" in page.locator("#strength-hint").inner_text()
  page.mouse.move(0, 0)  # no tile under the pointer: hovering one shows its sample instead
  _screenshot(page, shots, "stylize_any_painting")
  _submit_and_wait_for_the_result(page)
  job_id = page.get_attribute("#job-link", "href").rsplit("/", 1)[-1]
  job = page.evaluate(f"() => fetch('/api/jobs/{job_id}').then(r => r.json())")
  assert job["params"]["model"] == "arbitrary" and job["params"]["strength"] == 0.8
  assert job["style_url"]  # the uploaded painting, kept with the job
  page.close()


def test_custom_job_progress_reaches_100(custom_job, shots):
  page = custom_job
  # The page polls the job and reloads itself when it ends; then the result is shown.
  page.wait_for_function("() => document.getElementById('result')?.naturalWidth > 0")
  assert page.locator("#status").inner_text() == "done"
  assert page.locator("#iteration").inner_text() == str(CUSTOM_ITERS)
  assert page.locator("#total").inner_text() == str(CUSTOM_ITERS)
  page.wait_for_function("() => JSON.parse(sessionStorage.getItem('progress-seen'))"
                         ".slice(-1)[0] === 100")
  seen = page.evaluate("() => JSON.parse(sessionStorage.getItem('progress-seen'))")
  assert seen[-1] == 100 and seen == sorted(seen), seen  # the bar only moves forward, to 100
  _screenshot(page, shots, "job_done")


def test_gallery_share_and_delete_only_by_the_owner(fast_result, owner, browser, service, shots):
  page, job_id = fast_result
  page.fill("#share-title", "Starry <b>hill</b>")  # user text must come back escaped
  page.click("#share")
  link = page.locator("#gallery-link")
  link.wait_for(state="visible")
  item_path = link.get_attribute("href")
  item_id = int(item_path.rsplit("/", 1)[-1])

  gallery = owner.new_page()
  gallery.goto("/gallery")
  card = gallery.locator(f"#item-{item_id}")
  assert card.count() == 1 and "Starry <b>hill</b>" in card.inner_text()
  assert gallery.locator(f"#item-{item_id} b").count() == 0  # no markup injected
  _screenshot(gallery, shots, "gallery")
  gallery.goto("/models")
  assert gallery.locator("text=starry").count() > 0
  _screenshot(gallery, shots, "models")
  # The stylize page once the style samples are rendered (the first visit queued them).
  gallery.goto("/")
  gallery.set_input_files("#upload", files=[{"name": "holiday.jpg", "mimeType": "image/jpeg",
                                             "buffer": _photo()}])
  _screenshot(gallery, shots, "stylize_form")

  other = browser.new_context(base_url=service, viewport={"width": 1000, "height": 760})
  try:
    stranger = other.new_page()
    stranger.goto(item_path)
    assert stranger.locator("#result").count() == 1
    assert stranger.locator("#delete").count() == 0  # no button for somebody else's item
    status = stranger.evaluate(
        """async (path) => {
             const csrf = document.querySelector('meta[name="csrf-token"]').content;
             const body = new FormData(); body.append('csrf', csrf);
             const r = await fetch(path + '/delete', {method: 'POST', body, redirect: 'manual'});
             const a = await fetch('/api' + path, {method: 'DELETE',
                                                    headers: {'X-CSRF-Token': csrf}});
             return [r.status, a.status];
           }""", item_path)
    assert status == [403, 403]
    stranger.goto(item_path)
    assert stranger.locator("#result").count() == 1  # still there
  finally:
    other.close()

  job_page = owner.new_page()  # shared once: the job page links the item, offers no Share
  job_page.goto(f"/jobs/{job_id}")
  assert job_page.locator("#share").count() == 0
  assert job_page.get_attribute("#gallery-link", "href") == item_path
  item = httpx.get(f"{service}/api{item_path}").json()
  assert item["content_url"] is None and item["style_url"] is None  # the result only

  mine = owner.new_page()
  mine.goto(item_path)
  _screenshot(mine, shots, "gallery_item")
  asked = []
  mine.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
  mine.click("#delete")  # "No": nothing happens
  assert asked and "Remove" in asked[0] and mine.url.endswith(item_path)
  mine.once("dialog", lambda d: d.accept())
  mine.click("#delete")
  mine.wait_for_url(re.compile(r"/gallery$"))
  assert mine.locator(f"#item-{item_id}").count() == 0
  assert httpx.get(f"{service}/api/gallery/{item_id}").status_code == 404


def test_a_bad_upload_dropped_on_the_page_gets_one_clear_line(owner, service):
  page = owner.new_page()
  page.goto("/")
  # Drag and drop: a text file that calls itself a JPEG lands in the file input.
  page.evaluate("""() => {
    const data = new DataTransfer();
    data.items.add(new File(['<html>not a photo</html>'], 'photo.jpg', {type: 'image/jpeg'}));
    const drop = document.getElementById('drop');
    drop.dispatchEvent(new DragEvent('dragenter', {dataTransfer: data, bubbles: true}));
    drop.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
  }""")
  assert page.evaluate("() => document.getElementById('upload').files[0].name") == "photo.jpg"
  jobs_before = len(page.evaluate("() => fetch('/api/jobs').then(r => r.json())"))
  page.click("#submit")
  error = page.locator("#error")
  error.wait_for(state="visible")
  text = error.inner_text()
  assert "not an accepted image type" in text and "\n" not in text.strip(), text
  assert page.locator("#result-box").is_hidden()
  assert len(page.evaluate("() => fetch('/api/jobs').then(r => r.json())")) == jobs_before


def test_api_docs_render_offline_under_the_csp(browser, service):
  """/docs: Swagger UI's scripts come from this site (the browser has no network here), and the
  site's Content-Security-Policy blocks nothing it needs."""
  ctx = browser.new_context(base_url=service)
  page = ctx.new_page()
  blocked = []
  page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text
          else None)
  requests = []
  page.on("request", lambda r: requests.append(r.url))
  page.goto("/docs")
  page.wait_for_selector(".opblock", timeout=30_000)
  assert page.locator(".opblock").count() >= 5  # the API's operations
  assert all(u.startswith(service) or u.startswith("data:") for u in requests), requests
  assert blocked == []
  ctx.close()


def test_the_pages_fit_the_job(fast_result, owner, service):
  """The picker names the paintings; the custom form shows the fields of its method; a small
  result is shown at its own size, with a before/after slider; no page asks for a missing file
  (the favicon)."""
  page, job_id = fast_result
  missing = []
  fresh = owner.new_page()
  fresh.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
  fresh.goto("/")
  picker = fresh.locator("#trained-styles .pick", has_text="The Great Wave off Kanagawa")
  assert picker.count() == 1 and "Katsushika Hokusai" in picker.inner_text()
  fresh.goto("/custom")
  fresh.select_option("#method", "sr")
  assert fresh.locator("#size").is_hidden() and fresh.locator("#style").is_hidden()
  assert fresh.locator("#iterations").is_hidden()
  fresh.select_option("#method", "artistic")
  assert fresh.locator("#size").is_visible() and fresh.locator("#style").is_visible()
  fresh.goto(f"/jobs/{job_id}")
  shown = fresh.evaluate("() => { const r = document.getElementById('result');"
                         " return [r.clientWidth, r.naturalWidth]; }")
  assert shown[0] == shown[1] == FAST_OUT[0]  # not stretched
  fresh.fill("#compare-slider", "0")
  clip = fresh.evaluate("() => getComputedStyle(document.getElementById('compare-after'))"
                        ".clipPath")
  assert "100%" in clip, clip  # the result is uncovered entirely: the photo shows
  assert missing == [], missing
  fresh.close()
