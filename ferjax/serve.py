"""A local web page and HTTP API for the Predictor, served by uvicorn.

    python -m ferjax.serve [--host 127.0.0.1] [--port 8000]
                           [--workdir DIR | --weights FILE] [--token TOKEN]

Routes:
  GET  /             the page: choose or drop a photo, or switch on the webcam.
  POST /v1/predict   one image (multipart upload or the raw body; JPEG, PNG, WebP ...)
                     -> {"width", "height", "faces": [{box, label, score,
                        probabilities, detection_score, landmarks, uncertain, flags}],
                        "model", "ms"}
  GET  /v1/info      the model, its classes, ferjax's version.
  WS   /v1/stream    video frames in (binary JPEG/PNG messages), one JSON message out per
                     analysed frame: {"faces" (each with "track"), "analysed_fps",
                     "dropped", "time", "width", "height"}; frames that arrive while one
                     is analysed are dropped but the newest; ?token=TOKEN where a token
                     is set.
  GET  /healthz      {"status": "ready"} once the model is loaded and compiled.
  GET  /docs         the OpenAPI description (FastAPI's).

Faces of requests that arrive together are classified in one call of the classifier
(`Batcher`: up to MAX_BATCH crops, waiting at most BATCH_WAIT_S for company), in its
fixed batch sizes, so nothing recompiles as the load changes. Uploads stay in memory
(never written to disk), are limited in bytes and pixels, and a bad one gets a 4xx
JSON error with a message. With --token (or FERJAX_TOKEN), every /v1 call must send
`Authorization: Bearer TOKEN`; listening beyond loopback requires one.

Requests must name this server in their Host header (a loopback name, or the --host
address), so that a page elsewhere cannot reach it through DNS rebinding; without a
token, a /v1 call from a page of another origin (its Origin header) is refused. A
client has HEADER_TIMEOUT_S to send a request's headers and BODY_TIMEOUT_S its body.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import ipaddress
import math
import os
import secrets
import sys
import time
from importlib import resources

import numpy as np

from ferjax.errors import ConfigError, FerjaxError, require_extra, run_cli

if __name__ == "__main__":  # the extra to install, before its imports fail
  require_extra("serve", what="python -m ferjax.serve", command=True)

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from ferjax import malloc
from ferjax.predictor import add_backend_flag

MAX_BATCH = 64
BATCH_WAIT_S = 0.004
MAX_UPLOAD_BYTES = 10 * 2**20
# Pixels an upload may have (a 40-megapixel photo decodes to 120 MB as RGB), and how
# many uploads are decoded at once: together they bound the server's memory.
MAX_PIXELS = 40_000_000
DECODE_SLOTS = 2
# After an upload this large (or an image of this many pixels), the memory its decoding
# freed is handed back to the system (glibc keeps it otherwise: ten 36-megapixel
# uploads left 1.5 GB resident, experiments/large_inputs_memory.py serve).
LARGE_UPLOAD_BYTES = 4 * 2**20
LARGE_IMAGE_PIXELS = 4_000_000
# Seconds a client has to send a request's headers, and then its body.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WEB_FILES = {"index.html": "text/html; charset=utf-8",
             "app.js": "text/javascript; charset=utf-8",
             "style.css": "text/css; charset=utf-8"}


class Batcher:
  """Collects the crops of concurrent requests and classifies them together.

  `await submit(crops)` returns the probabilities of those crops. One worker thread
  runs the classifier, so at most one call is in flight and requests that arrive
  meanwhile form the next batch.
  """

  def __init__(self, classify, *, max_batch: int = MAX_BATCH,
               max_wait: float = BATCH_WAIT_S):
    self._classify = classify
    self.max_batch, self.max_wait = max_batch, max_wait
    self._queue: asyncio.Queue | None = None
    self._task = None
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="classify")
    self.batches = 0  # calls made, for the load test and the bench

  def start(self) -> None:
    self._queue = asyncio.Queue()
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await self._task
    while self._queue is not None and not self._queue.empty():
      _, fut = self._queue.get_nowait()
      if not fut.done():
        fut.set_exception(RuntimeError("the server is shutting down"))
    self._pool.shutdown(wait=False)

  async def submit(self, crops: np.ndarray) -> np.ndarray:
    if self._queue is None:
      raise RuntimeError("the batcher has not been started")
    fut = asyncio.get_running_loop().create_future()
    await self._queue.put((crops, fut))
    return await fut

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      items = [await self._queue.get()]
      n = len(items[0][0])
      deadline = loop.time() + self.max_wait
      while n < self.max_batch:
        try:
          item = await asyncio.wait_for(self._queue.get(),
                                        max(0.0, deadline - loop.time()))
        except TimeoutError:
          break
        items.append(item)
        n += len(item[0])
      crops = np.concatenate([c for c, _ in items])
      try:
        probs = await loop.run_in_executor(self._pool, self._classify, crops)
        self.batches += 1
      except Exception as e:  # noqa: BLE001 - handed to every waiting request
        for _, fut in items:
          if not fut.done():
            fut.set_exception(e)
        continue
      i = 0
      for c, fut in items:
        if not fut.done():
          fut.set_result(probs[i:i + len(c)])
        i += len(c)


# The live stream's smoothing time constant (seconds) and the frame rate its summary
# counts time in (frames arrive as fast as the client sends them).
STREAM_SMOOTH_S = 0.5
STREAM_NOMINAL_FPS = 10.0


def split_host(value: str) -> str:
  """The host name of a Host header or URL authority, without port or brackets."""
  value = value.strip().lower()
  if value.startswith("["):  # [v6]:port
    return value[1:].split("]", 1)[0]
  return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def create_app(predictor, *, token: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, warm_up: bool = True,
               allowed_hosts=LOOPBACK_NAMES):
  """The FastAPI app serving `predictor` (a `ferjax.predictor.Predictor`).

  `allowed_hosts`: the host names requests may address (their Host header); None
  accepts any (for a server on every interface, which then requires a token).
  """
  import ferjax
  from ferjax import images as images_lib

  batcher = Batcher(lambda crops: predictor.classifier.classify(crops,
                                                                tta=predictor.tta))
  state = {"ready": False}
  decoding = asyncio.Semaphore(DECODE_SLOTS)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    batcher.start()
    if warm_up:
      await run_in_threadpool(_warm_up, predictor)
    state["ready"] = True
    yield
    await batcher.stop()

  app = FastAPI(title="ferjax", version=ferjax.__version__, lifespan=lifespan,
                description="Facial expressions of the faces in an image.")
  app.state.batcher = batcher

  def error(status: int, message: str):
    return JSONResponse({"error": message}, status_code=status)

  @app.exception_handler(StarletteHTTPException)
  async def http_error(request, exc):
    return error(exc.status_code, str(exc.detail))

  @app.exception_handler(Exception)
  async def any_error(request, exc):  # never a stack trace to the client
    print(f"ferjax.serve: {type(exc).__name__}: {exc}", file=sys.stderr)
    return error(500, "internal error; the server log has the details")

  hosts = None if allowed_hosts is None else {split_host(h) for h in allowed_hosts}

  def refusal(headers, *, api: bool, websocket: bool = False,
              query_token: str | None = None) -> tuple[int, str] | None:
    """(status, message) where a request is refused, None where it may go on: a Host
    that is not this server's; without a token, an API call from another origin; with
    one, an API call that does not carry it (a WebSocket may send it as ?token=, as a
    browser cannot set its headers)."""
    host = headers.get("host", "")
    if hosts is not None and split_host(host) not in hosts:
      return 400, (f"this server does not answer to the host '{host[:100]}'; "
                   "address it by the name it was started with")
    origin = headers.get("origin")
    if (not token and origin is not None and api
        and origin.split("://", 1)[-1].lower() != host.lower()):
      return 403, ("requests from another origin are refused; set a token "
                   "(--token) to call the API from other pages")
    if token and api:
      scheme, _, sent = headers.get("authorization", "").partition(" ")
      sent = sent.strip() if scheme.lower() == "bearer" else None
      if websocket and sent is None:
        sent = query_token
      if sent is None or not secrets.compare_digest(sent.encode(), token.encode()):
        return 401, ("missing or wrong token: send 'Authorization: Bearer TOKEN'"
                     + (" or ?token=TOKEN" if websocket else ""))
    return None

  @app.middleware("http")
  async def check_token(request: Request, call_next):
    why = refusal(request.headers, api=request.url.path.startswith("/v1/"))
    if why is not None:
      return error(*why)
    return await call_next(request)

  @app.get("/healthz")
  async def healthz():
    if not state["ready"]:
      return JSONResponse({"status": "starting"}, status_code=503)
    return {"status": "ready"}

  @app.get("/v1/info")
  async def info():
    i = predictor.classifier.info
    return {"model": i.model, "classes": list(predictor.classes),
            "input_size": i.input_size, "dtype": i.dtype, "tta": predictor.tta,
            "version": ferjax.__version__, "max_upload_bytes": max_upload_bytes,
            "calibrated": predictor.classifier.calibrated,
            "min_confidence": predictor.min_confidence}

  async def faces_of(data: bytes, name: str):
    """(image, FacePredictions) of an uploaded image: decoded and searched off the
    event loop (at most DECODE_SLOTS at once), classified with other requests' faces;
    memory given back after a large one. FerjaxError for what is not an image."""
    img = None
    try:
      async with decoding:
        img = await run_in_threadpool(images_lib.open_image, data, name=name,
                                      max_pixels=MAX_PIXELS)
        crops, meta = await run_in_threadpool(predictor.crops, img)
    finally:
      pixels = img.width * img.height if img is not None else 0
      if len(data) > LARGE_UPLOAD_BYTES or pixels > LARGE_IMAGE_PIXELS:
        await run_in_threadpool(malloc.release_free_memory)
    if not len(crops):
      return img, []
    return img, predictor.faces_from(await batcher.submit(crops), meta)

  @app.post("/v1/predict", responses={400: {}, 401: {}, 413: {}, 415: {}})
  async def predict(request: Request):
    """Upload one image (multipart field of any name, or the raw request body)."""
    t0 = time.perf_counter()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_upload_bytes + 2**16:
      return error(413, f"the upload is larger than {max_upload_bytes:,} bytes")
    # Read the body ourselves, so that a chunked upload without a Content-Length is
    # held to the same limit; it stays in memory.
    body = bytearray()
    try:
      async with asyncio.timeout(BODY_TIMEOUT_S):
        async for chunk in request.stream():
          body += chunk
          if len(body) > max_upload_bytes + 2**16:
            return error(413, f"the upload is larger than {max_upload_bytes:,} bytes")
    except TimeoutError:
      return error(408, f"the upload did not arrive within {BODY_TIMEOUT_S:.0f} s")
    data = bytes(body)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
      try:
        data = await _first_file(request.headers, data)
      except Exception:  # noqa: BLE001 - malformed multipart
        return error(400, "the multipart body cannot be parsed")
      if data is None:
        return error(400, "the form has no file; send the image as a file field")
    if len(data) > max_upload_bytes:
      return error(413, f"the upload is larger than {max_upload_bytes:,} bytes")
    if not data:
      return error(400, "the upload is empty; send an image (JPEG, PNG, WebP)")
    try:
      img, faces = await faces_of(data, "the upload")
    except FerjaxError as e:
      return error(400, str(e))
    return {"width": img.width, "height": img.height,
            "faces": [f.to_dict() for f in faces], "model": predictor.classifier.info.model,
            "ms": round(1000 * (time.perf_counter() - t0), 1)}

  @app.websocket("/v1/stream")
  async def stream(ws: WebSocket):
    """Video frames in (binary messages: JPEG, PNG, WebP), one JSON message out per
    analysed frame: faces with their `track` and smoothed expression, the analysed
    frame rate and how many frames were dropped. A frame that arrives while the last
    is being analysed replaces any other waiting: the newest is analysed next."""
    from ferjax.tracking import VideoTracks
    why = refusal(ws.headers, api=True, websocket=True,
                  query_token=ws.query_params.get("token"))
    if why is not None:  # before accept(): the handshake is answered 403
      await ws.close(code=1008, reason=why[1][:120])
      return
    await ws.accept()
    waiting: dict = {"frame": None, "dropped": 0, "closed": None}
    arrived = asyncio.Event()

    async def receive():
      try:
        while True:
          msg = await ws.receive()
          if msg["type"] == "websocket.disconnect":
            break
          data = msg.get("bytes")
          if data is None:
            waiting["closed"] = (1003, "send each frame as a binary message (JPEG, PNG)")
            break
          if len(data) > max_upload_bytes:
            waiting["closed"] = (1009, f"a frame is larger than {max_upload_bytes:,} "
                                 "bytes")
            break
          if waiting["frame"] is not None:
            waiting["dropped"] += 1
          waiting["frame"] = (data, time.monotonic())
          arrived.set()
      finally:
        waiting["closed"] = waiting["closed"] or (1000, "")
        arrived.set()

    receiver = asyncio.create_task(receive())
    tracks, start, analysed = None, time.monotonic(), 0
    try:
      while True:
        await arrived.wait()
        arrived.clear()
        if waiting["closed"] is not None:
          code, reason = waiting["closed"]
          if code != 1000:
            await ws.close(code=code, reason=reason)
          return
        frame, waiting["frame"] = waiting["frame"], None
        if frame is None:
          continue
        data, t_arrived = frame
        try:
          img, faces = await faces_of(data, "the frame")
        except FerjaxError as e:
          await ws.close(code=1007, reason=str(e)[:120])
          return
        t = t_arrived - start
        if tracks is None:
          tracks = VideoTracks(predictor.classes, fps=STREAM_NOMINAL_FPS,
                               smooth_s=STREAM_SMOOTH_S,
                               min_confidence=predictor.min_confidence)
        tracks.update(faces, t)
        analysed += 1
        elapsed = max(time.monotonic() - start, 1e-6)
        await ws.send_json({"width": img.width, "height": img.height, "time": round(t, 3),
                            "faces": [f.to_dict() for f in faces],
                            "analysed_fps": round(analysed / elapsed, 2),
                            "dropped": waiting["dropped"]})
    finally:
      receiver.cancel()

  web = resources.files("ferjax") / "web"

  def static(name: str):
    async def serve_file():
      return Response((web / name).read_bytes(), media_type=WEB_FILES[name])
    return serve_file

  app.get("/", include_in_schema=False)(static("index.html"))
  for name in ("app.js", "style.css"):
    app.get(f"/{name}", include_in_schema=False)(static(name))
  return app


async def _first_file(headers, body: bytes) -> bytes | None:
  """The bytes of the first file field of a multipart body, parsed in memory."""
  async def stream():
    yield body
    yield b""
  parser = MultiPartParser(headers, stream(), max_files=1, max_fields=10)
  parser.spool_max_size = len(body) + 1  # this parser only: never spill to disk
  form = await parser.parse()
  files = [v for v in form.values() if hasattr(v, "read")]
  return await files[0].read() if files else None


def _warm_up(predictor) -> None:
  """Loads the detector and compiles every classifier batch size."""
  predictor.classifier.warm_up(tta=predictor.tta)
  predictor.detector.detect(np.zeros((480, 640, 3), np.uint8))


def _timed_h11():
  """uvicorn's h11 protocol, closing a connection that has not sent a request's
  headers within HEADER_TIMEOUT_S of opening or of its previous response (uvicorn
  itself never times a slow client out while it sends)."""
  from uvicorn.protocols.http.h11_impl import H11Protocol

  class TimedH11Protocol(H11Protocol):
    _deadline = None

    def _waiting_for_headers(self) -> bool:
      return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
      if self._deadline is None:
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

    def _disarm(self) -> None:
      if self._deadline is not None:
        self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
      self._deadline = None
      if self._waiting_for_headers() and not self.transport.is_closing():
        self.transport.close()

    def connection_made(self, transport) -> None:
      super().connection_made(transport)
      self._arm()

    def data_received(self, data: bytes) -> None:
      super().data_received(data)
      if not self._waiting_for_headers():
        self._disarm()

    def on_response_complete(self) -> None:
      super().on_response_complete()
      if not self.transport.is_closing():
        self._arm()

    def connection_lost(self, exc) -> None:
      self._disarm()
      super().connection_lost(exc)

  return TimedH11Protocol


def server_config(app, **kwargs):
  """The uvicorn.Config that serves `app`: header and keep-alive timeouts set."""
  import uvicorn
  kwargs.setdefault("ws_max_size", MAX_UPLOAD_BYTES + 2**16)
  return uvicorn.Config(app, http=_timed_h11(), timeout_keep_alive=5,
                        log_level="warning", **kwargs)


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m ferjax.serve", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--host", default="127.0.0.1",
                 help="address to listen on (default 127.0.0.1: this machine only)")
  p.add_argument("--port", type=int, default=8000)
  model = p.add_mutually_exclusive_group()
  model.add_argument("--workdir", help="serve a training run's best checkpoint")
  model.add_argument("--weights", help="serve a weights file from `ferjax.export`")
  p.add_argument("--token", default=os.environ.get("FERJAX_TOKEN"),
                 help="require 'Authorization: Bearer TOKEN' on every /v1 call "
                      "(default: $FERJAX_TOKEN); needed to listen beyond loopback")
  p.add_argument("--detect-size", type=int, default=640, metavar="PIXELS",
                 help="the face detector sees each image scaled to at most this many "
                 "pixels a side (default 640; smaller is faster, misses small faces)")
  p.add_argument("--min-confidence", type=float, metavar="P",
                 help="faces whose top probability is below P are marked uncertain "
                 "(default: the model's calibrated threshold; 0 turns it off)")
  p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20,
                 help="largest upload accepted, in MiB (default 10)")
  add_backend_flag(p)
  return p


def main(argv=None) -> None:
  args = build_parser().parse_args(argv)
  if not is_loopback(args.host) and not args.token:
    raise ConfigError(f"Listening on {args.host} lets other machines in: set a token "
                      "with --token or FERJAX_TOKEN (clients then send "
                      "'Authorization: Bearer TOKEN').")
  if not 0 < args.port < 65536:
    raise ConfigError(f"--port must be 1-65535, got {args.port}")
  if not 32 <= args.detect_size <= 4096:
    raise ConfigError(f"--detect-size must be 32 to 4096, got {args.detect_size}")
  if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= 1024):
    raise ConfigError(f"--max-upload-mb must be a number of MiB above 0 and at most "
                      f"1024, got {args.max_upload_mb}")
  if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
    raise ConfigError(f"--min-confidence must be 0 to 1 (0: every face is answered); "
                      f"got {args.min_confidence}")
  import uvicorn
  from ferjax.predictor import Predictor
  predictor = Predictor.load(workdir=args.workdir, weights=args.weights,
                             backend=args.backend, detect_size=args.detect_size,
                             min_confidence=args.min_confidence)
  wildcard = args.host in ("0.0.0.0", "::")  # every interface: any name, token needed
  app = create_app(predictor, token=args.token,
                   max_upload_bytes=max(1, int(args.max_upload_mb * 2**20)),
                   allowed_hosts=None if wildcard else (*LOOPBACK_NAMES, args.host))
  print(f"ferjax.serve: loading and compiling the model, then listening on "
        f"http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
  uvicorn.Server(server_config(app, host=args.host, port=args.port,
                              ws_max_size=int(args.max_upload_mb * 2**20) + 2**16)).run()


if __name__ == "__main__":
  run_cli(main)
