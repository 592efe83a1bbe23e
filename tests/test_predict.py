"""python -m ferjax.predict: images, folders, videos; table, JSON, CSV; per-file errors."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from ferjax import predict
from ferjax.classes import CLASSES_6
from ferjax.errors import run_cli

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
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: predict.main(args))
  out = capsys.readouterr()
  return e.value.code, out.out, out.err


def test_json_rows_for_each_face_and_messages_for_the_rest(photos, tiny_weights, capsys):
  code, out, err = _run([str(photos), "--weights", str(tiny_weights), "--json"], capsys)
  assert code == 0
  rows = [json.loads(line) for line in out.splitlines()]
  by_file = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
  assert set(by_file) == {"astronaut.jpg", "crop48.png"}  # coffee: no face; notes: bad
  astro = by_file["astronaut.jpg"]
  assert {"file", "face", "box", "label", "score", "probabilities", "detection_score",
          "landmarks"} <= set(astro)
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
  assert rows[0][:7] == list(predict.Output.FIELDS) and rows[0][7:] == list(CLASSES_6)
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


def test_a_video_gives_one_row_per_processed_frame(tiny_weights, tmp_path, capsys):
  import imageio_ffmpeg
  frame = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((320, 320)))
  path = tmp_path / "clip.mp4"
  writer = imageio_ffmpeg.write_frames(str(path), (320, 320), fps=5, macro_block_size=1)
  writer.send(None)
  for i in range(10):
    writer.send(np.roll(frame, 4 * i, axis=1).tobytes())
  writer.close()
  (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
  code, out, err = _run([str(path), str(tmp_path / "broken.mp4"), "--weights",
                         str(tiny_weights), "--json", "--every", "3",
                         "--annotate", str(tmp_path / "ann")], capsys)
  assert code == 0
  rows = [json.loads(line) for line in out.splitlines()]
  assert [r["frame"] for r in rows] == [0, 3, 6, 9]
  assert [r["time"] for r in rows] == [0.0, 0.6, 1.2, 1.8]
  assert "broken.mp4: " in err and "Traceback" not in err
  assert (tmp_path / "ann" / "clip.mp4").stat().st_size > 1000
