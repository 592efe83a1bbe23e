"""ferjax.report: metrics computed right, figures written, a run's report written whole."""

import numpy as np
import pytest

from ferjax import report


def test_confusion_accuracy_recall_and_tta():
  labels = np.array([0, 0, 1, 1, 1, 2])
  probs = np.eye(4)[[0, 1, 1, 1, 2, 2]]  # one mistake on class 0, one on class 1
  tta = np.eye(4)[[0, 0, 1, 1, 1, 2]]    # none
  s = report.summarize(labels, probs, tta, ("a", "b", "c", "d"), "test")
  assert s["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 1, 0],
                                   [0, 0, 0, 0]]
  assert s["accuracy"] == pytest.approx(4 / 6) and s["accuracy_tta"] == 1.0
  assert s["per_class_recall"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": 1.0,
                                   "d": None}  # no images of d: no recall, not 0
  assert (s["n"], s["split"], s["classes"]) == (6, "test", ["a", "b", "c", "d"])
  assert report.summarize(labels, probs, None, "abcd", "x")["accuracy_tta"] is None


def test_loss_and_accuracy():
  probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
  loss, acc = report.loss_and_accuracy(probs, np.array([0, 1, 1]))
  assert loss == pytest.approx(-np.log([0.5, 0.8, 0.1]).mean()) and acc == 2 / 3
  assert report.loss_and_accuracy(np.eye(2), np.array([1, 0]))[0] == pytest.approx(
      -np.log(1e-12))  # a zero probability is a large loss, not an infinite one


def test_figures_are_written(tmp_path):
  rows = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_accuracy": e / 10,
           "val_accuracy": e / 11} for e in range(1, 4)]
  report.plot_curves(rows, tmp_path / "curves.png", title="t")
  s = report.summarize(np.array([0, 1]), np.eye(2), None, ("a", "b"), "test")
  report.plot_confusion(s, tmp_path / "confusion.png", title="t")
  for name in ("curves.png", "confusion.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report_writes_every_file_from_the_state_it_is_given(tmp_path, capsys):
  import dataclasses
  import json

  from ferjax import calibration, configs, input_pipeline
  from ferjax import state as state_lib
  from ferjax.inference import SplitPredictor
  from ferjax.train import Data
  from ferjax.workdir import LoopState
  from conftest import make_images
  config = dataclasses.replace(configs.tiny(), num_classes=7)
  mesh = state_lib.make_mesh()
  state = state_lib.init_state(config, mesh=mesh, steps_per_epoch=1)
  split = input_pipeline.Split(*make_images(2, seed=0))
  data = Data(train=split, val=split.take(np.arange(0, 14, 2)),
              test=split.take(np.arange(1, 14, 2)), test_name="public_test")
  history = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "train_accuracy": 0.5,
              "val_accuracy": 0.5, "epoch_seconds": 1.25} for e in (1, 2)]
  predictor = SplitPredictor(input_size=config.input_size, mesh=mesh)
  out = report.write_report(config, tmp_path, predictor=predictor, state=state,
                            data=data, history=history,
                            run=LoopState(epoch=2, best_epoch=1))
  assert set(out) == {"variant", "model", "epochs_run", "best_epoch", "stopped_early",
                      "train_seconds", "device", "train_accuracy_clean", "validation",
                      "calibration", "test"}
  assert (out["epochs_run"], out["best_epoch"], out["train_seconds"]) == (2, 1, 2.5)
  assert out["validation"]["n"] == 7
  assert (out["test"]["split"], out["test"]["n"]) == ("public_test", 7)
  val_probs = predictor.probs(state, data.val)
  assert out["validation"]["accuracy"] == report.loss_and_accuracy(
      val_probs, data.val.labels)[1]
  assert json.loads((tmp_path / "report.json").read_text()) == out
  saved = json.loads((tmp_path / calibration.RUN_FILE).read_text())
  assert saved["step"] == int(state.step) and saved["fit"] == out["calibration"]
  for name in ("curves.png", "confusion.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert ", public_test " in capsys.readouterr().err  # the final line names the split
  no_test = dataclasses.replace(data, test=None)
  (tmp_path / "no_test").mkdir()
  out = report.write_report(config, tmp_path / "no_test", predictor=predictor,
                            state=state, data=no_test, history=history,
                            run=LoopState(epoch=2, best_epoch=1))
  assert out["test"] is None and "report in" in capsys.readouterr().err
