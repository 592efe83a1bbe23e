"""Classification metrics and the figures a run leaves in its workdir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
  for key, label in (("train_loss", train_label), ("val_loss", "validation")):
    ax1.plot(epochs, [m[key] for m in metrics], marker=".", label=label)
  for key, label in (("train_accuracy", train_label), ("val_accuracy", "validation")):
    ax2.plot(epochs, [m[key] for m in metrics], marker=".", label=label)
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
