"""`bench --video`'s measurement: the generated video has its two faces where they are
drawn, and the timing covers every analysed frame and every stage."""

import pytest

pytest.importorskip("imageio_ffmpeg")

from ferjax import videobench  # noqa: E402


def test_video_speed_rows_count_every_frame_and_stage(tmp_path):
  (row,) = videobench.run(seconds=1.0, cases=(("320x240", (320, 240), None),))
  assert row["frames_analysed"] == 30  # 1 s at 30 frames/s, every frame analysed
  assert row["command_frames_per_second"] > 0 and row["real_time_factor"] > 0
  inner = row["in_process"]
  assert inner["frames"] == 30
  assert set(inner["ms_per_frame"]) == {"decode", "detect_and_crop", "classify", "track"}
  assert all(v >= 0 for v in inner["ms_per_frame"].values())
  assert inner["ms_per_frame"]["decode"] > 0 and inner["ms_per_frame"]["detect_and_crop"] > 0
  total_ms = sum(inner["ms_per_frame"].values())
  assert inner["frames_per_second"] == pytest.approx(1000 / total_ms, rel=0.02)


def test_the_generated_video_has_two_faces_walking_apart(tmp_path):
  from ferjax import predict
  from ferjax.predictor import Predictor
  path = tmp_path / "walk.mp4"
  videobench.make_video(path, (480, 360), 1.0, fps=10)
  predictor = Predictor.from_pretrained()
  xs = []
  for i, _, rgb, _ in predict.video_frames(path, every=None, fps=None):
    faces = predictor.predict(rgb)
    assert len(faces) == 2, i
    top, bottom = sorted(faces, key=lambda f: f.box[1])
    xs.append((top.box[0], bottom.box[0]))
  assert len(xs) == 10
  # The top face walks right, the bottom one left.
  assert xs[-1][0] > xs[0][0] + 100 and xs[-1][1] < xs[0][1] - 100


def test_bench_video_prints_one_json_object_with_the_rows(monkeypatch, capsys):
  import functools
  import json

  from ferjax import bench
  small = (("320x240", (320, 240), 10.0),)
  monkeypatch.setattr(videobench, "run", functools.partial(
      videobench.run, seconds=1.0, cases=small))
  bench.main(["--video", "--json"])
  out = json.loads(capsys.readouterr().out)
  (row,) = out["rows"]
  assert row["video"] == "320x240" and row["fps_option"] == 10.0
  assert row["frames_analysed"] == 10 and row["in_process"]["frames"] == 10
  assert out["cpu"]
