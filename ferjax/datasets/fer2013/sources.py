"""Reads FER2013 in the two forms users have, with a clear error for every bad input.

Forms:
  * Kaggle image folders, as a zip or an extracted folder: `train/<class>/*.jpg` and
    `test/<class>/*.jpg` (either split may be missing; a common top folder is allowed).
  * The original `fer2013.csv` with columns `emotion,pixels,Usage`, giving the splits
    train, public_test and private_test.

Every image comes out as a 48x48 uint8 grayscale array; images of another size or mode
are converted and counted, so that the caller can warn once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferjax.classes import CLASSES_7
from ferjax.errors import DataError
from ferjax.images import to_face_array_image

IMAGE_SIZE = 48
CSV_COLUMNS = ("emotion", "pixels", "Usage")
CSV_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "public_test",
                      "PrivateTest": "private_test"}
FOLDER_SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# The names users may keep the download under, looked for inside a directory.
KNOWN_NAMES = ("fer2013.zip", "archive.zip", "fer2013.csv", "fer2013")

WHERE_TO_GET = (
    "Get FER2013 from Kaggle: the image-folder dataset 'msambare/fer2013' (a zip with "
    "train/ and test/ folders of 48x48 JPEGs) or the original challenge file "
    "'fer2013.csv' (columns emotion,pixels,Usage). Pass it with --data PATH, set "
    "FERJAX_DATA=PATH, or put it in TFDS's manual directory "
    "(~/tensorflow_datasets/downloads/manual/).")

_MEMBER_RE = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")


@dataclasses.dataclass
class SplitData:
  """One split: images [N, 48, 48] uint8, labels [N] in CLASSES_7 order, ids [N]."""
  images: np.ndarray
  labels: np.ndarray
  ids: list[str]


@dataclasses.dataclass
class Source:
  """The decoded data set: splits by name, and how many images needed converting."""
  form: str  # "folders" or "csv"
  splits: dict[str, SplitData]
  converted: int


def resolve(path: str | os.PathLike) -> Path:
  """Returns the file or folder that holds FER2013, looking inside a directory.

  A directory that is itself the image-folder layout (has train/ or test/) is returned
  as it is; otherwise one of KNOWN_NAMES inside it is.
  """
  path = Path(path).expanduser()
  if not path.exists():
    raise DataError(f"FER2013 was not found at '{path}': no such file or folder. "
                    + WHERE_TO_GET)
  if path.is_file():
    return path
  if any((path / s).is_dir() for s in FOLDER_SPLITS):
    return path
  for name in KNOWN_NAMES:
    if (path / name).exists():
      return resolve(path / name)
  raise DataError(
      f"The folder '{path}' does not hold FER2013: it has no train/ or test/ folder "
      f"and none of {', '.join(KNOWN_NAMES)}. " + WHERE_TO_GET)


def form_of(path: Path) -> str:
  """'folders' or 'csv', for a path returned by `resolve`."""
  if path.is_dir() or path.suffix.lower() == ".zip":
    return "folders"
  if path.suffix.lower() == ".csv":
    return "csv"
  raise DataError(f"'{path}' is neither a .zip, a .csv nor a folder. " + WHERE_TO_GET)


def fingerprint(path: Path) -> str:
  """A short string that changes when the source changes (path, sizes, mtimes)."""
  import hashlib
  h = hashlib.sha1(str(path.resolve()).encode())
  if path.is_dir():
    for root, _, files in sorted(os.walk(path)):
      for f in sorted(files):
        st = os.stat(os.path.join(root, f))
        h.update(f"{os.path.relpath(os.path.join(root, f), path)}:{st.st_size}:"
                 f"{st.st_mtime_ns}".encode())
  else:
    st = path.stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
  return h.hexdigest()[:12]


def read(path: str | os.PathLike) -> Source:
  """Reads and decodes the whole data set at `path` (a file or folder)."""
  path = resolve(path)
  form = form_of(path)
  if form == "csv":
    return _read_csv(path)
  return _read_folders(path)


# ----------------------------------------------------------------------------- folders

def _folder_members(path: Path) -> Iterator[tuple[str, str, str, callable]]:
  """Yields (split, class folder, name, read_bytes) for every file of the layout."""
  if path.is_dir():
    for root, _, files in os.walk(path):
      for f in files:
        full = os.path.join(root, f)
        rel = os.path.relpath(full, path).replace(os.sep, "/")
        m = _MEMBER_RE.search(rel)
        if m:
          yield m.group(1), m.group(2), m.group(3), (lambda p=full: Path(p).read_bytes())
    return
  try:
    zf = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise DataError(
        f"'{path}' is not a readable zip file ({e}); it may be truncated or corrupt. "
        "Download it again and check its size (the Kaggle FER2013 zip is about 60 MB)."
    ) from None
  with zf:
    for info in zf.infolist():
      if info.is_dir():
        continue
      m = _MEMBER_RE.search(info.filename)
      if m:
        yield m.group(1), m.group(2), m.group(3), (lambda i=info: zf.read(i))


def _read_folders(path: Path) -> Source:
  per_split: dict[str, tuple[list, list, list]] = {}
  converted = 0
  for split, cls, name, read_bytes in _folder_members(path):
    if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
      continue
    if cls.lower() not in CLASSES_7:
      raise DataError(
          f"Unknown class folder '{split}/{cls}/' in '{path}'. FER2013's class folders "
          f"are {', '.join(CLASSES_7)}; rename or remove that folder.")
    where = f"'{split}/{cls}/{name}' in '{path}'"
    try:
      data = read_bytes()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
      raise DataError(f"Cannot read {where} ({e}): the archive is truncated or corrupt. "
                      "Download FER2013 again.") from None
    image, was_converted = decode_image(data, where=where)
    converted += was_converted
    images, labels, ids = per_split.setdefault(split, ([], [], []))
    images.append(image)
    labels.append(CLASSES_7.index(cls.lower()))
    ids.append(f"{split}/{cls}/{name}")
  if not per_split:
    raise DataError(
        f"No images found in '{path}': expected train/<class>/*.jpg and/or "
        f"test/<class>/*.jpg with class folders {', '.join(CLASSES_7)}. " + WHERE_TO_GET)
  splits = {}
  for split, (images, labels, ids) in per_split.items():
    order = np.argsort(ids, kind="stable")  # zip and folder order differ; fix one
    splits[split] = SplitData(images=np.stack(images)[order],
                              labels=np.asarray(labels, np.int64)[order],
                              ids=[ids[i] for i in order])
  return Source(form="folders", splits=splits, converted=converted)


def decode_image(data: bytes, *, where: str) -> tuple[np.ndarray, bool]:
  """Decodes encoded image bytes to 48x48 uint8 grayscale; also says if it converted."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      converted = img.mode != "L" or img.size != (IMAGE_SIZE, IMAGE_SIZE)
      if converted:
        img = to_face_array_image(img)
      return np.asarray(img, dtype=np.uint8), converted
  except Image.DecompressionBombError:
    raise DataError(f"The image {where} has too many pixels to be a face crop. Replace "
                    "or delete that file.") from None
  except UnidentifiedImageError:
    raise DataError(f"The image {where} cannot be decoded (not an image format that "
                    "can be read). Replace or delete that file.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f"The image {where} cannot be decoded ({e}). Replace or delete "
                    "that file.") from None


# ----------------------------------------------------------------------------- csv

def _read_csv(path: Path) -> Source:
  per_split: dict[str, tuple[list, list, list]] = {}
  n_pixels = IMAGE_SIZE * IMAGE_SIZE
  try:
    f = open(path, newline="")
  except OSError as e:
    raise DataError(f"Cannot open '{path}' ({e}).") from None
  with f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      raise DataError(f"'{path}' is empty: expected the FER2013 csv with columns "
                      f"{','.join(CSV_COLUMNS)}.") from None
    except (UnicodeDecodeError, csv.Error) as e:
      raise DataError(f"'{path}' is not a text csv file ({e}).") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
      raise DataError(
          f"'{path}' has columns {','.join(header)[:200]} but FER2013's csv needs "
          f"{','.join(CSV_COLUMNS)} (missing: {', '.join(missing)}). Use the original "
          "fer2013.csv or the Kaggle image folders.")
    col = {c: header.index(c) for c in CSV_COLUMNS}
    try:
      for line_no, row in enumerate(reader, start=2):
        if not row:
          continue
        where = f"line {line_no} of '{path}'"
        try:
          emotion = int(row[col["emotion"]])
          usage = row[col["Usage"]].strip()
          pixels = np.array(row[col["pixels"]].split(), dtype=np.int64)
        except (IndexError, ValueError):
          raise DataError(
              f"Malformed row at {where}: expected an emotion 0..6, {n_pixels} pixel "
              "integers 0..255 separated by spaces, and a Usage.") from None
        if not 0 <= emotion < len(CLASSES_7):
          raise DataError(f"Bad emotion {emotion} at {where}: FER2013 labels are 0..6 "
                          f"({', '.join(CLASSES_7)}).")
        if pixels.size != n_pixels or pixels.min() < 0 or pixels.max() > 255:
          raise DataError(
              f"Bad pixel row at {where}: it has {pixels.size} values in "
              f"{pixels.min() if pixels.size else '-'}..{pixels.max() if pixels.size else '-'}"
              f", but a FER2013 row is {n_pixels} integers 0..255 (48x48).")
        if usage not in CSV_USAGE_TO_SPLIT:
          raise DataError(f"Unknown Usage '{usage}' at {where}: expected one of "
                          f"{', '.join(CSV_USAGE_TO_SPLIT)}.")
        images, labels, ids = per_split.setdefault(CSV_USAGE_TO_SPLIT[usage], ([], [], []))
        images.append(pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
        labels.append(emotion)
        ids.append(f"{usage}_{line_no}")
    except (UnicodeDecodeError, csv.Error) as e:
      raise DataError(f"'{path}' is not a readable csv file ({e}).") from None
  if not per_split:
    raise DataError(f"'{path}' has a header but no rows: it holds no images.")
  splits = {s: SplitData(images=np.stack(im), labels=np.asarray(lab, np.int64), ids=d)
            for s, (im, lab, d) in per_split.items()}
  return Source(form="csv", splits=splits, converted=0)
