"""Small FER2013-like data sets, written in the real on-disk forms.

The images are learnable: class c has a bright horizontal bar at a height that depends
on c, over noise, so a tiny CNN separates them in a few epochs (and a flip keeps them).
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

# Many tests train the same tiny networks, and most of their time is XLA compiling the
# same programs again. A compilation cache shared by the session (subprocesses too,
# through the environment, set before JAX is imported) compiles each program once. It
# returns the executable that compiling would build, so no result changes; the tests
# that count compilations count jit's own cache, which a hit fills as a compile would.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="ferjax-tests-xla-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import numpy as np
import pytest
from PIL import Image

from ferjax.classes import CLASSES_7


def run_main(main, argv, capsys) -> tuple[int, str, str]:
  """Runs a command's `main(argv)` as the command line would (errors as messages, exit
  statuses); returns (exit status, stdout, stderr)."""
  from ferjax.errors import run_cli
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: main(argv))
  out = capsys.readouterr()
  return e.value.code, out.out, out.err


def make_images(n_per_class: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """[7 * n, 48, 48] uint8 images and their labels (CLASSES_7 order)."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for c in range(len(CLASSES_7)):
    for _ in range(n_per_class):
      img = rng.integers(0, 90, (48, 48)).astype(np.uint8)
      top = 3 + 6 * c
      img[top:top + 4, 6:42] = 230
      images.append(img)
      labels.append(c)
  return np.stack(images), np.asarray(labels)


def png_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")  # lossless: exact round trip
  return buf.getvalue()


def write_folders(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                  *, ext: str = ".png") -> Path:
  """Kaggle layout: root/<split>/<class>/<Prefix>_<i><ext>."""
  prefix = {"train": "Training", "test": "PublicTest"}
  for split, (images, labels) in splits.items():
    for i, (img, lab) in enumerate(zip(images, labels)):
      d = root / split / CLASSES_7[lab]
      d.mkdir(parents=True, exist_ok=True)
      (d / f"{prefix[split]}_{i:05d}{ext}").write_bytes(png_bytes(img))
  return root


def write_zip(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], *,
              top: str = "") -> Path:
  prefix = {"train": "Training", "test": "PublicTest"}
  with zipfile.ZipFile(path, "w") as zf:
    for split, (images, labels) in splits.items():
      for i, (img, lab) in enumerate(zip(images, labels)):
        zf.writestr(f"{top}{split}/{CLASSES_7[lab]}/{prefix[split]}_{i:05d}.png",
                    png_bytes(img))
  return path


def write_csv(path: Path, rows: list[tuple[int, np.ndarray, str]]) -> Path:
  with open(path, "w") as f:
    f.write("emotion,pixels,Usage\n")
    for emotion, img, usage in rows:
      f.write(f"{emotion},{' '.join(map(str, img.reshape(-1)))},{usage}\n")
  return path


@pytest.fixture(scope="session")
def toy_splits():
  return {"train": make_images(24, seed=0), "test": make_images(6, seed=1)}


@pytest.fixture(scope="session")
def toy_zip(tmp_path_factory, toy_splits) -> Path:
  return write_zip(tmp_path_factory.mktemp("zip") / "fer2013.zip", toy_splits)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
  """One TFDS data dir for the session, so each source is prepared once."""
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, toy_zip, tfds_dir) -> Path:
  """A workdir of the tiny variant trained for 3 epochs on the toy zip (6 classes)."""
  import dataclasses

  from ferjax import configs, train
  workdir = tmp_path_factory.mktemp("trained_tiny")
  config = dataclasses.replace(configs.get_config("tiny"), epochs=3, early_stopping=False)
  train.train_and_evaluate(config, workdir, data=toy_zip, data_dir=tfds_dir)
  return workdir


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, trained_tiny) -> Path:
  """`trained_tiny` exported as a weights file."""
  from ferjax import export
  return export.export(trained_tiny, tmp_path_factory.mktemp("weights") / "tiny.npz")
