"""How mimalloc's purge delay changes a real training run: speed, kernel time, memory.

    python experiments/malloc_purge.py --data ../shared/data/fer2013.zip \
        [--delays 1000,10000,-1] [--rounds 1] [--out experiments/results/malloc_purge]

Runs `python -m ferjax.train` (the augmented recipe on the first --train-limit
images, --epochs epochs and its final report) once per delay and round,
alternating delays, each in its own process with `MIMALLOC_PURGE_DELAY` set, and
records for each: the images/s of every epoch (from its metrics.jsonl; the first
includes compilation), the process's user and system CPU seconds and minor page faults
from the end of its first epoch to the end of its last (/proc), and its resident
memory after each epoch and at its peak (training alone, and with the report). A
train step that lands on memory mimalloc has given back makes the kernel fault in and
zero those pages again: system time and page faults show it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _proc_stat(pid: int) -> tuple[float, float, int]:
  """(user s, system s, minor faults) of process `pid` so far, from /proc."""
  fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  tick = os.sysconf("SC_CLK_TCK")
  return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7])


def one_run(delay: str, *, data: str, extra: list[str], workdir: Path,
            epochs: int, timeout: float = 3600) -> dict:
  """Trains `epochs` epochs and writes the final report. CPU time and page faults are
  counted from the end of the first epoch (compilation, warm-up) to the end of the
  last; the peak resident size is the whole process's, report included (wait4)."""
  env = dict(os.environ, MIMALLOC_PURGE_DELAY=delay)
  cmd = [sys.executable, "-m", "ferjax.train", "--data", data, "--workdir", str(workdir),
         "--epochs", str(epochs), "--patience", str(epochs), *extra]
  metrics = workdir / "metrics.jsonl"
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = last = None
  try:
    while True:
      rows = metrics.read_text().splitlines() if metrics.exists() else []
      try:
        if len(rows) >= 1 and first is None:
          first, t_first = _proc_stat(proc.pid), time.perf_counter()
        if len(rows) >= epochs and last is None:
          last, t_last = _proc_stat(proc.pid), time.perf_counter()
      except OSError:  # the process has ended between the check and the read
        pass
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        break
      if time.perf_counter() - t0 > timeout:
        raise SystemExit(f"run with delay {delay} took over {timeout} s; stopped")
      time.sleep(0.2)
  finally:
    if proc.returncode is None:  # interrupted or timed out: stop the training too
      proc.kill()
      proc.wait()
  wall = time.perf_counter() - t0
  if proc.returncode != 0 or first is None or last is None:
    raise SystemExit(f"run with delay {delay} failed (status {status}); rerun its "
                     f"command to see why: MIMALLOC_PURGE_DELAY={delay} {' '.join(cmd)}")
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  seconds = t_last - t_first
  return {
      "purge_delay_ms": int(delay),
      "epochs_timed": f"2-{epochs}", "timed_seconds": round(seconds, 1),
      "user_seconds": round(last[0] - first[0], 1),
      "system_seconds": round(last[1] - first[1], 1),
      "system_share": round((last[1] - first[1]) / max(
          last[0] - first[0] + last[1] - first[1], 1e-9), 3),
      "minor_faults_per_second": round((last[2] - first[2]) / seconds),
      "epoch_images_per_second": [r["images_per_second"] for r in rows],
      "epoch_seconds": [r["epoch_seconds"] for r in rows],
      "rss_mib_after_epochs": [r.get("rss_mib") for r in rows],
      "peak_rss_mib_in_training": max(r.get("peak_rss_mib", 0) for r in rows),
      "peak_rss_mib_with_report": round(usage.ru_maxrss / 1024),
      "wall_seconds_with_report": round(wall, 1),
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", required=True)
  p.add_argument("--delays", default="1000,10000,-1")
  p.add_argument("--rounds", type=int, default=1)
  p.add_argument("--out", default="experiments/results/malloc_purge")
  p.add_argument("--train-limit", type=int, default=6400)
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("train_args", nargs="*",
                 help="more train flags after --, e.g. -- --dtype bfloat16")
  args = p.parse_args()
  if args.epochs < 2:
    p.error("--epochs must be at least 2: the first epoch (compilation) is not timed")
  extra = ["--variant", "augmented", "--train-limit", str(args.train_limit),
           *args.train_args]
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  results = []
  for r in range(args.rounds):
    for delay in args.delays.split(","):
      workdir = Path(tempfile.mkdtemp(prefix="purge-"))
      try:
        row = {"round": r, **one_run(delay, data=args.data, extra=extra, workdir=workdir,
                                            epochs=args.epochs)}
      finally:
        shutil.rmtree(workdir, ignore_errors=True)
      print(json.dumps(row), flush=True)
      results.append(row)
  record = {"command": " ".join(sys.argv), "train_flags": extra, "runs": results}
  (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
  main()
