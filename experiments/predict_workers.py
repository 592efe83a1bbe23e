"""Photos a second through `python -m ferjax.predict --workers N` (issue 25), and one
photo from a cold start, on this machine. Run it with nothing else on the cores.

    python experiments/predict_workers.py [--photos 200] [--workers 1 2] \
        > experiments/results/onnx/predict_workers.json

The photos are generated: ferjax's astronaut sample, letterboxed to 640x480 and turned
a little differently in each (JPEG, quality 90), one face each. Each count of workers
runs the whole command (start-up included) on all of them, `--out` into a fresh
folder; photos/s is photos over wall time. "cold" is `predict` on one of them, per
backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def make_photos(folder: Path, n: int) -> list[Path]:
  from ferjax import samples
  face = Image.fromarray(samples.astronaut()).resize((480, 480))
  paths = []
  for i in range(n):
    canvas = Image.new("RGB", (640, 480), (40, 40, 40))
    canvas.paste(face.rotate((i % 21) - 10, fillcolor=(40, 40, 40)), (80, 0))
    path = folder / f"photo{i:04d}.jpg"
    canvas.save(path, quality=90)
    paths.append(path)
  return paths


def timed(cmd: list[str]) -> float:
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--photos", type=int, default=200)
  p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  args = p.parse_args()
  predict = [sys.executable, "-m", "ferjax.predict"]
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "in").mkdir()
    paths = make_photos(tmp / "in", args.photos)
    cold = {b: [timed(predict + [str(paths[0]), "--backend", b]) for _ in range(2)]
            for b in ("onnx", "jax")}
    for w in args.workers:
      wall = timed(predict + [str(tmp / "in"), "--workers", str(w), "--out",
                              str(tmp / f"out{w}")])
      faces = sum(1 for _ in open(tmp / f"out{w}" / "results.jsonl"))
      rows.append({"workers": w, "photos": len(paths), "faces": faces,
                   "wall_seconds": wall, "photos_per_second": len(paths) / wall})
  print(json.dumps({"cold_start_one_photo_seconds": cold, "folder": rows,
                    "photo_size": [640, 480], "cores": os.cpu_count(),
                    "cpu": platform.processor() or platform.machine()}, indent=1))


if __name__ == "__main__":
  main()
