"""How FER2013 frames a face, in units of the face detector's box (ferjax.faces.FER_FRAME).

    python experiments/face_framing.py --data ../shared/data/fer2013.zip [--n 400]

Each of N training images (every class, seeded draw) is upscaled 4x to 192x192, set in
the middle of a 384x384 canvas (edge pixels repeated outwards, so the face is not cut
by the frame), and given to the detector. Over the images where it finds exactly one
face, prints the median and quartiles of (frame side / box's larger side) and of the
box centre's offset from the frame centre (fractions of the frame side).

The detector draws a tighter box around a blurry upscaled 48x48 face than around the
same face in a sharp photo, so that ratio is not yet the margin to crop photos with.
The calibration closes the loop on real photos (scikit-image's astronaut and
cameraman): crop the face with frame 1.0, upscale the crop as above, detect again, and
read the ratio r; a crop with frame f gives about f * r, so FER_FRAME = median / r.
Everything goes to experiments/face_framing/framing.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ferjax import faces, input_pipeline

UP = 4


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--data", required=True)
  p.add_argument("--n", type=int, default=400)
  p.add_argument("--out", default="experiments/face_framing/framing.json")
  args = p.parse_args()
  split = input_pipeline.load_fer2013(args.data, splits=("train",),
                                      num_classes=6)["train"]
  rng = np.random.default_rng(0)
  idx = rng.choice(len(split), size=args.n, replace=False)
  det = faces.CenterFace()
  side = 48 * UP
  ratios, dx, dy, found = [], [], [], []
  for i in idx:
    big = np.asarray(Image.fromarray(split.images[i]).resize(
        (side, side), Image.Resampling.BILINEAR))
    canvas = np.pad(big, side // 2, mode="edge")
    got = det.detect(np.stack([canvas] * 3, -1))
    found.append(len(got))
    if len(got) != 1:
      continue
    x0, y0, x1, y1 = got[0].box
    ratios.append(side / max(x1 - x0, y1 - y0))
    dx.append(((x0 + x1) / 2 - canvas.shape[1] / 2) / side)
    dy.append(((y0 + y1) / 2 - canvas.shape[0] / 2) / side)
  calib = {}
  from skimage import data
  for name in ("astronaut", "camera"):
    photo = getattr(data, name)()
    if photo.ndim == 2:
      photo = np.stack([photo] * 3, -1)
    (face,) = det.detect(photo)
    crop = faces.face_crop(Image.fromarray(photo).convert("L"), face, frame=1.0)
    big = np.asarray(Image.fromarray(crop).resize((side, side),
                                                  Image.Resampling.BILINEAR))
    (again,) = det.detect(np.stack([np.pad(big, side // 2, mode="edge")] * 3, -1))
    calib[name] = side / max(again.box[2] - again.box[0], again.box[3] - again.box[1])
  q = lambda v: [round(float(x), 4) for x in np.percentile(v, [25, 50, 75])]
  out = {"images": args.n, "one_face": len(ratios),
         "no_face": int(sum(f == 0 for f in found)),
         "several": int(sum(f > 1 for f in found)),
         "frame_over_box_q25_median_q75": q(ratios),
         "center_dx_q25_median_q75": q(dx), "center_dy_q25_median_q75": q(dy),
         "roundtrip_ratio_at_frame_1": {k: round(v, 4) for k, v in calib.items()},
         "fer_frame": round(float(np.median(ratios)) / float(np.mean(list(calib.values()))),
                            3)}
  print(json.dumps(out, indent=2))
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
  main()
