"""Side by side on one machine: ferjax's train step against PyTorch for the same network.

    pip install -e ".[torch]"      # PyTorch is an optional extra, never a ferjax dependency
    python experiments/torch_side_by_side.py [--variant augmented] [--batch-size 128]

PyTorch gets the network of the ferjax variant, layer for layer (3x3 convs, each with
BatchNorm where the variant has it, and ReLU; 2x2 max pooling and dropout per stage;
dense (+ BatchNorm) + ReLU, dropout, classifier), the same input size (the variant's
crop of a 48x48 batch: 40x40 for `augmented`; before, PyTorch was timed on whole
48x48 images, 1.44x the work, which flattered ferjax's ratio) and batch, SGD
with Nesterov momentum and weight decay (for every variant, whatever its optimizer),
label-smoothed cross-entropy, channels-last memory format, float32 (or bfloat16
autocast with --dtype bfloat16, against ferjax's --dtype bfloat16), on the CPU with as
many threads as cores. Both sides train on random data after a warm-up (a few steps,
then untimed repeats until memory stops growing: `ferjax.bench.warm_up`); each side
runs in its own process. ferjax is measured by `python -m ferjax.bench` with
augmentation off (`--no-augment`), so both do the same work, and once more with its
augmentation on, as it trains.

Each side runs on the malloc it gets by default: ferjax's commands preload mimalloc on
Linux (ferjax/malloc.py), PyTorch runs on the C library's. `--same-malloc` preloads
mimalloc (never purging, as ferjax does) for the PyTorch side too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def torch_images_per_second(*, widths, convs_per_stage, dense, batch_norm, stage_dropout,
                            head_dropout, num_classes, batch_size, steps, repeats,
                            warmup=1, dtype="float32", input_size=48,
                            pool_first=False) -> tuple[list[float], int]:
  """PyTorch's images/s per timed repeat, and the untimed warm-up repeats run.

  Each step takes an input_size x input_size crop (a random offset per step) of a
  uint8 48x48 batch, as ferjax's step crops its batch, and converts it to floats.
  """
  import torch
  from torch import nn
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  layers, c_in = [], 1
  for w in widths:
    for i in range(convs_per_stage):
      layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=not batch_norm)]
      layers += [nn.BatchNorm2d(w)] if batch_norm else []
      layers += [nn.ReLU(inplace=True)]
      layers += [nn.MaxPool2d(2)] if pool_first and i == 0 else []
      c_in = w
    layers += [] if pool_first else [nn.MaxPool2d(2)]
    layers += [nn.Dropout(stage_dropout)]
  side = input_size
  for _ in widths:
    side //= 2
  layers += [nn.Flatten(), nn.Linear(c_in * side * side, dense, bias=not batch_norm)]
  layers += [nn.BatchNorm1d(dense)] if batch_norm else []
  layers += [nn.ReLU(inplace=True), nn.Dropout(head_dropout), nn.Linear(dense, num_classes)]
  model = nn.Sequential(*layers).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                        weight_decay=5e-4)
  loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
  x48 = torch.randint(0, 256, (batch_size, 1, 48, 48), dtype=torch.uint8)
  y = torch.randint(0, num_classes, (batch_size,))
  room = 48 - input_size

  def step():
    o = int(torch.randint(0, room + 1, ()))
    x = (x48[:, :, o:o + input_size, o:o + input_size].float() / 255).contiguous(
        memory_format=torch.channels_last)
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss

  model.train()
  for _ in range(3):
    step()
  from ferjax import bench  # untimed passes until memory settles, as ferjax.bench does
  passes, _ = bench.warm_up(lambda _: [step() for _ in range(steps)], warmup)
  rates = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(steps):
      step()
    rates.append(steps * batch_size / (time.perf_counter() - t))
  return rates, passes


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variant", default="augmented")
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1,
                 help="untimed repeats before timing, on both sides: at least this many "
                 "(default 1), then until resident memory stops growing")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="compute dtype on both sides (bfloat16: torch.autocast on the "
                 "PyTorch side, --dtype bfloat16 on the ferjax side; parameters float32)")
  p.add_argument("--same-malloc", action="store_true",
                 help="run PyTorch on mimalloc too (this process re-execs itself with "
                 "it preloaded; the ferjax subprocess inherits it)")
  p.add_argument("--json", action="store_true")
  args = p.parse_args()
  from ferjax import malloc
  if args.same_malloc:
    malloc.reexec_with_mimalloc()

  from ferjax import configs, models
  config = configs.get_config(args.variant)
  batch = args.batch_size or config.batch_size
  arch = models.create_model(config.model, num_classes=config.num_classes)
  say = lambda what: print(f"timing {what} ...", file=sys.stderr, flush=True)
  say(f"PyTorch ({args.steps} steps x {args.repeats} repeats after its warm-up)")
  torch_rates, torch_warmup = torch_images_per_second(
      widths=arch.widths, convs_per_stage=arch.convs_per_stage, dense=arch.dense,
      batch_norm=arch.batch_norm, stage_dropout=arch.stage_dropout,
      head_dropout=arch.head_dropout, num_classes=config.num_classes, batch_size=batch,
      steps=args.steps, repeats=args.repeats, warmup=args.warmup, dtype=args.dtype,
      input_size=config.input_size, pool_first=arch.pool_first)

  def bench(*extra):
    cmd = [sys.executable, "-m", "ferjax.bench", "--variant", args.variant,
           "--batch-size", str(batch), "--steps", str(args.steps), "--repeats",
           str(args.repeats), "--warmup", str(args.warmup), "--dtype", args.dtype,
           "--json", *extra]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1])

  say("ferjax without augmentation (python -m ferjax.bench --no-augment)")
  plain = bench("--no-augment")
  say("ferjax with its augmentation")
  augmented = bench()
  t = statistics.median(torch_rates)
  j = plain["train_images_per_second"]["median"]
  out = {"variant": args.variant, "model": config.model, "batch_size": batch,
         "dtype": args.dtype, "steps": args.steps, "repeats": args.repeats,
         "warmup_repeats": {"torch": torch_warmup, "ferjax": plain["warmup_repeats"],
                            "ferjax_augmented": augmented["warmup_repeats"]},
         "torch_images_per_second": {"median": t, "min": min(torch_rates),
                                     "max": max(torch_rates)},
         "ferjax_images_per_second": plain["train_images_per_second"],
         "ferjax_augmented_images_per_second": augmented["train_images_per_second"],
         "ratio_ferjax_over_torch": j / t,
         "ferjax_fraction_of_peak": plain["fraction_of_peak"],
         "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "allocator": plain.get("allocator", "unknown"),
         "torch_allocator": malloc.current()}
  if args.json:
    print(json.dumps(out))
    return
  print(f"{args.variant} ({config.model}), batch {batch}, {args.dtype}, "
        f"{os.cpu_count()} CPUs")
  print(f"  PyTorch                 {t:7.1f} img/s   malloc {out['torch_allocator']}")
  print(f"  ferjax (no augment)     {j:7.1f} img/s   malloc {out['allocator']}, "
        f"ratio {j / t:.2f}x")
  print(f"  ferjax (augmented step) "
        f"{augmented['train_images_per_second']['median']:7.1f} img/s")


if __name__ == "__main__":
  main()
