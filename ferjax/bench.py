"""Benchmark: train and eval throughput, achieved FLOP rate, input waits, memory.

    python -m ferjax.bench [--variant augmented] [--batch-size N] [--steps N]
                           [--repeats N] [--warmup N] [--dtype D] [--eval-dtype D] [--json]
    python -m ferjax.bench --predict [--weights F] [--detect-size PX] [--json]
    python -m ferjax.bench --video [--backend onnx|jax] [--json]

Runs the real jitted steps on synthetic FER2013-shaped data (25,445 random 48x48
images: the size of the training split), fed through the real input pipeline, so the
time spent waiting for batches is measured as training sees it. All figures are taken
after compilation and untimed warm-up repeats (the allocator's heap grows to its steady
size in them: at least --warmup, then until resident memory stops growing), and
reported as the median over repeats, with the spread.
The machine's reference rate is a large float32 matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time

from ferjax.errors import require_extra

if __name__ == "__main__":  # name the extra to install before its imports fail
  require_extra("train", what="python -m ferjax.bench", command=True)

import jax
import jax.numpy as jnp
import numpy as np

from ferjax import cli, configs, inference, input_pipeline, malloc, ops
from ferjax import steps as steps_lib
from ferjax import state as state_lib
from ferjax.augment import NO_AUGMENT
from ferjax.errors import run_cli

NUM_TRAIN = 25_445
# Warm-up: passes beyond --warmup while the peak resident size still grows by at least
# SETTLED_MIB a pass (a step's temporaries are 100 MB-1.3 GB here).
MAX_EXTRA_WARMUP = 10
SETTLED_MIB = 32


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of an n x n x n float32 matmul: the machine's practical peak."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / min(times) / 1e9


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up(one_pass, warmup: int) -> tuple[int, bool]:
  """Runs untimed passes `one_pass(i)`: at least `warmup`, then more until the peak
  resident size has stayed put for two passes in a row (at most MAX_EXTRA_WARMUP more;
  none if `warmup` is 0). Returns the passes run and whether memory settled.

  The allocator's heap grows to a step's steady size over the first passes, and a pass
  that lands on fresh memory runs up to ~20% slower (mimalloc here grew by one step's
  temporaries in passes 1, 3 and 5 of a run of the augmented step, then never again).
  """
  passes, still = 0, 0
  while warmup and (passes < warmup or (still < 2 and passes < warmup + MAX_EXTRA_WARMUP)):
    before = _peak_rss_mib()
    one_pass(passes)
    passes += 1
    still = still + 1 if _peak_rss_mib() - before < SETTLED_MIB else 0
  return passes, still >= 2


def _spread(xs: list[float]) -> dict:
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def run(config: configs.Config, *, steps: int, repeats: int, warmup: int = 1,
        eval_dtype: str | None = None) -> dict:
  mesh = state_lib.make_mesh()
  state_lib.check_batch_size(config.batch_size, mesh)
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
      rng.integers(0, 256, (NUM_TRAIN, 48, 48), dtype=np.uint8),
      rng.integers(0, config.num_classes, NUM_TRAIN).astype(np.int32))
  spe = configs.steps_per_epoch(len(split), config.batch_size)
  state = state_lib.init_state(config, mesh=mesh, steps_per_epoch=spe)
  # The first epoch's step: with progressive resizing (low_res_size), the small one.
  train_size = config.train_size(0)
  train_step = steps_lib.jit_train_step(config, mesh, size=train_size)
  loop_key = jax.random.key(0)
  sl = state_lib.host_slice(config.batch_size)

  x0, y0 = state_lib.shard_batch(mesh, split.images[:config.batch_size][sl],
                             split.labels[:config.batch_size][sl])
  # FLOPs of the step as XLA counts them with its own convolutions: the CPU's chunked
  # convolutions loop over images, and a loop body is counted once, not per trip.
  xla_model = state_lib.create_model(config).clone(conv_impl="xla")
  train_flops = _flops(train_step.lower(state.replace(apply_fn=xla_model.apply),
                                            x0, y0, loop_key))
  for _ in range(2):  # compilation
    state, m = train_step(state, x0, y0, loop_key)
  jax.block_until_ready(m)

  def one_pass(seed: int, epoch: int):
    """`steps` train steps fed by the real pipeline: (images/s, seconds waited, seconds,
    kernel CPU seconds, minor page faults, steps run)."""
    nonlocal state
    batches = input_pipeline.Prefetcher(
        ((im[sl], lb[sl]) for im, lb in input_pipeline.train_batches(
            split, batch_size=config.batch_size, seed=seed, epoch=epoch)),
        put=lambda b: state_lib.shard_batch(mesh, *b))
    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    n = 0
    for images, labels in batches:
      state, m = train_step(state, images, labels, loop_key)
      n += 1
      if n == steps:
        break
    jax.block_until_ready((state, m))
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    batches.close()
    return (n * config.batch_size / dt, batches.wait_seconds, dt,
            after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt, n)

  passes, settled = warm_up(lambda i: one_pass(seed=i, epoch=1), warmup)
  rates, waits, totals, system, faults, done = map(list, zip(
      *(one_pass(seed=r, epoch=0) for r in range(repeats))))

  eval_dtype = eval_dtype or config.dtype
  # The trained state, predicting in eval_dtype (the parameters stay float32).
  eval_state = state.replace(apply_fn=state_lib.create_model(
      dataclasses.replace(config, dtype=eval_dtype)).apply)
  predictor = inference.SplitPredictor(input_size=config.input_size, mesh=mesh)
  eval_split = split.take(np.arange(min(len(split), 2 * predictor.batch_size)))
  eval_rates = {}
  for name, tta in (("eval", False), ("eval_tta", True)):
    predictor.probs(eval_state, eval_split.take(np.arange(predictor.batch_size)),
                    tta=tta)  # warm-up
    times = []
    for _ in range(max(2, repeats)):
      t = time.perf_counter()
      predictor.probs(eval_state, eval_split, tta=tta)
      times.append(time.perf_counter() - t)
    eval_rates[name] = [len(eval_split) / t for t in times]

  median_rate = statistics.median(rates)
  step_seconds = config.batch_size / median_rate
  peak = matmul_peak()
  achieved = train_flops / step_seconds / 1e9 if train_flops else None
  return {
      "variant": config.variant, "model": config.model,
      "augment": config.augment.enabled,
      "dtype": config.dtype, "eval_dtype": eval_dtype,
      "batch_size": config.batch_size, "train_size": train_size,
      "steps": steps, "repeats": repeats,
      "warmup_repeats": passes, "heap_settled": settled,
      "devices": f"{jax.devices()[0].platform} x{len(jax.devices())}",
      "device_kind": jax.devices()[0].device_kind,
      "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus",
      "jax": jax.__version__,
      "allocator": malloc.current(),
      "winograd_mb": [config.conv_tuning.winograd_mb, config.conv_tuning.winograd_grad_mb,
                      config.conv_tuning.winograd_whole_mb],
      "conv_tuning": dataclasses.asdict(config.conv_tuning),
      "train_images_per_second": _spread(rates),
      "eval_images_per_second": _spread(eval_rates["eval"]),
      "eval_tta_images_per_second": _spread(eval_rates["eval_tta"]),
      "eval_speedup_per_image": statistics.median(eval_rates["eval"]) / median_rate,
      "eval_tta_speedup_per_image": statistics.median(eval_rates["eval_tta"]) / median_rate,
      "train_gflop_per_step": train_flops / 1e9 if train_flops else None,
      "achieved_gflops": achieved,
      "matmul_peak_gflops": peak,
      "fraction_of_peak": achieved / peak if achieved else None,
      "input_wait_fraction": sum(waits) / sum(totals),
      # Kernel time in the timed passes, as a share of their wall time (2 cores: up to
      # 2.0), and minor page faults per step: a heap that gives memory back between
      # steps shows here (the kernel faulting in and zeroing pages again).
      "system_seconds_per_second": sum(system) / sum(totals),
      "minor_faults_per_step": sum(faults) / sum(done),
      "peak_rss_mib": _peak_rss_mib(),
  }


def run_predict(*, weights=None, repeats: int = 20, detect_size: int = 640) -> dict:
  """Inference as users run it: classifier crops/s (batched, no TTA, float32), face
  detection and end-to-end latency of one 640x480 photo with one face, and frames/s
  over decoded 640x480 video frames; all after warm-up, medians over `repeats`."""
  import io

  from PIL import Image

  from ferjax import inference, loadtest
  from ferjax.predictor import Predictor
  clf = inference.Classifier.load(weights or inference.pretrained_path())
  predictor = Predictor(clf, detect_size=detect_size)
  clf.warm_up()
  crops = np.random.default_rng(0).integers(0, 256, (256, 48, 48), np.uint8)
  times = []
  for _ in range(max(3, repeats // 4)):
    t0 = time.perf_counter()
    clf.classify(crops)
    times.append(time.perf_counter() - t0)
  crops_per_s = len(crops) / statistics.median(times)
  photo = loadtest.sample_photo()
  rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
  timed = lambda f: statistics.median(_timeit(f, repeats))
  assert len(predictor.predict(photo)) == 1  # warm-up, and the photo has its face
  detect_s = timed(lambda: predictor.detector.detect(rgb))
  end_to_end_s = timed(lambda: predictor.predict(photo))
  frame_s = timed(lambda: predictor.predict(rgb))
  return {"model": clf.info.model, "input_size": clf.info.input_size,
          "detect_size": detect_size,
          "classifier_crops_per_second": round(crops_per_s, 1),
          "detect_ms_640x480": round(1000 * detect_s, 1),
          "photo_end_to_end_ms_640x480": round(1000 * end_to_end_s, 1),
          "video_frames_per_second_640x480": round(1 / frame_s, 1),
          "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus",
          "cpu": _cpu_name()}


def _timeit(f, n: int) -> list[float]:
  out = []
  for _ in range(n):
    t0 = time.perf_counter()
    f()
    out.append(time.perf_counter() - t0)
  return out


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variant", default="augmented", choices=list(configs.VARIANTS))
  p.add_argument("--model", help="another architecture from ferjax.models.MODELS")
  p.add_argument("--batch-size", type=int)
  p.add_argument("--steps", type=int, default=10, help="train steps per repeat")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1, metavar="N",
                 help="untimed repeats before timing, after compilation: at least N "
                 "(default 1), then more until resident memory stops growing (at most "
                 f"{MAX_EXTRA_WARMUP} more); 0: none")
  cli.add_dtype_flag(p, auto=True, help="compute dtype of the train step (auto: as "
                     "python -m ferjax.train --dtype auto would choose it here)")
  cli.add_dtype_flag(p, flag="--eval-dtype", help="compute dtype of eval and TTA "
                     "(default: --dtype), as python -m ferjax.evaluate --dtype runs them")
  cli.add_set_flag(p)
  p.add_argument("--no-augment", action="store_true",
                 help="switch augmentation off (the network alone)")
  p.add_argument("--winograd-mb", metavar="FORWARD,GRAD[,WHOLE]",
                 help="chunk budgets of the CPU's Winograd convolutions in MB, and the "
                 "size under which a layer's whole batch is one chunk (default "
                 f"{ops.DEFAULT_TUNING.winograd_mb:g},{ops.DEFAULT_TUNING.winograd_grad_mb:g},"
                 f"{ops.DEFAULT_TUNING.winograd_whole_mb:g}), for tuning: short for "
                 "--set conv_tuning.winograd_mb=... (and _grad_mb, _whole_mb)")
  p.add_argument("--predict", action="store_true",
                 help="benchmark inference instead: classifier crops/s, detection and "
                 "end-to-end latency of a 640x480 photo, video frames/s (the shipped "
                 "model, or --weights)")
  p.add_argument("--video", action="store_true",
                 help="benchmark videos instead: generated 640x480 (every frame) and "
                 "1920x1080 (--fps 5) videos with two faces through `predict`, whole "
                 "command and time per stage (ferjax/videobench.py)")
  p.add_argument("--backend", choices=("onnx", "jax"),
                 help="with --video: the classifier's backend (default: predict's)")
  p.add_argument("--weights", help="with --predict: a weights file to benchmark")
  p.add_argument("--detect-size", type=int, default=640,
                 help="with --predict: the detector's largest side in pixels")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  args = p.parse_args(argv)
  if args.video:
    require_extra("video", what="--video")
    from ferjax import videobench
    out = {"rows": videobench.run(backend=args.backend), "cpu": _cpu_name(),
           "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus"}
    print(json.dumps(out, indent=None if args.json else 2))
    return
  if args.predict:
    out = run_predict(weights=args.weights, repeats=max(args.repeats, 20),
                      detect_size=args.detect_size)
    print(json.dumps(out, indent=None if args.json else 2))
    return
  if min(args.steps, args.repeats) < 1 or args.warmup < 0:
    p.error("--steps and --repeats must be at least 1, --warmup at least 0")
  tuning = []  # --winograd-mb as config fields, checked by the Config
  if args.winograd_mb:
    try:  # numbers here; their values are the Config's to check
      sizes = [float(v) for v in args.winograd_mb.split(",")]
    except ValueError:
      sizes = []
    if len(sizes) not in (2, 3):
      p.error(f"--winograd-mb {args.winograd_mb}: give two or three sizes in MB, "
              "e.g. 10,5 or 10,5,80")
    names = ("winograd_mb", "winograd_grad_mb", "winograd_whole_mb")
    tuning = [f"conv_tuning.{name}={mb}" for name, mb in zip(names, sizes)]
  config = configs.get_config(args.variant)
  overrides = {k: v for k, v in (("batch_size", args.batch_size), ("dtype", args.dtype),
                                 ("model", args.model)) if v is not None}
  if args.no_augment:
    overrides["augment"] = NO_AUGMENT
  config = configs.with_overrides(dataclasses.replace(config, **overrides),
                                  [*tuning, *args.set])
  choice = None
  if config.dtype == configs.AUTO_DTYPE:
    from ferjax import precision
    choice = precision.choose(config)
    print(f"--dtype auto: {choice.dtype} ({choice.reason})", file=sys.stderr)
    config = dataclasses.replace(config, dtype=choice.dtype)
  out = run(config, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
            eval_dtype=args.eval_dtype)
  if choice is not None:
    out["dtype_choice"] = choice.to_json()
  if args.json:
    print(json.dumps(out))
    return
  r = out["train_images_per_second"]
  print(f"{out['variant']} ({out['model']}), batch {out['batch_size']}, {out['devices']}, "
        f"{out['dtype']} (eval {out['eval_dtype']}), malloc: {out['allocator']}")
  print(f"  train   {r['median']:8.1f} img/s  (min {r['min']:.1f}, max {r['max']:.1f}) "
        f"at {out['train_size']}x{out['train_size']}")
  for k in ("eval", "eval_tta"):
    e = out[f"{k}_images_per_second"]
    print(f"  {k:8s}{e['median']:8.1f} img/s  ({out[f'{k}_speedup_per_image']:.1f}x a "
          "train step per image)")
  if out["achieved_gflops"]:
    print(f"  {out['achieved_gflops']:.1f} GFLOP/s achieved of {out['matmul_peak_gflops']:.1f}"
          f" matmul peak ({100 * out['fraction_of_peak']:.0f}%)")
  print(f"  input wait {100 * out['input_wait_fraction']:.1f}% of step time; peak RSS "
        f"{out['peak_rss_mib']:.0f} MiB")
  print(f"  kernel time {out['system_seconds_per_second']:.2f} CPU s per second; "
        f"{out['minor_faults_per_step']:.0f} page faults per step")
  if out["warmup_repeats"]:
    settled = "memory settled" if out["heap_settled"] else "memory still growing"
    print(f"  after {out['warmup_repeats']} untimed warm-up repeats ({settled})")


if __name__ == "__main__":
  malloc.reexec_with_mimalloc()
  run_cli(main)
