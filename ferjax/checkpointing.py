"""Checkpoints: the one module that talks to orbax.

A run keeps two checkpoints, each in its own `CheckpointManager` with `max_to_keep=1`:
`checkpoints/latest` (where training resumes) and `checkpoints/best` (the epoch that
early stopping chose, which evaluation uses). Two managers rather than one with a
`best_fn`, because a single manager that keeps N by metric can delete the newest
checkpoint, and mid-epoch checkpoints have no metric to rank.

Each checkpoint holds the train state (a pytree, restored into an abstract template made
with `jax.eval_shape`, so it lands on the current devices, whatever their count) and a
JSON dict of plain Python scalars (epoch, position in the epoch, early-stopping state).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from ferjax.errors import FerjaxError, describe_os_error

logging.getLogger("absl").setLevel(logging.ERROR)


class CheckpointWriteError(FerjaxError):
  """A checkpoint could not be written (a full disk, say)."""


class Checkpoints:
  """The latest and the best checkpoint of one workdir."""

  def __init__(self, workdir: str | Path, *, create: bool = True):
    """`create=False` (for readers: evaluate, export) never creates folders."""
    root = Path(workdir).resolve() / "checkpoints"
    self._root = root
    if create:
      # A save killed half-way leaves orbax's temporary folder; it is never resumed.
      for stale in root.glob("*/*orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    # Synchronous saves: a failed write (a full disk) is reported at the save, not one
    # epoch later; an epoch's two saves take about a second.
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=create,
                                           read_only=not create,
                                           enable_async_checkpointing=False)
    self._managers = {name: ocp.CheckpointManager(root / name, options=options)
                      for name in ("latest", "best")}

  def save(self, which: str, step: int, state: Any, extra: dict) -> None:
    """Saves `state` and `extra` as checkpoint `which` ('latest' or 'best') at `step`;
    returns once it is on disk. A failed write raises CheckpointWriteError."""
    mngr = self._managers[which]
    try:
      if step in mngr.all_steps():  # e.g. an interrupt at an epoch's last step, then its end
        mngr.delete(step)
      mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                              extra=ocp.args.JsonSave(extra)))
    except Exception as e:  # orbax and tensorstore wrap OSErrors in their own types
      raise self._write_error(which, e) from e

  def _write_error(self, which: str, e: Exception) -> CheckpointWriteError:
    return CheckpointWriteError(
        f"Could not write the '{which}' checkpoint to '{self._root / which}': "
        f"{describe_os_error(e)}. Free some disk space (or fix the folder) and run the "
        "same command again: training resumes from the last checkpoint written "
        "completely, and no finished epoch before it is lost.")

  def latest_step(self, which: str = "latest") -> int | None:
    return self._managers[which].latest_step()

  def restore(self, which: str, template: Any) -> tuple[Any, dict] | None:
    """Restores checkpoint `which` into `template` (an abstract state); None if absent."""
    mngr = self._managers[which]
    mngr.wait_until_finished()
    step = mngr.latest_step()
    if step is None:
      return None
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template), extra=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["extra"])

  def close(self) -> None:
    for mngr in self._managers.values():
      mngr.close()
