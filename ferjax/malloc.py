"""mimalloc for the command-line tools, on Linux.

XLA's CPU backend allocates each train step's temporaries afresh: one block of about
1.2 GB for the augmented network at batch 128. The C library's malloc maps a block that
large with mmap and unmaps it when it is freed, so every step faults all of its pages in
again (320,000 page faults, 0.5-0.9 s of system time in a 1.5-1.8 s step on a 2-core
machine). mimalloc hands the next step the same pages: no page faults, and the train
step runs about a quarter faster (docs/performance.md).

It gives memory back to the system only after it has lain unused for ten seconds
(`MIMALLOC_PURGE_DELAY=10000`, in ms, `PURGE_DELAY_MS`): a train step reuses its
pages well before that, while the buffers of other phases (evaluation, checkpoints)
and of idle threads are returned. A one-second delay was the default before: a train
step of about a second then often reused memory just after it had been given back, and
a real run spent a sixth of its CPU time in the kernel zeroing pages again
(experiments/malloc_purge.py, docs/performance.md). Never giving memory back (-1) is
as fast, but a training run's resident size then grows epoch after epoch to the sum of
every thread's and phase's peak (11 GiB for the augmented recipe of the time).

The malloc of a running process cannot be swapped, so `python -m ferjax.train`,
`ferjax.evaluate` and `ferjax.bench`, run as commands, call `reexec_with_mimalloc()`
before anything else: it replaces the process by the same command line with mimalloc
preloaded (`LD_PRELOAD`); the new process imports the modules again (about a
second). It does nothing where the `cmeel-mimalloc` wheel is not installed, off Linux,
where a malloc is already preloaded (`current()`), or with `FERJAX_MALLOC=system`,
which keeps the C library's malloc.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

ENV = "FERJAX_MALLOC"
# How long (ms) freed memory lies unused before mimalloc gives it back; the user's own
# MIMALLOC_PURGE_DELAY wins.
PURGE_DELAY_MS = 10_000


def current() -> str:
  """The malloc this process runs on: a preloaded mimalloc, tcmalloc or jemalloc (as
  mapped in /proc/self/maps), else "libc"; "unknown" where that file cannot be read."""
  try:
    with open("/proc/self/maps") as f:
      maps = f.read()
  except OSError:
    return "unknown"
  for name in ("tcmalloc", "jemalloc", "mimalloc"):
    if name in maps:
      return name
  return "libc"


def mimalloc_library() -> Path | None:
  """The shared library of the installed `cmeel-mimalloc` wheel, or None."""
  try:
    dist = metadata.distribution("cmeel-mimalloc")
  except metadata.PackageNotFoundError:
    return None
  for f in dist.files or ():
    if f.name.startswith("libmimalloc.so"):
      path = Path(dist.locate_file(f))
      if path.is_file():
        return path
  return None


def reexec_with_mimalloc() -> None:
  """Replaces this process by its own command line with mimalloc preloaded, where it
  can; returns (doing nothing) where it cannot or should not."""
  choice = os.environ.get(ENV, "mimalloc")
  if choice not in ("mimalloc", "system"):
    print(f"error: {ENV}={choice!r}: use {ENV}=mimalloc (the default on Linux) or "
          f"{ENV}=system (the C library's malloc).", file=sys.stderr)
    sys.exit(2)
  if choice == "system" or sys.platform != "linux":
    return
  if current() != "libc":
    return  # a malloc is preloaded already, by us (after the exec) or by the user
  lib = mimalloc_library()
  if lib is None:
    return
  env = dict(os.environ)
  env["LD_PRELOAD"] = f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip()
  env.setdefault("MIMALLOC_PURGE_DELAY", str(PURGE_DELAY_MS))
  sys.stdout.flush()
  sys.stderr.flush()
  # argv[0] is the interpreter's full path: Python finds its prefix (and venv) from it.
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:
    return


def rss_mib() -> tuple[float, float] | None:
  """This process's resident memory now and at its peak, in MiB (Linux; else None)."""
  try:
    with open("/proc/self/status") as f:
      fields = dict(line.split(":", 1) for line in f if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)
  except (OSError, KeyError, ValueError):
    return None


def release_free_memory() -> bool:
  """Gives the memory that glibc's malloc holds free back to the system
  (`malloc_trim(0)`), as after decoding a large image. True where it was called (a
  process on glibc's malloc); a preloaded allocator returns memory by itself."""
  if current() != "libc":
    return False
  import ctypes
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    return False
  return True
