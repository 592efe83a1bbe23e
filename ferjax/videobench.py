"""Video speed as users run it: `python -m ferjax.bench --video` (issue 24).

Generated videos (ferjax's astronaut sample, two copies walking across the frame), each
through `python -m ferjax.predict VIDEO --json` in a fresh process, start-up included,
and then in this process after a warm-up, with the time per analysed frame split into
decoding, finding and cropping the faces, classifying them, and tracking:

  640x480, 30 frames/s, every frame analysed;
  1920x1080, 30 frames/s, analysed at --fps 5 (real time needs 5 frames/s).

Needs the `video` extra (ffmpeg, the tracker).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (name, frame size, --fps or None for every frame)
CASES = (("640x480", (640, 480), None), ("1920x1080", (1920, 1080), 5.0))


def make_video(path: Path, size: tuple[int, int], seconds: float, *, fps: int = 30,
               lap_s: float | None = None) -> None:
  """Writes an H.264 video of two faces walking in opposite directions, one above the
  other: across the frame once in `seconds`, or to and fro with a lap of `lap_s`."""
  import imageio_ffmpeg
  from PIL import Image

  from ferjax import samples
  w, h = size
  side = h // 3
  face = Image.fromarray(samples.astronaut()).crop((150, 30, 300, 210)).resize(
      (side, round(side * 1.2)))
  lap = 2 * seconds if lap_s is None else lap_s
  writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, macro_block_size=1)
  writer.send(None)
  for k in range(int(seconds * fps)):
    u = (k / fps % lap) / lap
    x = int((w - side) * (2 * u if u < 0.5 else 2 - 2 * u))
    canvas = Image.new("RGB", size, (80, 80, 80))
    canvas.paste(face, (x, h // 10))
    canvas.paste(face, (w - side - x, h // 2))
    writer.send(np.asarray(canvas).tobytes())
  writer.close()


def breakdown(path: Path, fps: float | None, *, backend: str | None = None) -> dict:
  """Seconds per analysed frame, by stage, in this process after a warm-up: the
  frames `python -m ferjax.predict` analyses, through the same loop."""
  from ferjax import predict
  from ferjax.predictor import Predictor
  predictor = Predictor.from_pretrained(**({"backend": backend} if backend else {}))
  predictor.classifier.warm_up()
  parts = dict.fromkeys(predict.VIDEO_STAGES, 0.0)
  last = time.perf_counter()

  def on_stage(stage: str) -> None:
    nonlocal last
    now = time.perf_counter()
    parts[stage] += now - last
    last = now

  frames = sum(1 for _ in predict.tracked_frames(
      path, predictor, detect=None, every=None, fps=fps, smooth=0.5, on_stage=on_stage))
  total = sum(parts.values())
  return {"frames": frames, "frames_per_second": round(frames / total, 2),
          "ms_per_frame": {k: round(1000 * v / frames, 2) for k, v in parts.items()}}


def run(*, seconds: float = 10.0, backend: str | None = None,
        cases=CASES) -> list[dict]:
  """One row per case: the whole command's speed and the in-process breakdown."""
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, size, fps in cases:
      path = Path(tmp) / f"{name}.mp4"
      make_video(path, size, seconds)
      cmd = [sys.executable, "-m", "ferjax.predict", str(path), "--json"]
      cmd += ["--fps", str(fps)] if fps else []
      cmd += ["--backend", backend] if backend else []
      t0 = time.perf_counter()
      out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
      wall = time.perf_counter() - t0
      analysed = len({json.loads(x)["frame"] for x in out.splitlines()})
      rows.append({"video": name, "seconds_of_video": seconds, "fps_option": fps,
                   "command_wall_seconds": round(wall, 2), "frames_analysed": analysed,
                   "command_frames_per_second": round(analysed / wall, 2),
                   "real_time_factor": round(seconds / wall, 2),
                   "in_process": breakdown(path, fps, backend=backend)})
  return rows
