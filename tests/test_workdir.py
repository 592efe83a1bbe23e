"""A workdir that cannot silently go wrong: its data, its lock, atomic files, statuses."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from ferjax import configs, report, train
from ferjax.errors import ConfigError, DataError, run_cli
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
