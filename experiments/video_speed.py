"""Frames a second through `predict` on a video, and where the time goes (issue 24).
Run it with nothing else on the cores. The same as `python -m ferjax.bench --video`
(ferjax/videobench.py has the videos and the timing), printed as the file kept in
experiments/results/video/:

    python experiments/video_speed.py > experiments/results/video/speed.json
"""

from __future__ import annotations

import json
import os
import platform

from ferjax import videobench


def main():
  print(json.dumps({"rows": videobench.run(), "cores": os.cpu_count(),
                    "cpu": platform.processor() or platform.machine()}, indent=1))


if __name__ == "__main__":
  main()
