"""Training: the early-stopping loop over the train step, and its CLI.

    python -m ferjax.train --variant augmented --data PATH [--workdir DIR] ...

A run in a workdir that already holds a checkpoint resumes it. SIGINT/SIGTERM save a
checkpoint at the next step boundary and exit; the resumed run then ends exactly where an
uninterrupted one would (same batches, same random keys: `fold_in(key, state.step)`).
The loop composes: the step (`ferjax.steps`), the workdir's files and checks
(`ferjax.workdir`), the console (`ferjax.console`), the classification of the validation
split (`ferjax.inference.SplitPredictor`) and the final report (`ferjax.report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

from ferjax.errors import require_extra

if __name__ == "__main__":  # name the extra to install before its imports fail
  require_extra("train", what="python -m ferjax.train", command=True)

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from ferjax import checkpointing, cli, configs, console, input_pipeline, malloc, report
from ferjax import steps as steps_lib
from ferjax import workdir as workdir_lib
from ferjax.configs import Config
from ferjax.errors import ConfigError, DataError, TrainingDiverged, run_cli
from ferjax.inference import SplitPredictor
from ferjax.state import (abstract_like, check_batch_size, for_evaluation, host_slice,
                          init_state, make_mesh, make_optimizer, shard_batch)
from ferjax.workdir import LoopState

# Exit status of a run that was interrupted (SIGINT/SIGTERM) after saving a checkpoint:
# not 0, so that `train && evaluate` or a scheduler never takes it for a finished run.
EXIT_INTERRUPTED = 3


@dataclasses.dataclass
class Data:
  """A run's splits: train and validation (cut from train/; None in a final fit), and
  test where present (PublicTest where the source tells test's halves apart:
  `test_name`)."""
  train: input_pipeline.Split
  val: input_pipeline.Split | None
  test: input_pipeline.Split | None
  test_name: str = "test"


def prepare_data(config: Config, *, data=None, data_dir=None) -> Data:
  """Loads train (and test, if present), cuts validation, applies --train-limit."""
  loaded = input_pipeline.load_fer2013(data, splits=("train",),
                                       num_classes=config.num_classes,
                                       data_dir=data_dir, required=("train",))
  test = input_pipeline.load_test_split(data, num_classes=config.num_classes,
                                        data_dir=data_dir)
  train, val = input_pipeline.cut_validation(
      loaded["train"], fraction=config.val_fraction, seed=config.val_seed,
      train_limit=config.train_limit, final_fit=config.final_fit)
  if len(train) < config.batch_size:
    raise DataError(f"Only {len(train)} training images after the validation cut, fewer "
                    f"than one batch of {config.batch_size}: lower --batch-size or add "
                    "data.")
  test_name, test = test or ("test", None)
  return Data(train=train, val=val, test=test, test_name=test_name)


def train_and_evaluate(config: Config, workdir: str | os.PathLike, *, data=None,
                       data_dir: str | None = None, mesh: Mesh | None = None,
                       stop_after_steps: int | None = None) -> dict | None:
  """Trains (or resumes) the run in `workdir`, then writes its report.

  Args:
    config: the run's configuration.
    workdir: where config.json, metrics.jsonl, checkpoints and the report go.
    data: FER2013 zip, csv or folder (None: $FERJAX_DATA or the TFDS manual dir).
    data_dir: TFDS data dir for the prepared data set.
    mesh: devices to train on (default: all).
    stop_after_steps: behave as if interrupted after this many steps of this call
      (checkpoint and return None), as SIGINT would; for tests.

  Returns:
    The report dict (also written to workdir/report.json), or None if interrupted.
  """
  with workdir_lib.locked(workdir) as workdir:
    workdir_lib.check_config(workdir, config)
    mesh = mesh or make_mesh()
    check_batch_size(config.batch_size, mesh)
    ds = prepare_data(config, data=data, data_dir=data_dir)
    fingerprint = workdir_lib.data_fingerprint(ds)
    workdir_lib.check_data(workdir, fingerprint)
    config = workdir_lib.resolve_dtype(workdir, config, mesh=mesh)
    ckpt = checkpointing.Checkpoints(workdir)
    try:
      return _train(config, workdir, ds=ds, fingerprint=fingerprint, mesh=mesh,
                    ckpt=ckpt, stop_after_steps=stop_after_steps)
    finally:
      ckpt.close()


def _train(config: Config, workdir: Path, *, ds: Data, fingerprint: dict, mesh: Mesh,
           ckpt: checkpointing.Checkpoints, stop_after_steps: int | None) -> dict | None:
  spe = configs.steps_per_epoch(len(ds.train), config.batch_size)
  held_out = (f"{len(ds.val)} validation images" if ds.val is not None else
              "none held out (final fit: the last epoch is the model)")
  print(f"{config.variant}: {len(ds.train)} train / {held_out}, "
        f"{spe} steps per epoch, {mesh.devices.size} device(s) "
        f"({jax.devices()[0].platform})", file=sys.stderr)
  state = init_state(config, mesh=mesh, steps_per_epoch=spe)
  template = abstract_like(state)
  restored = ckpt.restore("latest", template)
  if restored is None:
    loop = LoopState(low_res_epochs=config.low_res_epochs())
  else:
    state, loop = restored[0], LoopState.from_json(restored[1])
    if loop.stopped_early or loop.epoch >= config.epochs:
      print(f"The run in '{workdir}' is complete ({loop.epoch} epochs); writing its "
            "report again (pass a larger --epochs to train on).", file=sys.stderr)
    else:
      print(f"Resuming from epoch {loop.epoch + 1}, step {loop.step_in_epoch} "
            f"(global step {int(state.step)})", file=sys.stderr)
  if loop.low_res_epochs is None:  # a checkpoint from before progressive resizing
    loop.low_res_epochs = config.low_res_epochs()
  if config.low_res_size:
    full = f"{config.input_size}x{config.input_size}"
    print(f"Progressive resizing: epochs 1-{loop.low_res_epochs} train at "
          f"{config.low_res_size}x{config.low_res_size}, the rest at {full}"
          if loop.low_res_epochs else
          f"Progressive resizing is off: a one-epoch run trains at {full}",
          file=sys.stderr)
  # Claimed only once its checkpoint restored: a resume that fails leaves config.json as
  # it was, so the version that wrote the run can still resume it.
  workdir_lib.claim(workdir, config, fingerprint)
  history = workdir_lib.restart_metrics(workdir, loop.epoch)

  # The compiled step of the current training size (progressive resizing changes it
  # once; the low-resolution step is then let go).
  step_size = train_step = None
  predictor = SplitPredictor(input_size=config.input_size, mesh=mesh)
  _, schedule = make_optimizer(config, spe)
  loop_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  steps_left = math.inf if stop_after_steps is None else stop_after_steps
  with console.StopSignal() as stop:
    while loop.epoch < config.epochs and not loop.stopped_early:
      epoch, start = loop.epoch, loop.step_in_epoch
      size = config.train_size(epoch, loop.low_res_epochs)
      if size != step_size:
        step_size, train_step = size, steps_lib.jit_train_step(config, mesh, size=size)
      t0 = time.perf_counter()
      state, sums, done_steps, interrupted = _train_epoch(
          config, state, train_step, ds.train, mesh=mesh, loop=loop,
          loop_key=loop_key, steps_per_epoch=spe, ckpt=ckpt,
          stop=lambda n, left=steps_left: stop.received is not None or n >= left)
      train_seconds = time.perf_counter() - t0
      steps_left -= done_steps - start
      s = jax.device_get(sums)
      _check_finite(s, epoch + 1, done_steps, ckpt)
      if interrupted and done_steps < spe:
        loop.step_in_epoch = done_steps
        loop.sums = {k: v.item() for k, v in s.items()}
        ckpt.save("latest", int(state.step), state, loop.to_json())
        return _stopped(f"at epoch {epoch + 1}, step {done_steps}/{spe}")

      val_loss = val_acc = None  # a final fit holds nothing out
      if ds.val is not None:
        val_loss, val_acc = report.loss_and_accuracy(
            predictor.probs(for_evaluation(state), ds.val), ds.val.labels)
      row = {"epoch": epoch + 1,
             "train_loss": float(s["loss_sum"] / s["count"]),
             "train_accuracy": float(s["correct"] / s["count"]),
             "val_loss": val_loss, "val_accuracy": val_acc,
             "learning_rate": float(schedule(int(state.step))),
             "epoch_seconds": round(time.perf_counter() - t0, 3),
             "images_per_second": round((done_steps - start) * config.batch_size
                                        / max(train_seconds, 1e-9), 1)}
      if config.low_res_size:
        row["train_size"] = size
      rss = malloc.rss_mib()
      if rss is not None:  # resident memory now and at its peak
        row["rss_mib"], row["peak_rss_mib"] = round(rss[0]), round(rss[1])
      history.append(row)
      workdir_lib.append_metrics(workdir, row)
      improved = loop.end_epoch(row[config.monitor], monitor=config.monitor)
      if config.early_stopping and loop.wait >= config.patience:
        loop.stopped_early = True
      console.epoch_done(row, epochs=config.epochs, improved=improved)
      # Without early stopping the final epoch is the model; with it, the best one.
      if improved or not config.early_stopping:
        ckpt.save("best", int(state.step), for_evaluation(state), loop.to_json())
      ckpt.save("latest", int(state.step), state, loop.to_json())
      if loop.stopped_early:
        print(f"Early stopping: no {config.monitor} improvement for "
              f"{config.patience} epochs; best epoch {loop.best_epoch}.",
              file=sys.stderr)
      if interrupted:
        return _stopped(f"after epoch {epoch + 1}")

  best = ckpt.restore("best", template)
  if best is None:
    raise ConfigError(f"No best checkpoint in '{workdir}': the run has not finished an "
                      "epoch yet.")
  return report.write_report(config, workdir, predictor=predictor, state=best[0],
                             data=ds, history=history, run=loop)


def _train_epoch(config: Config, state, train_step, split: input_pipeline.Split, *,
                 mesh: Mesh, loop: LoopState, loop_key: jax.Array, steps_per_epoch: int,
                 ckpt: checkpointing.Checkpoints, stop) -> tuple:
  """Trains epoch `loop.epoch` on from step `loop.step_in_epoch`, until its end or
  until `stop(n)` says so after the n-th step of this call.

  Returns the state, the epoch's metric sums (on device), its steps done and whether
  `stop` ended it.
  """
  epoch, start = loop.epoch, loop.step_in_epoch
  sums = {k: jnp.asarray(v) for k, v in loop.sums.items()} if loop.sums else None
  sl = host_slice(config.batch_size)
  batches = input_pipeline.Prefetcher(
      ((im[sl], lb[sl]) for im, lb in input_pipeline.train_batches(
          split, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
          start_step=start)),
      put=lambda b: shard_batch(mesh, *b))
  progress = console.Progress(epoch=epoch + 1, epochs=config.epochs,
                              total=steps_per_epoch, initial=start)
  t0 = time.perf_counter()
  done_steps, last_logged, stopped = start, start, False
  try:
    for images, labels in batches:
      state, m = train_step(state, images, labels, loop_key)
      sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
      done_steps += 1
      if done_steps % progress.log_every == 0 or done_steps == steps_per_epoch:
        s = jax.device_get(sums)
        _check_finite(s, epoch + 1, done_steps, ckpt)
        rate = (done_steps - start) * config.batch_size / (time.perf_counter() - t0)
        progress.update(done_steps, done_steps - last_logged,
                        loss=f"{s['loss_sum'] / s['count']:.4f}",
                        acc=f"{s['correct'] / s['count']:.4f}", img_s=f"{rate:.0f}")
        last_logged = done_steps
      if stop(done_steps - start):
        stopped = True
        break
  finally:
    progress.close()
    batches.close()
  return state, sums, done_steps, stopped


def _stopped(where: str) -> None:
  """Ends an interrupted run whose checkpoint is on disk (None: not finished)."""
  print(f"Checkpoint saved {where}; run the same command to resume.", file=sys.stderr)
  return None


def _check_finite(sums: dict, epoch: int, step: int, ckpt) -> None:
  if not math.isfinite(float(sums["loss_sum"])):
    if workdir_lib.has_trained(ckpt.workdir):
      # Resuming replays the same steps (exactly, on a CPU) into the same divergence,
      # and the workdir keeps its run's options and data.
      new = "a new --workdir with a lower learning rate (--lr) or corrected data"
      advice = (f"The last good checkpoint is kept, but the same command would most "
                f"likely diverge again at the same step: start {new}."
                if ckpt.latest_step() is not None else
                f"Start {new}: this one holds an earlier run's files.")
    else:
      advice = ("No checkpoint was saved yet, so the same --workdir takes other "
                "options: run again with a lower learning rate (--lr), or check the "
                "input data.")
    raise TrainingDiverged(
        f"The training loss became {float(sums['loss_sum'])} in epoch {epoch} by step "
        f"{step}. {advice}")


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
  variants = "\n".join(f"  {name:15s} {fn.__doc__.strip().splitlines()[0]}"
                       for name, fn in configs.VARIANTS.items())
  p = argparse.ArgumentParser(
      prog="python -m ferjax.train",
      description="Train a FER2013 expression classifier. Variants:\n" + variants,
      epilog="Exit status: 0 the run finished (report written); 2 bad options, data "
             f"or workdir (the message says which); {EXIT_INTERRUPTED} interrupted by "
             "Ctrl-C or SIGTERM after saving a checkpoint (run the same command to "
             "resume).",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variant", default="augmented", choices=list(configs.VARIANTS),
                 help="which model and recipe (default: augmented)")
  cli.add_data_flags(p)
  p.add_argument("--workdir", default=None,
                 help="where checkpoints and reports go (default: runs/VARIANT)")
  p.add_argument("--epochs", type=int, help="maximum epochs")
  p.add_argument("--batch-size", type=int)
  p.add_argument("--lr", type=float, help="peak learning rate")
  p.add_argument("--patience", type=int,
                 help="early stopping: epochs without improvement before stopping")
  p.add_argument("--seed", type=int)
  p.add_argument("--classes", type=int, choices=(6, 7),
                 help="6 (default; Disgust dropped) or 7")
  p.add_argument("--train-limit", type=int,
                 help="train on the first N training images (stratified), for smoke runs")
  cli.add_dtype_flag(p, auto=True,
                     help="compute dtype; bfloat16: mixed precision (float32 "
                     "parameters), faster on GPUs, TPUs and CPUs with bfloat16 units "
                     "(AVX512-BF16, AMX); auto: bfloat16 where the hardware computes it "
                     "natively and a minute's timing of the train step finds it faster, "
                     "float32 elsewhere")
  cli.add_set_flag(p)
  return p


def config_from_args(args: argparse.Namespace) -> Config:
  config = configs.get_config(args.variant)
  overrides = {"epochs": args.epochs, "batch_size": args.batch_size,
               "learning_rate": args.lr, "seed": args.seed, "patience": args.patience,
               "num_classes": args.classes,
               "train_limit": args.train_limit, "dtype": args.dtype}
  overrides = {k: v for k, v in overrides.items() if v is not None}
  for k in ("epochs", "batch_size", "train_limit", "patience"):
    if k in overrides and overrides[k] <= 0:
      raise ConfigError(f"--{k.replace('_', '-')} must be positive, got {overrides[k]}")
  if "learning_rate" in overrides and not (overrides["learning_rate"] > 0
                                           and math.isfinite(overrides["learning_rate"])):
    raise ConfigError(f"--lr must be a positive number, got {overrides['learning_rate']}")
  if "seed" in overrides and not 0 <= overrides["seed"] < 2**31:
    raise ConfigError(f"--seed must be between 0 and {2**31 - 1}, got {overrides['seed']}")
  return configs.with_overrides(dataclasses.replace(config, **overrides), args.set)


def main(argv=None) -> None:
  args = build_parser().parse_args(argv)
  from ferjax import distributed
  distributed.maybe_initialize()
  config = config_from_args(args)
  workdir = args.workdir or os.path.join("runs", config.variant)
  if train_and_evaluate(config, workdir, data=args.data, data_dir=args.data_dir) is None:
    sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
  malloc.reexec_with_mimalloc()
  run_cli(main)
