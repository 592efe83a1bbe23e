"""The FER2013 builder and readers: forms, splits, classes, caching and bad input."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import make_images, png_bytes, write_csv, write_folders, write_zip
from ferjax import input_pipeline
from ferjax.classes import CLASSES_6, CLASSES_7, class_names
from ferjax.datasets.fer2013 import builder_for, sources
from ferjax.errors import DataError


def _sorted(images, labels):
  """Canonical order, to compare sets of examples whatever order a reader gives."""
  keys = [img.tobytes() + bytes([lab]) for img, lab in zip(images, labels)]
  order = np.argsort(keys)
  return images[order], labels[order]


def test_zip_gives_train_and_test_with_7_classes(toy_zip, toy_splits, tfds_dir):
  out = input_pipeline.load_fer2013(toy_zip, splits=("train", "test"), num_classes=7,
                                    data_dir=tfds_dir)
  for split in ("train", "test"):
    want_x, want_y = toy_splits[split]
    got = out[split]
    assert got.images.shape == (len(want_y), 48, 48) and got.images.dtype == np.uint8
    gx, gy = _sorted(got.images, got.labels)
    wx, wy = _sorted(want_x, want_y)
    np.testing.assert_array_equal(gx, wx)  # PNG round trip is exact
    np.testing.assert_array_equal(gy, wy)


def test_six_classes_drop_disgust_and_renumber(toy_zip, toy_splits, tfds_dir):
  out = input_pipeline.load_fer2013(toy_zip, splits=("train",), num_classes=6,
                                    data_dir=tfds_dir)["train"]
  _, labels7 = toy_splits["train"]
  assert len(out) == int((labels7 != CLASSES_7.index("disgust")).sum())
  assert set(out.labels.tolist()) == set(range(6))
  # Every image keeps its class name: the bar height identifies the CLASSES_7 index.
  for img, lab in zip(out.images[:50], out.labels[:50]):
    bar_row = int(np.argmax(img[:, 20]))
    c7 = (bar_row - 3) // 6
    assert CLASSES_6[lab] == CLASSES_7[c7]
  assert class_names(6) == ("angry", "fear", "happy", "sad", "surprise", "neutral")


def test_extracted_folder_equals_zip(tmp_path, toy_zip, toy_splits, tfds_dir):
  folder = write_folders(tmp_path / "fer", toy_splits)
  a = input_pipeline.load_fer2013(folder, splits=("train",), num_classes=7,
                                  data_dir=tfds_dir)["train"]
  b = input_pipeline.load_fer2013(toy_zip, splits=("train",), num_classes=7,
                                  data_dir=tfds_dir)["train"]
  np.testing.assert_array_equal(*[_sorted(s.images, s.labels)[0] for s in (a, b)])


def test_zip_with_top_folder_and_only_test_split(tmp_path, toy_splits, tfds_dir):
  path = write_zip(tmp_path / "archive.zip", {"test": toy_splits["test"]}, top="fer2013/")
  out = input_pipeline.load_fer2013(tmp_path, splits=("test",), num_classes=7,
                                    data_dir=tfds_dir)  # finds archive.zip in the folder
  assert len(out["test"]) == len(toy_splits["test"][1])
  with pytest.raises(DataError, match="'train' split is missing"):
    input_pipeline.load_fer2013(path, splits=("train",), data_dir=tfds_dir)


def test_csv_splits_and_test_is_both_halves(tmp_path, tfds_dir):
  x, y = make_images(3, seed=5)
  usages = ["Training", "PublicTest", "PrivateTest"]
  rows = [(int(lab), img, usages[i % 3]) for i, (img, lab) in enumerate(zip(x, y))]
  path = write_csv(tmp_path / "fer2013.csv", rows)
  out = input_pipeline.load_fer2013(
      path, splits=("train", "public_test", "private_test", "test"), num_classes=7,
      data_dir=tfds_dir)
  counts = {u: sum(r[2] == u for r in rows) for u in usages}
  assert len(out["train"]) == counts["Training"]
  assert len(out["public_test"]) == counts["PublicTest"]
  assert len(out["private_test"]) == counts["PrivateTest"]
  assert len(out["test"]) == counts["PublicTest"] + counts["PrivateTest"]
  gx, gy = _sorted(out["train"].images, out["train"].labels)
  train_rows = [(img, lab) for lab, img, u in rows if u == "Training"]
  wx, wy = _sorted(np.stack([r[0] for r in train_rows]),
                   np.array([r[1] for r in train_rows]))
  np.testing.assert_array_equal(gx, wx)
  np.testing.assert_array_equal(gy, wy)


def test_prepared_once_then_cached(tmp_path, toy_splits):
  path = write_zip(tmp_path / "fer2013.zip", toy_splits)
  builder = builder_for(path, data_dir=tmp_path / "tfds")
  assert not builder.is_prepared()
  input_pipeline.load_fer2013(path, splits=("train",), data_dir=tmp_path / "tfds")
  files = sorted((tmp_path / "tfds").rglob("*.array_record*"))
  stamps = [f.stat().st_mtime_ns for f in files]
  assert files and builder_for(path, data_dir=tmp_path / "tfds").is_prepared()
  input_pipeline.load_fer2013(path, splits=("train",), data_dir=tmp_path / "tfds")
  assert [f.stat().st_mtime_ns for f in files] == stamps


def test_no_tensorflow_is_imported():
  import sys
  assert "tensorflow" not in sys.modules


def test_odd_images_are_converted_with_one_warning(tmp_path, capsys):
  x, y = make_images(2, seed=3)
  root = write_folders(tmp_path / "fer", {"train": (x, y)})
  big = root / "train" / "happy" / "Training_big.jpg"
  Image.new("RGB", (96, 80), (200, 10, 10)).save(big)
  small = root / "train" / "sad" / "Training_small.png"
  Image.new("L", (30, 30), 99).save(small)
  out = input_pipeline.load_fer2013(root, splits=("train",), num_classes=7,
                                    data_dir=tmp_path / "tfds")["train"]
  assert len(out) == len(y) + 2 and out.images.shape[1:] == (48, 48)
  err = capsys.readouterr().err
  assert err.count("warning:") == 1 and "2 images were not 48x48 grayscale" in err
  # On a line of its own: no progress bar left on the line it is printed on.
  assert "\r" not in err, err
  assert any(line.startswith("warning: 2 images") for line in err.splitlines())


# ----------------------------------------------------------------------------- bad input

def _load(path, tmp_path, splits=("train",)):
  return input_pipeline.load_fer2013(path, splits=splits, data_dir=tmp_path / "tfds")


def test_missing_path_says_where_to_get_fer2013(tmp_path):
  with pytest.raises(DataError, match="not found at .*Kaggle"):
    _load(tmp_path / "nope.zip", tmp_path)


def test_no_data_given_points_at_manual_dir(tmp_path, monkeypatch):
  monkeypatch.delenv("FERJAX_DATA", raising=False)
  with pytest.raises(DataError, match="No FER2013 data given.*--data PATH"):
    input_pipeline.load_fer2013(None, splits=("train",), data_dir=tmp_path / "empty")


def test_data_from_environment_variable(toy_zip, tfds_dir, monkeypatch):
  monkeypatch.setenv("FERJAX_DATA", str(toy_zip))
  assert len(input_pipeline.load_fer2013(None, splits=("test",),
                                         data_dir=tfds_dir)["test"]) > 0


def test_manual_dir_is_the_default(tmp_path, toy_splits, monkeypatch):
  monkeypatch.delenv("FERJAX_DATA", raising=False)
  manual = tmp_path / "tfds" / "downloads" / "manual"
  manual.mkdir(parents=True)
  write_zip(manual / "fer2013.zip", toy_splits)
  out = input_pipeline.load_fer2013(None, splits=("train",), data_dir=tmp_path / "tfds")
  assert len(out["train"]) > 0


def test_truncated_zip(tmp_path, toy_zip):
  bad = tmp_path / "fer2013.zip"
  bad.write_bytes(toy_zip.read_bytes()[: toy_zip.stat().st_size // 2])
  with pytest.raises(DataError, match="not a readable zip file.*truncated or corrupt"):
    _load(bad, tmp_path)


def test_corrupt_member_in_zip(tmp_path):
  x, y = make_images(1, seed=0)
  path = write_zip(tmp_path / "fer2013.zip", {"train": (x, y)})
  data = bytearray(path.read_bytes())
  # Flip bytes inside the first member's compressed data: its CRC check then fails.
  start = 30 + len("train/angry/Training_00000.png") + 10
  data[start:start + 20] = bytes(20)
  path.write_bytes(bytes(data))
  with pytest.raises(DataError, match="(cannot be decoded|Cannot read)"):
    _load(path, tmp_path)


def test_csv_with_wrong_columns(tmp_path):
  path = tmp_path / "fer2013.csv"
  path.write_text("label,image\n0,1 2 3\n")
  with pytest.raises(DataError, match="missing: emotion, pixels, Usage"):
    _load(path, tmp_path)


@pytest.mark.parametrize("pixels", ["1 2 3", " ".join(["300"] * 2304), "a b c"])
def test_csv_with_bad_pixel_row(tmp_path, pixels):
  path = tmp_path / "fer2013.csv"
  good = " ".join(["7"] * 2304)
  path.write_text(f"emotion,pixels,Usage\n3,{good},Training\n3,{pixels},Training\n")
  with pytest.raises(DataError, match="line 3 of .*2304"):
    _load(path, tmp_path)


def test_undecodable_image(tmp_path, toy_splits):
  root = write_folders(tmp_path / "fer", {"train": toy_splits["test"]})
  (root / "train" / "happy" / "Training_broken.jpg").write_bytes(b"not a jpeg at all")
  with pytest.raises(DataError, match="Training_broken.jpg.*cannot be decoded") as e:
    _load(root, tmp_path)
  assert "BytesIO" not in str(e.value) and "object at 0x" not in str(e.value)


def test_kaggle_folders_give_public_and_private_test_by_file_name(tmp_path, tfds_dir):
  """Kaggle's test/ holds both halves, named PublicTest_* and PrivateTest_*."""
  x, y = make_images(4, seed=7)
  half = np.arange(len(y)) % 2  # 0: PublicTest, 1: PrivateTest
  path = tmp_path / "archive.zip"
  with zipfile.ZipFile(path, "w") as zf:
    for i, (img, lab) in enumerate(zip(x, y)):
      name = ("PublicTest", "PrivateTest")[half[i]]
      zf.writestr(f"test/{CLASSES_7[lab]}/{name}_{i:05d}.png", png_bytes(img))
  out = input_pipeline.load_fer2013(
      path, splits=("public_test", "private_test", "test"), num_classes=7,
      data_dir=tfds_dir)
  for split, h in (("public_test", 0), ("private_test", 1)):
    gx, gy = _sorted(out[split].images, out[split].labels)
    wx, wy = _sorted(x[half == h], y[half == h])
    np.testing.assert_array_equal(gx, wx)
    np.testing.assert_array_equal(gy, wy)
  assert len(out["test"]) == len(y)
  from ferjax import evaluate  # the evaluate command's splits read the same
  assert len(evaluate.load_split("private_test", num_classes=6, data=path,
                                 data_dir=tfds_dir)) == int(
      ((half == 1) & (y != CLASSES_7.index("disgust"))).sum())


def test_private_test_from_folders_without_it_says_so(tmp_path, toy_zip):
  # The toy zip's test/ has PublicTest_* files only, like ferjax's development copy.
  with pytest.raises(DataError, match="has no images named PrivateTest_") as e:
    input_pipeline.load_fer2013(toy_zip, splits=("private_test",), num_classes=6,
                                data_dir=tmp_path, required=("private_test",))
  assert "split 'test'" in str(e.value)
  from ferjax import evaluate  # the evaluate command gives the same message
  with pytest.raises(DataError, match="has no images named PrivateTest_"):
    evaluate.load_split("private_test", num_classes=6, data=toy_zip, data_dir=tmp_path)
  only_train = write_zip(tmp_path / "train_only.zip", {"train": make_images(2, seed=3)})
  with pytest.raises(DataError, match="files of an image folder's test/ named "
                                      "PublicTest_"):
    input_pipeline.load_fer2013(only_train, splits=("public_test",), num_classes=6,
                                data_dir=tmp_path, required=("public_test",))


def test_unknown_class_folder(tmp_path, toy_splits):
  root = write_folders(tmp_path / "fer", {"train": toy_splits["test"]})
  (root / "train" / "happiness").mkdir()
  (root / "train" / "happiness" / "x.png").write_bytes(png_bytes(toy_splits["test"][0][0]))
  with pytest.raises(DataError, match="Unknown class folder 'train/happiness/'"):
    _load(root, tmp_path)


def test_empty_split(tmp_path):
  root = tmp_path / "fer"
  for c in CLASSES_7:
    (root / "train" / c).mkdir(parents=True)
  with pytest.raises(DataError, match="No images found"):
    _load(root, tmp_path)


def test_six_class_split_with_only_disgust_is_empty(tmp_path):
  x, y = make_images(2, seed=0)
  keep = y == CLASSES_7.index("disgust")
  root = write_folders(tmp_path / "fer", {"train": (x[keep], y[keep])})
  with pytest.raises(DataError, match="no images of the 6-class task"):
    _load(root, tmp_path)


def test_form_detection():
  assert sources.form_of(sources.Path("a.csv")) == "csv"
  assert sources.form_of(sources.Path("a.zip")) == "folders"
  with pytest.raises(DataError, match="neither a .zip, a .csv"):
    sources.form_of(sources.Path("a.tar.gz"))


def test_builder_on_its_dummy_data(tmp_path):
  """The TFDS builder prepares its shipped dummy_data and reads it without TensorFlow:
  splits, sizes, features and labels as the folders say."""
  import sys
  from pathlib import Path

  import ferjax.datasets.fer2013 as pkg
  dummy = Path(pkg.__file__).parent / "dummy_data"
  builder = builder_for(dummy, data_dir=tmp_path)
  builder.download_and_prepare()
  info = builder.info
  assert set(info.splits) == {"train", "test"}
  assert info.splits["train"].num_examples == 14 and info.splits["test"].num_examples == 7
  assert info.features["label"].names == list(CLASSES_7)
  assert info.features["image"].shape == (48, 48, 1)
  assert "goodfellow2013challenges" in info.citation
  source = builder.as_data_source(split="train")
  labels = sorted(int(source[i]["label"]) for i in range(len(source)))
  assert labels == sorted(list(range(7)) * 2)
  assert source[0]["image"].shape == (48, 48, 1)
  assert "tensorflow" not in sys.modules
  assert (dummy.parent / "README.md").is_file() and (dummy.parent / "CITATIONS.bib").is_file()


def test_16bit_training_images_are_scaled_not_clipped():
  face = make_images(1, seed=0)[0][0]
  buf = io.BytesIO()
  Image.fromarray(face.astype(np.uint16) * 257).save(buf, format="PNG")
  got, converted = sources.decode_image(buf.getvalue(), where="x.png")
  assert converted
  np.testing.assert_array_equal(got, face)
