"""Checkpoints: the one module that talks to orbax.

A run keeps two checkpoints, each in its own `CheckpointManager` with `max_to_keep=1`:
`checkpoints/latest` (where training resumes) and `checkpoints/best` (the epoch that
early stopping chose, which evaluation uses). Two managers rather than one with a
`best_fn`, because a single manager that keeps N by metric can delete the newest
checkpoint, and mid-epoch checkpoints have no metric to rank.

Each checkpoint holds the train state (a pytree, restored into an abstract template made
with `jax.eval_shape`, so it lands on the current devices, whatever their count) and a
JSON dict of plain Python scalars (epoch, position in the epoch, early-stopping state).

A state field that a newer version added with a default of None (`TrainState.ema`) is
absent from older checkpoints; `restore` reads the saved tree's fields first and restores
such a checkpoint without it, so a run started by an older version resumes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from ferjax.configs import CHECKPOINT_KINDS, CHECKPOINTS
from ferjax.errors import FerjaxError, describe_os_error

logging.getLogger("absl").setLevel(logging.ERROR)


class CheckpointWriteError(FerjaxError):
  """A checkpoint could not be written (a full disk, say)."""


class CheckpointReadError(FerjaxError):
  """A checkpoint does not fit the state this version and config build."""


class Checkpoints:
  """The latest and the best checkpoint of one workdir."""

  def __init__(self, workdir: str | Path, *, create: bool = True):
    """`create=False` (for readers: evaluate, export) never creates folders."""
    self.workdir = Path(workdir).resolve()
    root = self.workdir / CHECKPOINTS
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
    # Handlers named up front so that `item_metadata` can read a saved state's tree.
    self._managers = {name: ocp.CheckpointManager(
        root / name, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "extra": ocp.JsonCheckpointHandler()})
        for name in CHECKPOINT_KINDS}

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
    """Restores checkpoint `which` into `template` (an abstract state); None if absent.

    A template field that is None and absent from the checkpoint (one written before
    the field existed) is left None. A checkpoint that does not fit the template
    otherwise raises CheckpointReadError.
    """
    mngr = self._managers[which]
    mngr.wait_until_finished()
    step = mngr.latest_step()
    if step is None:
      return None
    item, missing = template, {}
    saved = self._saved_tree(which, step)
    if saved is not None and dataclasses.is_dataclass(template):
      fields = {f.name: getattr(template, f.name) for f in dataclasses.fields(template)
                if f.metadata.get("pytree_node", True)}
      missing = {k: v for k, v in fields.items() if k not in saved}
      if any(v is not None for v in missing.values()):
        raise self._read_error(which, step, "it holds no " + ", ".join(
            sorted(k for k, v in missing.items() if v is not None)))
      if missing:
        item = {k: v for k, v in fields.items() if k in saved}
      # Each field's shapes (how many arrays of each) compared before any array is read:
      # a restore that fails part-way leaves orbax's other reads running, reported
      # later as unraisable exceptions. Shapes swapped within a field still reach
      # orbax, which refuses them after reading.
      for k in sorted(k for k in fields if k not in missing):
        want, have = _shape_counts(fields[k]), _shape_counts(saved[k])
        if want == have:
          continue
        if not want:
          raise self._read_error(which, step, f"it holds {k}, which the state has not")
        raise self._read_error(which, step, f"the shapes of its {k} differ from the "
                               f"state's ({_first_difference(want, have)})")
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(item), extra=ocp.args.JsonRestore()))
    except ValueError as e:  # orbax's tree or shape mismatch (its text in __cause__)
      raise self._read_error(which, step, "its arrays' shapes or its fields differ "
                             "from the state's") from e
    state = restored["state"]
    if missing:
      state = template.replace(**state)
    return state, dict(restored["extra"])

  def _saved_tree(self, which: str, step: int) -> dict | None:
    """The saved state's tree of array metadata by top-level field, None where orbax
    cannot say."""
    try:
      metadata = self._managers[which].item_metadata(step)["state"]
    except (FileNotFoundError, KeyError, ValueError):  # no metadata: orbax checks it
      return None
    tree = getattr(metadata, "tree", metadata)
    return dict(tree) if isinstance(tree, dict) else None

  def _read_error(self, which: str, step: int, why: str) -> CheckpointReadError:
    return CheckpointReadError(
        f"The '{which}' checkpoint in '{self._root / which}' (step {step}) does not fit "
        f"the train state this version of ferjax builds for the run's config: {why}. "
        "It was written by another version or another config: run it with the version "
        "that wrote it, or start a new --workdir.")

  def close(self) -> None:
    for mngr in self._managers.values():
      mngr.close()


def _shape_counts(tree) -> collections.Counter:
  """How many arrays of each shape `tree` holds (abstract arrays or orbax metadata)."""
  return collections.Counter(tuple(leaf.shape) for leaf in jax.tree.leaves(tree)
                             if getattr(leaf, "shape", None) is not None)


def _first_difference(want: collections.Counter, have: collections.Counter) -> str:
  shape = min((want - have) or (have - want), key=lambda s: (len(s), s))
  return (f"the state has {want[shape]} array(s) of shape {shape}, "
          f"the checkpoint {have[shape]}")
