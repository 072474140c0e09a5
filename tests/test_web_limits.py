"""Resource limits of a real ``nst-jax serve`` on loopback: the web process's memory under
concurrent worst-case uploads, a chunked upload stopped at the limit, and workers that never
outlive their server (SIGTERM, SIGKILL). The quick siblings of these (the decode budget, the
streamed body count, the per-network limits, the parent watch) run in the default suite."""

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install -e '.[web]')")
httpx = pytest.importorskip("httpx", reason="the webtest extra is not installed")

REPO = Path(__file__).resolve().parent.parent


def _serve(data_dir: Path, port: int, *extra: str) -> subprocess.Popen:
  # pylint: disable-next=consider-using-with
  return subprocess.Popen([sys.executable, "-m", "nst_jax.cli", "serve", "--data-dir",
                           str(data_dir), "--port", str(port), *extra], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_up(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
  end = time.time() + timeout
  while time.time() < end:
    assert proc.poll() is None, f"serve exited ({proc.returncode})"
    try:
      if httpx.get(f"http://127.0.0.1:{port}/api/session", timeout=2).status_code == 200:
        return
    except httpx.HTTPError:
      pass
    time.sleep(0.2)
  pytest.fail("the server did not come up")


def _processes_of(data_dir: Path) -> dict[int, str]:
  """pid -> command line of every process whose command line names ``data_dir``."""
  found = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
      continue
    if str(data_dir) in cmd and "nst_jax.cli" in cmd:
      found[int(entry)] = cmd
  return found


def _workers_of(data_dir: Path) -> list[int]:
  # The workers read the config serve wrote into the data folder.
  return [pid for pid, cmd in _processes_of(data_dir).items() if " worker " in cmd]


def _wait(predicate, timeout: float):
  end = time.time() + timeout
  while time.time() < end:
    value = predicate()
    if value:
      return value
    time.sleep(0.1)
  return predicate()


def _vm(pid: int, key: str) -> int:
  """A /proc/PID/status field in bytes (VmRSS, VmHWM: the peak resident size)."""
  line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines()
              if l.startswith(key + ":"))
  return int(line.split()[1]) * 1024


def test_a_worker_exits_when_its_parent_is_killed(tmp_path):
  """The mechanism, quickly: a process that calls ``exit_with_parent`` dies with its parent."""
  marker = tmp_path / "child.pid"
  child = (f"import os, time; from nst_jax.cli import worker; "
           f"worker.exit_with_parent(os.getppid(), poll_s=0.1); "
           f"open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
  parent = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, "-c", f"import subprocess, sys, time; "
       f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"], cwd=REPO)
  try:
    assert _wait(lambda: marker.is_file() and marker.read_text(), 30)
    pid = int(marker.read_text())
    parent.kill()
    parent.wait(5)
    gone = _wait(lambda: not Path(f"/proc/{pid}").exists()
                 or "zombie" in Path(f"/proc/{pid}/status").read_text(), 5)
    assert gone, "the child outlived its parent"
  finally:
    parent.kill()


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_serve_leaves_no_worker_behind_and_a_restart_runs_one(tmp_path, free_port, how):
  port = free_port()
  proc = _serve(tmp_path, port, "--workers", "1")
  try:
    _wait_up(port, proc)
    assert _wait(lambda: len(_workers_of(tmp_path)) == 1, 30)
    proc.send_signal(how)
    proc.wait(15)
    assert _wait(lambda: not _processes_of(tmp_path), 10), _processes_of(tmp_path)
  finally:
    proc.kill()
  again = _serve(tmp_path, port, "--workers", "1")
  try:
    _wait_up(port, again)
    time.sleep(3)  # a leftover worker, or a second one, would show by now
    assert len(_workers_of(tmp_path)) == 1
  finally:
    again.send_signal(signal.SIGINT)
    assert again.wait(30) == 0
  assert _wait(lambda: not _processes_of(tmp_path), 10)


def _readlink(path: str) -> str:
  try:
    return os.readlink(path)
  except OSError:  # closed meanwhile
    return ""


def _rgba_png(side: int) -> bytes:
  buf = io.BytesIO()
  img = Image.new("RGBA", (side, side), (10, 20, 30, 128))
  img.putpixel((0, 0), (200, 0, 0, 255))
  img.save(buf, "PNG")
  return buf.getvalue()


@pytest.mark.slow
def test_eight_concurrent_worst_case_uploads_keep_the_web_process_under_1_gb(tmp_path,
                                                                             free_port):
  """Eight 6300x6300 RGBA PNGs (~170 KB each, under the 40 MP limit) at once: the decode budget
  lets them through one or two at a time; every one is answered (201, or 503 with
  Retry-After), the web process's peak RSS stays under 1 GB and it gives the memory back."""
  png = _rgba_png(6300)
  assert len(png) < 400_000
  port = free_port()
  proc = _serve(tmp_path, port, "--workers", "0", "--set", "limits.ip_queue_quota=50",
                "--set", "limits.decode_wait_s=120")
  results = []
  try:
    _wait_up(port, proc)
    base = _vm(proc.pid, "VmRSS")

    def upload():
      with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
        csrf = client.get("/api/session").json()["csrf_token"]
        r = client.post("/api/jobs", data={"model": "starry_small"},
                        files={"content": ("big.png", png)}, headers={"X-CSRF-Token": csrf})
        results.append((r.status_code, r.headers.get("retry-after")))

    threads = [threading.Thread(target=upload) for _ in range(8)]
    t0 = time.time()
    for t in threads:
      t.start()
    for t in threads:
      t.join(600)
    elapsed = time.time() - t0
    peak, after = _vm(proc.pid, "VmHWM"), _vm(proc.pid, "VmRSS")
    print(f"8 uploads of 6300x6300 RGBA: {elapsed:.1f} s, web RSS {base / 2**20:.0f} MB before, "
          f"peak {peak / 2**20:.0f} MB, {after / 2**20:.0f} MB after; answers {results}")
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
  assert len(results) == 8
  assert all(s == 201 or (s == 503 and ra) for s, ra in results), results
  assert sum(s == 201 for s, _ in results) >= 1
  assert peak < 1 << 30, peak
  assert after < base + (200 << 20), (base, after)


@pytest.mark.slow
def test_a_chunked_upload_is_refused_at_the_limit_without_filling_the_disk(tmp_path,
                                                                           free_port):
  """2 GB sent chunked (no Content-Length): the server answers 413 once the body passes its
  limit; the client stops after a bounded amount and the server holds no temporary file."""
  port = free_port()
  proc = _serve(tmp_path, port, "--workers", "0", "--set", "limits.max_upload_mb=1")
  try:
    _wait_up(port, proc)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
      sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
      head = (b"--b\r\nContent-Disposition: form-data; name=\"content\"; "
              b"filename=\"x.png\"\r\n\r\n")
      sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
      chunk = b"%x\r\n%s\r\n" % (1 << 20, b"\0" * (1 << 20))
      sent, t0, answer = 0, time.time(), b""
      sock.settimeout(0.05)
      while sent < 2 << 30 and not answer:
        try:
          sock.sendall(chunk)
          sent += 1 << 20
          answer = sock.recv(4096)
        except socket.timeout:
          continue
        except (BrokenPipeError, ConnectionResetError):
          break
      sock.settimeout(10)
      try:
        answer = answer or sock.recv(4096)
      except OSError:
        pass
      elapsed = time.time() - t0
    time.sleep(0.5)  # the server closes the connection's spool after answering
    spooled = [link for link in (_readlink(f"/proc/{proc.pid}/fd/{f}")
                                 for f in os.listdir(f"/proc/{proc.pid}/fd"))
               if "(deleted)" in link]
    print(f"chunked upload: refused after {sent / 2**20:.0f} MB sent in {elapsed:.2f} s; "
          f"{len(spooled)} deleted-file descriptors left in the server")
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
  assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
  assert sent < 64 << 20 and elapsed < 10
  assert not spooled


@pytest.mark.slow
def test_a_hundred_fresh_cookies_from_one_address_are_not_a_hundred_clients(tmp_path,
                                                                            free_port):
  """The issue's measurement: 100 submissions, each with a fresh cookie, against the default
  limits (no worker, so every accepted job stays queued): the network's quota stops them, with
  Retry-After."""
  buf = io.BytesIO()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, "PNG")
  port = free_port()
  proc = _serve(tmp_path, port, "--workers", "0")
  statuses = []
  try:
    _wait_up(port, proc)
    t0 = time.time()
    for _ in range(100):
      with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        csrf = client.get("/api/session").json()["csrf_token"]
        r = client.post("/api/jobs", data={"model": "starry_small"},
                        files={"content": ("x.png", buf.getvalue())},
                        headers={"X-CSRF-Token": csrf})
        statuses.append((r.status_code, r.headers.get("retry-after")))
    print(f"100 fresh cookies: {sum(s == 201 for s, _ in statuses)} accepted, "
          f"{sum(s == 429 for s, _ in statuses)} refused (429) in {time.time() - t0:.1f} s")
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
  from nst_jax import config  # pylint: disable=import-outside-toplevel
  quota = config.WebLimits().ip_queue_quota
  assert [s for s, _ in statuses[:quota]] == [201] * quota
  assert all(s == 429 and ra for s, ra in statuses[quota:]), statuses[quota:]


@pytest.mark.slow
def test_served_over_tls_the_cookie_is_secure_and_hsts_is_sent(tmp_path, free_port):
  """``serve --ssl-certfile/--ssl-keyfile`` (a self-signed certificate made here): the answers
  carry HSTS and the client cookie the Secure flag, with no --secure-cookies."""
  import shutil  # pylint: disable=import-outside-toplevel
  if shutil.which("openssl") is None:
    pytest.skip("openssl not installed")
  cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
  subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                  "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                 check=True, capture_output=True, timeout=60)
  port = free_port()
  proc = _serve(tmp_path / "data", port, "--workers", "0", "--ssl-certfile", str(cert),
                "--ssl-keyfile", str(key))
  try:
    end, r = time.time() + 60, None
    while r is None and time.time() < end:
      assert proc.poll() is None, f"serve exited ({proc.returncode})"
      try:
        r = httpx.get(f"https://127.0.0.1:{port}/api/session", verify=False, timeout=2)
      except httpx.HTTPError:
        time.sleep(0.2)
    assert r is not None and r.status_code == 200
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert "secure" in r.headers["set-cookie"].lower()
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
