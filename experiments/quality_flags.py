"""Where each quality flag's threshold comes from, and whether the flags mean something
(issue 23). Validation split only; the shipped model, single view, calibrated.

    python experiments/quality_flags.py --data ../shared/data/fer2013.zip \
        > experiments/results/quality/flags.json

1. A controlled grid: every validation face degraded by one amount of one kind
   (size S: the 48x48 frame made from an SxS one; Gaussian blur; brightness scaled;
   contrast pulled towards the mean). Per row, accuracy and the median of each measure
   of `ferjax.quality`. A flag's suggested threshold is the measure's median where
   accuracy, interpolated between grid rows, is five points below the clean faces'.
2. Head pose, which cannot be made by degrading an image: CenterFace's landmarks on
   each validation face (scaled 3x, edges padded, so the detector sees a photo), in ten
   equal-count bins of |yaw| and of pitch (accuracy, and how often read as and
   labelled sad); the suggested limits are where the bins' accuracy, from the middle
   bin outwards, falls five points below the clean faces'.
3. The flags as `ferjax.quality` sets them now, on the validation faces as they are and
   on a mixture (each face given one random degradation, or none): per flag, how many
   faces it marks, their accuracy against that of the faces with no flag, and how many
   of each are `uncertain` at the model's calibrated threshold.

`--grid-from FILE` reuses part 1 (and 2) from an earlier output and redoes part 3, for
after the thresholds in ferjax/quality.py have been set.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image, ImageFilter

from ferjax import evaluate, faces, inference, quality

DROP = 0.05
GRID = {"size": [48, 40, 36, 32, 30, 28, 26, 24, 20, 16, 12],
        "blur": [0, 0.5, 0.75, 1, 1.25, 1.5, 2, 3],
        "dark": [1.0, 0.6, 0.4, 0.3, 0.25, 0.2, 0.15],
        "bright": [1.0, 1.3, 1.5, 1.75, 2.0, 2.5],
        "contrast": [1.0, 0.6, 0.4, 0.3, 0.25, 0.2, 0.15]}
# Which measure each kind of degradation sets a threshold on.
MEASURE = {"size": "side", "blur": "sharpness", "dark": "mean", "bright": "clipped",
           "contrast": "std"}


def degrade(a: np.ndarray, kind: str, value: float) -> np.ndarray:
  img = Image.fromarray(a)
  if kind == "size":
    s = int(round(value))
    if s >= 48:
      return a
    img = img.resize((s, s), Image.Resampling.BOX).resize((48, 48),
                                                          Image.Resampling.BILINEAR)
    return np.asarray(img)
  if kind == "blur":
    return np.asarray(img.filter(ImageFilter.GaussianBlur(value))) if value else a
  if kind in ("dark", "bright"):
    return np.clip(np.round(a * float(value)), 0, 255).astype(np.uint8)
  if kind == "contrast":
    m = a.mean()
    return np.clip(np.round(m + (a - m.astype(np.float64)) * value), 0, 255
                   ).astype(np.uint8)
  return a


def measures_of(crops: np.ndarray, sides, landmarks) -> list[dict]:
  return [quality.measure(c, side=s, landmarks=lm)
          for c, s, lm in zip(crops, sides, landmarks)]


def fer_landmarks(images: np.ndarray) -> list:
  """CenterFace's five landmarks for each 48x48 face, or None where it finds none."""
  det = faces.CenterFace(max_side=640, threshold=0.3)
  out = []
  for a in images:
    big = np.asarray(Image.fromarray(a).resize((144, 144), Image.Resampling.BILINEAR))
    canvas = np.pad(big, 48, mode="edge")
    found = det.detect(np.stack([canvas] * 3, -1))
    out.append(None if not found else max(found, key=lambda f: f.score).landmarks)
  return out


def crossing(values, accs, target):
  """The value where accuracy, linear between grid rows, first falls to `target`
  (values in the order the degradation grows); None if it never does."""
  for (v0, a0), (v1, a1) in zip(zip(values, accs), zip(values[1:], accs[1:])):
    if a0 >= target > a1:
      return v0 + (v1 - v0) * (a0 - target) / (a0 - a1)
  return None


def pose_bins(x: np.ndarray, correct: np.ndarray, pred_sad: np.ndarray,
              label_sad: np.ndarray, bins: int = 10) -> list[dict]:
  """Equal-count bins of x: median, accuracy, and how often the faces are read as sad
  and labelled sad."""
  order = np.argsort(x)
  out = []
  for idx in np.array_split(order, bins):
    out.append({"n": int(len(idx)), "low": float(x[idx].min()),
                "high": float(x[idx].max()), "median": float(np.median(x[idx])),
                "accuracy": float(correct[idx].mean()),
                "read_as_sad": float(pred_sad[idx].mean()),
                "labelled_sad": float(label_sad[idx].mean())})
  return out


def bin_limit(rows: list[dict], target: float, upward: bool):
  """Where the bins' accuracy (linear between bin medians, from the middle bin
  outwards) falls to `target`; None if it never does."""
  mid = len(rows) // 2
  seq = rows[mid:] if upward else rows[mid::-1]
  return crossing([r["median"] for r in seq], [r["accuracy"] for r in seq], target)


def flag_table(measures, correct, top, threshold) -> list[dict]:
  """Per flag (and any flag): faces marked, their accuracy, the accuracy of the faces
  with no flag at all, and the share of the marked ones that are `uncertain`."""
  m = quality.flag_matrix(measures)
  none = ~m.any(1)
  rows = []
  for name, on in [*zip(quality.FLAGS, m.T), ("any", ~none)]:
    rows.append({"flag": name, "n": int(on.sum()), "share": float(on.mean()),
                 "accuracy_flagged": float(correct[on].mean()) if on.any() else None,
                 "accuracy_no_flag": float(correct[none].mean()),
                 "uncertain_flagged": float((top[on] < threshold).mean())
                 if on.any() else None,
                 "uncertain_no_flag": float((top[none] < threshold).mean())})
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("--weights", default=str(inference.pretrained_path()))
  p.add_argument("--grid-from", help="reuse parts 1 and 2 of this earlier output")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  clf = inference.Classifier.load(args.weights)
  val = evaluate.load_split("validation", num_classes=clf.info.num_classes,
                            data=args.data, **evaluate.data_cut(clf))
  images, labels = val.images, val.labels
  threshold = clf.info.threshold(False)
  probs = clf.classify(images)
  clean = float((probs.argmax(-1) == labels).mean())
  earlier = json.load(open(args.grid_from)) if args.grid_from else None

  # 1. The controlled grid.
  if earlier:
    grid_rows = earlier["grid"]
  else:
    grid_rows = []
    for kind, values in GRID.items():
      for v in values:
        crops = np.stack([degrade(a, kind, v) for a in images])
        acc = float((clf.classify(crops).argmax(-1) == labels).mean())
        ms = measures_of(crops, [v if kind == "size" else 48] * len(crops),
                         [None] * len(crops))
        med = {k: float(np.median([m[k] for m in ms]))
               for k in ("sharpness", "mean", "std", "clipped")}
        med["side"] = float(v) if kind == "size" else 48.0
        grid_rows.append({"kind": kind, "value": v, "accuracy": acc, **med})
  suggested = {}
  for kind in GRID:
    rows = [r for r in grid_rows if r["kind"] == kind]
    key = MEASURE[kind]
    suggested[kind] = {"measure": key, "threshold": crossing(
        [r[key] for r in rows], [r["accuracy"] for r in rows], clean - DROP)}

  # 2. Head pose on the faces as they are.
  landmarks = fer_landmarks(images)
  ok = np.array([lm is not None for lm in landmarks])
  poses = np.array([quality.head_pose(lm) for lm in np.asarray(landmarks, object)[ok]])
  correct = probs.argmax(-1) == labels
  sad = list(clf.classes).index("sad")
  pose = {}
  for name, x in (("abs_yaw", np.abs(poses[:, 0])), ("pitch", poses[:, 1])):
    pose[name] = pose_bins(x, correct[ok], probs.argmax(-1)[ok] == sad,
                           labels[ok] == sad)
  suggested["yaw"] = bin_limit(pose["abs_yaw"], clean - DROP, upward=True)
  suggested["pitch_high"] = bin_limit(pose["pitch"], clean - DROP, upward=True)
  suggested["pitch_low"] = bin_limit(pose["pitch"], clean - DROP, upward=False)

  # 3. The flags as set now: natural faces, and a random mixture of degradations.
  natural = measures_of(images, [48] * len(images), landmarks)
  rng = np.random.default_rng(args.seed)
  kinds = ["none", "size", "blur", "dark", "bright", "contrast"]
  ranges = {"size": (12, 48), "blur": (0, 2.5), "dark": (0.15, 1.0),
            "bright": (1.0, 2.5), "contrast": (0.15, 1.0)}
  mixed, sides, applied = [], [], []
  for a in images:
    kind = kinds[rng.integers(len(kinds))]
    v = float(rng.uniform(*ranges[kind])) if kind != "none" else 0.0
    if kind == "size":
      v = float(round(v))
    mixed.append(degrade(a, kind, v))
    sides.append(v if kind == "size" else 48.0)
    applied.append([kind, v])
  mixed = np.stack(mixed)
  mprobs = clf.classify(mixed)
  mcorrect = mprobs.argmax(-1) == labels
  mixed_measures = measures_of(mixed, sides, landmarks)

  print(json.dumps({
      "weights": args.weights, "split": "validation", "n": int(len(images)),
      "clean_accuracy": clean, "drop": DROP, "uncertain_threshold": threshold,
      "grid": grid_rows, "suggested": suggested,
      "landmarks_found": float(ok.mean()), "pose_bins": pose,
      "thresholds_now": {k: getattr(quality, k) for k in (
          "SMALL_SIDE", "BLURRED_SHARPNESS", "DARK_MEAN", "CLIPPED_SHARE", "LOW_STD",
          "TURNED_YAW", "BOWED_PITCH")},
      "natural": {"accuracy": clean,
                  "flags": flag_table(natural, correct, probs.max(-1), threshold)},
      "mixture": {"seed": args.seed, "accuracy": float(mcorrect.mean()),
                  "flags": flag_table(mixed_measures, mcorrect, mprobs.max(-1),
                                      threshold)},
  }, indent=1))


if __name__ == "__main__":
  main()
