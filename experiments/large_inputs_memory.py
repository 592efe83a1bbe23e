"""Peak memory of `predict` and of the server on large 16-bit images (issue 27, item 5).

    python experiments/large_inputs_memory.py predict   # one 169-megapixel 16-bit PNG
    python experiments/large_inputs_memory.py serve     # ten 36-megapixel 16-bit uploads

`predict` runs `python -m ferjax.predict` on a flat 13000x13000 16-bit PNG (a few
hundred KB on disk) under /usr/bin/time and reports its peak resident size. `serve`
starts the server in this process (the shipped model), posts ten 6000x6000 16-bit
PNGs from ten threads at once and reports this process's peak resident size and its
size once they are answered. Both print one JSON line.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image


def png16(side: int) -> bytes:
  rng = np.random.default_rng(0)
  img = Image.new("I;16", (side, side), 20000)
  img.paste(Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16)), (0, 0))
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


def measure_predict() -> dict:
  with tempfile.TemporaryDirectory() as d:
    path = Path(d) / "big16.png"
    path.write_bytes(png16(13000))
    r = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m",
                        "ferjax.predict", str(path), "--json"],
                       capture_output=True, text=True)
    peak_kib = int(r.stderr.strip().splitlines()[-1])
    size = path.stat().st_size
  return {"what": "predict, one 13000x13000 16-bit PNG", "bytes": size,
          "peak_rss_mib": round(peak_kib / 1024, 1)}


def measure_serve() -> dict:
  import httpx

  from ferjax import loadtest, malloc, serve
  from ferjax.predictor import Predictor
  app = serve.create_app(Predictor.from_pretrained(), max_upload_bytes=64 * 2**20)
  body = png16(6000)
  codes = []
  with loadtest.running_server(app) as url:
    before = malloc.rss_mib()

    def post():
      r = httpx.post(url + "/v1/predict", content=body, timeout=600)
      codes.append(r.status_code)
    threads = [threading.Thread(target=post) for _ in range(10)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    after = malloc.rss_mib()
  return {"what": "serve, ten 6000x6000 16-bit PNG uploads at once",
          "upload_bytes": len(body), "status_codes": sorted(codes),
          "rss_before_mib": round(before[0], 1), "peak_rss_mib": round(after[1], 1),
          "rss_after_mib": round(after[0], 1)}


if __name__ == "__main__":
  which = sys.argv[1] if len(sys.argv) > 1 else "predict"
  print(json.dumps(measure_predict() if which == "predict" else measure_serve()))
