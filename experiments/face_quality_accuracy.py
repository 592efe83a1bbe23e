"""How the shipped model's accuracy falls as faces get smaller, blurrier, darker or
flatter: the measurements behind the quality flags of issue 23 (validation split only).

    python experiments/face_quality_accuracy.py --data ../shared/data/fer2013.zip \
        [--weights ferjax/pretrained/fer6.npz] > experiments/results/quality/validation.json

Each validation face (48x48) is degraded, then classified single view:
  size S: scaled down to SxS (box filter) and back up to 48x48 (bilinear), as a face
    found S pixels wide in a photo is when it is framed;
  blur s: Gaussian blur of standard deviation s pixels (at 48x48);
  brightness b: pixels scaled by b (b < 1 darker; clipped at 255 above 1);
  contrast c: pixels pulled towards the face's mean by c (c < 1 flatter).
For each, the accuracy and the mean sharpness (variance of the Laplacian) and mean and
standard deviation of the pixels, so that a flag's threshold can be set on what a crop
measures.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image, ImageFilter

from ferjax import evaluate, inference


def laplacian_variance(crops: np.ndarray) -> np.ndarray:
  x = crops.astype(np.float64)
  lap = (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
         - 4 * x[:, 1:-1, 1:-1])
  return lap.reshape(len(x), -1).var(-1)


def degrade(images: np.ndarray, kind: str, value: float) -> np.ndarray:
  out = np.empty_like(images)
  for i, a in enumerate(images):
    img = Image.fromarray(a)
    if kind == "size":
      s = int(value)
      img = img.resize((s, s), Image.Resampling.BOX).resize((48, 48),
                                                            Image.Resampling.BILINEAR)
      out[i] = np.asarray(img)
    elif kind == "blur":
      out[i] = np.asarray(img.filter(ImageFilter.GaussianBlur(value))) if value else a
    elif kind == "brightness":
      out[i] = np.clip(np.round(a * value), 0, 255)
    elif kind == "contrast":
      m = a.mean()
      out[i] = np.clip(np.round(m + (a - m) * value), 0, 255)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("--weights", default=str(inference.pretrained_path()))
  args = p.parse_args()
  clf = inference.Classifier.load(args.weights)
  val = evaluate.load_split("validation", num_classes=clf.info.num_classes,
                            data=args.data, **evaluate.data_cut(clf))
  grid = {"size": [48, 32, 24, 20, 16, 12, 10, 8], "blur": [0, 0.5, 1, 1.5, 2, 3, 4],
          "brightness": [1.0, 0.6, 0.4, 0.25, 0.15, 1.5, 2.0],
          "contrast": [1.0, 0.6, 0.4, 0.25, 0.15]}
  rows = []
  for kind, values in grid.items():
    for v in values:
      crops = degrade(val.images, kind, v)
      probs = clf.classify(crops)
      rows.append({"kind": kind, "value": v, "n": int(len(crops)),
                   "accuracy": float((probs.argmax(-1) == val.labels).mean()),
                   "mean_top_probability": float(probs.max(-1).mean()),
                   "laplacian_var_median": float(np.median(laplacian_variance(crops))),
                   "pixel_mean_median": float(np.median(crops.mean((1, 2)))),
                   "pixel_std_median": float(np.median(crops.std((1, 2))))})
  print(json.dumps({"weights": args.weights, "split": "validation", "rows": rows},
                   indent=1))


if __name__ == "__main__":
  main()
