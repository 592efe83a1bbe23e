"""Why a face is hard to read: quality flags measured on its crop, box and landmarks.

Each flag marks a face whose expression the shipped model reads clearly worse than
others; every threshold below was set where the model's accuracy on the validation
split falls by five points or more, by `python experiments/quality_flags.py`
(experiments/results/quality/flags.json; docs/quality.md gives the figures):

  small        the face covers too few of the photo's pixels: the square that becomes
               the 48x48 crop is less than SMALL_SIDE pixels a side;
  blurred      the crop's sharpness (variance of its Laplacian over the variance of its
               pixels, so that contrast does not count) is below BLURRED_SHARPNESS;
  dark         the crop's mean brightness is below DARK_MEAN (0-255);
  overexposed  more than CLIPPED_SHARE of its pixels are at 255: detail lost to white
               (a bright face alone is not harder: FER2013's brightest validation
               faces are read better than the rest);
  low_contrast the standard deviation of its pixels is below LOW_STD;
  turned       the head is turned sideways or bowed: from the detector's five
               landmarks, |yaw| above TURNED_YAW or pitch above BOWED_PITCH (see
               `head_pose`). A head tilted back is not flagged: FER2013's faces with
               the lowest pitch are read no worse than the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FLAGS = ("small", "blurred", "dark", "overexposed", "low_contrast", "turned")

SMALL_SIDE = 32.0
BLURRED_SHARPNESS = 0.12
DARK_MEAN = 38.0
CLIPPED_SHARE = 0.30
LOW_STD = 17.0
TURNED_YAW = 0.15
BOWED_PITCH = 0.60


def sharpness(crops: np.ndarray) -> np.ndarray:
  """Per crop [N, H, W] (or one [H, W]): variance of the 4-neighbour Laplacian over the
  variance of the pixels (0 for a flat crop). Scaling the pixels leaves it unchanged;
  blur and upsampling lower it."""
  x = np.asarray(crops, np.float64)
  one = x.ndim == 2
  x = x[None] if one else x
  lap = (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
         - 4 * x[:, 1:-1, 1:-1])
  var = x.reshape(len(x), -1).var(-1)
  out = np.where(var > 0, lap.reshape(len(x), -1).var(-1) / np.maximum(var, 1e-12), 0.0)
  return out[0] if one else out


def head_pose(landmarks) -> tuple[float, float]:
  """(yaw, pitch) of a face from its five landmarks (left eye, right eye, nose, left
  and right mouth corners, as seen), in the frame where the eyes are level.

  yaw: how far the nose sits from the midpoint of the eyes, sideways, in units of the
    distance between the eyes (about 0 for a frontal face; its sign says which way).
  pitch: where the nose sits between the eyes' line (0) and the mouth's (1), about 0.5
    for a level head; higher when the head is bowed, lower when it is tilted back.
  """
  p = np.asarray(landmarks, np.float64).reshape(5, 2)
  eyes = (p[0] + p[1]) / 2
  ex, ey = p[1] - p[0]
  dist = math.hypot(ex, ey)
  if dist <= 0:
    return 0.0, 0.5
  ux, uy = ex / dist, ey / dist  # along the eyes; (-uy, ux) points down the face
  nose = p[2] - eyes
  mouth = (p[3] + p[4]) / 2 - eyes
  yaw = (nose[0] * ux + nose[1] * uy) / dist
  down_nose = -nose[0] * uy + nose[1] * ux
  down_mouth = -mouth[0] * uy + mouth[1] * ux
  pitch = down_nose / down_mouth if down_mouth > 0 else 0.5
  return float(yaw), float(pitch)


def measure(crop: np.ndarray, *, side: float | None = None, landmarks=None) -> dict:
  """What the flags are decided on, for one 48x48 uint8 crop: the photo pixels across
  its square (`side`, None if unknown), sharpness, pixel mean, standard deviation and
  share at 255, and yaw and pitch where there are landmarks."""
  c = np.asarray(crop)
  m = {"side": None if side is None else float(side),
       "sharpness": float(sharpness(c)), "mean": float(c.mean()),
       "std": float(c.std()), "clipped": float((c >= 255).mean()),
       "yaw": None, "pitch": None}
  if landmarks is not None:
    m["yaw"], m["pitch"] = head_pose(landmarks)
  return m


def flags_from(m: dict) -> list[str]:
  """The names of the flags (in FLAGS' order) that measures `m` raise."""
  out = []
  if m["side"] is not None and m["side"] < SMALL_SIDE:
    out.append("small")
  if m["sharpness"] < BLURRED_SHARPNESS:
    out.append("blurred")
  if m["mean"] < DARK_MEAN:
    out.append("dark")
  if m["clipped"] > CLIPPED_SHARE:
    out.append("overexposed")
  if m["std"] < LOW_STD:
    out.append("low_contrast")
  if m["yaw"] is not None and (abs(m["yaw"]) > TURNED_YAW or m["pitch"] > BOWED_PITCH):
    out.append("turned")
  return out


def flags(crop: np.ndarray, *, side: float | None = None, landmarks=None) -> list[str]:
  """The quality flags of one face crop (see the module's docstring)."""
  return flags_from(measure(crop, side=side, landmarks=landmarks))


def flag_matrix(measures: Sequence[dict]) -> np.ndarray:
  """[N, len(FLAGS)] booleans: which flags each face's measures raise."""
  out = np.zeros((len(measures), len(FLAGS)), bool)
  for i, m in enumerate(measures):
    for name in flags_from(m):
      out[i, FLAGS.index(name)] = True
  return out
