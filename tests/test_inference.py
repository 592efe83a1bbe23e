"""ferjax.inference: the predict step, weights files, the bucketed classifier, the
classifier of whole splits (`SplitPredictor`), the shipped model."""

import dataclasses
import json
import sys
import zipfile
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import configs, inference, input_pipeline
from ferjax import state as state_lib
from ferjax.classes import CLASSES_6

import reference

# A freshly initialised tiny network (7 classes) for the predict step's tests.
PREDICT_CONFIG = dataclasses.replace(configs.tiny(), num_classes=7)


def _crops(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), np.uint8)


def test_exported_weights_predict_as_the_run_does(trained_tiny, tiny_weights, toy_splits):
  run = inference.Classifier.from_workdir(trained_tiny)
  shipped = inference.Classifier.load(tiny_weights)
  assert shipped.classes == run.classes == CLASSES_6
  assert shipped.info.model == "tiny" and shipped.info.input_size == 48
  x = toy_splits["test"][0]
  p_run, p_file = run.classify(x), shipped.classify(x)
  # float16 storage: the same predictions, probabilities within float16 rounding.
  np.testing.assert_allclose(p_file, p_run, atol=2e-2)
  assert (p_file.argmax(-1) == p_run.argmax(-1)).mean() >= 0.95
  # Deterministic: the same crops give the same probabilities.
  np.testing.assert_array_equal(shipped.classify(x), p_file)


def test_any_count_gives_what_one_at_a_time_gives(tiny_weights):
  clf = inference.Classifier.load(tiny_weights)
  x = _crops(300)
  whole = clf.classify(x)  # 256 + 44 (padded to 64)
  assert whole.shape == (300, 6)
  np.testing.assert_allclose(whole.sum(-1), 1, rtol=1e-5)
  # Batch sizes 1, 8, 64 and 256 may take different kernels: each is held to the
  # float64 network, within float32 rounding.
  ref = reference.logits64(*inference.load_weights(tiny_weights), x)
  reference.assert_probs_close(whole, clf.info, ref, what="300 crops")
  for n in (1, 3, 9):
    reference.assert_probs_close(clf.classify(x[:n]), clf.info, ref[:n], what=f"{n} crops")
  assert clf.classify(x[:0]).shape == (0, 6)
  with pytest.raises(ValueError, match=r"\[N, 48, 48\]"):
    clf.classify(np.zeros((2, 40, 40), np.uint8))


def test_bad_weight_files_get_messages(tmp_path, tiny_weights):
  with pytest.raises(inference.WeightsError, match="No weights file"):
    inference.Classifier.load(tmp_path / "none.npz")
  (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
  with pytest.raises(inference.WeightsError, match="not a readable ferjax weights file"):
    inference.Classifier.load(tmp_path / "junk.npz")
  cut = tmp_path / "cut.npz"
  cut.write_bytes(tiny_weights.read_bytes()[:2000])
  with pytest.raises(inference.WeightsError, match="not a readable"):
    inference.Classifier.load(cut)
  np.savez(tmp_path / "plain.npz", a=np.zeros(3))
  with pytest.raises(inference.WeightsError, match="no ferjax metadata"):
    inference.Classifier.load(tmp_path / "plain.npz")
  # The metadata names 7 classes; the head has 6 outputs.
  with np.load(tiny_weights) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(arrays["__meta__"].tobytes())
  arrays["__meta__"] = np.frombuffer(json.dumps({**meta, "num_classes": 7}).encode(),
                                     np.uint8)
  np.savez(tmp_path / "seven.npz", **arrays)
  with pytest.raises(inference.WeightsError, match="does not fit a 'tiny' network with 7"):
    inference.Classifier.load(tmp_path / "seven.npz")
  arrays["__meta__"] = np.frombuffer(json.dumps({**meta, "model": "resnet99"}).encode(),
                                     np.uint8)
  np.savez(tmp_path / "unknown.npz", **arrays)
  with pytest.raises(inference.WeightsError, match="'resnet99' network"):
    inference.Classifier.load(tmp_path / "unknown.npz")


TRAINING = ("optax", "orbax", "tensorflow_datasets", "matplotlib", "ferjax.train")


@pytest.mark.parametrize("modules, forbidden", [
    # Using a model needs none of training's libraries.
    ("ferjax.inference, ferjax.predictor, ferjax.predict, ferjax.calibration",
     TRAINING + ("ferjax.bench", "ferjax.serve")),
    ("ferjax.serve", TRAINING + ("ferjax.bench",)),
    # Evaluating and exporting read checkpoints and data, never the training loop.
    ("ferjax.evaluate, ferjax.export, ferjax.calibrate", ("ferjax.train", "ferjax.bench")),
    # Nothing imports the benchmark.
    ("ferjax, ferjax.train, ferjax.loadtest, ferjax.report, ferjax.distributed",
     ("ferjax.bench",)),
])
def test_forbidden_imports(modules, forbidden):
  import subprocess
  code = (f"import sys, {modules}; print(' '.join(m for m in {list(forbidden)!r} "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == [], f"{modules} imported {out}"


def test_the_shipped_model_loads_and_predicts():
  path = inference.pretrained_path()
  assert path.is_file(), "the shipped weights file is missing from the package"
  assert path.stat().st_size < 10 * 2**20
  clf = inference.load_pretrained()
  assert clf.classes == CLASSES_6
  x = _crops(5, seed=1)
  p = clf.classify(x)
  assert p.shape == (5, 6)
  np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-5)
  np.testing.assert_array_equal(clf.classify(x), p)
  assert zipfile.is_zipfile(path)




def test_random_bytes_and_unreadable_weight_files_say_what_they_are(tmp_path,
                                                                     monkeypatch):
  junk = tmp_path / "random.npz"
  junk.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(inference.WeightsError, match="not an .npz archive") as e:
    inference.Classifier.load(junk)
  assert "allow_pickle" not in str(e.value)
  np.savez(tmp_path / "ok.npz", a=np.zeros(3))

  def denied(*a, **k):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(inference.np, "load", denied)  # as for a file mode 000 (not root)
  with pytest.raises(inference.WeightsError, match="permission denied"):
    inference.Classifier.load(tmp_path / "ok.npz")


def test_tta_prediction_is_the_mean_over_the_views():
  from ferjax import augment
  mesh = state_lib.make_mesh()
  state = state_lib.init_state(PREDICT_CONFIG, mesh=mesh, steps_per_epoch=1)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 48, 48), np.uint8))
  got = inference.predict_step(state, images, tta=True)
  # The float64 network's softmax over each of the ten views, averaged.
  ref = reference.logits64(PREDICT_CONFIG, state.params, state.batch_stats, images,
                           tta=True)
  assert ref.shape == (len(augment.tta_views(images)), 4, 7) == (10, 4, 7)
  reference.assert_probs_close(got, PREDICT_CONFIG, ref, tta=True, calibrated=False)


def test_cpu_prediction_in_passes_equals_one_pass_over_the_batch():
  mesh = state_lib.make_mesh()
  state = state_lib.init_state(PREDICT_CONFIG, mesh=mesh, steps_per_epoch=1)
  # 37 images: not a multiple of the pass size, so the last pass is padded.
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (37, 48, 48), np.uint8))
  ref = reference.logits64(PREDICT_CONFIG, state.params, state.batch_stats, images)
  reference.assert_probs_close(inference.predict_step(state, images, tta=False),
                               PREDICT_CONFIG, ref, calibrated=False)
  # Pass j holds images j, j + B/n, ...; the output goes back in the input's order.
  x = images.astype(jnp.float32)
  got = inference._apply_in_chunks(lambda x: x[:, 0, 0] * 2, x, 4)
  np.testing.assert_array_equal(got, x[:, 0, 0] * 2)


def test_a_split_is_classified_as_the_classifier_classifies_its_crops(tiny_weights):
  clf = inference.Classifier.load(tiny_weights)
  rng = np.random.default_rng(0)
  # 300 images: a full batch of 256 and a padded one.
  split = input_pipeline.Split(rng.integers(0, 256, (300, 48, 48), np.uint8),
                               rng.integers(0, 6, 300).astype(np.int32))
  predictor = inference.SplitPredictor(input_size=clf.info.input_size)
  # Each path held to the float64 network (they may differ in their float32 rounding).
  for tta in (False, True):
    ref = reference.logits64(*inference.load_weights(tiny_weights), split.images, tta=tta)
    for what, logits, probs in (
        ("split", predictor.logits(clf.state, split, tta=tta),
         predictor.probs(clf.state, split, tta=tta)),
        ("crops", clf.logits(split.images, tta=tta),
         clf.classify(split.images, tta=tta, calibrated=False))):
      reference.assert_logits_close(logits, ref, what=f"{what} logits, tta={tta}")
      reference.assert_probs_close(probs, clf.info, ref, tta=tta, calibrated=False,
                                   what=f"{what} probabilities, tta={tta}")
  assert predictor.logits(clf.state, split, tta=True).shape == (10, 300, 6)
  assert all(step._cache_size() == 1 for step in predictor.steps.values())
  empty = split.take(np.arange(0))
  assert predictor.probs(clf.state, empty).shape[0] == 0


def test_eval_batch_divides_over_any_device_count():
  for n in range(1, 9):
    b = inference.eval_batch_size(SimpleNamespace(devices=np.empty(n)))
    assert b % n == 0 and 256 <= b < 256 + n
