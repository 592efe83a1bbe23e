"""The command-line tools re-exec themselves with mimalloc preloaded (ferjax/malloc.py)."""

import os
import subprocess
import sys

import pytest

from ferjax import malloc

needs_mimalloc = pytest.mark.skipif(
    sys.platform != "linux" or malloc.mimalloc_library() is None,
    reason="cmeel-mimalloc is installed on Linux only")

# What the re-executed process sees: is mimalloc mapped, and its arguments and settings.
PROBE = """
import os, sys
from ferjax import malloc
malloc.reexec_with_mimalloc()
with open('/proc/self/maps') as f:
  mapped = 'libmimalloc' in f.read()
print(mapped, os.environ.get('MIMALLOC_PURGE_DELAY'), sys.argv[1:])
"""


def _probe(**env):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", "MIMALLOC_PURGE_DELAY", malloc.ENV)}
  return subprocess.run([sys.executable, "-c", PROBE, "a b", "--flag"],
                        capture_output=True, text=True, timeout=60,
                        env={**environ, **env}, check=False)


@needs_mimalloc
def test_reexec_preloads_mimalloc_and_keeps_the_command_line():
  out = _probe()
  assert out.returncode == 0, out.stderr
  assert out.stdout.split("\n")[0] == f"True {malloc.PURGE_DELAY_MS} ['a b', '--flag']"
  # Ten seconds: a train step of a second or more must find its pages still there
  # (docs/performance.md, "How much memory mimalloc keeps").
  assert malloc.PURGE_DELAY_MS == 10_000


@needs_mimalloc
def test_a_purge_delay_the_user_set_is_kept():
  out = _probe(MIMALLOC_PURGE_DELAY="100")
  assert out.stdout.startswith("True 100 "), out.stderr


def test_system_malloc_on_request():
  out = _probe(FERJAX_MALLOC="system")
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("False None "), out.stdout


def test_an_unknown_choice_says_what_to_set():
  out = _probe(FERJAX_MALLOC="tcmalloc")
  assert out.returncode == 2 and out.stdout == ""
  assert "FERJAX_MALLOC=system" in out.stderr and "Traceback" not in out.stderr


@needs_mimalloc
def test_the_commands_run_on_mimalloc():
  """The real command line: the benchmark reports the malloc it ran on."""
  environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", malloc.ENV)}
  cmd = [sys.executable, "-m", "ferjax.bench", "--variant", "tiny", "--steps", "1",
         "--repeats", "1", "--json"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=environ,
                       check=False)
  assert out.returncode == 0, out.stderr
  assert '"allocator": "mimalloc"' in out.stdout.splitlines()[-1]
