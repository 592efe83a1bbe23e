"""Host-side data handling: validation cut, limits, batching order and prefetch."""

import numpy as np
import pytest

from ferjax import input_pipeline as ip


def test_validation_cut_is_stratified_deterministic_and_disjoint():
  labels = np.repeat(np.arange(5), [100, 50, 200, 30, 20])
  tr, va = ip.split_validation(labels, fraction=0.1, seed=0)
  tr2, va2 = ip.split_validation(labels, fraction=0.1, seed=0)
  np.testing.assert_array_equal(va, va2)
  assert not set(tr) & set(va) and len(tr) + len(va) == len(labels)
  np.testing.assert_array_equal(np.bincount(labels[va]), [10, 5, 20, 3, 2])
  _, va3 = ip.split_validation(labels, fraction=0.1, seed=1)
  assert set(va3) != set(va)


def test_stratified_limit_keeps_class_shares():
  labels = np.repeat(np.arange(3), [600, 300, 100])
  idx = ip.stratified_limit(labels, 100)
  assert len(idx) == 100
  np.testing.assert_array_equal(np.bincount(labels[idx]), [60, 30, 10])
  np.testing.assert_array_equal(idx[:60], np.arange(60))  # the first of each class
  assert len(ip.stratified_limit(labels, 5000)) == 1000


def test_batches_are_a_function_of_seed_and_epoch_and_resume_mid_epoch():
  split = ip.Split(np.arange(100 * 4, dtype=np.uint8).reshape(100, 2, 2),
                   np.arange(100, dtype=np.int32))
  full = [b[1] for b in ip.train_batches(split, batch_size=16, seed=3, epoch=2)]
  assert len(full) == 6  # 100 // 16; the remainder is dropped
  assert len(set(np.concatenate(full).tolist())) == 96
  resumed = [b[1] for b in ip.train_batches(split, batch_size=16, seed=3, epoch=2,
                                            start_step=4)]
  for a, b in zip(full[4:], resumed):
    np.testing.assert_array_equal(a, b)
  other = [b[1] for b in ip.train_batches(split, batch_size=16, seed=3, epoch=3)]
  assert not np.array_equal(np.concatenate(full), np.concatenate(other))


def test_eval_batches_pad_and_mask():
  split = ip.Split(np.ones((10, 48, 48), np.uint8), np.arange(10, dtype=np.int32))
  batches = list(ip.eval_batches(split, batch_size=4))
  assert [b[0].shape for b in batches] == [(4, 48, 48)] * 3
  assert batches[-1][2].tolist() == [True, True, False, False]
  assert np.concatenate([b[1][b[2]] for b in batches]).tolist() == list(range(10))


def test_prefetcher_keeps_order_and_reraises():
  assert list(ip.Prefetcher(iter(range(20)), size=3)) == list(range(20))

  def broken():
    yield 1
    raise RuntimeError("boom")

  it = ip.Prefetcher(broken())
  assert next(it) == 1
  with pytest.raises(RuntimeError, match="boom"):
    next(it)


def test_the_test_figure_is_public_test_where_the_source_tells_the_halves_apart(
    tmp_path, tfds_dir, monkeypatch):
  """Training reports and `evaluate` measure "test" on PublicTest where the source
  names its halves (Kaggle's files, the csv's Usage), else on all of test/; where
  PublicTest is there, nothing else is decoded."""
  import zipfile

  from conftest import make_images, png_bytes, write_csv, write_zip
  from ferjax.classes import CLASSES_7
  from ferjax.datasets.fer2013 import fer2013
  x, y = make_images(3, seed=11)
  halves = ("PublicTest", "PrivateTest")
  both = tmp_path / "both.zip"
  unnamed = tmp_path / "unnamed.zip"
  with zipfile.ZipFile(both, "w") as a, zipfile.ZipFile(unnamed, "w") as b:
    for i, (img, lab) in enumerate(zip(x, y)):
      a.writestr(f"test/{CLASSES_7[lab]}/{halves[i % 2]}_{i:05d}.png", png_bytes(img))
      b.writestr(f"test/{CLASSES_7[lab]}/face{i:05d}.png", png_bytes(img))
  csv = write_csv(tmp_path / "fer2013.csv",
                  [(int(lab), img, halves[i % 2]) for i, (img, lab) in enumerate(zip(x, y))])
  public = [i for i in range(len(y)) if i % 2 == 0]

  def examples(images, labels):  # the order is TFDS's, not the source's
    return sorted((int(lab), img.tobytes()) for img, lab in zip(images, labels))

  decoded = []
  decode = fer2013.decode_examples
  monkeypatch.setattr(fer2013, "decode_examples",
                      lambda source, **kw: decoded.append(len(source)) or decode(source, **kw))
  for source, decodes in ((both, [len(y)]), (csv, [len(public)])):
    decoded.clear()
    name, split = ip.load_test_split(source, num_classes=7, data_dir=tfds_dir)
    assert name == "public_test" and examples(split.images, split.labels) == examples(
        x[public], y[public])
    assert decoded == decodes  # folders: test/ once; csv: PublicTest alone
  name, split = ip.load_test_split(unnamed, num_classes=7, data_dir=tfds_dir)
  assert name == "test" and examples(split.images, split.labels) == examples(x, y)
  only_train = write_zip(tmp_path / "train_only.zip", {"train": make_images(2, seed=3)})
  assert ip.load_test_split(only_train, data_dir=tfds_dir) is None
