"""The shipped model's calibration, drawn: reliability diagrams (before and after) and
the risk-coverage curve, on the validation split and PublicTest.

    python experiments/calibration_plots.py --data ../shared/data/fer2013.zip \
        [--weights ferjax/pretrained/fer6.npz] [--cache DIR] [--out docs/img]

Writes OUT/calibration_reliability.png, OUT/calibration_coverage.png and prints the
figures behind them as JSON. The calibration is the one stored in the weights file
(fitted on validation by `python -m ferjax.calibrate`); PublicTest only reports.
--cache keeps each split's logits (single and ten-view) in DIR, so a second run draws
without running the network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ferjax import calibration as cal
from ferjax import evaluate, inference


def split_logits(clf, split, data, cache: Path | None):
  path = cache / f"logits_{split}.npz" if cache else None
  if path is not None and path.is_file():
    f = np.load(path)
    return f["z1"], f["zt"], f["y"]
  s = evaluate.load_split(split, num_classes=clf.info.num_classes, data=data,
                          **evaluate.data_cut(clf))
  predictor = inference.SplitPredictor(input_size=clf.info.input_size)
  z1, zt = predictor.logits(clf.state, s), predictor.logits(clf.state, s, tta=True)
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, z1=z1, zt=zt, y=s.labels)
  return z1, zt, s.labels


def reliability(ax, probs, labels, title, bins=cal.ECE_BINS):
  conf, right = probs.max(-1), probs.argmax(-1) == labels
  which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
  centers = (np.arange(bins) + 0.5) / bins
  acc = np.array([right[which == k].mean() if (which == k).any() else np.nan
                  for k in range(bins)])
  count = np.bincount(which, minlength=bins)
  ax.bar(centers, acc, width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
  ax.set_title(f"{title}\nECE {cal.ece(probs, labels):.4f}", fontsize=9)
  ax.set_xlabel("top probability")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  twin = ax.twinx()
  twin.plot(centers, count / count.sum(), "r.-", lw=1, ms=3)
  twin.set_ylim(0, 0.5)
  twin.tick_params(axis="y", colors="red", labelsize=7)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("--weights", default=str(inference.pretrained_path()))
  p.add_argument("--cache", type=Path)
  p.add_argument("--out", type=Path, default=Path("docs/img"))
  args = p.parse_args()
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  clf = inference.Classifier.load(args.weights)
  ident = cal.Scaling.identity(clf.info.num_classes)
  fig, axes = plt.subplots(2, 4, figsize=(14, 7))
  fig2, ax2 = plt.subplots(figsize=(6, 4.5))
  figures = {}
  for row, (split, name) in enumerate((("validation", "validation"),
                                       ("public_test", "PublicTest"))):
    z1, zt, y = split_logits(clf, split, args.data, args.cache)
    for col, (z, tta) in enumerate(((z1, False), (zt, True))):
      view = "TTA" if tta else "single view"
      raw = cal.calibrated_probs(z, ident)
      fitted = cal.calibrated_probs(z, clf.info.scaling(tta))
      reliability(axes[row, 2 * col], raw, y, f"{name}, {view}, raw")
      reliability(axes[row, 2 * col + 1], fitted, y, f"{name}, {view}, calibrated")
      at = cal.coverage(fitted, y, clf.info.threshold(tta))
      figures[f"{split}_{'tta' if tta else 'single'}"] = {
          "raw": cal.measures(raw, y), "calibrated": cal.measures(fitted, y), **at}
      if not tta:
        cov, acc = cal.risk_coverage(fitted, y)
        ax2.plot(cov, acc, label=name)
        ax2.plot([at["coverage"]], [at["answered_accuracy"]], "o",
                 color=ax2.lines[-1].get_color())
  fig.suptitle("Shipped model: reliability before and after calibration (bars: accuracy "
               "per bin of the top probability; red: share of faces per bin)")
  fig.tight_layout()
  ax2.axhline(0.8, color="gray", ls=":", lw=1)
  ax2.set_xlabel("coverage (share of faces answered, most confident first)")
  ax2.set_ylabel("accuracy of the answered faces")
  ax2.set_title("Shipped model, single view, calibrated: dots at the threshold chosen "
                "on validation", fontsize=9)
  ax2.legend()
  fig2.tight_layout()
  args.out.mkdir(parents=True, exist_ok=True)
  fig.savefig(args.out / "calibration_reliability.png", dpi=90)
  fig2.savefig(args.out / "calibration_coverage.png", dpi=90)
  print(json.dumps(figures))


if __name__ == "__main__":
  main()
