"""The FER2013 TFDS builder: manual download, array_record files, no TensorFlow.

Built once per source (the config name carries the source's form and fingerprint) under
the TFDS data dir, then read through `as_data_source()`, which needs no TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from ferjax.classes import CLASSES_7
from ferjax.datasets.fer2013 import sources

_DESCRIPTION = """\
FER2013: 35,887 48x48 grayscale face images labelled with one of seven expressions
(angry, disgust, fear, happy, sad, surprise, neutral). The Kaggle image-folder release
gives the splits train and test (the files of test/ are named PublicTest_* and
PrivateTest_*); the original csv gives train, public_test and private_test. Labels
follow the csv's order (ferjax.classes.CLASSES_7).
"""

_CITATION = """\
@inproceedings{goodfellow2013challenges,
  title={Challenges in Representation Learning: A report on three machine learning contests},
  author={Goodfellow, Ian J. and Erhan, Dumitru and Carrier, Pierre Luc and Courville, Aaron
          and Mirza, Mehdi and Hamner, Ben and Cukierski, Will and Tang, Yichuan and
          Thaler, David and Lee, Dong-Hyun and others},
  booktitle={ICML Workshop on Challenges in Representation Learning},
  year={2013}
}
"""


class Fer2013(tfds.core.GeneratorBasedBuilder):
  """FER2013 facial expressions, from the Kaggle image folders or the original csv."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download FER2013 yourself (it needs a free Kaggle account) in either form:
  * the image folders: Kaggle dataset 'msambare/fer2013', a zip (often saved as
    archive.zip) with train/<class>/*.jpg and test/<class>/*.jpg;
  * the original challenge file fer2013.csv (columns emotion,pixels,Usage), from the
    Kaggle competition 'challenges-in-representation-learning-facial-expression-
    recognition-challenge'.
Put fer2013.zip, archive.zip, fer2013.csv or the extracted folder (named fer2013, or the
train/ and test/ folders themselves) into the manual dir, by default
~/tensorflow_datasets/downloads/manual/, or give ferjax its path with --data PATH.
"""

  def __init__(self, *, source: str | os.PathLike | None = None, **kwargs):
    """Args: source: the zip, csv or folder; None looks in the manual dir."""
    self._source = source
    self.converted = 0  # images that were not 48x48 grayscale, set when generated
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(48, 48, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASSES_7),
            "id": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    source = self._source if self._source is not None else dl_manager.manual_dir
    data = sources.read(source)
    self.converted = data.converted
    return {name: self._generate_examples(split) for name, split in data.splits.items()}

  def _generate_examples(self, split: sources.SplitData):
    for image, label, key in zip(split.images, split.labels, split.ids):
      # A PIL image is encoded with PIL; a NumPy array would need TensorFlow.
      yield key, {"image": Image.fromarray(image, mode="L"), "label": int(label),
                  "id": key}


def builder_for(source: str | os.PathLike, *, data_dir: str | os.PathLike | None
                ) -> Fer2013:
  """A builder whose config name ties its cached files to this exact source."""
  path = sources.resolve(source)
  config = tfds.core.BuilderConfig(
      name=f"{sources.form_of(path)}-{sources.fingerprint(path)}",
      description=f"Built from {path}")
  return Fer2013(source=path, config=config,
                 data_dir=None if data_dir is None else os.fspath(data_dir),
                 file_format="array_record")


def default_manual_dir(data_dir: str | os.PathLike | None) -> Path:
  """TFDS's manual download directory under `data_dir` (or TFDS's default data dir)."""
  root = Path(data_dir) if data_dir else Path(
      os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
  return root / "downloads" / "manual"


def decode_examples(data_source, *, with_ids: bool = False):
  """Reads a whole TFDS data source into (images [N,48,48] uint8, labels [N] int64),
  and with `with_ids` also the examples' ids ('test/<class>/<file name>' for folders)."""
  n = len(data_source)
  images = np.empty((n, 48, 48), np.uint8)
  labels = np.empty((n,), np.int64)
  ids = []
  chunk = 1024
  for start in range(0, n, chunk):
    idx = list(range(start, min(n, start + chunk)))
    for i, ex in zip(idx, data_source.__getitems__(idx)):
      images[i] = ex["image"][..., 0]
      labels[i] = ex["label"]
      if with_ids:
        key = ex["id"]
        ids.append(key.decode() if isinstance(key, bytes) else str(key))
  return (images, labels, ids) if with_ids else (images, labels)
