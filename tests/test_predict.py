"""python -m ferjax.predict: images, folders, videos; table, JSON, CSV; per-file errors."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from ferjax import predict
from ferjax.classes import CLASSES_6
from conftest import run_main

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  d = tmp_path_factory.mktemp("photos")
  Image.fromarray(skimage_data.astronaut()).save(d / "astronaut.jpg", quality=92)
  Image.fromarray(skimage_data.coffee()).save(d / "coffee.jpg", quality=92)
  crop = Image.fromarray(skimage_data.astronaut()).convert("L").crop((170, 50, 280, 180))
  crop.resize((48, 48)).save(d / "crop48.png")
  (d / "notes.jpg").write_text("not an image")
  return d


def _run(args, capsys):
  return run_main(predict.main, args, capsys)


def test_json_rows_for_each_face_and_messages_for_the_rest(photos, tiny_weights, capsys):
  code, out, err = _run([str(photos), "--weights", str(tiny_weights), "--json"], capsys)
  assert code == predict.EXIT_SOME_FAILED == 3  # notes.jpg failed, the others did not
  rows = [json.loads(line) for line in out.splitlines()]
  by_file = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
  assert set(by_file) == {"astronaut.jpg", "crop48.png"}  # coffee: no face; notes: bad
  astro = by_file["astronaut.jpg"]
  assert {"file", "face", "box", "label", "score", "probabilities", "detection_score",
          "landmarks", "uncertain", "flags"} <= set(astro)
  assert astro["flags"] == []  # a sharp, well-lit, frontal face, 103 px across
  x0, y0, x1, y1 = astro["box"]
  assert 150 < (x0 + x1) / 2 < 300 and 40 < (y0 + y1) / 2 < 200
  assert set(astro["probabilities"]) == set(CLASSES_6)
  assert abs(sum(astro["probabilities"].values()) - 1) < 1e-3
  assert astro["label"] == max(astro["probabilities"], key=astro["probabilities"].get)
  assert by_file["crop48.png"]["box"] == [0.0, 0.0, 48.0, 48.0]  # classified whole
  assert "warning: " in err and "coffee.jpg: no face found" in err
  assert "notes.jpg: " in err and "is not an image" in err
  assert "Traceback" not in err


def test_table_csv_and_annotate(photos, tiny_weights, tmp_path, capsys):
  astro = str(photos / "astronaut.jpg")
  code, out, _ = _run([astro, "--weights", str(tiny_weights)], capsys)
  assert code == 0 and "astronaut.jpg" in out and "face 0" in out
  code, out, _ = _run([astro, "--weights", str(tiny_weights), "--csv"], capsys)
  rows = list(csv.reader(io.StringIO(out)))
  n = len(predict.Output.FIELDS)
  assert rows[0][:n] == list(predict.Output.FIELDS) and rows[0][n:] == list(CLASSES_6)
  assert len(rows) == 2
  code, _, _ = _run([astro, "--weights", str(tiny_weights), "--annotate",
                     str(tmp_path / "ann")], capsys)
  assert code == 0
  with Image.open(tmp_path / "ann" / "astronaut.png") as im:
    assert im.size == (512, 512)
    drawn = np.asarray(im.convert("RGB"), np.int16)
  original = np.asarray(Image.open(astro).convert("RGB"), np.int16)
  assert np.abs(drawn - original).max() > 100  # a box and a label were drawn


def test_exit_status_when_nothing_could_be_processed(photos, tiny_weights, tmp_path,
                                                     capsys):
  (tmp_path / "empty").mkdir()
  code, out, err = _run([str(photos / "notes.jpg"), str(tmp_path / "empty"),
                         str(tmp_path / "missing.png"), "--weights", str(tiny_weights)],
                        capsys)
  assert code == 1 and out == ""
  assert "no images or videos in this folder" in err
  assert "missing.png: no such file or folder" in err
  code, _, err = _run([str(photos), "--weights", str(tmp_path / "none.npz")], capsys)
  assert code == 2 and "No weights file" in err
  code, _, err = _run([str(photos), "--every", "0"], capsys)
  assert code == 2


def _astronaut_clip(path, *, side: int, frames: int):
  """A 5 frames/s video of the astronaut photo (side x side) sliding right 4 px a frame."""
  import imageio_ffmpeg
  frame = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((side, side)))
  writer = imageio_ffmpeg.write_frames(str(path), (side, side), fps=5, macro_block_size=1)
  writer.send(None)
  for i in range(frames):
    writer.send(np.roll(frame, 4 * i, axis=1).tobytes())
  writer.close()
  return path


def test_a_video_gives_one_row_per_processed_frame(tiny_weights, tmp_path, capsys,
                                                   monkeypatch):
  monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")  # the test's own writer
  path = _astronaut_clip(tmp_path / "clip.mp4", side=320, frames=10)
  (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
  code, out, err = _run([str(path), str(tmp_path / "broken.mp4"), "--weights",
                         str(tiny_weights), "--json", "--every", "3",
                         "--annotate", str(tmp_path / "ann")], capsys)
  assert code == predict.EXIT_SOME_FAILED  # broken.mp4
  rows = [json.loads(line) for line in out.splitlines()]
  assert [r["frame"] for r in rows] == [0, 3, 6, 9]
  assert [r["time"] for r in rows] == [0.0, 0.6, 1.2, 1.8]
  assert "broken.mp4: " in err and "Traceback" not in err
  assert (tmp_path / "ann" / "clip.mp4").stat().st_size > 1000


def test_tracked_frames_names_each_stage_as_it_ends_and_yields_the_same(
    tiny_weights, tmp_path, monkeypatch):
  """`on_stage` (how videobench times the stages) hears every stage of every frame in
  order, and changes nothing that the loop yields."""
  from ferjax.predictor import Predictor
  monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")  # the test's own writer
  path = _astronaut_clip(tmp_path / "clip.mp4", side=160, frames=4)
  predictor = Predictor.load(weights=str(tiny_weights))

  def frames(**kw):
    return [(i, t, faces) for i, t, _, _, faces, _ in predict.tracked_frames(
        path, predictor, detect=None, every=None, fps=None, smooth=0.5, **kw)]

  heard = []
  timed = frames(on_stage=heard.append)
  assert heard == list(predict.VIDEO_STAGES) * 4
  assert timed == frames() and sum(len(f) for _, _, f in timed) > 0


def test_annotate_never_writes_over_a_file_inputs_included(tiny_weights, tmp_path,
                                                           capsys):
  # Two inputs whose annotated copies would both be party.png, in the inputs' folder.
  shots = tmp_path / "shots"
  shots.mkdir()
  Image.fromarray(skimage_data.astronaut()).save(shots / "party.jpg", quality=92)
  Image.fromarray(skimage_data.coffee()).save(shots / "party.png")
  before = {p.name: p.read_bytes() for p in shots.iterdir()}
  code, _, err = _run([str(shots), "--weights", str(tiny_weights), "--annotate",
                       str(shots)], capsys)
  assert code == 0, err
  for name, data in before.items():
    assert (shots / name).read_bytes() == data, f"{name} was written over"
  new = sorted(set(p.name for p in shots.iterdir()) - set(before))
  assert new == ["party-2.png", "party-3.png"]
  # Each copy shows its own photo (drawn on the decoded image, not re-read from disk).
  sources = {"party.jpg": np.asarray(Image.open(shots / "party.jpg").convert("RGB")),
             "party.png": skimage_data.coffee()}
  shown = set()
  for name in new:
    drawn = np.asarray(Image.open(shots / name).convert("RGB"), np.int16)
    diffs = {src: np.abs(drawn - img).mean() if img.shape == drawn.shape else np.inf
             for src, img in sources.items()}
    assert min(diffs.values()) < 5, diffs  # the photo, give or take boxes and labels
    shown.add(min(diffs, key=diffs.get))
  assert shown == {"party.jpg", "party.png"}


def test_annotate_to_a_file_or_with_names_at_the_length_limit(tiny_weights, tmp_path,
                                                              capsys):
  crop = Image.fromarray(skimage_data.astronaut()).convert("L").resize((48, 48))
  (tmp_path / "taken.png").write_bytes(b"mine")
  code, _, err = _run([str(tmp_path), "--weights", str(tiny_weights), "--annotate",
                       str(tmp_path / "taken.png")], capsys)
  assert code == 2 and "--annotate: " in err and "is a file" in err
  assert (tmp_path / "taken.png").read_bytes() == b"mine"
  # Names of 255 bytes that differ only in their suffix: both copies get a name that
  # fits (the second one's '-2' would not), and both inputs are done.
  inputs = tmp_path / "in"
  inputs.mkdir()
  stem = "\u00e9" * 125 + "x"  # 251 bytes: two-byte characters are never split
  for suffix in (".png", ".bmp"):
    crop.save(inputs / (stem + suffix))
  out_dir = tmp_path / "ann"
  code, out, err = _run([str(inputs), "--weights", str(tiny_weights), "--json",
                         "--annotate", str(out_dir)], capsys)
  assert code == 0, err
  assert len(out.splitlines()) == 2
  names = sorted(p.name for p in out_dir.iterdir())
  assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names)
  assert names[0].endswith("-2.png") or names[1].endswith("-2.png")


def test_reserve_output_takes_the_next_free_name(tmp_path):
  (tmp_path / "a.png").write_bytes(b"x")
  first = predict.reserve_output(tmp_path, "a", ".png")
  second = predict.reserve_output(tmp_path, "a", ".png")
  assert (first.name, second.name) == ("a-2.png", "a-3.png")
  assert (tmp_path / "a.png").read_bytes() == b"x"


def test_messages_say_what_is_wrong_with_a_path(tiny_weights, tmp_path, capsys,
                                                monkeypatch):
  loop = tmp_path / "loop"
  loop.symlink_to(loop)
  dangling = tmp_path / "dangling.jpg"
  dangling.symlink_to(tmp_path / "gone.jpg")
  code, out, err = _run([str(loop), str(dangling), str(tmp_path / "missing.png"),
                         "--weights", str(tiny_weights)], capsys)
  assert code == 1 and out == ""
  assert "loop: a symbolic link that loops back on itself" in err
  assert "dangling.jpg: a symbolic link to nothing" in err
  assert "missing.png: no such file or folder" in err
  # A folder or file that cannot be read (mode 000 as a user; root reads anything,
  # so the denial is made where the file system would make it).
  from ferjax import images
  locked = tmp_path / "locked"
  locked.mkdir()
  real_scandir = predict.os.scandir

  def scandir(path):
    if str(path) == str(locked):
      raise PermissionError(13, "Permission denied", str(path))
    return real_scandir(path)
  monkeypatch.setattr(predict.os, "scandir", scandir)
  photo = tmp_path / "photo.png"
  Image.fromarray(skimage_data.astronaut()).resize((64, 64)).save(photo)

  def denied(fp, *a, **k):
    raise PermissionError(13, "Permission denied", str(fp))
  monkeypatch.setattr(images.Image, "open", denied)
  code, out, err = _run([str(locked), str(photo), "--weights", str(tiny_weights)],
                        capsys)
  assert code == 1
  assert "locked: permission denied: this folder cannot be listed" in err
  assert "photo.png: " in err and "permission denied" in err
  assert "corrupt" not in err and "no images or videos" not in err


def test_an_audio_only_video_and_no_fork_warning(tiny_weights, tmp_path, capsys,
                                                 recwarn, monkeypatch):
  import subprocess

  import imageio_ffmpeg
  audio = tmp_path / "talk.mp4"
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi",
                  "-i", "anullsrc=r=8000:cl=mono", "-t", "1", "-c:a", "aac",
                  str(audio)], check=True)
  frame = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((96, 96)))
  clip = tmp_path / "clip.mp4"
  writer = imageio_ffmpeg.write_frames(str(clip), (96, 96), fps=5, macro_block_size=1)
  writer.send(None)
  for _ in range(3):
    writer.send(frame.tobytes())
  writer.close()
  monkeypatch.delenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", raising=False)
  recwarn.clear()  # the writer above is the test's, not predict's
  code, out, err = _run([str(audio), str(clip), "--weights", str(tiny_weights),
                         "--json", "--annotate", str(tmp_path / "ann")], capsys)
  assert code == predict.EXIT_SOME_FAILED
  assert "talk.mp4: the file has no video stream" in err
  assert "meta information" not in err
  assert len(out.splitlines()) >= 1
  forks = [w for w in recwarn if "os.fork()" in str(w.message)]
  assert not forks, forks[0].message


def test_workers_give_the_same_rows_in_the_same_order(photos, tiny_weights, capsys):
  """--workers 2 decodes and detects in two processes; what is printed is what one
  process prints, failures included."""
  runs = {}
  for n in ("1", "2"):
    code, out, err = _run([str(photos), "--weights", str(tiny_weights), "--json",
                           "--workers", n], capsys)
    assert code == predict.EXIT_SOME_FAILED
    assert "notes.jpg: " in err and "Traceback" not in err
    runs[n] = [json.loads(line) for line in out.splitlines()]
  assert runs["1"] == runs["2"] and len(runs["1"]) == 2
  code, _, err = _run([str(photos), "--workers", "0"], capsys)
  assert code == 2 and "--workers must be 1 to 256" in err


def test_an_annotated_video_keeps_its_audio(tiny_weights, tmp_path, capsys, monkeypatch):
  import subprocess

  import imageio_ffmpeg
  ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
  monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
  talk = tmp_path / "talk.mp4"
  subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i",
                  "testsrc=size=160x120:rate=5", "-f", "lavfi", "-i",
                  "sine=frequency=440:sample_rate=8000", "-t", "2", "-c:v", "libx264",
                  "-pix_fmt", "yuv420p", "-c:a", "aac", str(talk)], check=True)
  code, _, err = _run([str(talk), "--weights", str(tiny_weights), "--json",
                       "--annotate", str(tmp_path / "ann")], capsys)
  assert code == 0, err
  probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(tmp_path / "ann" / "talk.mp4")],
                         capture_output=True, text=True).stderr
  assert "Video:" in probe and "Audio:" in probe
  assert [p.name for p in (tmp_path / "ann").iterdir()] == ["talk.mp4"]  # no leftovers
