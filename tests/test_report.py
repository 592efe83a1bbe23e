"""ferjax.report: metrics computed right, a torn metrics file survived, figures written."""

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


def test_read_metrics_drops_a_torn_last_line_only(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert report.read_metrics(path) == []
  path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "val')
  assert [r["epoch"] for r in report.read_metrics(path)] == [1, 2]
  path.write_text('{"epoch": 1\n{"epoch": 2}\n')
  with pytest.raises(ValueError):
    report.read_metrics(path)


def test_figures_are_written(tmp_path):
  rows = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_accuracy": e / 10,
           "val_accuracy": e / 11} for e in range(1, 4)]
  report.plot_curves(rows, tmp_path / "curves.png", title="t")
  s = report.summarize(np.array([0, 1]), np.eye(2), None, ("a", "b"), "test")
  report.plot_confusion(s, tmp_path / "confusion.png", title="t")
  for name in ("curves.png", "confusion.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
