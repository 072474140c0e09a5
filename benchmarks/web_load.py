"""A bounded load test of the web service on loopback: many clients upload and poll fast jobs.

Usage::

  python benchmarks/web_load.py                            # starts `nst-jax serve`, 50 clients, 60 s
  python benchmarks/web_load.py --clients 20 --duration 30 --workers 2
  python benchmarks/web_load.py --url http://127.0.0.1:8000  # against a service already running
  python benchmarks/web_load.py --serve-arg=--queue-url=redis://127.0.0.1:6379/0  # Redis queue

Each client (a thread with its own ``httpx.Client``, so its own cookie and client id) loops:
upload a small image of its own (``--image-size`` px, random pixels so that no two uploads share a
content key) as a fast stylization with ``--model`` at ``--size`` px, poll ``/api/jobs/{id}``
every ``--poll`` seconds until it is done, download the result. After ``--duration`` seconds no
new job is submitted and the jobs in flight are awaited (``--drain`` seconds at most).

Reported: requests by kind with p50/p95 latency, HTTP status counts (5xx must be 0), jobs
submitted / done / failed / lost (lost: submitted but not done by the end of the drain, or a
result that did not download; must be 0), the job latency (submit -> done seen) p50/p95 and the
throughput (jobs and requests per second). Refusals of the rate limit or quota (429) are counted
apart and are not errors of the service. Results go to ``benchmarks/results/web_load.json``.
"""

from __future__ import annotations

import argparse
import collections
import io
import tempfile
import threading
import time

import bench_common as bc
import httpx
import numpy as np
from PIL import Image

DONE, FAILED = "done", ("failed", "cancelled")


def make_png(rng: np.random.Generator, size: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
  return buf.getvalue()


class Stats:
  """Thread-safe counters and latency lists."""

  def __init__(self):
    self.lock = threading.Lock()
    self.latency = collections.defaultdict(list)   # request kind -> seconds
    self.status = collections.Counter()            # "kind status" -> count
    self.jobs = collections.Counter()              # submitted / done / failed / lost / refused
    self.job_latency = []
    self.errors = []

  def request(self, client: httpx.Client, kind: str, method: str, url: str, **kw):
    start = time.perf_counter()
    try:
      resp = client.request(method, url, **kw)
    except httpx.HTTPError as e:
      with self.lock:
        self.status[f"{kind} {type(e).__name__}"] += 1
        self.errors.append(f"{kind}: {type(e).__name__}: {e}"[:200])
      return None
    with self.lock:
      self.latency[kind].append(time.perf_counter() - start)
      self.status[f"{kind} {resp.status_code}"] += 1
      if resp.status_code >= 500:
        self.errors.append(f"{kind} {resp.status_code}: {resp.text[:160]}")
    return resp


def run_client(index: int, args, stats: Stats, stop_submitting: threading.Event,
               deadline: list[float]) -> None:
  """One client's loop: submit, poll to the end, download; until ``stop_submitting``."""
  rng = np.random.default_rng(index)
  with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
    resp = stats.request(client, "session", "GET", "/api/session")
    if resp is None or resp.status_code != 200:
      return
    headers = {"X-CSRF-Token": resp.json()["csrf_token"]}
    while not stop_submitting.is_set():
      files = {"content": ("photo.png", make_png(rng, args.image_size), "image/png")}
      data = {"kind": "fast", "model": args.model, "size": str(args.size)}
      submitted = time.perf_counter()
      resp = stats.request(client, "submit", "POST", "/api/jobs", data=data, files=files,
                           headers=headers)
      if resp is None or resp.status_code != 201:
        if resp is not None and resp.status_code == 429:
          with stats.lock:
            stats.jobs["refused"] += 1
        time.sleep(args.poll)
        continue
      job = resp.json()
      with stats.lock:
        stats.jobs["submitted"] += 1
      outcome = poll_job(client, job["id"], args, stats, deadline)
      if outcome == DONE:
        with stats.lock:
          stats.job_latency.append(time.perf_counter() - submitted)
      with stats.lock:
        stats.jobs[outcome] += 1


def poll_job(client: httpx.Client, job_id: str, args, stats: Stats, deadline) -> str:
  """'done' (result downloaded), 'failed' or 'lost'."""
  while time.monotonic() < deadline[0]:
    resp = stats.request(client, "poll", "GET", f"/api/jobs/{job_id}")
    if resp is not None and resp.status_code == 200:
      job = resp.json()
      if job["status"] == DONE:
        result = stats.request(client, "result", "GET", job["result_url"])
        ok = (result is not None and result.status_code == 200
              and result.content.startswith(b"\x89PNG"))
        return DONE if ok else "lost"
      if job["status"] in FAILED:
        with stats.lock:
          stats.errors.append(f"job {job_id} {job['status']}: {job.get('error', '')}"[:200])
        return "failed"
    time.sleep(args.poll)
  return "lost"


def run_load(args) -> dict:
  stats = Stats()
  stop_submitting = threading.Event()
  deadline = [float("inf")]  # polling gives up here (set when the drain starts)
  threads = [threading.Thread(target=run_client, args=(i, args, stats, stop_submitting, deadline),
                              daemon=True) for i in range(args.clients)]
  start = time.perf_counter()
  for t in threads:
    t.start()
  time.sleep(args.duration)
  stop_submitting.set()
  submit_window = time.perf_counter() - start
  deadline[0] = time.monotonic() + args.drain
  for t in threads:
    t.join()
  elapsed = time.perf_counter() - start
  with stats.lock:
    requests = sum(len(v) for v in stats.latency.values())
    server_errors = sum(n for k, n in stats.status.items() if k.split()[-1].startswith("5"))
    transport_errors = sum(n for k, n in stats.status.items() if not k.split()[-1].isdigit())
    return {
        "clients": args.clients, "submit_window_s": submit_window, "elapsed_s": elapsed,
        "jobs": dict(stats.jobs), "server_errors_5xx": server_errors,
        "transport_errors": transport_errors, "lost_jobs": stats.jobs["lost"],
        "failed_jobs": stats.jobs["failed"],
        "job_latency_s": {**bc.percentiles(stats.job_latency), "n": len(stats.job_latency)},
        "jobs_per_s": stats.jobs[DONE] / elapsed,
        "requests": requests, "requests_per_s": requests / elapsed,
        "latency_s": {k: {**bc.percentiles(v), "n": len(v)} for k, v in stats.latency.items()},
        "status_counts": dict(sorted(stats.status.items())), "errors": stats.errors[:20]}


def print_table(r: dict) -> None:
  print(f"\n{r['clients']} clients, {r['submit_window_s']:.0f} s of submissions, "
        f"{r['elapsed_s']:.0f} s in all")
  print("| requests | n | p50 ms | p95 ms |\n| --- | --- | --- | --- |")
  for kind, v in r["latency_s"].items():
    if v["n"]:
      print(f"| {kind} | {v['n']} | {v['p50'] * 1e3:.0f} | {v['p95'] * 1e3:.0f} |")
  jl = r["job_latency_s"]
  print(f"\njobs {r['jobs']}; 5xx {r['server_errors_5xx']}; transport errors "
        f"{r['transport_errors']}; lost {r['lost_jobs']}; failed {r['failed_jobs']}")
  if jl["n"]:
    print(f"job latency p50 {jl['p50']:.2f} s, p95 {jl['p95']:.2f} s; throughput "
          f"{r['jobs_per_s']:.2f} jobs/s, {r['requests_per_s']:.1f} requests/s")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, data=False, out=bc.RESULTS / "web_load.json")
  p.add_argument("--url", help="a running service (default: start `nst-jax serve` here)")
  p.add_argument("--workers", type=int, default=1, help="workers of the started service")
  p.add_argument("--clients", type=int, default=50)
  p.add_argument("--duration", type=float, default=60.0, help="seconds of submissions")
  p.add_argument("--drain", type=float, default=120.0,
                 help="seconds to wait for the jobs in flight afterwards")
  p.add_argument("--model", default="starry_small")
  p.add_argument("--size", type=int, default=64, help="output long side, px")
  p.add_argument("--image-size", type=int, default=64, help="uploaded image side, px")
  p.add_argument("--poll", type=float, default=0.25, help="seconds between polls")
  p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
  p.add_argument("--serve-arg", action="append", default=[], metavar="FLAG",
                 help="a flag for the started `nst-jax serve` (repeat), e.g. "
                 "--serve-arg=--queue-url=redis://127.0.0.1:6379/0")
  args = p.parse_args(argv)
  if args.url:
    result = run_load(args)
  else:
    with tempfile.TemporaryDirectory(prefix="nst_web_load_") as tmp:
      # The limits of a public service would refuse this many jobs from one machine: every
      # client here is its own client id, and the per-network limits (all clients share
      # 127.0.0.1) are lifted, so the service, not its limits, is measured.
      lifted = ["--set", "limits.ip_rate_per_minute=1000000",
                "--set", "limits.ip_queue_quota=1000000"]
      with bc.web_service(tmp, workers=args.workers, extra=lifted + args.serve_arg) as url:
        args.url = url
        result = run_load(args)
  print_table(result)
  bc.write_result(args.out, result, args)
  return 0 if result["server_errors_5xx"] == 0 and result["lost_jobs"] == 0 else 1


if __name__ == "__main__":
  bc.run_main(main)
