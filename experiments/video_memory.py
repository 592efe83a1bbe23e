"""Does `predict`'s memory grow with a video's length? (issue 24)

    python experiments/video_memory.py > experiments/results/video/memory.json

Two generated 640x480, 30 frames/s videos (scikit-image's astronaut, two copies walking
back and forth), 1 minute and 10 minutes, each through `python -m ferjax.predict VIDEO
--fps 2 --json --summary` (all frames decoded, two a second analysed, two tracks, one
JSON row per face written as it comes). The command's resident memory is sampled every
0.25 s from /proc; the video time reached is read from the rows it prints. Speed is not
measured here (other work may share the cores); memory does not depend on it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ferjax.videobench import make_video


def rss_mib(pid: int) -> float | None:
  try:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  except OSError:
    return None
  return None


def run(video: Path, seconds: float) -> dict:
  cmd = [sys.executable, "-m", "ferjax.predict", str(video), "--fps", "2", "--json",
         "--summary"]
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
  state = {"video_time": 0.0, "rows": 0, "summary": None}

  def read():
    for line in proc.stdout:
      row = json.loads(line)
      if "summary" in row:
        state["summary"] = row["summary"]
      elif "time" in row:
        state["rows"] += 1
        state["video_time"] = row["time"]

  reader = threading.Thread(target=read)
  reader.start()
  samples = []  # [wall s, video s reached, RSS MiB]
  while proc.poll() is None:
    r = rss_mib(proc.pid)
    if r is not None:
      samples.append([round(time.perf_counter() - start, 2), state["video_time"],
                      round(r, 1)])
    time.sleep(0.25)
  reader.join()
  assert proc.returncode == 0, proc.returncode

  def rss_over(lo, hi):
    vals = [s[2] for s in samples if lo <= s[1] / seconds < hi]
    return max(vals) if vals else None

  return {
      "video_seconds": seconds, "rows": state["rows"],
      "tracks": len(state["summary"] or []),
      "peak_rss_mib": max(s[2] for s in samples),
      # Peak resident memory while the first, middle and last tenth of the video
      # was being analysed.
      "peak_rss_mib_first_tenth": rss_over(0.0, 0.1),
      "peak_rss_mib_middle_tenth": rss_over(0.45, 0.55),
      "peak_rss_mib_last_tenth": rss_over(0.9, 1.01),
      "wall_seconds": round(time.perf_counter() - start, 1),
      "samples": samples[::8],
  }


def main() -> None:
  out = {"command": "python -m ferjax.predict VIDEO --fps 2 --json --summary",
         "machine": platform.processor() or platform.machine(), "runs": []}
  with tempfile.TemporaryDirectory() as tmp:
    for seconds in (60, 600):
      video = Path(tmp) / f"walk{seconds}.mp4"
      make_video(video, (640, 480), seconds, lap_s=20.0)
      out["runs"].append(run(video, seconds))
      print(json.dumps({k: v for k, v in out["runs"][-1].items() if k != "samples"}),
            file=sys.stderr)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
