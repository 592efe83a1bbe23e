"""`--dtype auto`: bfloat16 where the hardware computes it natively and it measures
faster for the run's own train step, float32 elsewhere.

Whether bfloat16 pays depends on the CPU, the network and the day: on a 2-core AMD EPYC
with AVX512-BF16 it made `vgg_slim`'s train step 1.20x faster, and `vgg_fast_dropout`'s
0.75x as fast one day and 1.26x-2.3x the next (docs/performance.md); a CPU without
bfloat16 units emulates it and is slower still. So `auto` asks the CPU's flags first,
then times a few steps of the real step in both dtypes, alternating, and keeps bfloat16
only if it is clearly faster.

A run resolves `auto` once, when it starts: the workdir's config.json holds the dtype it
chose, and a resumed run keeps it whatever a new measurement would say.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ferjax.configs import DTYPES, Config

# bfloat16 must beat float32's images/s by this factor to be chosen: the timing is short,
# and on a tie float32 (the exact one) wins.
MIN_SPEEDUP = 1.05
# /proc/cpuinfo flags of x86 CPUs that compute bfloat16 products natively.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class Choice:
  """The dtype `auto` chose, and why (`reason` is one sentence for the console)."""
  dtype: str
  reason: str
  native_bf16: bool
  images_per_second: dict[str, float] | None = None  # per dtype, where timed

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
  """The CPU's feature flags (Linux's /proc/cpuinfo), or None where they cannot be read."""
  try:
    text = Path(cpuinfo).read_text()
  except OSError:
    return None
  for line in text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() in ("flags", "Features"):
      return set(value.split())
  return None


def native_bf16(platform: str | None = None, flags: set[str] | None = None) -> bool:
  """Whether the default backend computes bfloat16 natively: GPUs and TPUs do; a CPU
  where its flags say so (unknown flags: no)."""
  platform = platform or jax.default_backend()
  if platform != "cpu":
    return True
  flags = cpu_flags() if flags is None else flags
  return bool(flags) and any(f in flags for f in BF16_CPU_FLAGS)


def decide(native: bool, rates: dict[str, float] | None) -> Choice:
  """The choice from what was found: `rates` are train images/s per dtype (None: not
  timed, as where bfloat16 is not native)."""
  if not native:
    return Choice("float32", "this CPU has no bfloat16 arithmetic (flags "
                  f"{' / '.join(BF16_CPU_FLAGS)}), so it would be emulated", False)
  speedup = rates["bfloat16"] / rates["float32"]
  if speedup >= MIN_SPEEDUP:
    return Choice("bfloat16", f"bfloat16 trained {speedup:.2f}x as fast as float32 here",
                  True, rates)
  return Choice("float32", f"bfloat16 trained only {speedup:.2f}x as fast as float32 "
                f"here (below {MIN_SPEEDUP}x)", True, rates)


def time_dtypes(config: Config, *, mesh=None, rounds: int = 4, steps: int = 2
                ) -> dict[str, float]:
  """Train images/s of `config`'s real train step in each dtype: one untimed step each
  (compilation), then `rounds` rounds of `steps` steps per dtype, alternating, so that
  a drift in the machine's speed falls on both; the fastest round of each (other work
  on the cores only ever slows a round down). A run that trains its first epochs at a
  lower resolution (progressive resizing) has each size's step timed, and the rate is
  the whole run's: its images over the time of each size's share of the epochs."""
  from ferjax import state as state_lib
  from ferjax import steps as steps_lib
  mesh = mesh or state_lib.make_mesh()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (config.batch_size, 48, 48), dtype=np.uint8)
  labels = rng.integers(0, config.num_classes, config.batch_size).astype(np.int32)
  sl = state_lib.host_slice(config.batch_size)
  batch = state_lib.shard_batch(mesh, images[sl], labels[sl])
  key = jax.random.key(0)
  epochs_at = collections.Counter(config.train_size(e) for e in range(config.epochs))
  states, runs = {}, {}  # one state a dtype, which each size's step takes in turn
  for dtype in DTYPES:
    c = dataclasses.replace(config, dtype=dtype)
    states[dtype] = state_lib.init_state(c, mesh=mesh, steps_per_epoch=100)
    for size in sorted(epochs_at):
      step = steps_lib.jit_train_step(c, mesh, size=size)
      states[dtype], m = step(states[dtype], *batch, key)
      jax.block_until_ready(m)
      runs[dtype, size] = step
  times: dict[tuple, list[float]] = {k: [] for k in runs}
  for _ in range(rounds):
    for (dtype, size), step in runs.items():
      t = time.perf_counter()
      for _ in range(steps):
        states[dtype], m = step(states[dtype], *batch, key)
      jax.block_until_ready(m)
      times[dtype, size].append(time.perf_counter() - t)
  per_image = {d: sum(n * min(times[d, size]) for size, n in epochs_at.items())
               / (config.epochs * steps * config.batch_size) for d in DTYPES}
  return {d: round(1 / t, 1) for d, t in per_image.items()}


def choose(config: Config, *, mesh=None, native: bool | None = None) -> Choice:
  """Resolves `auto` for `config` on this machine (timing only where bfloat16 is native;
  `native` None: as `native_bf16` finds)."""
  native = native_bf16() if native is None else native
  if not native:
    return decide(False, None)
  print("--dtype auto: timing the train step in float32 and bfloat16 (about a minute; "
        "more with progressive resizing, which has a step for each size)",
        file=sys.stderr)
  return decide(True, time_dtypes(config, mesh=mesh))
