"""ferjax.serve over real HTTP on loopback, and its page in headless Chromium."""

import asyncio
import io
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")

from ferjax import loadtest, samples, serve  # noqa: E402
from ferjax.classes import CLASSES_6  # noqa: E402
from ferjax.predictor import Predictor  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_UPLOAD = 2_000_000


@pytest.fixture(scope="module")
def predictor(tiny_weights):
  return Predictor.from_weights(tiny_weights)


@pytest.fixture(scope="module")
def app(predictor):
  return serve.create_app(predictor, max_upload_bytes=MAX_UPLOAD)


@pytest.fixture(scope="module")
def url(app):
  with loadtest.running_server(app) as url:
    yield url


@pytest.fixture(scope="module")
def photo() -> bytes:
  return loadtest.sample_photo()


def test_routes(url):
  assert httpx.get(url + "/healthz").json() == {"status": "ready"}
  info = httpx.get(url + "/v1/info").json()
  assert info["classes"] == list(CLASSES_6) and info["model"] == "tiny"
  page = httpx.get(url + "/")
  assert page.status_code == 200 and "text/html" in page.headers["content-type"]
  assert "app.js" in page.text and "http" not in page.text.split("<body>")[1]
  assert httpx.get(url + "/app.js").status_code == 200
  spec = httpx.get(url + "/openapi.json").json()
  assert "/v1/predict" in spec["paths"]


def test_predict_multipart_and_raw_body(url, photo):
  r = httpx.post(url + "/v1/predict", files={"file": ("p.jpg", photo, "image/jpeg")})
  assert r.status_code == 200, r.text
  body = r.json()
  assert (body["width"], body["height"]) == (640, 480)
  (face,) = body["faces"]
  x0, y0, x1, y1 = face["box"]
  # The astronaut's face, scaled 480/512 and moved 80 px right.
  assert 80 + 150 < (x0 + x1) / 2 < 80 + 290 and 30 < (y0 + y1) / 2 < 190
  assert set(face["probabilities"]) == set(CLASSES_6)
  assert face["flags"] == [] and isinstance(face["uncertain"], bool)
  raw = httpx.post(url + "/v1/predict", content=photo,
                   headers={"content-type": "image/jpeg"}).json()
  assert raw["faces"][0]["probabilities"] == face["probabilities"]


def test_bad_uploads_get_4xx_json_and_the_server_stays_up(url, photo):
  cases = [
      (b"hello, not an image", 400, "not an image"),
      (photo[:3000], 400, "cannot be decoded"),
      (b"", 400, "empty"),
      (os.urandom(MAX_UPLOAD + 10), 413, "larger than"),
  ]
  for data, status, message in cases:
    r = httpx.post(url + "/v1/predict", content=data,
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == status, (message, r.text)
    assert message in r.json()["error"] and "Traceback" not in r.text
  r = httpx.post(url + "/v1/predict", content=b"--b\r\nContent-Disposition: form-data; "
                 b'name="note"\r\n\r\nno file here\r\n--b--\r\n',
                 headers={"content-type": "multipart/form-data; boundary=b"})
  assert r.status_code == 400 and "the form has no file" in r.json()["error"]
  r = httpx.post(url + "/v1/predict", files={"x": ("x.txt", b"", "text/plain")})
  assert r.status_code == 400 and "empty" in r.json()["error"]

  def chunks():  # chunked transfer encoding: no Content-Length to check up front
    for _ in range(40):
      yield os.urandom(100_000)
  r = httpx.post(url + "/v1/predict", content=chunks())
  assert r.status_code == 413 and "larger than" in r.json()["error"]
  r = httpx.get(url + "/v1/predict")
  assert r.status_code == 405 and "error" in r.json()
  # No face: 200 with no faces.
  blank = io.BytesIO()
  Image.new("RGB", (320, 240), (200, 200, 200)).save(blank, format="PNG")
  r = httpx.post(url + "/v1/predict", content=blank.getvalue())
  assert r.status_code == 200 and r.json()["faces"] == []
  assert httpx.get(url + "/healthz").status_code == 200


def test_token_is_required_when_set(predictor, photo):
  app = serve.create_app(predictor, token="s3cret", warm_up=False)
  with loadtest.running_server(app) as url:
    assert httpx.get(url + "/v1/info").status_code == 401
    assert httpx.get(url + "/v1/info",
                     headers={"authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.post(url + "/v1/predict", content=photo,
                    headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert httpx.get(url + "/healthz").status_code == 200  # probes need no token


def test_refuses_to_listen_beyond_loopback_without_a_token(capsys):
  from ferjax.errors import run_cli
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: serve.main(["--host", "0.0.0.0", "--token", ""]))
  assert e.value.code == 2 and "set a token" in capsys.readouterr().err
  assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1")
  assert not serve.is_loopback("0.0.0.0")


def test_hosts_and_origins_that_are_not_the_servers_are_refused(url, predictor, photo):
  port = url.rsplit(":", 1)[1]
  for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
    assert httpx.get(url + "/v1/info", headers={"host": host}).status_code == 200
  # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
  r = httpx.get(url + "/", headers={"host": f"evil.example:{port}"})
  assert r.status_code == 400 and "does not answer to the host" in r.json()["error"]
  # A cross-site POST without a token is refused; the page's own origin is not.
  r = httpx.post(url + "/v1/predict", content=photo,
                 headers={"origin": "https://evil.example"})
  assert r.status_code == 403 and "another origin" in r.json()["error"]
  r = httpx.post(url + "/v1/predict", content=photo,
                 headers={"origin": f"http://127.0.0.1:{port}"})
  assert r.status_code == 200
  # With a token set, the token decides, whatever the origin.
  app = serve.create_app(predictor, token="t", warm_up=False)
  with loadtest.running_server(app) as other:
    r = httpx.post(other + "/v1/predict", content=photo, headers={
        "origin": "https://elsewhere.example", "authorization": "Bearer t"})
    assert r.status_code == 200
  assert serve.split_host("[::1]:8000") == "::1"
  assert serve.split_host("Example.COM:80") == "example.com"


def test_slow_clients_are_timed_out(predictor, monkeypatch):
  import socket
  import time
  monkeypatch.setattr(serve, "HEADER_TIMEOUT_S", 0.5)
  monkeypatch.setattr(serve, "BODY_TIMEOUT_S", 0.5)
  app = serve.create_app(predictor, warm_up=False)
  with loadtest.running_server(app) as url:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as trickle:
      trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
      t0 = time.monotonic()
      assert trickle.recv(100) == b""  # closed by the server
      assert time.monotonic() - t0 < 5
    with socket.create_connection((host, int(port)), timeout=10) as slow_body:
      slow_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
      reply = slow_body.recv(4096)
      head, _, body = reply.partition(b"\r\n\r\n")
      length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
      while len(body) < length:  # the body may come in a segment of its own
        more = slow_body.recv(4096)
        assert more, "the server closed the connection before the reply's body"
        body += more
      assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive" in body
    assert httpx.get(url + "/healthz").status_code == 200  # and the server is fine


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_max_upload_mb_is_checked_before_the_model_loads(value, capsys, monkeypatch):
  from ferjax import predictor as predictor_lib
  from ferjax.errors import run_cli

  def must_not_load(*a, **k):
    raise AssertionError("the model was loaded before the options were checked")
  monkeypatch.setattr(predictor_lib.Predictor, "load", must_not_load)
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: serve.main(["--max-upload-mb", value]))
  assert e.value.code == 2 and "--max-upload-mb must be" in capsys.readouterr().err


def test_concurrent_load_is_served_without_failures(app, url, photo):
  stats = loadtest.load(url, photo, clients=16, seconds=8)
  print("16 clients:", stats, "classifier calls:", app.state.batcher.batches)
  assert stats["failures"] == 0, stats["first_failure"]
  assert stats["requests"] >= 16


def test_batcher_merges_requests_that_wait_during_a_call():
  """Crops submitted while the classifier is busy go into one call, and each request
  gets its own rows back (independent of timing: the first call blocks until all 16
  requests are queued, so the rest must share the second)."""
  release, calls = threading.Event(), []

  def classify(crops):
    calls.append(len(crops))
    assert release.wait(10)
    return crops.reshape(len(crops), -1)[:, :1] * 2

  async def main():
    batcher = serve.Batcher(classify)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(np.full((k % 3 + 1, 2, 2), k, np.float32)))
             for k in range(16)]
    await asyncio.sleep(0)  # each task runs until it awaits its result: all are queued
    while not calls:  # and the first call has started (it blocks until released)
      await asyncio.sleep(0.01)
    release.set()
    outs = await asyncio.gather(*tasks)
    await batcher.stop()
    return outs

  outs = asyncio.run(main())
  assert sum(calls) == sum(k % 3 + 1 for k in range(16)) and len(calls) <= 2
  for k, out in enumerate(outs):
    np.testing.assert_array_equal(out, np.full((k % 3 + 1, 1), 2 * k, np.float32))


# ----------------------------------------------------------------------------- browser

def _write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
  """A raw YUV 4:2:0 video that Chromium's fake camera plays in a loop."""
  h, w = frames[0].shape[:2]
  with path.open("wb") as f:
    f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
    for rgb in frames:
      r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
      y = 0.299 * r + 0.587 * g + 0.114 * b
      u = 128 + (b - y) * 0.564
      v = 128 + (r - y) * 0.713
      sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
      f.write(b"FRAME\n")
      for plane in (y, sub(u), sub(v)):
        f.write(np.clip(np.round(plane), 0, 255).astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)")
  sync_api = pytest.importorskip("playwright.sync_api")
  video = tmp_path_factory.mktemp("camera") / "face.y4m"
  canvas = Image.new("RGB", (640, 480), (40, 40, 40))
  canvas.paste(Image.fromarray(samples.astronaut()).resize((400, 400)), (120, 40))
  _write_y4m(video, [np.asarray(canvas)] * 10)
  with sync_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, args=[
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}", "--no-sandbox"])
    yield b
    b.close()


def test_page_upload_shows_a_label(browser, url, tmp_path):
  path = tmp_path / "astronaut.jpg"
  Image.fromarray(samples.astronaut()).save(path)
  page = browser.new_page(viewport={"width": 1000, "height": 800})
  page.goto(url + "/")
  page.set_input_files("#file", str(path))
  page.wait_for_selector("#faces li .label", timeout=60_000)
  label = page.inner_text("#faces li .label")
  assert any(label.startswith(c) for c in CLASSES_6)
  assert page.get_attribute("body", "data-faces") == "1"
  ARTIFACTS.mkdir(exist_ok=True)
  page.screenshot(path=str(ARTIFACTS / "page_upload.png"), full_page=True)
  page.close()


def test_page_webcam_shows_a_label(browser, url):
  context = browser.new_context(viewport={"width": 1000, "height": 800})
  page = context.new_page()
  page.goto(url + "/")
  page.click("#camera")
  page.wait_for_selector("body[data-faces='1']", timeout=30_000)
  assert page.inner_text("#camera") == "Stop webcam"
  assert "Webcam: 1 face(s)" in page.inner_text("#status")
  assert "frames analysed a second" in page.inner_text("#status")  # over /v1/stream
  ARTIFACTS.mkdir(exist_ok=True)
  page.screenshot(path=str(ARTIFACTS / "page_webcam.png"), full_page=True)
  page.click("#camera")
  context.close()


def _ws_url(url: str) -> str:
  return url.replace("http://", "ws://") + "/v1/stream"


def test_stream_tracks_faces_frame_after_frame(url, photo):
  from websockets.sync.client import connect
  with connect(_ws_url(url), origin=url) as ws:
    results = []
    for _ in range(3):
      ws.send(photo)
      results.append(json.loads(ws.recv(timeout=60)))
  assert all(len(r["faces"]) == 1 for r in results)
  tracks = [r["faces"][0].get("track") for r in results]
  assert tracks[0] is not None and tracks[0] == tracks[1] == tracks[2]
  last = results[-1]
  assert last["analysed_fps"] > 0 and last["dropped"] == 0
  assert set(last["faces"][0]["raw_probabilities"]) == set(CLASSES_6)


def test_stream_drops_frames_it_cannot_keep_up_with(url, photo):
  """Frames sent faster than they are analysed are dropped, not queued: 12 frames in
  a burst give fewer than 12 answers, the last one counting the dropped."""
  from websockets.sync.client import connect
  with connect(_ws_url(url), origin=url) as ws:
    for _ in range(12):
      ws.send(photo)
    answers = []
    while True:
      answers.append(json.loads(ws.recv(timeout=60)))
      if len(answers) + answers[-1]["dropped"] == 12:
        break
  assert len(answers) < 12 and answers[-1]["dropped"] > 0


def test_stream_closes_on_garbage_and_the_server_stays_up(url, photo):
  from websockets.exceptions import ConnectionClosed
  from websockets.sync.client import connect
  cases = (("a text message", 1003, "binary message"),
           (b"\x00not an image" * 10, 1007, "not an image"),
           (b"\xff" * (MAX_UPLOAD + 10), 1009, "larger than"))
  for message, code, reason in cases:
    with connect(_ws_url(url), origin=url, max_size=None) as ws:
      ws.send(message)
      with pytest.raises(ConnectionClosed) as e:
        ws.recv(timeout=30)
      assert e.value.rcvd.code == code and reason in e.value.rcvd.reason
  assert httpx.get(url + "/healthz").json() == {"status": "ready"}


def test_stream_needs_the_token_and_a_known_origin(predictor, photo):
  """A refused handshake is an HTTP 403: no connection is opened."""
  from websockets.exceptions import InvalidStatus
  from websockets.sync.client import connect
  app = serve.create_app(predictor, token="s3cret", warm_up=False)
  with loadtest.running_server(app) as url:
    for query in ("", "?token=wrong"):
      with pytest.raises(InvalidStatus) as e:
        connect(_ws_url(url) + query)
      assert e.value.response.status_code == 403
    with connect(_ws_url(url) + "?token=s3cret") as ws:
      ws.send(photo)
      assert "faces" in json.loads(ws.recv(timeout=60))
  with loadtest.running_server(serve.create_app(predictor, warm_up=False)) as url:
    with pytest.raises(InvalidStatus) as e:
      connect(_ws_url(url), origin="http://evil.example")
    assert e.value.response.status_code == 403
    # DNS rebinding: the handshake names another host.
    import socket
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
      sock.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: rebound.example\r\n"
                   b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
      assert sock.recv(200).startswith(b"HTTP/1.1 403")
