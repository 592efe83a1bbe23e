"""The Predictor: faces found in a photo, each classified by a trained network.

    import ferjax
    predictor = ferjax.Predictor.from_pretrained()
    for face in predictor.predict("photo.jpg"):
        print(face.box, face.label, face.score)

`predict` takes a path, bytes, a PIL image or a NumPy array; `predict_many` takes many
and classifies all their faces together, in the classifier's fixed batch sizes. An
image no larger than `WHOLE_MAX_SIDE` pixels (a face crop such as FER2013's 48x48), or
any image with `detect=False`, is classified whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from pathlib import Path

import numpy as np
from PIL import Image

from ferjax import faces as faces_lib
from ferjax import images as images_lib
from ferjax import quality
from ferjax.errors import FerjaxError, require_extra

# Images whose longer side is at most this are taken to be face crops already.
WHOLE_MAX_SIDE = 96
# What runs the classifier: "jax" (ferjax.inference.Classifier) or "onnx"
# (ferjax.onnx_runtime.OnnxClassifier, which never imports JAX). onnx is the default:
# a photo's answer comes in 1.04 s from a cold start against 4.9 s with JAX, which
# compiles first, and batches run as fast or faster (docs/deploy.md).
BACKENDS = ("jax", "onnx")
DEFAULT_BACKEND = "onnx"


def add_backend_flag(p) -> None:
  """--backend for the commands that run a model (predict, serve)."""
  p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                 help="what runs the classifier: jax, or onnx (onnxruntime, with no "
                 f"JAX import; an .onnx --weights file always uses it); default "
                 f"{DEFAULT_BACKEND}")


def load_classifier(*, workdir=None, weights=None, backend: str = DEFAULT_BACKEND):
  """A run's best checkpoint, a weights file (.npz, or an exported .onnx, which always
  runs on onnxruntime), or (neither given) the shipped model, on `backend`."""
  if backend not in BACKENDS:
    raise FerjaxError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
  if weights is not None and Path(weights).suffix.lower() == ".onnx":
    backend = "onnx"
  if workdir is not None:  # a run's checkpoint: orbax and the training stack
    require_extra("train", what="--workdir")
  elif backend == "jax":
    require_extra("jax", what="--backend jax")
  if backend == "onnx":
    from ferjax.onnx_runtime import OnnxClassifier
    if workdir is not None:
      from ferjax import inference, onnx_export
      info, params, stats = inference.restore_run(workdir)
      return OnnxClassifier(info, onnx_export.to_onnx(info, params, stats)
                            .SerializeToString())
    return (OnnxClassifier.load(weights) if weights is not None
            else OnnxClassifier.from_pretrained())
  from ferjax import inference
  if workdir is not None:
    return inference.Classifier.from_workdir(workdir)
  if weights is not None:
    return inference.Classifier.load(weights)
  return inference.load_pretrained()


@dataclasses.dataclass
class FacePrediction:
  """One face and its expression.

  Attributes:
    box: (left, top, right, bottom) in the image's pixels (upright, after EXIF).
    label: the most probable class.
    score: its probability (calibrated where the model is: of the faces given a
      score near p, about a fraction p are right).
    probabilities: every class's probability, in the classifier's class order.
    detection_score: the detector's confidence (1.0 for an image classified whole).
    landmarks: [[x, y]] x 5 (eyes, nose, mouth corners), or None.
    uncertain: the score is below the predictor's minimum confidence: not sure.
    flags: why the face may be hard to read (names from `ferjax.quality.FLAGS`:
      small, blurred, dark, overexposed, low_contrast, turned); empty when none.
    track: in a video, the person's track id (None for an image; `ferjax.tracking`).
    raw_probabilities: in a video, this frame's own probabilities, where
      `probabilities` (and label, score, uncertain) are smoothed over the track.
  """
  box: tuple[float, float, float, float]
  label: str
  score: float
  probabilities: dict[str, float]
  detection_score: float = 1.0
  landmarks: list[list[float]] | None = None
  uncertain: bool = False
  flags: list[str] = dataclasses.field(default_factory=list)
  track: int | None = None
  raw_probabilities: dict[str, float] | None = None

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    if self.raw_probabilities is None:  # a photo: no track, nothing smoothed
      del d["track"], d["raw_probabilities"]
    else:
      d["raw_probabilities"] = {k: round(v, 4) for k, v in self.raw_probabilities.items()}
    d["box"] = [round(v, 1) for v in self.box]
    d["score"] = round(self.score, 4)
    d["detection_score"] = round(self.detection_score, 4)
    d["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
    if self.landmarks is not None:
      d["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in self.landmarks]
    return d


class FaceMeta(NamedTuple):
  """What `Predictor.crops` knows of each crop besides its pixels."""
  box: tuple[float, float, float, float]
  detection_score: float
  landmarks: list | None
  flags: tuple[str, ...] = ()


class Predictor:
  """A face detector and an expression classifier.

  Args:
    classifier: the network (`ferjax.inference.Classifier`, or
      `ferjax.onnx_runtime.OnnxClassifier`).
    detector: anything with `detect(rgb) -> list[Face]` (default: CenterFace, made on
      first use).
    tta: average the ten test-time views of each face (10x the classifier's work).
    detect_size: the default detector looks at a copy of the photo scaled to at most
      this many pixels a side (smaller: faster, but small faces are missed).
    min_confidence: a face whose top probability is below this is `uncertain`
      (default: the threshold calibrated with the model, at which 80% of the answered
      validation faces were right; 0 where the model has none; 0 turns it off).
  """

  def __init__(self, classifier, *, detector=None, tta: bool = False,
               detect_size: int = 640, min_confidence: float | None = None):
    self.classifier = classifier
    self.classes = classifier.classes
    self._detector = detector
    self.tta = tta
    self.detect_size = detect_size
    if min_confidence is None:
      min_confidence = classifier.info.threshold(tta)
    check_min_confidence(min_confidence)
    self.min_confidence = float(min_confidence)

  @classmethod
  def load(cls, *, workdir=None, weights=None, backend: str = DEFAULT_BACKEND,
           **kwargs) -> Predictor:
    """A run's best checkpoint, a weights file, or (neither given) the shipped model,
    its classifier run by `backend` ("jax" or "onnx")."""
    return cls(load_classifier(workdir=workdir, weights=weights, backend=backend),
               **kwargs)

  @classmethod
  def from_pretrained(cls, *, backend: str = DEFAULT_BACKEND, **kwargs) -> Predictor:
    """The model that ships with ferjax."""
    return cls.load(backend=backend, **kwargs)

  @classmethod
  def from_workdir(cls, workdir: str | Path, *, backend: str = DEFAULT_BACKEND,
                   **kwargs) -> Predictor:
    """The best checkpoint of a training run."""
    return cls.load(workdir=workdir, backend=backend, **kwargs)

  @classmethod
  def from_weights(cls, path: str | Path, *, backend: str = DEFAULT_BACKEND,
                   **kwargs) -> Predictor:
    """A weights file written by `python -m ferjax.export` (.npz or .onnx)."""
    return cls.load(weights=path, backend=backend, **kwargs)

  @property
  def detector(self):
    if self._detector is None:
      self._detector = faces_lib.CenterFace(max_side=self.detect_size)
    return self._detector

  def crops(self, image, *, detect: bool | None = None
            ) -> tuple[np.ndarray, list[FaceMeta]]:
    """The 48x48 face crops of one image and, per crop, its `FaceMeta` (box,
    detection score, landmarks, quality flags). `detect=None`: detect unless the image
    is a face crop already."""
    return image_crops(image, lambda: self.detector, detect=detect)

  def predict(self, image, *, detect: bool | None = None) -> list[FacePrediction]:
    """The faces of one image, best detection first."""
    return self.predict_many([image], detect=detect)[0]

  def predict_many(self, images: Iterable, *, detect: bool | None = None
                   ) -> list[list[FacePrediction]]:
    """The faces of each image; all crops go through the classifier together."""
    all_crops, metas = [], []
    for image in images:
      crops, meta = self.crops(image, detect=detect)
      all_crops.append(crops)
      metas.append(meta)
    return self.classify_crops(all_crops, metas)

  def classify_crops(self, all_crops: Sequence[np.ndarray], metas: Sequence[list]
                     ) -> list[list[FacePrediction]]:
    """FacePredictions from the crops and metadata that `crops` returned, per image."""
    counts = [len(c) for c in all_crops]
    stacked = (np.concatenate(all_crops) if sum(counts)
               else np.zeros((0, 48, 48), np.uint8))
    probs = self.classifier.classify(stacked, tta=self.tta)
    out, i = [], 0
    for n, meta in zip(counts, metas):
      out.append(self.faces_from(probs[i:i + n], meta))
      i += n
    return out

  def faces_from(self, probs: np.ndarray, meta: Sequence) -> list[FacePrediction]:
    """FacePredictions from one image's crop probabilities and `crops` metadata."""
    faces = []
    for p, m in zip(probs, meta):
      box, det_score, landmarks, flags = FaceMeta(*m)
      k = int(p.argmax())
      faces.append(FacePrediction(
          box=tuple(float(v) for v in box), label=self.classes[k], score=float(p[k]),
          probabilities={c: float(v) for c, v in zip(self.classes, p)},
          detection_score=float(det_score), landmarks=landmarks,
          uncertain=bool(p[k] < self.min_confidence), flags=list(flags)))
    return faces


def image_crops(image, detector, *, detect: bool | None = None
                ) -> tuple[np.ndarray, list[FaceMeta]]:
  """`Predictor.crops` with the detector given as a function that returns it (called
  only when the image is searched for faces)."""
  img = images_lib.open_image(image)
  if detect is None:
    detect = max(img.size) > WHOLE_MAX_SIDE
  if not detect:
    # Classified whole: the centre square, as to_face_array_image crops it.
    crop = np.asarray(images_lib.to_face_array_image(img), np.uint8)
    side = min(img.width, img.height)
    x0, y0 = (img.width - side) // 2, (img.height - side) // 2
    box = (float(x0), float(y0), float(x0 + side), float(y0 + side))
    return crop[None], [FaceMeta(box, 1.0, None, tuple(quality.flags(crop, side=side)))]
  rgb = images_lib.to_rgb(img)
  found = detector().detect(np.asarray(rgb))
  gray = rgb.convert("L")
  crops = [faces_lib.face_crop(gray, f) for f in found]
  meta = [FaceMeta(f.box, f.score, None if f.landmarks is None else f.landmarks.tolist(),
                   tuple(quality.flags(c, side=faces_lib.frame_side(f),
                                       landmarks=f.landmarks)))
          for f, c in zip(found, crops)]
  return (np.stack(crops) if crops else np.zeros((0, 48, 48), np.uint8)), meta


def check_min_confidence(value: float) -> None:
  """A FerjaxError unless `value` is a probability (0 to 1)."""
  if not 0.0 <= value <= 1.0:  # NaN fails too
    raise FerjaxError(f"--min-confidence must be 0 to 1 (0: every face is answered); "
                      f"got {value}")


def annotate(image: Image.Image, faces: Sequence[FacePrediction]) -> Image.Image:
  """A copy of `image` (RGB) with each face's box, label and score drawn (in grey,
  the label marked with '?', where the face is uncertain)."""
  from PIL import ImageDraw, ImageFont
  out = images_lib.to_rgb(image).copy()
  draw = ImageDraw.Draw(out)
  for f in faces:
    x0, y0, x1, y1 = f.box
    width = max(2, round(max(out.size) / 300))
    size = max(12, round((x1 - x0) / 6))
    try:
      font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
      font = ImageFont.load_default()
    colour = (170, 170, 170) if f.uncertain else (255, 200, 0)  # grey: not sure
    draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
    who = f"#{f.track} " if f.track is not None else ""
    text = f"{who}{f.label}{'?' if f.uncertain else ''} {f.score:.2f}"
    tx, ty = x0, max(0, y0 - size - 2 * width)
    bbox = draw.textbbox((tx, ty), text, font=font)
    draw.rectangle(bbox, fill=colour)
    draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
  return out
