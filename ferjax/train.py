"""Training: the jitted train step, the early-stopping loop, its report and its CLI.

    python -m ferjax.train --variant augmented --data PATH [--workdir DIR] ...

A run in a workdir that already holds a checkpoint resumes it. SIGINT/SIGTERM save a
checkpoint at the next step boundary and exit; the resumed run then ends exactly where an
uninterrupted one would (same batches, same random keys: `fold_in(key, state.step)`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ferjax import augment as augment_lib
from ferjax import calibration, checkpointing, cli, configs, input_pipeline, malloc, report
from ferjax.inference import Classifier, ModelInfo, predict_step, to_unit
from ferjax.state import (TrainState, abstract_like, check_batch_size, host_slice,
                          init_state, make_mesh, make_optimizer, shard_batch)
from ferjax.classes import class_names
from ferjax.configs import Config
from ferjax.errors import ConfigError, DataError, TrainingDiverged, run_cli

# Donation is a no-op on some CPU builds, which warn once per compile.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

# Images per evaluation batch (rounded up to a multiple of the device count).
EVAL_BATCH_SIZE = 256
# Exit status of a run that was interrupted (SIGINT/SIGTERM) after saving a checkpoint:
# not 0, so that `train && evaluate` or a scheduler never takes it for a finished run.
EXIT_INTERRUPTED = 3
# Config fields a resumed run may change: the length of training only.
RESUMABLE_CHANGES = ("epochs",)


# ----------------------------------------------------------------------------- steps

def train_step(state: TrainState, images: jax.Array, labels: jax.Array,
               loop_key: jax.Array, *, config: Config) -> tuple[TrainState, dict]:
  """One optimisation step on a batch of uint8 images [B, 48, 48] and labels [B].

  Returns the new state and the batch's metric sums (loss_sum, correct, count).
  """
  step_key = jax.random.fold_in(loop_key, state.step)
  aug_key, dropout_key = jax.random.split(step_key)
  x = augment_lib.augment_batch(aug_key, to_unit(images), config.augment)
  if config.input_size < x.shape[1]:
    x = augment_lib.random_crop(jax.random.fold_in(step_key, 2), x, config.input_size)
  x = x[..., None]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, config.num_classes),
                                config.label_smoothing)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates.get("batch_stats", {}))
  n = labels.shape[0]
  metrics = {"loss_sum": loss * n,
             "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
             "count": jnp.asarray(n, jnp.int32)}
  return state, metrics


class Steps:
  """The jitted train and predict steps for one config on one mesh."""

  def __init__(self, config: Config, mesh: Mesh):
    replicated = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    self.train = jax.jit(partial(train_step, config=config),
                         in_shardings=(replicated, data, data, replicated),
                         out_shardings=(replicated, replicated), donate_argnums=0)
    self.predict = jax.jit(partial(predict_step, tta=False,
                                   input_size=config.input_size),
                           in_shardings=(replicated, data), out_shardings=replicated)
    self.predict_tta = jax.jit(partial(predict_step, tta=True,
                                       input_size=config.input_size),
                               in_shardings=(replicated, data), out_shardings=replicated)
    self.mesh = mesh


def eval_batch_size(mesh: Mesh) -> int:
  """EVAL_BATCH_SIZE rounded up to a multiple of the mesh's device count."""
  n = mesh.devices.size
  return -(-EVAL_BATCH_SIZE // n) * n


def predict_split(steps: Steps, state: TrainState, split: input_pipeline.Split, *,
                  tta: bool = False, batch_size: int | None = None) -> np.ndarray:
  """Probabilities [N, C] for a whole split (fixed-shape padded batches)."""
  fn = steps.predict_tta if tta else steps.predict
  if batch_size is None:
    batch_size = eval_batch_size(steps.mesh)
  sl = host_slice(batch_size)
  out = []
  for images, _, mask in input_pipeline.eval_batches(split, batch_size=batch_size):
    (x,) = shard_batch(steps.mesh, images[sl])
    out.append(np.asarray(jax.device_get(fn(state, x)))[mask])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  nll = -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))
  return float(nll.mean()), float((probs.argmax(-1) == labels).mean())


# ----------------------------------------------------------------------------- loop

class _StopSignal:
  """Turns SIGINT/SIGTERM into a flag checked at step boundaries; a second one kills."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no signal handling
        pass
    return self

  def _handle(self, signum, frame):
    if self.received is not None:
      raise KeyboardInterrupt
    self.received = signum
    print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the next "
          "step (send it again to quit at once)", file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Progress:
  """A tqdm bar on a terminal; otherwise a plain line every ~quarter epoch."""

  def __init__(self, *, epoch: int, epochs: int, total: int, initial: int):
    self.is_tty = sys.stderr.isatty()
    self.desc = f"epoch {epoch}/{epochs}"
    self.total = total
    self._bar = None
    if self.is_tty:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, desc=self.desc, unit="step",
                       leave=True, dynamic_ncols=True)

  @property
  def log_every(self) -> int:
    return 10 if self.is_tty else max(1, self.total // 4)

  def update(self, step: int, n: int, **stats) -> None:
    text = " ".join(f"{k}={v}" for k, v in stats.items())
    if self._bar is not None:
      self._bar.update(n)
      self._bar.set_postfix_str(text, refresh=False)
    else:
      print(f"{self.desc} step {step}/{self.total} {text}", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _check_config(workdir: Path, config: Config) -> None:
  """Refuses a config that conflicts with the one the workdir was started with."""
  saved = configs.read_config_json(workdir)
  if saved is None:
    return
  configs.load_run_config(workdir)  # a message where it is not a valid config
  new = json.loads(config.to_json())
  diff = {k for k in set(saved) | set(new)
          if saved.get(k) != new.get(k) and k not in RESUMABLE_CHANGES}
  if diff:
    details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {new.get(k)!r}"
                        for k in sorted(diff))
    raise ConfigError(
        f"The workdir '{workdir}' holds a run with a different config ({details}). "
        "Resume it with the same options, or start a new run with another --workdir.")


@dataclasses.dataclass
class LoopState:
  """Where the training loop is; saved with every checkpoint as plain JSON scalars.

  Attributes:
    epoch: epochs finished.
    step_in_epoch: steps done in the unfinished epoch (0 at an epoch boundary).
    best_value: the best value of the monitored metric so far, and its epoch.
    wait: epochs since the monitored metric last improved (early stopping).
    stopped_early: early stopping ended the run.
    sums: metric sums of the unfinished epoch (loss_sum, correct, count).
  """
  epoch: int = 0
  step_in_epoch: int = 0
  best_value: float | None = None
  best_epoch: int | None = None
  wait: int = 0
  stopped_early: bool = False
  sums: dict | None = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> LoopState:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})

  def end_epoch(self, value: float, *, monitor: str) -> bool:
    """Records a finished epoch's monitored value; returns whether it improved."""
    improved = _is_better(value, self.best_value, monitor)
    if improved:
      self.best_value, self.best_epoch, self.wait = value, self.epoch + 1, 0
    else:
      self.wait += 1
    self.epoch, self.step_in_epoch, self.sums = self.epoch + 1, 0, None
    return improved


def write_atomic(path: Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: a crash or a full
  disk leaves the old file or the new one, never half of one."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


class WorkdirLock:
  """An exclusive lock on a workdir (`.lock`, holding the holder's pid).

  The operating system releases it when the holder exits, however it exits, so a
  killed run never leaves a stale lock behind.
  """

  def __init__(self, workdir: Path):
    self.path = workdir / ".lock"
    self._fd = None

  def __enter__(self):
    import fcntl
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise ConfigError(f"The workdir '{self.path.parent}' is in use by a running "
                        f"training (pid {holder}). Wait for it to end or stop it, or "
                        "use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    self._fd = fd
    return self

  def __exit__(self, *exc):
    os.close(self._fd)  # releases the lock


def data_fingerprint(ds: Data) -> dict:
  """What identifies the prepared data of a run: sizes and a hash of each split."""
  import hashlib
  out = {}
  for name in ("train", "val", "test"):
    split = getattr(ds, name)
    if split is None:
      continue
    h = hashlib.sha256(np.ascontiguousarray(split.images).tobytes())
    h.update(np.asarray(split.labels, np.int64).tobytes())
    out[name] = {"images": len(split), "sha256": h.hexdigest()[:16]}
  return out


def _check_data(workdir: Path, fingerprint: dict) -> None:
  """Refuses to resume a run on other data than it started on."""
  path = workdir / "data.json"
  if not path.exists():
    return
  try:
    saved = json.loads(path.read_text())
  except ValueError:
    return  # unreadable: written again below
  if saved != fingerprint:
    sizes = lambda d: ", ".join(f"{k} {v['images']}" for k, v in d.items())
    raise ConfigError(
        f"The workdir '{workdir}' holds a run trained on other data ({sizes(saved)} "
        f"images; now {sizes(fingerprint)}, or the same sizes with other images). "
        "Resume it with the data it started on, or start a new run with another "
        "--workdir.")


def _is_better(value: float, best: float | None, monitor: str) -> bool:
  if best is None:
    return True
  return value < best if monitor == "val_loss" else value > best


@dataclasses.dataclass
class Data:
  train: input_pipeline.Split
  val: input_pipeline.Split
  test: input_pipeline.Split | None


def prepare_data(config: Config, *, data=None, data_dir=None) -> Data:
  """Loads train (and test, if present), cuts validation, applies --train-limit."""
  loaded = input_pipeline.load_fer2013(data, splits=("train", "test"),
                                       num_classes=config.num_classes,
                                       data_dir=data_dir, required=("train",))
  train, val = input_pipeline.cut_validation(
      loaded["train"], fraction=config.val_fraction, seed=config.val_seed,
      train_limit=config.train_limit)
  if len(train) < config.batch_size:
    raise DataError(f"Only {len(train)} training images after the validation cut, fewer "
                    f"than one batch of {config.batch_size}: lower --batch-size or add "
                    "data.")
  return Data(train=train, val=val, test=loaded.get("test"))


def train_and_evaluate(config: Config, workdir: str | os.PathLike, *, data=None,
                       data_dir: str | None = None, mesh: Mesh | None = None,
                       stop_after_steps: int | None = None) -> dict:
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
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"The workdir '{workdir}' is a file, not a folder; pass another "
                      "--workdir.")
  workdir.mkdir(parents=True, exist_ok=True)
  # The first process writes the workdir; the others of a multi-host run share it.
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    return _train_and_evaluate(config, workdir, data=data, data_dir=data_dir, mesh=mesh,
                               stop_after_steps=stop_after_steps)


def _train_and_evaluate(config: Config, workdir: Path, *, data, data_dir, mesh,
                        stop_after_steps) -> dict | None:
  _check_config(workdir, config)
  mesh = mesh or make_mesh()
  check_batch_size(config.batch_size, mesh)
  ds = prepare_data(config, data=data, data_dir=data_dir)
  fingerprint = data_fingerprint(ds)
  _check_data(workdir, fingerprint)
  # Only a run that passed every check claims the workdir: the advice of a failed
  # one ("lower --batch-size") can then be followed in the same workdir.
  if jax.process_index() == 0:
    write_atomic(workdir / "config.json", config.to_json())
    write_atomic(workdir / "data.json", json.dumps(fingerprint, indent=2))
  spe = configs.steps_per_epoch(len(ds.train), config.batch_size)
  print(f"{config.variant}: {len(ds.train)} train / {len(ds.val)} validation images, "
        f"{spe} steps per epoch, {mesh.devices.size} device(s) "
        f"({jax.devices()[0].platform})", file=sys.stderr)

  ckpt = checkpointing.Checkpoints(workdir)
  state = init_state(config, mesh=mesh, steps_per_epoch=spe)
  template = abstract_like(state)
  restored = ckpt.restore("latest", template)
  if restored is None:
    loop = LoopState()
  else:
    state, loop = restored[0], LoopState.from_json(restored[1])
    if loop.stopped_early or loop.epoch >= config.epochs:
      print(f"The run in '{workdir}' is complete ({loop.epoch} epochs); writing its "
            "report again (pass a larger --epochs to train on).", file=sys.stderr)
    else:
      print(f"Resuming from epoch {loop.epoch + 1}, step {loop.step_in_epoch} "
            f"(global step {int(state.step)})", file=sys.stderr)

  metrics_path = workdir / "metrics.jsonl"
  history = [m for m in report.read_metrics(metrics_path) if m["epoch"] <= loop.epoch]
  if jax.process_index() == 0:
    write_atomic(metrics_path, "".join(json.dumps(m) + "\n" for m in history))

  steps = Steps(config, mesh)
  _, schedule = make_optimizer(config, spe)
  loop_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  sl = host_slice(config.batch_size)
  steps_this_call = 0
  with _StopSignal() as stop:
    while loop.epoch < config.epochs and not loop.stopped_early:
      epoch, start = loop.epoch, loop.step_in_epoch
      sums = ({k: jnp.asarray(v) for k, v in loop.sums.items()}
              if loop.sums else None)
      batches = input_pipeline.Prefetcher(
          ((im[sl], lb[sl]) for im, lb in input_pipeline.train_batches(
              ds.train, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
              start_step=start)),
          put=lambda b: shard_batch(mesh, *b))
      progress = Progress(epoch=epoch + 1, epochs=config.epochs, total=spe,
                          initial=start)
      t0 = time.perf_counter()
      done_steps, last_logged = start, start
      interrupted = False
      try:
        for images, labels in batches:
          state, m = steps.train(state, images, labels, loop_key)
          sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
          done_steps += 1
          steps_this_call += 1
          if done_steps % progress.log_every == 0 or done_steps == spe:
            s = jax.device_get(sums)
            _check_finite(s, epoch + 1, done_steps, ckpt)
            rate = (done_steps - start) * config.batch_size / (time.perf_counter() - t0)
            progress.update(done_steps, done_steps - last_logged,
                            loss=f"{s['loss_sum'] / s['count']:.4f}",
                            acc=f"{s['correct'] / s['count']:.4f}",
                            img_s=f"{rate:.0f}")
            last_logged = done_steps
          if stop.received is not None or (stop_after_steps is not None and
                                           steps_this_call >= stop_after_steps):
            interrupted = True
            break
      finally:
        progress.close()
        batches.close()
      train_seconds = time.perf_counter() - t0
      s = jax.device_get(sums)
      _check_finite(s, epoch + 1, done_steps, ckpt)
      if interrupted and done_steps < spe:
        loop.step_in_epoch = done_steps
        loop.sums = {k: v.item() for k, v in s.items()}
        ckpt.save("latest", int(state.step), state, loop.to_json())
        return _stopped(f"at epoch {epoch + 1}, step {done_steps}/{spe}")

      val_probs = predict_split(steps, state, ds.val)
      val_loss, val_acc = loss_and_accuracy(val_probs, ds.val.labels)
      row = {"epoch": epoch + 1,
             "train_loss": float(s["loss_sum"] / s["count"]),
             "train_accuracy": float(s["correct"] / s["count"]),
             "val_loss": val_loss, "val_accuracy": val_acc,
             "learning_rate": float(schedule(int(state.step))),
             "epoch_seconds": round(time.perf_counter() - t0, 3),
             "images_per_second": round((done_steps - start) * config.batch_size
                                        / max(train_seconds, 1e-9), 1)}
      rss = malloc.rss_mib()
      if rss is not None:  # resident memory now and at its peak
        row["rss_mib"], row["peak_rss_mib"] = round(rss[0]), round(rss[1])
      history.append(row)
      if jax.process_index() == 0:
        with metrics_path.open("a") as f:
          f.write(json.dumps(row) + "\n")
      value = row[config.monitor]
      improved = loop.end_epoch(value, monitor=config.monitor)
      if config.early_stopping and loop.wait >= config.patience:
        loop.stopped_early = True
      print(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val loss {val_loss:.4f} "
            f"acc {val_acc:.4f} | {row['epoch_seconds']:.0f}s "
            f"{row['images_per_second']:.0f} img/s"
            + (" *" if improved else ""), file=sys.stderr, flush=True)
      # Without early stopping the final epoch is the model; with it, the best one.
      if improved or not config.early_stopping:
        ckpt.save("best", int(state.step), state, loop.to_json())
      ckpt.save("latest", int(state.step), state, loop.to_json())
      if loop.stopped_early:
        print(f"Early stopping: no {config.monitor} improvement for "
              f"{config.patience} epochs; best epoch {loop.best_epoch}.",
              file=sys.stderr)
      if interrupted:
        return _stopped(f"after epoch {epoch + 1}")

  result = write_report(config, workdir, steps=steps, ckpt=ckpt, template=template,
                        ds=ds, history=history, run=loop)
  ckpt.close()
  return result


def _stopped(where: str) -> None:
  """Ends an interrupted run whose checkpoint is on disk (None: not finished)."""
  print(f"Checkpoint saved {where}; run the same command to resume.", file=sys.stderr)
  return None


def _check_finite(sums: dict, epoch: int, step: int, ckpt) -> None:
  if not math.isfinite(float(sums["loss_sum"])):
    kept = ("The last good checkpoint is kept (training resumes from it). "
            if ckpt.latest_step() is not None else
            "No checkpoint was saved yet, so nothing is kept. ")
    raise TrainingDiverged(
        f"The training loss became {float(sums['loss_sum'])} in epoch {epoch} by step "
        f"{step}. {kept}Lower the learning rate (--lr) or check the input data.")


def write_report(config: Config, workdir: Path, *, steps: Steps, ckpt, template,
                 ds: Data, history: list[dict], run: dict) -> dict:
  """Evaluates the best checkpoint; writes report.json, curves.png and confusion.png.

  `run` is the loop's state (epochs run, best epoch, whether it stopped early).
  """
  restored = ckpt.restore("best", template)
  if restored is None:
    raise ConfigError(f"No best checkpoint in '{workdir}': the run has not finished an "
                      "epoch yet.")
  state, _ = restored
  names = class_names(config.num_classes)
  out: dict[str, Any] = {
      "variant": config.variant, "model": config.model,
      "epochs_run": run.epoch, "best_epoch": run.best_epoch,
      "stopped_early": run.stopped_early,
      "train_seconds": round(sum(m["epoch_seconds"] for m in history), 1),
      "device": f"{jax.devices()[0].platform} x{len(jax.devices())}",
  }
  train_probs = predict_split(steps, state, ds.train)
  out["train_accuracy_clean"] = loss_and_accuracy(train_probs, ds.train.labels)[1]
  # The validation split's logits serve both its accuracy and the calibration of the
  # best checkpoint (ferjax.calibration), which export then writes with the weights.
  clf = Classifier(ModelInfo(model=config.model, num_classes=config.num_classes,
                             input_size=config.input_size, dtype=config.dtype),
                   state.params, state.batch_stats)
  val_logits, val_logits_tta = clf.logits(ds.val.images), clf.logits(ds.val.images,
                                                                       tta=True)
  identity = calibration.Scaling.identity(config.num_classes)
  val_probs = calibration.calibrated_probs(val_logits, identity)
  val_tta = calibration.calibrated_probs(val_logits_tta, identity)
  out["validation"] = report.summarize(ds.val.labels, val_probs, val_tta, names,
                                       "validation")
  fitted = {**calibration.fit_entry(val_logits, val_logits_tta, ds.val.labels),
            "step": int(state.step)}
  out["calibration"] = fitted["fit"]
  if ds.test is not None:
    test_probs = predict_split(steps, state, ds.test)
    test_tta = predict_split(steps, state, ds.test, tta=True)
    out["test"] = report.summarize(ds.test.labels, test_probs, test_tta, names, "test")
  else:
    out["test"] = None
  if jax.process_index() == 0:
    write_atomic(workdir / calibration.RUN_FILE, json.dumps(fitted, indent=2))
    (workdir / "report.json").write_text(json.dumps(out, indent=2))
    report.plot_run_curves(history, workdir / "curves.png", variant=config.variant,
                           model=config.model, augmented=config.augment.enabled)
    report.plot_confusion(out["test"] or out["validation"], workdir / "confusion.png",
                          title=f"ferjax {config.variant} ({config.model})")
  cal = fitted["fit"]["single"]
  line = (f"{config.variant}: clean train accuracy {out['train_accuracy_clean']:.4f}, "
          f"validation {out['validation']['accuracy']:.4f} (calibrated: ECE "
          f"{cal['before']['ece']:.3f} -> {cal['after']['ece']:.3f})")
  if out["test"]:
    line += (f", test {out['test']['accuracy']:.4f} "
             f"(with TTA {out['test']['accuracy_tta']:.4f})")
  print(line + f"; report in {workdir / 'report.json'}", file=sys.stderr)
  return out


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
  cli.add_dtype_flag(p, help="compute dtype; bfloat16: mixed precision (float32 "
                     "parameters), faster on GPUs, TPUs and CPUs with bfloat16 matmul "
                     "units (AMX)")
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
