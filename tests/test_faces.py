"""ferjax.faces: faces found where they are, none where there are none, crops aligned."""

import numpy as np
import pytest
from PIL import Image

from ferjax import faces, samples

# The astronaut sample's face, drawn by hand: (left, top, right, bottom).
ASTRONAUT_FACE = (175, 50, 275, 185)


@pytest.fixture(scope="module")
def detector():
  return faces.CenterFace()


def _iou(a, b):
  ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def test_the_astronaut_has_one_face_where_it_is(detector):
  found = detector.detect(samples.astronaut())
  assert len(found) == 1
  assert _iou(found[0].box, ASTRONAUT_FACE) > 0.6
  assert found[0].score > 0.8
  lm = found[0].landmarks
  assert lm.shape == (5, 2)
  assert lm[0, 0] < lm[1, 0]  # left eye left of the right eye, as seen
  assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_no_face_in_photos_without_people(detector, name):
  skimage_data = pytest.importorskip("skimage.data")  # photos that ferjax does not ship
  assert detector.detect(getattr(skimage_data, name)()) == []


def test_faces_pasted_into_a_scene_are_found_at_their_places(detector):
  face = Image.fromarray(samples.astronaut()).crop((150, 20, 300, 210))  # 150x190
  scene = Image.new("RGB", (1280, 720), (90, 110, 100))
  placed = []
  for (x, y), scale in (((60, 80), 1.0), ((500, 300), 0.6), ((900, 60), 1.5)):
    f = face.resize((round(150 * scale), round(190 * scale)))
    scene.paste(f, (x, y))
    placed.append((x, y, x + f.width, y + f.height))
  found = detector.detect(np.asarray(scene))
  assert len(found) == 3
  for region in placed:
    inside = [f for f in found if region[0] <= (f.box[0] + f.box[2]) / 2 <= region[2]
              and region[1] <= (f.box[1] + f.box[3]) / 2 <= region[3]]
    assert len(inside) == 1


def test_crop_is_rotated_upright_by_the_eyes(detector):
  photo = Image.fromarray(samples.astronaut())
  tilted = photo.rotate(25, center=(225, 118), resample=Image.Resampling.BILINEAR,
                        fillcolor=(128, 128, 128))
  (a,), (b,) = detector.detect(np.asarray(photo)), detector.detect(np.asarray(tilted))
  assert faces.eye_angle(b) == pytest.approx(faces.eye_angle(a) - 25, abs=6)
  ca = faces.face_crop(photo.convert("L"), a).astype(np.float64)
  cb = faces.face_crop(tilted.convert("L"), b).astype(np.float64)
  unaligned = faces.face_crop(tilted.convert("L"), b, align=False).astype(np.float64)
  corr = lambda u, v: np.corrcoef(u.ravel(), v.ravel())[0, 1]
  assert corr(ca, cb) > 0.8  # 0.88 measured
  assert corr(ca, cb) > corr(ca, unaligned) + 0.3  # unaligned: 0.35


def test_crop_frames_the_face_like_fer2013(detector):
  """A FER-framed crop, upscaled and detected again, frames the face as FER2013's
  images do (median 1.04 box sides a frame, experiments/face_framing.py)."""
  photo = Image.fromarray(samples.astronaut())
  (face,) = detector.detect(np.asarray(photo))
  crop = faces.face_crop(photo.convert("L"), face)
  assert crop.shape == (48, 48) and crop.dtype == np.uint8
  big = np.asarray(Image.fromarray(crop).resize((192, 192), Image.Resampling.BILINEAR))
  canvas = np.pad(big, 96, mode="edge")
  (again,) = detector.detect(np.stack([canvas] * 3, -1))
  side = max(again.box[2] - again.box[0], again.box[3] - again.box[1])
  assert 192 / side == pytest.approx(1.04, rel=0.1)


def test_the_weights_ship_in_the_wheel_as_their_provenance_says():
  """centerface.onnx, its LICENSE and PROVENANCE.md are package data (pyproject's
  globs take them into the wheel), and the file is the one PROVENANCE.md records."""
  import fnmatch
  import hashlib
  import importlib.resources
  import tomllib
  from pathlib import Path

  pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
  globs = pyproject["tool"]["setuptools"]["package-data"]["ferjax"]
  folder = Path(faces.CENTERFACE).parent
  def matches(path, glob):  # setuptools' globs: a * never crosses a /
    return len(path.parts) == len(Path(glob).parts) and all(
        fnmatch.fnmatch(a, b) for a, b in zip(path.parts, Path(glob).parts))

  for name in ("centerface.onnx", "LICENSE", "PROVENANCE.md"):
    assert any(matches(folder / name, g) for g in globs), name
  root = importlib.resources.files("ferjax")
  digest = hashlib.sha256((root / faces.CENTERFACE).read_bytes()).hexdigest()
  assert digest in (root / str(folder) / "PROVENANCE.md").read_text()
  assert "MIT License" in (root / str(folder) / "LICENSE").read_text()
