"""Checkpoints: readers create nothing, and a failed write is a message at once."""

import errno

import orbax.checkpoint as ocp
import pytest

from ferjax import checkpointing, train
from ferjax.errors import run_cli


def test_readers_do_not_create_checkpoint_folders(tmp_path):
  ckpt = checkpointing.Checkpoints(tmp_path, create=False)
  ckpt.close()
  assert not (tmp_path / "checkpoints").exists()


def _disk_full(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device", "/ckpt/state/d/0.0")


def test_a_full_disk_at_a_checkpoint_is_a_message_then_the_run_resumes(
    tmp_path, toy_zip, tfds_dir, capsys, monkeypatch):
  args = ["--variant", "tiny", "--classes", "7", "--epochs", "2", "--data", str(toy_zip),
          "--data-dir", str(tfds_dir), "--workdir", str(tmp_path / "w")]
  # The disk fills up at the end of epoch 2: epoch 1's checkpoints are complete.
  real_save, calls = ocp.CheckpointManager.save, []

  def save(self, step, *a, **kw):
    calls.append(step)
    if len(calls) > 2:
      _disk_full()
    return real_save(self, step, *a, **kw)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: train.main(args))
  err = capsys.readouterr().err
  assert e.value.code == 2 and "Traceback" not in err
  assert "error: Could not write the 'best' checkpoint" in err, err
  assert "No space left on device ('/ckpt/state/d/0.0')" in err
  assert "epoch 2/2" in err  # reported at the failing save, not an epoch later
  # Space freed: the same command resumes after epoch 1 and finishes.
  monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
  run_cli(lambda: train.main(args))
  err = capsys.readouterr().err
  assert "Resuming from epoch 2" in err and "report in" in err


def test_a_full_disk_anywhere_else_is_a_message_too(capsys):
  with pytest.raises(SystemExit) as e:
    run_cli(_disk_full)
  err = capsys.readouterr().err
  assert e.value.code == 2 and "Traceback" not in err
  assert err.startswith("error: No space left on device ('/ckpt/state/d/0.0'). Free")
  with pytest.raises(PermissionError):  # other OS errors are not disguised
    run_cli(lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
