"""What a workdir is: the folder of one training run, and the rules that keep it whole.

    config.json       the run's Config; a resumed run may change only RESUMABLE_CHANGES
    data.json         a fingerprint of the prepared data; a resume on other data is refused
    metrics.jsonl     one row per finished epoch (a torn last line is dropped on resume)
    checkpoints/      `latest` and `best` (ferjax.checkpointing), each with a LoopState
    report.json, curves.png, confusion.png, calibration.json   the report (ferjax.report)
    dtype_choice.json how `--dtype auto` was resolved when the run started
    .lock             held by the training that runs in it

A run holds the lock for its whole life (`locked`) and claims the workdir (`claim`:
config.json and data.json) only once its config and data have passed their checks and
its checkpoint, if it has one, has restored.
Files that are rewritten are written whole or not at all (`write_atomic`). In a
multi-host run the first process writes the workdir and the others share it (`writes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from ferjax import configs
from ferjax.configs import Config
from ferjax.errors import ConfigError

CONFIG = configs.CONFIG_FILE
DATA = "data.json"
METRICS = "metrics.jsonl"
REPORT = "report.json"
CURVES = "curves.png"
CONFUSION = "confusion.png"
LOCK = ".lock"
DTYPE_CHOICE = "dtype_choice.json"  # how `--dtype auto` was resolved (ferjax.precision)
# Config fields a resumed run may change: the length of training only.
RESUMABLE_CHANGES = ("epochs",)


def writes() -> bool:
  """Whether this process writes the workdir (the first of a multi-host run)."""
  return jax.process_index() == 0


def write_atomic(path: Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: a crash or a full
  disk leaves the old file or the new one, never half of one."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


class Lock:
  """An exclusive lock on a workdir (`.lock`, holding the holder's pid).

  The operating system releases it when the holder exits, however it exits, so a
  killed run never leaves a stale lock behind.
  """

  def __init__(self, workdir: Path):
    self.path = Path(workdir) / LOCK
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


@contextlib.contextmanager
def locked(workdir: str | os.PathLike) -> Iterator[Path]:
  """The workdir as a Path, made if missing and locked while the block runs (by the
  process that writes it)."""
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"The workdir '{workdir}' is a file, not a folder; pass another "
                      "--workdir.")
  workdir.mkdir(parents=True, exist_ok=True)
  with Lock(workdir) if writes() else contextlib.nullcontext():
    yield workdir


def has_trained(workdir: Path) -> bool:
  """Whether a run in the workdir got anywhere: a saved step (`checkpoints/*/<step>`),
  a finished epoch (metrics.jsonl) or a report. A run that claimed the workdir and
  failed before all of them (diverged in its first epoch, say) left nothing to resume
  or lose: the next run may start it afresh, with other options (the advice of the
  failure) or other data."""
  workdir = Path(workdir)
  folders = [workdir / configs.CHECKPOINTS / kind for kind in configs.CHECKPOINT_KINDS]
  steps = (p for folder in folders if folder.is_dir() for p in folder.iterdir())
  return (any(p.name.isdigit() for p in steps) or (workdir / REPORT).exists()
          or bool(read_metrics(workdir / METRICS)))


def check_config(workdir: Path, config: Config) -> None:
  """Refuses a config that conflicts with the one the workdir's run was started with,
  where that run got anywhere (`has_trained`)."""
  if configs.read_config_json(workdir) is None or not has_trained(workdir):
    return
  # Compared as read back (a message where it is not a valid config): a field that the
  # run's config.json predates reads as its default, so old runs still resume.
  saved = json.loads(configs.load_run_config(workdir).to_json())
  new = json.loads(config.to_json())
  if new["dtype"] == configs.AUTO_DTYPE:  # auto resumes with the dtype it chose
    new["dtype"] = saved["dtype"]
  diff = {k for k in set(saved) | set(new)
          if saved.get(k) != new.get(k) and k not in RESUMABLE_CHANGES}
  if diff:
    details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {new.get(k)!r}"
                        for k in sorted(diff))
    raise ConfigError(
        f"The workdir '{workdir}' holds a run with a different config ({details}). "
        "Resume it with the same options, or start a new run with another --workdir.")


def resolve_dtype(workdir: Path, config: Config, *, mesh=None) -> Config:
  """`config` with `--dtype auto` resolved: to the dtype the workdir's run chose when it
  started (a resumed run keeps it), else to `ferjax.precision.choose` on this machine,
  recorded in DTYPE_CHOICE. In a multi-host run the first process decides each step
  (resume or measure; whether bfloat16 is native; the dtype) and the others follow, so
  that all of them time the same sharded steps or none does."""
  if config.dtype != configs.AUTO_DTYPE:
    if writes() and not has_trained(workdir):  # an earlier run's choice, not this one's
      (workdir / DTYPE_CHOICE).unlink(missing_ok=True)
    return config
  saved = (configs.load_run_config(workdir).dtype
           if configs.read_config_json(workdir) is not None and has_trained(workdir)
           else None)
  code = _first_process(configs.DTYPES.index(saved) if saved in configs.DTYPES else -1)
  if code >= 0:
    print(f"--dtype auto: {configs.DTYPES[code]}, as this run chose when it started",
          file=sys.stderr)
    return dataclasses.replace(config, dtype=configs.DTYPES[code])
  from ferjax import precision
  native = bool(_first_process(int(precision.native_bf16())))
  choice = precision.choose(config, mesh=mesh, native=native)
  dtype = configs.DTYPES[_first_process(configs.DTYPES.index(choice.dtype))]
  if writes():
    print(f"--dtype auto: {dtype} ({choice.reason})", file=sys.stderr)
    write_atomic(workdir / DTYPE_CHOICE, json.dumps(choice.to_json(), indent=2))
  return dataclasses.replace(config, dtype=dtype)


def _first_process(value: int) -> int:
  """`value` as the first process has it (itself in a one-process run)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def data_fingerprint(data) -> dict:
  """What identifies the prepared data of a run: sizes and a hash of each split.

  `data` has the splits `train`, `val` and `test` as attributes (None: no such split).
  """
  out = {}
  for name in ("train", "val", "test"):
    split = getattr(data, name)
    if split is None:
      continue
    h = hashlib.sha256(np.ascontiguousarray(split.images).tobytes())
    h.update(np.asarray(split.labels, np.int64).tobytes())
    out[name] = {"images": len(split), "sha256": h.hexdigest()[:16]}
  return out


def check_data(workdir: Path, fingerprint: dict) -> None:
  """Refuses to resume a run on other data than it started on."""
  path = workdir / DATA
  if not path.exists() or not has_trained(workdir):
    return
  try:
    saved = json.loads(path.read_text())
  except ValueError:
    return  # unreadable: written again by `claim`
  if saved != fingerprint:
    sizes = lambda d: ", ".join(f"{k} {v['images']}" for k, v in d.items())
    raise ConfigError(
        f"The workdir '{workdir}' holds a run trained on other data ({sizes(saved)} "
        f"images; now {sizes(fingerprint)}, or the same sizes with other images). "
        "Resume it with the data it started on, or start a new run with another "
        "--workdir.")


def claim(workdir: Path, config: Config, fingerprint: dict) -> None:
  """Writes the run's config.json and data.json.

  Only a run that passed every check claims the workdir: the advice of a failed one
  ("lower --batch-size") can then be followed in the same workdir.
  """
  if writes():
    write_atomic(workdir / CONFIG, config.to_json())
    write_atomic(workdir / DATA, json.dumps(fingerprint, indent=2))


def read_metrics(path: Path) -> list[dict]:
  """The rows of a metrics.jsonl; a torn last line (a crash mid-write) is dropped."""
  if not path.exists():
    return []
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if i == len(lines) - 1:
        break
      raise
  return rows


def restart_metrics(workdir: Path, epoch: int) -> list[dict]:
  """The metrics rows of epochs up to `epoch` (where a resumed run goes on), written
  back without the later rows or a torn line, so that the next epoch's row follows."""
  rows = [m for m in read_metrics(workdir / METRICS) if m["epoch"] <= epoch]
  if writes():
    write_atomic(workdir / METRICS, "".join(json.dumps(m) + "\n" for m in rows))
  return rows


def append_metrics(workdir: Path, row: dict) -> None:
  """Adds a finished epoch's row to metrics.jsonl."""
  if writes():
    with (workdir / METRICS).open("a") as f:
      f.write(json.dumps(row) + "\n")


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
    low_res_epochs: how many epochs, from the first, train at the config's
      low_res_size (progressive resizing): set when the run starts, so that resuming
      with more --epochs lengthens the full-size part and never goes back to small
      images. None in checkpoints from before it existed (the config's value then).
  """
  epoch: int = 0
  step_in_epoch: int = 0
  best_value: float | None = None
  best_epoch: int | None = None
  wait: int = 0
  stopped_early: bool = False
  sums: dict | None = None
  low_res_epochs: int | None = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> LoopState:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})

  def end_epoch(self, value: float | None, *, monitor: str) -> bool:
    """Records a finished epoch's monitored value; returns whether it improved. None
    (a final fit, with nothing to monitor): every epoch is the best so far."""
    improved = value is None or _is_better(value, self.best_value, monitor)
    if improved:
      self.best_value, self.best_epoch, self.wait = value, self.epoch + 1, 0
    else:
      self.wait += 1
    self.epoch, self.step_in_epoch, self.sums = self.epoch + 1, 0, None
    return improved


def _is_better(value: float, best: float | None, monitor: str) -> bool:
  if best is None:
    return True
  return value < best if monitor == "val_loss" else value > best
