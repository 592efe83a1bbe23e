"""Quality flags: each raised by the degradation it names, on a real face, and carried
to every output."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from ferjax import faces, quality, samples

# The astronaut's face in ferjax's sample photo (found by CenterFace: box and the five
# landmarks, in the photo's pixels).
ASTRONAUT_BOX = (181.5, 58.2, 269.9, 177.8)
ASTRONAUT_LANDMARKS = np.array([[203.2, 101.7], [247.0, 104.5], [223.3, 125.1],
                                [203.4, 142.3], [241.3, 144.4]], np.float32)


@pytest.fixture(scope="module")
def face():
  """(48x48 crop of a real face, side of its square in the photo)."""
  f = faces.Face(box=ASTRONAUT_BOX, score=1.0, landmarks=ASTRONAUT_LANDMARKS)
  gray = Image.fromarray(samples.astronaut()).convert("L")
  return faces.face_crop(gray, f), faces.frame_side(f)


def test_sharpness_ignores_contrast_and_falls_with_blur(face):
  crop, _ = face
  x = crop.astype(np.float64)
  flat = np.clip(x.mean() + (x - x.mean()) * 0.5, 0, 255)
  # Scaling the pixels about their mean scales both variances alike.
  assert quality.sharpness(flat) == pytest.approx(quality.sharpness(x), rel=1e-12)
  blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(1.5)))
  assert quality.sharpness(blurred) < 0.5 * quality.sharpness(crop)
  assert quality.sharpness(np.full((48, 48), 7, np.uint8)) == 0.0
  # Batched equals one at a time.
  np.testing.assert_allclose(quality.sharpness(np.stack([crop, blurred])),
                             [quality.sharpness(crop), quality.sharpness(blurred)])


def test_head_pose_frontal_turned_bowed_and_rolled():
  frontal = np.array([[-1, 0], [1, 0], [0, 1.1], [-0.8, 2], [0.8, 2]], np.float64)
  yaw, pitch = quality.head_pose(frontal)
  assert yaw == pytest.approx(0.0, abs=1e-12) and pitch == pytest.approx(0.55)
  # The nose moved sideways by half the eyes' distance: yaw 0.5 (sign: which way).
  side = frontal.copy()
  side[2, 0] = 1.0
  assert quality.head_pose(side)[0] == pytest.approx(0.5)
  assert quality.head_pose(side * [-1, 1])[0] == pytest.approx(0.5)  # mirrored
  bowed = frontal.copy()
  bowed[2, 1] = 1.8
  assert quality.head_pose(bowed)[1] == pytest.approx(0.9)
  # Rolled, scaled and moved: the same pose.
  a = math.radians(30)
  rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  moved = 40 * side @ rot.T + [100, 50]
  np.testing.assert_allclose(quality.head_pose(moved), quality.head_pose(side),
                             atol=1e-9)


def test_each_flag_from_its_degradation(face):
  crop, side = face
  assert quality.flags(crop, side=side, landmarks=ASTRONAUT_LANDMARKS) == []
  small_side = quality.SMALL_SIDE - 2
  tiny = Image.fromarray(crop).resize((round(small_side),) * 2, Image.Resampling.BOX)
  small = np.asarray(tiny.resize((48, 48), Image.Resampling.BILINEAR))
  assert "small" in quality.flags(small, side=small_side)
  blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(2)))
  assert quality.flags(blurred, side=side) == ["blurred"]
  x = crop.astype(np.float64)
  dark = np.round(x * (quality.DARK_MEAN - 5) / x.mean()).astype(np.uint8)
  assert "dark" in quality.flags(dark, side=side)
  bright = np.clip(np.round(x * 2.0), 0, 255).astype(np.uint8)
  assert "overexposed" in quality.flags(bright, side=side)
  flat = np.round(x.mean() + (x - x.mean()) * (quality.LOW_STD - 3) / x.std()
                  ).astype(np.uint8)
  assert quality.flags(flat, side=side) == ["low_contrast"]
  turned = ASTRONAUT_LANDMARKS.copy()
  eyes = np.linalg.norm(turned[1] - turned[0])
  turned[2, 0] = (turned[0, 0] + turned[1, 0]) / 2 + (quality.TURNED_YAW + 0.1) * eyes
  assert quality.flags(crop, side=side, landmarks=turned) == ["turned"]
  bowed = ASTRONAUT_LANDMARKS.copy()
  eye_y, mouth_y = turned[:2, 1].mean(), turned[3:, 1].mean()
  bowed[2, 1] = eye_y + (quality.BOWED_PITCH + 0.1) * (mouth_y - eye_y)
  assert quality.flags(crop, side=side, landmarks=bowed) == ["turned"]
  # No side or landmarks known: neither small nor turned can be said.
  assert quality.flags(crop) == []


def test_flags_reach_json_csv_and_the_table(tmp_path, capsys):
  """A 24x24 face crop, classified whole, is small; each output says so."""
  from ferjax import predict
  from ferjax.errors import run_cli
  gray = Image.fromarray(samples.astronaut()).convert("L")
  f = faces.Face(box=ASTRONAUT_BOX, score=1.0, landmarks=ASTRONAUT_LANDMARKS)
  small = Image.fromarray(faces.face_crop(gray, f, size=24))
  path = tmp_path / "small_face.png"
  small.save(path)
  outs = {}
  for fmt in ("--json", "--csv", None):
    with pytest.raises(SystemExit) as e:
      run_cli(lambda fmt=fmt: predict.main([str(path)] + ([fmt] if fmt else [])))
    assert e.value.code == 0
    outs[fmt] = capsys.readouterr().out
  row = json.loads(outs["--json"].splitlines()[0])
  assert "small" in row["flags"]  # (and blurred: upscaled 2x, it is)
  (rec,) = list(csv.DictReader(io.StringIO(outs["--csv"])))
  assert rec["flags"].split() == row["flags"]
  assert f"[{', '.join(row['flags'])}]" in outs[None]
