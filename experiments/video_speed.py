"""Frames a second through `predict` on a video, and where the time goes (issue 24).
Run it with nothing else on the cores.

    python experiments/video_speed.py > experiments/results/video/speed.json

Two generated videos (scikit-image's astronaut, two copies walking across):
  640x480, 30 frames/s, 10 s, every frame analysed;
  1920x1080, 30 frames/s, 10 s, analysed at --fps 5 (real time needs 5 frames/s).
For each: the whole command's wall time (`python -m ferjax.predict VIDEO --json`,
start-up included) and, in this process after a warm-up, the seconds spent per
analysed frame in decoding, detecting and cropping, classifying, and tracking.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_video(path: Path, size: tuple[int, int], seconds: float, fps: int = 30) -> None:
  import imageio_ffmpeg
  from skimage import data
  w, h = size
  side = h // 3
  face = Image.fromarray(data.astronaut()).crop((150, 30, 300, 210)).resize(
      (side, round(side * 1.2)))
  writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, macro_block_size=1)
  writer.send(None)
  n = int(seconds * fps)
  for k in range(n):
    canvas = Image.new("RGB", size, (80, 80, 80))
    x = int((w - side) * k / n)
    canvas.paste(face, (x, h // 10))
    canvas.paste(face, (w - side - x, h // 2))
    writer.send(np.asarray(canvas).tobytes())
  writer.close()


def breakdown(path: Path, fps: float | None) -> dict:
  from ferjax import predict
  from ferjax.predictor import Predictor
  from ferjax.tracking import VideoTracks
  predictor = Predictor.from_pretrained()
  predictor.classifier.warm_up()
  parts = {"decode": 0.0, "detect_and_crop": 0.0, "classify": 0.0, "track": 0.0}
  frames, tracks = 0, None
  t = time.perf_counter()
  for _, ts, rgb, rate in predict.video_frames(path, every=None, fps=fps):
    t1 = time.perf_counter()
    parts["decode"] += t1 - t
    crops, meta = predictor.crops(rgb)
    t2 = time.perf_counter()
    (faces,) = predictor.classify_crops([crops], [meta])
    t3 = time.perf_counter()
    if tracks is None:
      tracks = VideoTracks(predictor.classes, fps=rate, smooth_s=0.5,
                           min_confidence=predictor.min_confidence)
    tracks.update(faces, ts)
    t = time.perf_counter()
    parts["detect_and_crop"] += t2 - t1
    parts["classify"] += t3 - t2
    parts["track"] += t - t3
    frames += 1
  total = sum(parts.values())
  return {"frames": frames, "frames_per_second": frames / total,
          "ms_per_frame": {k: 1000 * v / frames for k, v in parts.items()}}


def main():
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, size, fps in (("640x480", (640, 480), None), ("1920x1080", (1920, 1080), 5.0)):
      path = Path(tmp) / f"{name}.mp4"
      make_video(path, size, 10.0)
      cmd = [sys.executable, "-m", "ferjax.predict", str(path), "--json"]
      if fps:
        cmd += ["--fps", str(fps)]
      t0 = time.perf_counter()
      out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
      wall = time.perf_counter() - t0
      analysed = len({json.loads(x)["frame"] for x in out.splitlines()})
      rows.append({"video": name, "seconds_of_video": 10.0, "fps_option": fps,
                   "command_wall_seconds": wall, "frames_analysed": analysed,
                   "command_frames_per_second": analysed / wall,
                   "real_time_factor": 10.0 / wall,
                   "in_process": breakdown(path, fps)})
  print(json.dumps({"rows": rows, "cores": os.cpu_count(),
                    "cpu": platform.processor() or platform.machine()}, indent=1))


if __name__ == "__main__":
  main()
