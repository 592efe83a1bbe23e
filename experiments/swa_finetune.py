"""Stochastic weight averaging (SWA) on top of a trained model, on the CPU.

    python experiments/swa_finetune.py --weights ferjax/pretrained/fer6.npz \
        --run experiments/results/gpu_h200/shipped-s1 --epochs 8 \
        --lr-max 0.005 --out runs/swa-shipped --results experiments/results/swa_shipped_lr0.005

Starts from a weights file (float16 parameters and BatchNorm statistics, as `ferjax.export`
writes them) and trains on with the run's own recipe (augmentation, label smoothing,
weight decay, SGD with Nesterov momentum), but with a cyclic learning rate: every epoch
falls from --lr-max to --lr-min along a cosine. The parameters at the end of each
epoch are averaged (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and
Better Generalization"); the BatchNorm statistics of the average are then computed again
from --bn-images augmented training images, since the running statistics belong to
the moving weights, not to their average.

After every epoch it records, on the run's own validation split only, the accuracy of
that epoch's weights and of the average so far (clean and with ten-crop TTA), and
writes the average as OUT/swa_eN.npz. The test split is not loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from ferjax import augment as augment_lib
from ferjax import configs, inference, input_pipeline, malloc, models, report, train
from ferjax import steps as steps_lib
from ferjax import workdir as workdir_lib
from ferjax.state import (TrainState, create_model, make_mesh, optimizer_with_schedule,
                          shard_batch)


def cyclic_schedule(lr_max: float, lr_min: float, steps_per_epoch: int):
  """A cosine from lr_max to lr_min within every epoch."""
  def schedule(step):
    t = (step % steps_per_epoch) / steps_per_epoch
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + jnp.cos(jnp.pi * t))
  return schedule


def make_bn_stats_fn(config: configs.Config, model):
  """Per-batch BatchNorm means and variances of the network in training mode.

  flax's BatchNorm updates running = m * running + (1 - m) * batch; from zero running
  statistics that is (1 - m) * batch, which this divides out.
  """
  @jax.jit
  def bn_stats(params, batch_stats, images, key):
    x = augment_lib.augment_batch(key, inference.to_unit(images), config.augment)
    if config.input_size < x.shape[1]:
      x = augment_lib.random_crop(jax.random.fold_in(key, 2), x, config.input_size)
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    _, updates = model.apply({"params": params, "batch_stats": zeros}, x[..., None],
                             train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    return jax.tree.map(lambda u: u / (1 - models.BN_MOMENTUM), updates["batch_stats"])
  return bn_stats


def recompute_batch_stats(bn_stats, params, batch_stats, split, *, n_images: int,
                          batch_size: int, key) -> dict:
  """The average of per-batch statistics over the first n_images of one shuffle."""
  total, count = None, 0
  for i, (images, _) in enumerate(input_pipeline.train_batches(
      split, batch_size=batch_size, seed=12345, epoch=0)):
    if count >= n_images:
      break
    s = bn_stats(params, batch_stats, images, jax.random.fold_in(key, i))
    total = s if total is None else jax.tree.map(jnp.add, total, s)
    count += len(images)
  n = count // batch_size
  return jax.tree.map(lambda t: t / n, total)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--weights", required=True, help="the weights file to start from")
  p.add_argument("--run", required=True,
                 help="the folder with the run's config.json and data.json")
  p.add_argument("--data", default="../shared/data/fer2013.zip")
  p.add_argument("--epochs", type=int, default=8)
  p.add_argument("--lr-max", type=float, default=0.02)
  p.add_argument("--lr-min", type=float, default=1e-4)
  p.add_argument("--bn-images", type=int, default=8192)
  p.add_argument("--seed", type=int, default=7)
  p.add_argument("--train-limit", type=int, help="a smoke run on N training images")
  p.add_argument("--out", required=True, help="where the averaged weights go")
  p.add_argument("--results", required=True, help="where swa.jsonl goes")
  args = p.parse_args(argv)

  run = Path(args.run)
  config = configs.Config.from_dict(json.loads((run / "config.json").read_text()))
  config = dataclasses.replace(config, seed=args.seed, train_limit=args.train_limit)
  if config.final_fit:
    sys.exit(f"'{run}' is a final fit: it trained on the validation images, so there is "
             "no validation split left to choose the averaging with.")
  ds = train.prepare_data(config, data=args.data)
  ds = dataclasses.replace(ds, test=None)  # validation only chooses
  saved = json.loads((run / "data.json").read_text())
  now = workdir_lib.data_fingerprint(ds)
  if args.train_limit is None and {k: saved[k] for k in ("train", "val")} != now:
    sys.exit(f"the data differ from the run's ({saved} vs {now})")

  info, params, batch_stats = inference.load_weights(args.weights)
  mesh = make_mesh(jax.devices()[:1])
  spe = configs.steps_per_epoch(len(ds.train), config.batch_size)
  tx = optimizer_with_schedule(config, cyclic_schedule(args.lr_max, args.lr_min, spe))
  model = create_model(config)
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                            batch_stats=batch_stats)
  state = state.replace(step=jnp.zeros((), jnp.int32))
  train_step = steps_lib.jit_train_step(config, mesh)
  predictor = inference.SplitPredictor(input_size=config.input_size, mesh=mesh)
  bn_stats = make_bn_stats_fn(config, model)
  loop_key = jax.random.fold_in(jax.random.key(args.seed), 1)
  bn_key = jax.random.fold_in(jax.random.key(args.seed), 2)

  out, results = Path(args.out), Path(args.results)
  out.mkdir(parents=True, exist_ok=True)
  results.mkdir(parents=True, exist_ok=True)
  log = results / "swa.jsonl"
  (results / "args.json").write_text(json.dumps(vars(args), indent=2))

  def val_acc(s, tta=False):
    probs = predictor.probs(s, ds.val, tta=tta)
    return report.loss_and_accuracy(probs, ds.val.labels)[1]

  base = {"epoch": 0, "val_accuracy": val_acc(state),
          "val_accuracy_tta": val_acc(state, tta=True)}
  print(json.dumps(base), flush=True)
  rows = [base]
  log.write_text(json.dumps(base) + "\n")
  avg, n_avg = None, 0
  for epoch in range(args.epochs):
    t0 = time.perf_counter()
    sums = None
    batches = input_pipeline.Prefetcher(
        input_pipeline.train_batches(ds.train, batch_size=config.batch_size,
                                     seed=args.seed, epoch=epoch),
        put=lambda b: shard_batch(mesh, *b))
    try:
      for images, labels in batches:
        state, m = train_step(state, images, labels, loop_key)
        sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
    finally:
      batches.close()
    train_seconds = time.perf_counter() - t0
    n_avg += 1
    avg = (jax.tree.map(jnp.copy, state.params) if avg is None else
           jax.tree.map(lambda a, p, n=n_avg: a + (p - a) / n, avg, state.params))
    stats = recompute_batch_stats(bn_stats, avg, state.batch_stats, ds.train,
                                  n_images=args.bn_images,
                                  batch_size=config.batch_size, key=bn_key)
    averaged = state.replace(params=avg, batch_stats=stats)
    row = {"epoch": epoch + 1, "train_loss": float(sums["loss_sum"] / sums["count"]),
           "train_accuracy": float(sums["correct"] / sums["count"]),
           "train_seconds": round(train_seconds, 1),
           "snapshot_val_accuracy": val_acc(state),
           "val_accuracy": val_acc(averaged),
           "val_accuracy_tta": val_acc(averaged, tta=True),
           "epoch_seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    rows.append(row)
    with log.open("a") as f:
      f.write(json.dumps(row) + "\n")
    swa_info = dataclasses.replace(info, source={
        **info.source, "swa_epochs": epoch + 1, "swa_lr": [args.lr_max, args.lr_min],
        "swa_seed": args.seed, "swa_bn_images": args.bn_images,
        "validation_accuracy": row["val_accuracy"]})
    inference.save_weights(out / f"swa_e{epoch + 1}.npz", info=swa_info,
                           params=avg, batch_stats=stats)
  (results / "summary.json").write_text(json.dumps(rows, indent=2))
  if not math.isfinite(rows[-1]["train_loss"]):
    sys.exit("the training loss is not finite")


if __name__ == "__main__":
  malloc.reexec_with_mimalloc()  # as `ferjax.train` does: faster steps, bounded memory
  main()
