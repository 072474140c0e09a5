"""What the web service adds to a fast stylization, and its queue throughput with 1 and 2 workers.

Usage::

  python benchmarks/web_overhead.py                       # 512 px, 5 timed repeats each
  python benchmarks/web_overhead.py --size 256 --repeats 3 --jobs 8

Side by side in one run (alternating, so that a change in the machine's load hits both): the
same image through ``nst_jax.fast.inference.Stylizer`` in this process (the Python API: the
network call on an array already at ``--size``; and the same with the PNG decode and encode a
script would do) and through the service started by ``nst-jax serve --workers 1`` (upload ->
job -> result PNG downloaded, long-polling ``/api/jobs/{id}?wait=30``, or polling every ``--poll``
seconds). Medians
after ``--warmup`` calls of each (the worker compiles its network on the first job). The goal:
the service adds at most 15 % to the API call.

Then the queue's throughput: ``--jobs`` jobs submitted at once (from several clients, under the
per-client quota) to a service with 1, then 2 workers; jobs per second from the first submission
to the last result. Results go to ``benchmarks/results/web_overhead.json``.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time

import bench_common as bc
import httpx
import numpy as np
from PIL import Image

from nst_jax.core import image_io
from nst_jax.fast.inference import Stylizer
from nst_jax.web import uploads

CONTENT = "content/skimage/astronaut.jpg"


def png_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image_io.to_uint8(image)).save(buf, "PNG")
  return buf.getvalue()


class Client:
  """One service client (its own cookie) that runs a fast job to the end."""

  def __init__(self, url: str, poll: float):
    self.http = httpx.Client(base_url=url, timeout=120)
    self.headers = {"X-CSRF-Token": self.http.get("/api/session").json()["csrf_token"]}
    self.poll = poll

  def submit(self, png: bytes, args) -> str:
    resp = self.http.post("/api/jobs", headers=self.headers, files={"content": ("c.png", png)},
                          data={"kind": "fast", "model": args.model, "size": str(args.size)})
    if resp.status_code != 201:
      raise RuntimeError(f"submit: {resp.status_code} {resp.text[:200]}")
    return resp.json()["id"]

  def wait(self, job_id: str, poll: float | None = None) -> tuple[bytes, dict]:
    """(result PNG, the job's last state) once it is done."""
    poll = self.poll if poll is None else poll
    while True:
      job = self.http.get(f"/api/jobs/{job_id}", params={"wait": 30} if poll == 0 else None
                          ).json()
      if job["status"] == "done":
        return self.http.get(job["result_url"]).content, job
      if job["status"] in ("failed", "cancelled"):
        raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
      time.sleep(poll)

  def run(self, png: bytes, args) -> tuple[bytes, dict]:
    """Submits and waits; the job's state gains ``timing``: where the seconds went."""
    start = time.perf_counter()
    job_id = self.submit(png, args)
    submitted = time.perf_counter()
    result, job = self.wait(job_id)
    total = time.perf_counter() - start
    queued = job["started_at"] - job["created_at"]
    worker = job["finished_at"] - job["started_at"]
    job["timing"] = {"submit_s": submitted - start, "queue_s": queued, "worker_s": worker,
                     "rest_s": total - (submitted - start) - queued - worker}
    return result, job


def variants(image: np.ndarray, n: int) -> list[bytes]:
  """``n`` PNGs of ``image`` differing in one pixel: distinct uploads, the same work."""
  out = []
  for i in range(n):
    img = image.copy()
    img[0, 0] = [(i % 256) / 255.0, (i // 256 % 256) / 255.0, 0.5]
    out.append(png_bytes(img))
  return out


def overhead(url: str, stylizer: Stylizer, image: np.ndarray, args) -> dict:
  client = Client(url, args.poll)
  pngs = iter(variants(image, args.warmup + args.repeats))
  api, api_io, service, parts = [], [], [], []

  def api_call():
    return np.asarray(stylizer(image))

  def api_io_call():  # what a script does with files: decode, stylize, encode (as the worker:
    with Image.open(io.BytesIO(png)) as im:  # zlib level 1; Pillow's default 6 costs ~45 ms more)
      arr = np.asarray(im.convert("RGB"), np.float32) / 255.0
    return uploads.encode_png(stylizer(arr))

  png = png_bytes(image)
  for i in range(args.warmup + args.repeats):
    timed = i >= args.warmup
    for fn, out in ((api_call, api), (api_io_call, api_io)):
      start = time.perf_counter()
      fn()
      if timed:
        out.append(time.perf_counter() - start)
    body = next(pngs)
    start = time.perf_counter()
    result, job = client.run(body, args)
    if timed:
      service.append(time.perf_counter() - start)
      parts.append(job["timing"])
    if i == 0:
      with Image.open(io.BytesIO(result)) as im:
        assert max(im.size) == args.size, im.size
  med = {k: float(np.median(v)) for k, v in
         (("api_s", api), ("api_with_png_io_s", api_io), ("service_s", service))}
  med["overhead_vs_api"] = med["service_s"] / med["api_s"] - 1.0
  med["overhead_vs_api_with_png_io"] = med["service_s"] / med["api_with_png_io_s"] - 1.0
  med["service_parts_s"] = {k: float(np.median([p[k] for p in parts])) for k in parts[0]}
  med["samples"] = {"api_s": api, "api_with_png_io_s": api_io, "service_s": service,
                    "service_parts_s": parts}
  return med


def throughput(url: str, image: np.ndarray, workers: int, args) -> dict:
  """Jobs per second for ``args.jobs`` jobs submitted at once (after one warm-up per worker)."""
  per_client = 4  # under the default quota of 5 active jobs per client
  clients = [Client(url, args.poll) for _ in range(-(-args.jobs // per_client))]
  pngs = variants(np.flipud(image).copy(), args.jobs + 2 * workers)
  warm = [clients[0].submit(p, args) for p in pngs[:2 * workers]]  # every worker compiles once
  for job in warm:
    clients[0].wait(job, poll=0.25)
  start = time.perf_counter()
  ids = [(clients[i // per_client], clients[i // per_client].submit(p, args))
         for i, p in enumerate(pngs[2 * workers:])]
  errors = []

  def wait(c, job):
    try:
      c.wait(job, poll=0.25)  # polling faster would take the CPU the workers need
    except RuntimeError as e:
      errors.append(str(e))

  threads = [threading.Thread(target=wait, args=pair) for pair in ids]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  elapsed = time.perf_counter() - start
  return {"workers": workers, "jobs": args.jobs, "seconds": elapsed,
          "jobs_per_s": args.jobs / elapsed, "errors": errors}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, vgg_weights=False, out=bc.RESULTS / "web_overhead.json")
  p.add_argument("--model", default="starry_small")
  p.add_argument("--size", type=int, default=512, help="long side of the output, px")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--poll", type=float, default=0.0,
                 help="seconds between polls; 0: long polls (?wait=30)")
  p.add_argument("--jobs", type=int, default=12, help="jobs of each throughput run")
  p.add_argument("--max-workers", type=int, default=2)
  args = p.parse_args(argv)
  image = image_io.load_image(bc.data_dir(args) / CONTENT, size=args.size)
  stylizer = Stylizer.from_any(args.model)
  result = {"size": args.size, "image_hw": list(image.shape[:2]), "throughput": []}
  with tempfile.TemporaryDirectory(prefix="nst_web_overhead_") as tmp:
    for workers in range(1, args.max_workers + 1):
      with bc.web_service(f"{tmp}/w{workers}", workers=workers) as url:
        if workers == 1:
          result["overhead"] = overhead(url, stylizer, image, args)
        result["throughput"].append(throughput(url, image, workers, args))
  o = result["overhead"]
  print(f"\nfast stylization, {args.model}, {image.shape[1]}x{image.shape[0]} px, median of "
        f"{args.repeats} after {args.warmup} warm-up calls")
  print("| path | seconds | service overhead |\n| --- | --- | --- |")
  print(f"| Python API (Stylizer call) | {o['api_s']:.3f} | {o['overhead_vs_api']:+.1%} |")
  print(f"| Python API + PNG decode/encode | {o['api_with_png_io_s']:.3f} | "
        f"{o['overhead_vs_api_with_png_io']:+.1%} |")
  print(f"| service (upload -> result PNG) | {o['service_s']:.3f} | |")
  print("service, median parts (s): " + ", ".join(
      f"{k[:-2]} {v:.3f}" for k, v in o["service_parts_s"].items()))
  print("\n| workers | jobs | seconds | jobs/s |\n| --- | --- | --- | --- |")
  for t in result["throughput"]:
    print(f"| {t['workers']} | {t['jobs']} | {t['seconds']:.1f} | {t['jobs_per_s']:.2f} |")
  bc.write_result(args.out, result, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
