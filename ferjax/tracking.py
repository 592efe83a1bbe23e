"""Faces followed through a video: a track per person, its expression smoothed over time,
and a summary per track.

`VideoTracks.update(faces, time)` takes one analysed frame's `FacePrediction`s and
gives each its `track` (ByteTrack, from Roboflow's `trackers` package, on the face
boxes and detection scores) and its smoothed probabilities: an exponential moving
average of the calibrated probabilities over time with time constant `smooth_s`
seconds, `p <- p + (1 - exp(-dt / smooth_s)) (p_new - p)`, which does not depend on how
many frames are analysed a second. The raw probabilities stay beside the smoothed
ones. ByteTrack confirms a new track on the face's second analysed frame; ferjax gives
the track its id on the first (`_our_ids`), so every tracked face has one. docs/video.md says
why this tracker and how it measured.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# A track lost for longer than this (the detector missed the face, or it left and came
# back) is ended; a face found again after it gets a new track.
LOST_S = 1.0


@dataclasses.dataclass
class _Track:
  first: float
  last: float
  probs: np.ndarray
  labels: dict = dataclasses.field(default_factory=dict)  # label -> seconds
  # [start, end, label]: runs of one smoothed label (memory grows with label changes,
  # not with the video's length).
  runs: list = dataclasses.field(default_factory=list)


class VideoTracks:
  """Tracks and smoothed expressions for one video's analysed frames.

  Args:
    classes: the classifier's class names (the probabilities' order).
    fps: analysed frames a second (after --every / --fps).
    smooth_s: the moving average's time constant in seconds (0: raw probabilities).
    min_confidence: a face whose smoothed top probability is below this is uncertain.
  """

  def __init__(self, classes, *, fps: float, smooth_s: float, min_confidence: float,
               lost_s: float = LOST_S):
    from trackers import ByteTrackTracker
    self.classes = list(classes)
    self.smooth_s, self.min_confidence = smooth_s, min_confidence
    self.dt = 1.0 / fps
    # ferjax's detector keeps faces scoring 0.5 and more: all may start a track.
    self._tracker = ByteTrackTracker(lost_track_buffer=max(1, round(lost_s * 30)),
                                     frame_rate=fps, track_activation_threshold=0.5,
                                     high_conf_det_threshold=0.5,
                                     minimum_consecutive_frames=1)
    self.tracks: dict[int, _Track] = {}
    self._next_id = 0

  def update(self, faces: list, time: float) -> list:
    """`faces` (FacePredictions of the frame at `time` seconds) with `track`,
    smoothed `probabilities`, `label`, `score`, `uncertain` and `raw_probabilities`
    set; the same objects, in the same order."""
    import supervision as sv
    if not faces:
      self._tracker.update(sv.Detections.empty(), timestamp=time)
      return faces
    boxes = np.array([f.box for f in faces], np.float64)
    scores = np.array([f.detection_score for f in faces], np.float64)
    before = {id(t) for t in getattr(self._tracker, "tracks", [])}
    out = self._tracker.update(
        sv.Detections(xyxy=boxes, confidence=scores,
                      data={"index": np.arange(len(faces))}), timestamp=time)
    ids = self._our_ids(out, before)
    for i, f in enumerate(faces):
      raw = np.array([f.probabilities[c] for c in self.classes], np.float64)
      f.raw_probabilities = dict(f.probabilities)
      track = ids.get(i, -1)
      if track < 0:
        f.track = None
        continue
      f.track = track
      state = self.tracks.get(track)
      if state is None:
        state = self.tracks[track] = _Track(first=time, last=time, probs=raw)
      else:
        if self.smooth_s > 0:
          a = 1.0 - math.exp(-max(time - state.last, 0.0) / self.smooth_s)
          state.probs = state.probs + a * (raw - state.probs)
        else:
          state.probs = raw
        state.last = time
      p = state.probs
      k = int(p.argmax())
      f.probabilities = {c: float(v) for c, v in zip(self.classes, p)}
      f.label, f.score = self.classes[k], float(p[k])
      f.uncertain = bool(p[k] < self.min_confidence)
      state.labels[f.label] = state.labels.get(f.label, 0.0) + self.dt
      if state.runs and state.runs[-1][2] == f.label and \
          time - state.runs[-1][1] <= 1.5 * self.dt + 1e-9:
        state.runs[-1][1] = time + self.dt
      else:
        state.runs.append([time, time + self.dt, f.label])
    return faces

  def timeline(self, path, *, title: str = "") -> None:
    """A PNG at `path`: one band per track, coloured by its smoothed label over time
    (gaps where the face was not seen)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    colours = dict(zip(self.classes, plt.get_cmap("tab10").colors))
    ids = sorted(self.tracks)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * max(len(ids), 1)), dpi=110)
    for row, track in enumerate(ids):
      for start, end, label in self.tracks[track].runs:
        ax.broken_barh([(start, end - start)], (row - 0.4, 0.8),
                       facecolors=colours[label])
    ax.set_yticks(range(len(ids)), [f"#{t}" for t in ids])
    ax.set_ylim(-0.6, max(len(ids), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(title or "expression over time, per tracked face")
    ax.legend(handles=[Patch(color=colours[c], label=c) for c in self.classes],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

  def _our_ids(self, out, before: set) -> dict[int, int]:
    """Face index -> ferjax's track id. ByteTrack gives a new face no id (-1) until
    its second frame; the tracklet it spawned for it is found (the new ones, in the
    order of its -1 detections) and given an id at once, which it keeps when
    ByteTrack confirms it. Where the tracker's internals are not as expected, a face
    keeps -1 on its first frame."""
    tracklets = getattr(self._tracker, "tracks", None)
    ids = {}
    if tracklets is None:
      return {int(i): int(t) for i, t in zip(out.data["index"], out.tracker_id)}
    spawned = iter([t for t in tracklets if id(t) not in before])
    confirmed = {t.tracker_id: t for t in tracklets if getattr(t, "tracker_id", -1) >= 0}
    for i, bt in zip(out.data["index"], out.tracker_id):
      tracklet = confirmed.get(int(bt)) if bt >= 0 else next(spawned, None)
      if tracklet is None:
        ids[int(i)] = -1
        continue
      if not hasattr(tracklet, "ferjax_track"):
        tracklet.ferjax_track = self._next_id
        self._next_id += 1
      ids[int(i)] = tracklet.ferjax_track
    return ids

  def summary(self) -> list[dict]:
    """Per track: seconds in view (first to last analysed frame, plus one frame), the
    share of that time under each smoothed label, and the dominant one."""
    rows = []
    for track, s in sorted(self.tracks.items()):
      total = sum(s.labels.values())
      shares = {c: round(s.labels.get(c, 0.0) / total, 4) for c in self.classes}
      rows.append({"track": track, "first": round(s.first, 3),
                   "last": round(s.last, 3),
                   "seconds": round(s.last - s.first + self.dt, 3),
                   "shares": shares, "dominant": max(shares, key=shares.get)})
    return rows
