"""Host-side data: FER2013 splits as NumPy arrays, the validation cut, and batching.

The whole data set is about 65 MB as uint8, so it lives in host memory and batches are
gathered from NumPy arrays; a background thread prepares the next batches while the
device computes (prefetch). The order of examples in an epoch is a pure function of
(seed, epoch), so a run resumed mid-epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ferjax.classes import CLASSES_7, DROPPED_IN_6, class_names
from ferjax.errors import DataError

DATA_ENV = "FERJAX_DATA"


@dataclasses.dataclass
class Split:
  """Images [N, 48, 48] uint8 and labels [N] int32 of one split."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, idx: np.ndarray) -> Split:
    return Split(self.images[idx], self.labels[idx])


def resolve_data_path(data: str | os.PathLike | None, data_dir: str | None) -> Path:
  """--data, else $FERJAX_DATA, else TFDS's manual dir; says what to do if none holds it."""
  from ferjax.datasets.fer2013 import fer2013
  if data:
    return Path(data).expanduser()
  if os.environ.get(DATA_ENV):
    return Path(os.environ[DATA_ENV]).expanduser()
  manual = fer2013.default_manual_dir(data_dir)
  if not manual.exists():
    raise DataError(
        f"No FER2013 data given: pass --data PATH, set {DATA_ENV}=PATH, or put the "
        f"download into {manual}. " + " ".join(
            fer2013.Fer2013.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
  return manual


# Kaggle's image folders keep both halves of the test set in test/; their file names
# tell them apart (the csv has them as Usage PublicTest and PrivateTest).
KAGGLE_TEST_PREFIX = {"public_test": "PublicTest_", "private_test": "PrivateTest_"}


def load_fer2013(data: str | os.PathLike | None, *, splits: tuple[str, ...],
                 num_classes: int = 6, data_dir: str | None = None,
                 required: tuple[str, ...] | None = None) -> dict[str, Split]:
  """Prepares (once, cached under the TFDS data dir) and loads FER2013 splits.

  Args:
    data: the zip, csv or folder; None uses $FERJAX_DATA or the TFDS manual dir.
    splits: split names to load: "train", "test" (for the csv: both test halves),
      "public_test", "private_test" (the csv's Usage; in Kaggle's image folders, the
      files of test/ named PublicTest_* and PrivateTest_*).
    num_classes: 6 drops Disgust and renumbers the rest (ferjax.classes.CLASSES_6).
    data_dir: TFDS data dir for the prepared files (default: TFDS's own default).
    required: splits that must be present and non-empty (default: all of `splits`);
      the others are left out of the result when the source lacks them.

  Returns:
    {split: Split} with labels in `class_names(num_classes)` order.
  """
  from ferjax.datasets.fer2013 import fer2013
  class_names(num_classes)  # validates
  required = splits if required is None else required
  path = resolve_data_path(data, data_dir)
  builder = fer2013.builder_for(path, data_dir=data_dir)
  if not builder.is_prepared():
    print(f"Preparing FER2013 from {path} (once; cached in {builder.data_dir})",
          file=sys.stderr)
    _quiet_absl()
    import tensorflow_datasets as tfds
    t0 = time.perf_counter()
    # TFDS's own bars end with a carriage return, not a new line, so whatever is
    # printed next lands on the bar's line; preparing takes seconds, not minutes.
    tfds.disable_progress_bar()
    try:
      # TFDS prints "Downloading and preparing dataset ..." on stdout, which must stay
      # clean for --json/--csv: its notices go to stderr with ours.
      with contextlib.redirect_stdout(sys.stderr):
        builder.download_and_prepare()
    finally:
      tfds.enable_progress_bar()
    print(f"Prepared in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if builder.converted:
      print(f"warning: {builder.converted} images were not 48x48 grayscale and were "
            "converted (grayscale, center crop, resize to 48x48)", file=sys.stderr)
  _quiet_absl()
  sources = builder.as_data_source()
  available = set(sources)
  out = {}
  for split in splits:
    parts = [split] if split in available else (
        [s for s in ("public_test", "private_test") if s in available]
        if split == "test" else [])
    by_name = None  # Kaggle's folders: one half of test/, told apart by file name
    if not parts and split in KAGGLE_TEST_PREFIX and "test" in available:
      parts, by_name = ["test"], KAGGLE_TEST_PREFIX[split]
    if not parts:
      if split in required:
        if split in KAGGLE_TEST_PREFIX:
          where = ("it comes from the csv fer2013.csv (its Usage column) or from the "
                   f"files of an image folder's test/ named {KAGGLE_TEST_PREFIX[split]}*")
        else:
          where = (f"for the image folders, '{split}' comes from {split}/<class>/*.jpg; "
                   "the csv gives train, public_test and private_test (test = both)")
        raise DataError(
            f"The '{split}' split is missing from '{path}' (it has: "
            f"{', '.join(sorted(available))}); {where}.")
      continue
    if by_name is None:
      decoded = [fer2013.decode_examples(sources[p]) for p in parts]
      images = np.concatenate([d[0] for d in decoded])
      labels = np.concatenate([d[1] for d in decoded])
    else:
      images, labels, ids = fer2013.decode_examples(sources["test"], with_ids=True)
      keep = np.array([i.rsplit("/", 1)[-1].startswith(by_name) for i in ids], bool)
      if not keep.any():
        if split in required:
          raise DataError(
              f"The test/ folder of '{path}' has no images named {by_name}*, so it "
              f"cannot give '{split}': Kaggle's download names the two halves of test/ "
              "PublicTest_*.jpg and PrivateTest_*.jpg. Use the split 'test' for the "
              "whole folder.")
        continue
      images, labels = images[keep], labels[keep]
    s = _to_task(Split(images, labels), num_classes)
    if len(s) == 0 and split in required:
      raise DataError(f"The '{split}' split of '{path}' has no images of the "
                      f"{num_classes}-class task.")
    out[split] = s
  return out


def load_test_split(data, *, num_classes: int = 6, data_dir: str | None = None
                    ) -> tuple[str, Split] | None:
  """The split that a figure called "test" is measured on, and its name: PublicTest
  where the source tells test's two halves apart (the csv's Usage, or Kaggle's files
  named PublicTest_*), else all of test/; None where the source has no test images."""
  # One split at a time: in Kaggle's folders both come from decoding test/, so asking
  # for the two at once would decode it twice when PublicTest is all that is needed.
  for name in ("public_test", "test"):
    loaded = load_fer2013(data, splits=(name,), num_classes=num_classes,
                          data_dir=data_dir, required=())
    if name in loaded and len(loaded[name]):
      return name, loaded[name]
  return None


def _quiet_absl() -> None:
  # TFDS suggests OpenCV on every read; PIL is what we use, on purpose.
  import logging
  logging.getLogger("absl").setLevel(logging.ERROR)


def _to_task(split: Split, num_classes: int) -> Split:
  if num_classes == 7:
    return Split(split.images, split.labels.astype(np.int32))
  keep = split.labels != CLASSES_7.index(DROPPED_IN_6)
  names = class_names(num_classes)
  remap = np.array([names.index(c) if c in names else -1 for c in CLASSES_7], np.int32)
  return Split(split.images[keep], remap[split.labels[keep]])


def split_validation(labels: np.ndarray, *, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """A deterministic, stratified cut: (train indices, validation indices), both sorted.

  Each class gives round(fraction * its count) examples, chosen by a seeded shuffle.
  """
  if not 0 < fraction < 1:
    raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  val = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    val.append(rng.permutation(idx)[:int(round(fraction * len(idx)))])
  val = np.sort(np.concatenate(val))
  train = np.setdiff1d(np.arange(len(labels)), val)
  return train, val


def cut_validation(full: Split, *, fraction: float, seed: int,
                   train_limit: int | None = None, final_fit: bool = False
                   ) -> tuple[Split, Split | None]:
  """(train, validation) of a training split: the stratified, seeded validation cut,
  then --train-limit's stratified subset of what is left for training. A final fit
  (`final_fit`) trains on the whole split and holds nothing out: (train, None)."""
  if final_fit:
    train, val = full, None
  else:
    train_idx, val_idx = split_validation(full.labels, fraction=fraction, seed=seed)
    train, val = full.take(train_idx), full.take(val_idx)
  if train_limit:
    train = train.take(stratified_limit(train.labels, train_limit))
  return train, val


def stratified_limit(labels: np.ndarray, n: int) -> np.ndarray:
  """Indices of the first `n` examples, keeping each class's share (largest remainder)."""
  if n >= len(labels):
    return np.arange(len(labels))
  classes, counts = np.unique(labels, return_counts=True)
  exact = counts * n / len(labels)
  quota = np.floor(exact).astype(int)
  for i in np.argsort(-(exact - quota), kind="stable")[:n - quota.sum()]:
    quota[i] += 1
  idx = [np.flatnonzero(labels == c)[:q] for c, q in zip(classes, quota)]
  return np.sort(np.concatenate(idx))


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
  """The order of examples in `epoch`: a pure function of (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(split: Split, *, batch_size: int, seed: int, epoch: int,
                  start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields the epoch's full batches from `start_step` on; the remainder is dropped."""
  perm = epoch_permutation(len(split), seed=seed, epoch=epoch)
  for step in range(start_step, len(split) // batch_size):
    idx = np.sort(perm[step * batch_size:(step + 1) * batch_size])
    yield split.images[idx], split.labels[idx]


def eval_batches(split: Split, *, batch_size: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Yields (images, labels, mask) in order; the last batch is padded, mask marks real."""
  n = len(split)
  for start in range(0, n, batch_size):
    stop = min(n, start + batch_size)
    pad = batch_size - (stop - start)
    images, labels = split.images[start:stop], split.labels[start:stop]
    mask = np.ones(batch_size, bool)
    if pad:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
      labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
      mask[stop - start:] = False
    yield images, labels, mask


class Prefetcher:
  """Runs an iterator in a background thread, `size` items ahead, timing the waits.

  `put` (e.g. `jax.device_put` onto a sharding) runs in the thread too, so host-to-device
  copies overlap compute. `wait_seconds` is the time the consumer spent blocked.
  """

  _DONE = object()

  def __init__(self, iterator: Iterator, *, size: int = 2,
               put: Callable | None = None):
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._put = put or (lambda x: x)
    self._error: BaseException | None = None
    self.wait_seconds = 0.0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
    self._thread.start()

  def _run(self, iterator):
    try:
      for item in iterator:
        if self._stop.is_set():
          return
        self._queue.put(self._put(item))
    except BaseException as e:  # re-raised in the consumer
      self._error = e
    self._queue.put(self._DONE)

  def __iter__(self):
    return self

  def __next__(self):
    t = time.perf_counter()
    item = self._queue.get()
    self.wait_seconds += time.perf_counter() - t
    if item is self._DONE:
      if self._error is not None:
        raise self._error
      raise StopIteration
    return item

  def close(self):
    self._stop.set()
    while self._thread.is_alive():  # unblock a put on a full queue
      try:
        self._queue.get(timeout=0.05)
      except queue.Empty:
        pass
