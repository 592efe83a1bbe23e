"""A bounded load test of `ferjax.serve`: requests per second and latency percentiles.

    python -m ferjax.loadtest [--clients 16] [--seconds 20] [--weights FILE]

Starts the server in this process on a free loopback port (the shipped model unless
--weights or --workdir say otherwise), then posts the same 640x480 photo with one face
(ferjax's astronaut sample, or --image) from one client, then from --clients
concurrent clients, each for --seconds. Prints one JSON object: per phase the
requests, failures, requests per second and p50/p99 latency in milliseconds, the
classifier calls made (fewer than requests when batching merges them), and the
server's resident memory after warm-up and after the load. Traffic goes to 127.0.0.1
only and stops by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import threading
import time
from contextlib import contextmanager

from ferjax import malloc
from ferjax.errors import run_cli


def _rss_mib() -> float:
  rss = malloc.rss_mib()
  return rss[0] if rss is not None else float("nan")


def sample_photo() -> bytes:
  """A 640x480 JPEG of one face: the astronaut sample, letterboxed."""
  from PIL import Image

  from ferjax import samples
  canvas = Image.new("RGB", (640, 480), (40, 40, 40))
  face = Image.fromarray(samples.astronaut()).resize((480, 480))
  canvas.paste(face, (80, 0))
  buf = io.BytesIO()
  canvas.save(buf, format="JPEG", quality=90)
  return buf.getvalue()


@contextmanager
def running_server(app, *, timeout: float = 300.0):
  """Serves `app` with uvicorn in a thread on a free loopback port; yields its URL."""
  import httpx
  import uvicorn
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.bind(("127.0.0.1", 0))
  url = f"http://127.0.0.1:{sock.getsockname()[1]}"
  from ferjax.serve import server_config
  server = uvicorn.Server(server_config(app))
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + timeout
  try:
    while True:
      try:
        if httpx.get(url + "/healthz", timeout=5).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      if time.monotonic() > deadline or not thread.is_alive():
        raise RuntimeError("the server did not become ready")
      time.sleep(0.2)
    yield url
  finally:
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def load(url: str, body: bytes, *, clients: int, seconds: float,
         token: str | None = None) -> dict:
  """`clients` threads each posting `body` in a loop for `seconds`; their statistics."""
  import httpx
  headers = {"content-type": "image/jpeg"}
  if token:
    headers["authorization"] = f"Bearer {token}"
  latencies, failures = [], []
  lock = threading.Lock()
  stop_at = time.monotonic() + seconds

  def client():
    with httpx.Client(timeout=60) as http:
      while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
          r = http.post(url + "/v1/predict", content=body, headers=headers)
          ok = r.status_code == 200
        except httpx.HTTPError as e:
          ok, r = False, e
        with lock:
          (latencies if ok else failures).append(
              time.perf_counter() - t0 if ok else repr(r))

  start = time.perf_counter()
  threads = [threading.Thread(target=client) for _ in range(clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.perf_counter() - start
  ms = sorted(1000 * x for x in latencies)
  pct = lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 1) if ms else None
  return {"clients": clients, "seconds": round(wall, 2), "requests": len(ms),
          "failures": len(failures), "first_failure": failures[0] if failures else None,
          "requests_per_second": round(len(ms) / wall, 2),
          "p50_ms": round(statistics.median(ms), 1) if ms else None, "p99_ms": pct(0.99)}


def main(argv=None) -> None:
  from ferjax import serve
  p = argparse.ArgumentParser(prog="python -m ferjax.loadtest", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--clients", type=int, default=16)
  p.add_argument("--seconds", type=float, default=20.0)
  p.add_argument("--image", help="the photo to post (default: the astronaut, 640x480)")
  model = p.add_mutually_exclusive_group()
  model.add_argument("--workdir")
  model.add_argument("--weights")
  args = p.parse_args(argv)
  if args.clients < 1 or not 0 < args.seconds <= 600:
    p.error("--clients must be at least 1 and --seconds in (0, 600]")
  body = open(args.image, "rb").read() if args.image else sample_photo()
  from ferjax.predictor import Predictor
  app = serve.create_app(Predictor.load(workdir=args.workdir, weights=args.weights))
  with running_server(app) as url:
    load(url, body, clients=1, seconds=2.0)  # first requests: allocator, caches
    rss_warm = _rss_mib()
    calls0 = app.state.batcher.batches
    one = load(url, body, clients=1, seconds=args.seconds)
    one["classifier_calls"] = app.state.batcher.batches - calls0
    calls0 = app.state.batcher.batches
    many = load(url, body, clients=args.clients, seconds=args.seconds)
    many["classifier_calls"] = app.state.batcher.batches - calls0
    out = {"one_client": one, "concurrent": many,
           "speedup": round(many["requests_per_second"]
                            / max(one["requests_per_second"], 1e-9), 2),
           "rss_mib_after_warm_up": round(rss_warm, 1),
           "rss_mib_after_load": round(_rss_mib(), 1)}
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  run_cli(main)
