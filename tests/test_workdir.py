"""ferjax.workdir: a workdir that cannot silently go wrong: its config and data checks,
its lock, its claim, atomic files, torn metrics, the loop's state."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from ferjax import configs, input_pipeline
from ferjax import workdir as workdir_lib
from ferjax.errors import ConfigError
from ferjax.workdir import LoopState
from conftest import make_images

TINY = dataclasses.replace(configs.tiny(), epochs=1, num_classes=7)


def _fingerprint(seed: int, *, test: bool = True) -> dict:
  split = input_pipeline.Split(*make_images(4, seed=seed))
  val = split.take(np.arange(5))
  return workdir_lib.data_fingerprint(SimpleNamespace(train=split, val=val,
                                                      test=val if test else None))


def test_other_data_is_refused_and_the_same_data_passes(tmp_path):
  fp = _fingerprint(0)
  assert fp == _fingerprint(0) and set(fp) == {"train", "val", "test"}
  assert set(_fingerprint(0, test=False)) == {"train", "val"}
  workdir_lib.check_data(tmp_path, _fingerprint(5))  # nothing claimed yet: anything goes
  workdir_lib.claim(tmp_path, TINY, fp)
  other = _fingerprint(5)
  workdir_lib.check_data(tmp_path, other)  # claimed, nothing saved: starts afresh
  _save_a_step(tmp_path)
  workdir_lib.check_data(tmp_path, fp)
  assert {k: v["images"] for k, v in other.items()} == {k: v["images"]
                                                        for k, v in fp.items()}
  with pytest.raises(ConfigError, match="trained on other data .* or the same sizes "
                     "with other images"):
    workdir_lib.check_data(tmp_path, other)
  (tmp_path / workdir_lib.DATA).write_text("{torn")  # unreadable: claimed again
  workdir_lib.check_data(tmp_path, other)


def _save_a_step(workdir):
  """What a saved checkpoint looks like to `has_trained` (orbax's step folder)."""
  assert not workdir_lib.has_trained(workdir)
  (workdir / "checkpoints" / "latest" / "3.orbax-checkpoint-tmp-1").mkdir(parents=True)
  assert not workdir_lib.has_trained(workdir)  # a save killed half-way is not one
  (workdir / "checkpoints" / "latest" / "3").mkdir()
  assert workdir_lib.has_trained(workdir)


def test_a_run_got_somewhere_with_a_checkpoint_a_finished_epoch_or_a_report(tmp_path):
  for i, make in enumerate([
      lambda w: (w / "checkpoints" / "best" / "7").mkdir(parents=True),
      lambda w: workdir_lib.append_metrics(w, {"epoch": 1}),
      lambda w: (w / workdir_lib.REPORT).write_text("{}")]):
    w = tmp_path / str(i)
    (w / "checkpoints" / "latest").mkdir(parents=True)
    (w / workdir_lib.METRICS).write_text("")
    assert not workdir_lib.has_trained(w)
    make(w)
    assert workdir_lib.has_trained(w)


def test_other_config_is_refused_but_more_epochs_pass(tmp_path):
  workdir_lib.check_config(tmp_path, TINY)  # nothing claimed yet
  workdir_lib.claim(tmp_path, TINY, {})
  assert configs.load_run_config(tmp_path) == TINY
  # Claimed by a run that failed before its first checkpoint: nothing to resume, so
  # the advice of its failure (another learning rate) can be followed here.
  workdir_lib.check_config(tmp_path, dataclasses.replace(TINY, learning_rate=0.1))
  _save_a_step(tmp_path)
  workdir_lib.check_config(tmp_path, dataclasses.replace(TINY, epochs=5))
  with pytest.raises(ConfigError, match="learning_rate: saved 0.003, now 0.1"):
    workdir_lib.check_config(tmp_path, dataclasses.replace(TINY, learning_rate=0.1))


@pytest.mark.parametrize("missing", ["conv_tuning", "conv_impl", "input_size"])
def test_a_config_json_older_than_a_field_resumes_with_its_default(tmp_path, missing):
  """A run whose config.json was written before a field existed resumes: the missing
  field reads as its default, and only a value other than the default is a change."""
  old = json.loads(TINY.to_json())
  del old[missing]
  (tmp_path / workdir_lib.CONFIG).write_text(json.dumps(old))
  (tmp_path / "checkpoints" / "latest" / "3").mkdir(parents=True)
  workdir_lib.check_config(tmp_path, TINY)
  workdir_lib.check_config(tmp_path, dataclasses.replace(TINY, epochs=5))
  with pytest.raises(ConfigError, match="conv_tuning: saved .*'winograd_mb': 10.0.*, now "
                                        ".*'winograd_mb': 64.0"):
    workdir_lib.check_config(tmp_path, configs.with_overrides(
        TINY, ["conv_tuning.winograd_mb=64"]))


def test_a_locked_workdir_is_refused_until_released(tmp_path):
  with workdir_lib.locked(tmp_path / "w") as w:
    assert w.is_dir() and (w / workdir_lib.LOCK).read_text().isdigit()
    with pytest.raises(ConfigError, match=r"in use by a running training \(pid \d+\)"):
      with workdir_lib.Lock(w):
        pass
  with workdir_lib.Lock(tmp_path / "w"):  # released
    pass
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    with workdir_lib.locked(tmp_path / "file"):
      pass


def test_write_atomic_replaces_whole_files(tmp_path):
  path = tmp_path / "f.json"
  workdir_lib.write_atomic(path, "old")
  workdir_lib.write_atomic(path, "new")
  assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_resume_rewrites_metrics_up_to_its_epoch_without_a_torn_line(tmp_path):
  path = tmp_path / workdir_lib.METRICS
  assert workdir_lib.restart_metrics(tmp_path, 0) == [] and path.read_text() == ""
  for e in (1, 2, 3):
    workdir_lib.append_metrics(tmp_path, {"epoch": e})
  with path.open("a") as f:
    f.write('{"epoch": 4, "train_lo')  # a crash in the middle of a write
  assert [m["epoch"] for m in workdir_lib.read_metrics(path)] == [1, 2, 3]
  assert workdir_lib.restart_metrics(tmp_path, 2) == [{"epoch": 1}, {"epoch": 2}]
  workdir_lib.append_metrics(tmp_path, {"epoch": 3})
  assert [json.loads(r) for r in path.read_text().splitlines()] == [
      {"epoch": 1}, {"epoch": 2}, {"epoch": 3}]


def test_read_metrics_drops_a_torn_last_line_only(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert workdir_lib.read_metrics(path) == []
  path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "val')
  assert [r["epoch"] for r in workdir_lib.read_metrics(path)] == [1, 2]
  path.write_text('{"epoch": 1\n{"epoch": 2}\n')
  with pytest.raises(ValueError):  # a torn line in the middle is not hidden
    workdir_lib.read_metrics(path)


@pytest.mark.parametrize("monitor, values, best_epoch, waits", [
    ("val_loss", [1.0, 0.8, 0.9, 0.8], 2, [0, 0, 1, 2]),
    ("val_accuracy", [0.5, 0.4, 0.6, 0.6], 3, [0, 1, 0, 1]),
])
def test_loop_state_tracks_the_best_epoch_and_survives_json(monitor, values, best_epoch,
                                                            waits):
  loop = LoopState(step_in_epoch=3, sums={"count": 5})
  for value, wait in zip(values, waits):
    loop.end_epoch(value, monitor=monitor)
    assert loop.wait == wait and loop.step_in_epoch == 0 and loop.sums is None
  assert loop.epoch == 4 and loop.best_epoch == best_epoch
  saved = json.loads(json.dumps(loop.to_json()))
  assert LoopState.from_json({**saved, "from_a_later_version": 1}) == loop


def test_auto_dtype_is_kept_only_by_a_run_that_got_somewhere(tmp_path, monkeypatch):
  from ferjax import precision
  chosen = []
  monkeypatch.setattr(precision, "native_bf16", lambda: True)
  monkeypatch.setattr(precision, "choose", lambda config, **kw: chosen.append(1) or
                      precision.Choice("bfloat16", "measured", True, None))
  auto = dataclasses.replace(TINY, dtype=configs.AUTO_DTYPE)
  assert workdir_lib.resolve_dtype(tmp_path, auto).dtype == "bfloat16"
  choice = tmp_path / workdir_lib.DTYPE_CHOICE
  assert choice.exists() and chosen == [1]
  workdir_lib.claim(tmp_path, dataclasses.replace(TINY, dtype="bfloat16"), {})
  # Claimed, then failed before any checkpoint: auto measures again, and an explicit
  # dtype takes the workdir without the earlier run's record of its choice.
  assert workdir_lib.resolve_dtype(tmp_path, auto).dtype == "bfloat16"
  assert chosen == [1, 1]
  assert workdir_lib.resolve_dtype(tmp_path, TINY).dtype == "float32"
  assert not choice.exists()
  # A run with a checkpoint resumes with the dtype it chose, without measuring, and
  # keeps its record.
  workdir_lib.resolve_dtype(tmp_path, auto)
  _save_a_step(tmp_path)
  assert workdir_lib.resolve_dtype(tmp_path, auto).dtype == "bfloat16"
  assert chosen == [1, 1, 1]
  workdir_lib.resolve_dtype(tmp_path, dataclasses.replace(TINY, dtype="bfloat16"))
  assert choice.exists()
