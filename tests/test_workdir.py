"""A workdir that cannot silently go wrong: its data, its lock, atomic files, statuses;
directly through ferjax.workdir, and as the loop keeps it."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from ferjax import configs, input_pipeline, report, train
from ferjax import workdir as workdir_lib
from ferjax.errors import ConfigError, DataError, run_cli
from ferjax.workdir import LoopState
from conftest import make_images, write_zip

TINY = dataclasses.replace(configs.tiny(), epochs=1, num_classes=7)


def test_a_run_refuses_other_data_on_resume(tmp_path, toy_zip, tfds_dir):
  train.train_and_evaluate(TINY, tmp_path / "w", data=toy_zip, data_dir=tfds_dir)
  other = write_zip(tmp_path / "other.zip", {"train": make_images(30, seed=5),
                                             "test": make_images(6, seed=1)})
  more = dataclasses.replace(TINY, epochs=2)
  with pytest.raises(ConfigError, match="trained on other data"):
    train.train_and_evaluate(more, tmp_path / "w", data=other, data_dir=tfds_dir)
  # The same data resumes.
  assert train.train_and_evaluate(more, tmp_path / "w", data=toy_zip,
                                  data_dir=tfds_dir)["epochs_run"] == 2


def test_a_run_that_fails_before_training_does_not_claim_the_workdir(
    tmp_path, toy_zip, tfds_dir):
  too_big = dataclasses.replace(TINY, batch_size=4096)
  with pytest.raises(DataError, match="lower --batch-size"):
    train.train_and_evaluate(too_big, tmp_path / "w", data=toy_zip, data_dir=tfds_dir)
  assert not (tmp_path / "w" / "config.json").exists()
  # Following the advice in the same workdir works.
  assert train.train_and_evaluate(TINY, tmp_path / "w", data=toy_zip,
                                  data_dir=tfds_dir) is not None


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path, toy_zip, tfds_dir):
  (tmp_path / "w").mkdir()
  with train.WorkdirLock(tmp_path / "w"):
    with pytest.raises(ConfigError, match=r"in use by a running training \(pid \d+\)"):
      train.train_and_evaluate(TINY, tmp_path / "w", data=toy_zip, data_dir=tfds_dir)
  # Released: the run goes ahead.
  assert train.train_and_evaluate(TINY, tmp_path / "w", data=toy_zip,
                                  data_dir=tfds_dir) is not None


def test_torn_metrics_line_and_stale_checkpoint_tmp_are_survived(tmp_path, toy_zip,
                                                                 tfds_dir):
  w = tmp_path / "w"
  train.train_and_evaluate(TINY, w, data=toy_zip, data_dir=tfds_dir)
  with (w / "metrics.jsonl").open("a") as f:
    f.write('{"epoch": 2, "train_lo')  # a crash in the middle of a write
  stale = w / "checkpoints" / "latest" / "99.orbax-checkpoint-tmp-123"
  stale.mkdir(parents=True)
  assert [m["epoch"] for m in report.read_metrics(w / "metrics.jsonl")] == [1]
  rep = train.train_and_evaluate(dataclasses.replace(TINY, epochs=2), w, data=toy_zip,
                                 data_dir=tfds_dir)
  assert rep["epochs_run"] == 2 and not stale.exists()
  rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2]
  with pytest.raises(ValueError):  # a torn line in the middle is not hidden
    (w / "bad.jsonl").write_text('{"epoch": 1\n{"epoch": 2}\n')
    report.read_metrics(w / "bad.jsonl")


def test_bad_arguments_get_messages_before_any_work(tmp_path, capsys):
  (tmp_path / "file").write_text("x")
  cases = [(["--workdir", str(tmp_path / "file")], "is a file, not a folder"),
           (["--seed", "-1"], "--seed must be between 0"),
           (["--seed", "18446744073709551616"], "--seed must be between 0"),
           (["--lr", "inf"], "--lr must be a positive number"),
           (["--lr", "nan"], "--lr must be a positive number")]
  for args, message in cases:
    with pytest.raises(SystemExit) as e:
      run_cli(lambda args=args: train.main(["--variant", "tiny", "--data",
                                            str(tmp_path / "no"), *args]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err


def test_eval_batch_divides_over_any_device_count():
  for n in range(1, 9):
    b = train.eval_batch_size(SimpleNamespace(devices=np.empty(n)))
    assert b % n == 0 and 256 <= b < 256 + n


def test_16bit_training_images_are_scaled_not_clipped():
  import io

  from PIL import Image

  from ferjax.datasets.fer2013 import sources
  face = make_images(1, seed=0)[0][0]
  buf = io.BytesIO()
  Image.fromarray(face.astype(np.uint16) * 257).save(buf, format="PNG")
  got, converted = sources.decode_image(buf.getvalue(), where="x.png")
  assert converted
  np.testing.assert_array_equal(got, face)


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
  workdir_lib.check_data(tmp_path, fp)
  other = _fingerprint(5)
  assert {k: v["images"] for k, v in other.items()} == {k: v["images"]
                                                        for k, v in fp.items()}
  with pytest.raises(ConfigError, match="trained on other data .* or the same sizes "
                     "with other images"):
    workdir_lib.check_data(tmp_path, other)
  (tmp_path / workdir_lib.DATA).write_text("{torn")  # unreadable: claimed again
  workdir_lib.check_data(tmp_path, other)


def test_other_config_is_refused_but_more_epochs_pass(tmp_path):
  workdir_lib.check_config(tmp_path, TINY)  # nothing claimed yet
  workdir_lib.claim(tmp_path, TINY, {})
  assert configs.load_run_config(tmp_path) == TINY
  workdir_lib.check_config(tmp_path, dataclasses.replace(TINY, epochs=5))
  with pytest.raises(ConfigError, match="learning_rate: saved 0.003, now 0.1"):
    workdir_lib.check_config(tmp_path, dataclasses.replace(TINY, learning_rate=0.1))


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
