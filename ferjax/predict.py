"""Predicts the emotion on your own photos with a trained run.

    python -m ferjax.predict --workdir runs/augmented photo1.jpg photo2.png
                             [--no-tta] [--dtype bfloat16] [--json]

Each photo should show one face, roughly filling the frame (FER2013's faces are
cropped that way). It is converted to grayscale, center-cropped to a square and resized
to 48x48; predictions average the test-time views (flip and small shifts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferjax import input_pipeline, train
from ferjax.classes import class_names
from ferjax.configs import DTYPES
from ferjax.datasets.fer2013.sources import to_face_array_image
from ferjax.errors import DataError, run_cli


def load_photo(path: str | Path) -> np.ndarray:
  """A photo as a 48x48 uint8 grayscale array."""
  path = Path(path)
  if not path.is_file():
    raise DataError(f"No such image file: '{path}'.")
  try:
    with Image.open(path) as img:
      img.load()
      return np.asarray(to_face_array_image(img), np.uint8)
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f"'{path}' is not an image that can be read ({e}); use a JPEG or "
                    "PNG photo.") from None


def predict(workdir, paths: list[str | Path], *, tta: bool = True,
            dtype: str | None = None) -> list[dict]:
  """For each photo: the predicted emotion and the probability of every class,
  computed in `dtype` (default: the run's training dtype)."""
  from ferjax.evaluate import load_run
  config, steps, state = load_run(workdir, dtype=dtype)
  images = np.stack([load_photo(p) for p in paths])
  split = input_pipeline.Split(images, np.zeros(len(images), np.int32))
  probs = train.predict_split(steps, state, split, tta=tta)
  names = class_names(config.num_classes)
  return [{"file": str(p), "emotion": names[int(pr.argmax())],
           "probabilities": {n: round(float(v), 4) for n, v in zip(names, pr)}}
          for p, pr in zip(paths, probs)]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.predict", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("images", nargs="+", help="photos (JPEG, PNG, ...)")
  p.add_argument("--workdir", required=True, help="a trained run's workdir")
  p.add_argument("--no-tta", action="store_true", help="one view only (faster)")
  p.add_argument("--dtype", choices=DTYPES,
                 help="compute dtype (default: the run's training dtype; bfloat16 is "
                 "faster on CPUs with AMX, see python -m ferjax.evaluate --help)")
  p.add_argument("--json", action="store_true", help="print JSON lines")
  args = p.parse_args(argv)
  for r in predict(args.workdir, args.images, tta=not args.no_tta, dtype=args.dtype):
    if args.json:
      print(json.dumps(r))
    else:
      top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
      print(f"{r['file']}: {r['emotion']}  (" +
            ", ".join(f"{n} {v:.2f}" for n, v in top) + ")")


if __name__ == "__main__":
  run_cli(main)
