"""Faces followed through a video: tracks that hold through a miss and a crossing,
smoothing that follows its formula, and a summary per track."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from ferjax.predictor import FacePrediction
from ferjax.tracking import VideoTracks

CLASSES = ("angry", "fear", "happy", "sad", "surprise", "neutral")


def _face(probs, box=(100.0, 100.0, 160.0, 170.0)):
  p = dict(zip(CLASSES, map(float, probs)))
  k = int(np.argmax(probs))
  return FacePrediction(box=box, label=CLASSES[k], score=float(probs[k]),
                        probabilities=p, detection_score=0.9)


def test_smoothing_is_an_exponential_average_in_time():
  a = np.array([0.05, 0.05, 0.7, 0.1, 0.05, 0.05])
  b = np.array([0.05, 0.05, 0.1, 0.7, 0.05, 0.05])
  tau, fps = 0.5, 10.0
  tracks = VideoTracks(CLASSES, fps=fps, smooth_s=tau, min_confidence=0.5)
  ref, got, first = None, [], None
  for i in range(30):
    t = i / fps
    raw = a if t < 1.0 else b
    (f,) = tracks.update([_face(raw)], t)
    assert f.raw_probabilities == dict(zip(CLASSES, map(float, raw)))
    assert f.track is not None  # from the first frame on
    first = f.track if first is None else first
    assert f.track == first
    # float64 reference of p <- p + (1 - exp(-dt / tau)) (raw - p)
    ref = raw.copy() if ref is None else ref + (1 - math.exp(-(1 / fps) / tau)) * (raw - ref)
    got.append([f.probabilities[c] for c in CLASSES])
    np.testing.assert_allclose(got[-1], ref, rtol=1e-12, atol=1e-15)
    assert f.label == CLASSES[int(np.argmax(ref))]
    assert f.uncertain == bool(ref.max() < 0.5)
  # The label turns sad some frames after the raw one did: smoothing, not lag-free.
  labels = [CLASSES[int(np.argmax(g))] for g in got]
  assert labels.index("sad") > 9
  rows = tracks.summary()
  assert len(rows) == 1 and rows[0]["track"] == first
  assert rows[0]["seconds"] == pytest.approx(3.0)  # 0 s to 2.9 s, plus one frame
  assert sum(rows[0]["shares"].values()) == pytest.approx(1.0, abs=1e-3)
  assert rows[0]["dominant"] == "sad"


def test_smooth_zero_keeps_each_frames_probabilities():
  tracks = VideoTracks(CLASSES, fps=5, smooth_s=0, min_confidence=0.0)
  rng = np.random.default_rng(0)
  for i in range(6):
    p = rng.dirichlet(np.ones(6))
    (f,) = tracks.update([_face(p)], i / 5)
    assert f.probabilities == f.raw_probabilities


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
  """Two faces crossing the frame in opposite directions (one above the other); the
  top one is hidden for two frames half way."""
  import imageio_ffmpeg

  from ferjax import predict, samples
  predict._no_python_in_forked_child()  # no JAX fork warning from ffmpeg's start
  face = Image.fromarray(samples.astronaut()).crop((150, 30, 300, 210)).resize((100, 120))
  path = tmp_path_factory.mktemp("video") / "two.mp4"
  writer = imageio_ffmpeg.write_frames(str(path), (480, 300), fps=8, macro_block_size=1)
  writer.send(None)
  for k in range(16):
    canvas = Image.new("RGB", (480, 300), (90, 90, 90))
    if k not in (7, 8):
      canvas.paste(face, (10 + 22 * k, 10))
    canvas.paste(face, (370 - 22 * k, 170))
    writer.send(np.asarray(canvas).tobytes())
  writer.close()
  return path


def test_a_track_per_person_through_a_miss_and_a_crossing(two_people, tiny_weights,
                                                         tmp_path, capsys):
  from ferjax import predict
  from ferjax.errors import run_cli
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: predict.main([str(two_people), "--weights", str(tiny_weights),
                                  "--json", "--summary", "--timeline",
                                  str(tmp_path / "tl")]))
  assert e.value.code == 0
  lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
  rows = [r for r in lines if "face" in r]
  (summary,) = [r for r in lines if "summary" in r]
  assert {r["frame"] for r in rows} == set(range(16))
  top = [r for r in rows if (r["box"][1] + r["box"][3]) / 2 < 150]
  bottom = [r for r in rows if (r["box"][1] + r["box"][3]) / 2 >= 150]
  assert len(top) == 14 and len(bottom) == 16  # the top face is hidden in 2 frames
  top_ids = {r["track"] for r in top}
  bottom_ids = {r["track"] for r in bottom}
  assert len(top_ids) == 1 and len(bottom_ids) == 1 and top_ids != bottom_ids
  assert None not in top_ids | bottom_ids
  for r in rows:
    assert set(r["raw_probabilities"]) == set(r["probabilities"])
    assert r["time"] == pytest.approx(r["frame"] / 8, abs=1e-3)
  tracks = {s["track"]: s for s in summary["summary"]}
  assert set(tracks) == top_ids | bottom_ids
  # Tracked from frame 0 to frame 15, plus one frame's time.
  assert tracks[next(iter(bottom_ids))]["seconds"] == pytest.approx(16 / 8)
  assert (tmp_path / "tl" / "two-timeline.png").stat().st_size > 1000


def test_the_timeline_shows_each_tracks_labels_in_their_colours(tmp_path):
  import matplotlib.pyplot as plt
  tracks = VideoTracks(CLASSES, fps=10, smooth_s=0, min_confidence=0.0)
  happy = np.array([0.05, 0.05, 0.7, 0.1, 0.05, 0.05])
  sad = np.array([0.05, 0.05, 0.1, 0.7, 0.05, 0.05])
  for i in range(20):
    tracks.update([_face(happy if i < 10 else sad)], i / 10)
  (track,) = tracks.tracks.values()
  assert [r[2] for r in track.runs] == ["happy", "sad"]  # two runs, not 19 entries
  tracks.timeline(tmp_path / "t.png")
  pixels = np.asarray(Image.open(tmp_path / "t.png").convert("RGB")).reshape(-1, 3)
  colours = dict(zip(CLASSES, plt.get_cmap("tab10").colors))

  def count(label):
    want = np.round(np.array(colours[label]) * 255)
    return int((np.abs(pixels - want).max(1) <= 2).sum())

  # Each label's band (not just its legend swatch) is drawn: far more pixels.
  assert count("happy") > 20 * count("angry") > 0
  assert count("sad") > 20 * count("angry")


@pytest.mark.parametrize("absent_s, same", [(0.4, True), (2.0, False)])
def test_a_face_back_after_a_short_absence_keeps_its_track_and_after_a_long_one_not(
    absent_s, same):
  """A face hidden for less than LOST_S keeps its id; hidden for longer it comes back
  as a new track (ByteTrack forgets lost tracks; ferjax does not re-identify faces)."""
  from ferjax.tracking import LOST_S
  fps = 10.0
  assert absent_s < LOST_S if same else absent_s > LOST_S
  tracks = VideoTracks(CLASSES, fps=fps, smooth_s=0.5, min_confidence=0.0)
  p = np.array([0.05, 0.05, 0.7, 0.1, 0.05, 0.05])
  ids, t = [], 0.0
  gone = round(absent_s * fps)
  for i in range(10 + gone + 10):
    t = i / fps
    present = not 10 <= i < 10 + gone
    # The face drifts slowly to the right, as a person would.
    box = (100.0 + 2 * i, 100.0, 160.0 + 2 * i, 170.0)
    faces = tracks.update([_face(p, box)] if present else [], t)
    if present:
      ids.append(faces[0].track)
  before, after = set(ids[:10]), set(ids[10:])
  assert len(before) == 1 and len(after) == 1 and None not in before | after
  assert (before == after) is same
  assert len(tracks.summary()) == (1 if same else 2)
