"""A run's report: classification metrics, the figures, and `write_report`, which
evaluates a finished run's best checkpoint and writes report.json, its figures and the
calibration into the workdir."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ferjax import calibration
from ferjax import workdir as workdir_lib
from ferjax.classes import class_names
from ferjax.configs import Config
from ferjax.inference import SplitPredictor


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """[true, predicted] counts."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, preds), 1)
  return cm


def summarize(labels: np.ndarray, probs: np.ndarray, probs_tta: np.ndarray | None,
              class_names: tuple[str, ...], split: str) -> dict:
  """Accuracy (with and without TTA), per-class recall and the confusion matrix."""
  preds = probs.argmax(-1)
  cm = confusion_matrix(labels, preds, len(class_names))
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.diag(cm) / cm.sum(1)
  out = {
      "split": split,
      "n": int(len(labels)),
      "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
      "accuracy_tta": (float((probs_tta.argmax(-1) == labels).mean())
                       if probs_tta is not None else None),
      "per_class_recall": {c: (None if np.isnan(r) else float(r))
                           for c, r in zip(class_names, recall)},
      "confusion_matrix": cm.tolist(),
      "classes": list(class_names),
  }
  return out


def loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """Mean negative log-likelihood and accuracy of probabilities [N, C]."""
  nll = -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))
  return float(nll.mean()), float((probs.argmax(-1) == labels).mean())


def plot_curves(metrics: list[dict], path: Path, *, title: str,
                train_label: str = "train") -> None:
  """Loss and accuracy per epoch, train (as trained: `train_label`) and validation."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if not metrics:
    return
  epochs = [m["epoch"] for m in metrics]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  validated = any(m.get("val_accuracy") is not None for m in metrics)  # final fit: no
  for ax, kind in ((ax1, "loss"), (ax2, "accuracy")):
    ax.plot(epochs, [m[f"train_{kind}"] for m in metrics], marker=".", label=train_label)
    if validated:
      ax.plot(epochs, [m[f"val_{kind}"] for m in metrics], marker=".",
              label="validation")
  ax1.set(xlabel="epoch", ylabel="loss", title="loss")
  ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_run_curves(metrics: list[dict], path: Path, *, variant: str, model: str,
                    augmented: bool) -> None:
  """`plot_curves` with a run's own title and train label (the workdir's curves.png)."""
  plot_curves(metrics, path, title=f"ferjax {variant} ({model})",
              train_label="train (augmented)" if augmented else "train")


def plot_confusion(summary: dict, path: Path, *, title: str) -> None:
  """The confusion matrix, normalised per true class, with counts."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cm = np.asarray(summary["confusion_matrix"], float)
  names = summary["classes"]
  norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(6, 5))
  im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
  ax.set_yticks(range(len(names)), names)
  ax.set(xlabel="predicted", ylabel="true",
         title=f"{title}\n{summary['split']}: accuracy {summary['accuracy']:.4f}")
  for i in range(len(names)):
    for j in range(len(names)):
      ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
              color="white" if norm[i, j] > 0.5 else "black")
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(config: Config, workdir: Path, *, predictor: SplitPredictor, state,
                 data, history: list[dict], run: workdir_lib.LoopState) -> dict:
  """Evaluates `state` (the run's best checkpoint) on the run's splits; writes
  report.json, curves.png, confusion.png and calibration.json, and returns the report.

  Args:
    data: the run's splits (`ferjax.train.Data`): train, val and test (None: no test
      split), and test_name, the test split's name (public_test where the source tells
      the halves of test/ apart); report.json keeps it under "test", with its "split".
    history: the metrics rows of every epoch.
    run: the loop's state (epochs run, best epoch, whether it stopped early).
  """
  names = class_names(config.num_classes)
  out: dict[str, Any] = {
      "variant": config.variant, "model": config.model,
      "epochs_run": run.epoch, "best_epoch": run.best_epoch,
      "stopped_early": run.stopped_early,
      "train_seconds": round(sum(m["epoch_seconds"] for m in history), 1),
      "device": f"{jax.devices()[0].platform} x{len(jax.devices())}",
  }
  train_probs = predictor.probs(state, data.train)
  out["train_accuracy_clean"] = loss_and_accuracy(train_probs, data.train.labels)[1]
  # The validation split's logits serve both its accuracy and the calibration of the
  # best checkpoint (ferjax.calibration), which export then writes with the weights.
  # A final fit holds nothing out: no validation figure and no calibration.
  out["validation"] = out["calibration"] = fitted = None
  if data.val is not None:
    val_logits = predictor.logits(state, data.val)
    val_logits_tta = predictor.logits(state, data.val, tta=True)
    identity = calibration.Scaling.identity(config.num_classes)
    val_probs = calibration.calibrated_probs(val_logits, identity)
    val_tta = calibration.calibrated_probs(val_logits_tta, identity)
    out["validation"] = summarize(data.val.labels, val_probs, val_tta, names,
                                  "validation")
    fitted = {**calibration.fit_entry(val_logits, val_logits_tta, data.val.labels),
              "step": int(state.step)}
    out["calibration"] = fitted["fit"]
  if data.test is not None:
    test_probs = predictor.probs(state, data.test)
    test_tta = predictor.probs(state, data.test, tta=True)
    out["test"] = summarize(data.test.labels, test_probs, test_tta, names, data.test_name)
  else:
    out["test"] = None
  if workdir_lib.writes():
    if fitted is not None:
      workdir_lib.write_atomic(workdir / calibration.RUN_FILE,
                               json.dumps(fitted, indent=2))
    (workdir / workdir_lib.REPORT).write_text(json.dumps(out, indent=2))
    plot_run_curves(history, workdir / workdir_lib.CURVES, variant=config.variant,
                    model=config.model, augmented=config.augment.enabled)
    if out["test"] or out["validation"]:  # a final fit without test/ has neither
      plot_confusion(out["test"] or out["validation"], workdir / workdir_lib.CONFUSION,
                     title=f"ferjax {config.variant} ({config.model})")
  line = f"{config.variant}: clean train accuracy {out['train_accuracy_clean']:.4f}, "
  if fitted is None:
    line += "no validation (final fit; uncalibrated)"
  else:
    cal = fitted["fit"]["single"]
    line += (f"validation {out['validation']['accuracy']:.4f} (calibrated: ECE "
             f"{cal['before']['ece']:.3f} -> {cal['after']['ece']:.3f})")
  if out["test"]:
    line += (f", {out['test']['split']} {out['test']['accuracy']:.4f} "
             f"(with TTA {out['test']['accuracy_tta']:.4f})")
  print(line + f"; report in {workdir / workdir_lib.REPORT}", file=sys.stderr)
  return out
