"""ferjax.calibration and `python -m ferjax.calibrate`: the fit corrects a known
miscalibration, the measures match their definitions, the threshold is the one asked
for, and a calibrated file's probabilities reach every output."""

import json

import numpy as np
import pytest

from ferjax import calibrate, calibration, evaluate, inference, predict
from ferjax.errors import run_cli

import reference


def _overconfident(n=6000, c=6, k=3.0, seed=0):
  """Labels drawn from softmax(z): z is calibrated; k * z is overconfident."""
  rng = np.random.default_rng(seed)
  z = rng.normal(0, 1.5, (n, c))
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  labels = np.array([rng.choice(c, p=row) for row in p])
  return k * z, z, labels


def test_a_known_miscalibration_is_corrected():
  logits, true_z, labels = _overconfident()
  raw = calibration.calibrated_probs(logits, calibration.Scaling.identity(6))
  truth = calibration.calibrated_probs(true_z, calibration.Scaling.identity(6))
  for vector in (False, True):
    s = calibration.fit(logits, labels, vector=vector)
    np.testing.assert_allclose(s.scale, 1 / 3, rtol=0.12)  # the true temperature is 3
    fitted = calibration.calibrated_probs(logits, s)
    assert calibration.ece(fitted, labels) < calibration.ece(raw, labels) / 3
    # As good as the true probabilities, to sampling noise.
    assert calibration.nll(fitted, labels) <= calibration.nll(truth, labels) + 0.01
  assert calibration.ece(raw, labels) > 0.1


def test_tta_logits_are_fitted_through_the_mean_of_the_views():
  logits, _, labels = _overconfident(n=2000)
  views = np.stack([logits + np.random.default_rng(v).normal(0, 0.3, logits.shape)
                    for v in range(10)])
  s = calibration.fit(views, labels, vector=False)
  p = calibration.calibrated_probs(views, s)
  assert p.shape == (2000, 6)
  np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
  raw = calibration.calibrated_probs(views, calibration.Scaling.identity(6))
  assert calibration.nll(p, labels) < calibration.nll(raw, labels)


def test_measures_match_their_definitions():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
  labels = np.array([0, 1, 1, 0])
  # Bins of width 1/15: 0.9 -> bin 13, 0.6 -> bin 8, 0.7 -> bin 10, 0.55 -> bin 8.
  # Bin 8 holds faces 2 and 4: accuracy 0.5, confidence 0.575.
  expect = (abs(1 - 0.9) + 2 * abs(0.5 - 0.575) + abs(1 - 0.7)) / 4
  assert calibration.ece(probs, labels) == pytest.approx(expect, rel=1e-12)
  assert calibration.nll(probs, labels) == pytest.approx(
      -np.log([0.9, 0.4, 0.7, 0.55]).mean(), rel=1e-12)
  assert calibration.brier(probs, labels) == pytest.approx(
      np.mean([0.02, 0.72, 0.18, 0.405]), rel=1e-12)


def test_threshold_answers_the_most_confident_faces_at_the_target_accuracy():
  probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.52, 0.48]])
  labels = np.array([0, 0, 1, 0, 1])  # right, right, wrong, right, wrong
  assert calibration.threshold_for_accuracy(probs, labels, target=0.75) == 0.6
  assert calibration.threshold_for_accuracy(probs, labels, target=0.9) == 0.8
  assert calibration.threshold_for_accuracy(1 - probs, labels, target=0.99) == 1.0
  at = calibration.coverage(probs, labels, 0.6)
  assert at["coverage"] == 0.8 and at["answered_accuracy"] == 0.75


@pytest.fixture(scope="module")
def calibrated_weights(tiny_weights, toy_zip, tfds_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("calibrated") / "tiny_cal.npz"
  calibrate.main(["--weights", str(tiny_weights), "--data", str(toy_zip), "--data-dir",
                  str(tfds_dir), str(out)])
  return out


def _uncalibrated(weights, tmp_path):
  """The weights file as one written before calibration existed."""
  import dataclasses
  info, params, stats = inference.load_weights(weights)
  return inference.save_weights(tmp_path / "old.npz", params=params, batch_stats=stats,
                                info=dataclasses.replace(info, calibration={}))


def test_a_training_run_calibrates_its_best_checkpoint(trained_tiny, tiny_weights):
  report = json.loads((trained_tiny / "report.json").read_text())
  fit = report["calibration"]
  assert fit["n"] == report["validation"]["n"]
  assert fit["single"]["after"]["nll"] <= fit["single"]["before"]["nll"] + 1e-6
  saved = json.loads((trained_tiny / calibration.RUN_FILE).read_text())
  assert inference.Classifier.from_workdir(trained_tiny).info.calibration == saved
  assert inference.Classifier.load(tiny_weights).calibrated  # export carried it


def test_calibrate_writes_a_file_every_output_reads(calibrated_weights, tiny_weights,
                                                    toy_zip, tfds_dir, capsys, tmp_path):
  old = inference.Classifier.load(_uncalibrated(tiny_weights, tmp_path))
  clf = inference.Classifier.load(calibrated_weights)
  assert clf.calibrated and not old.calibrated and old.info.threshold(False) == 0.0
  fit = clf.info.calibration["fit"]
  assert fit["single"]["after"]["nll"] <= fit["single"]["before"]["nll"] + 1e-6
  x = np.random.default_rng(0).integers(0, 256, (5, 48, 48), np.uint8)
  np.testing.assert_array_equal(clf.classify(x, calibrated=False), old.classify(x))
  # classify and the function the other outputs use (calibrated_probs) both give the
  # calibrated softmax of the float64 network, within float32 rounding.
  ref = reference.logits64(*inference.load_weights(calibrated_weights), x)
  reference.assert_probs_close(clf.classify(x), clf.info, ref, what="classify")
  reference.assert_probs_close(
      calibration.calibrated_probs(clf.logits(x), clf.info.scaling(False)), clf.info, ref,
      what="calibrated_probs")
  capsys.readouterr()
  evaluate.main(["--weights", str(calibrated_weights), "--data", str(toy_zip),
                 "--data-dir", str(tfds_dir), "--json", "--no-tta"])
  out = json.loads(capsys.readouterr().out)
  for key in ("ece", "nll", "brier", "ece_uncalibrated", "nll_uncalibrated",
              "brier_uncalibrated", "coverage", "answered_accuracy", "threshold"):
    assert isinstance(out[key], float), key
  assert out["calibrated"] is True


def test_predict_marks_uncertain_faces(calibrated_weights, tmp_path, capsys):
  from PIL import Image

  from ferjax.predictor import Predictor
  clf = inference.Classifier.load(calibrated_weights)
  assert Predictor(clf).min_confidence == clf.info.threshold(False)  # the default
  predictor = Predictor(clf, min_confidence=0.5)
  meta = [((0, 0, 48, 48), 1.0, None)] * 2
  sure, unsure = predictor.faces_from(np.array([[0.9, 0.02, 0.02, 0.02, 0.02, 0.02],
                                                [0.4, 0.3, 0.1, 0.1, 0.05, 0.05]]), meta)
  assert (sure.uncertain, unsure.uncertain) == (False, True)
  crop = tmp_path / "face.png"
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48), np.uint8)).save(crop)
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: predict.main([str(crop), "--weights", str(calibrated_weights),
                                  "--json", "--min-confidence", "0"]))
  assert e.value.code == 0
  row = json.loads(capsys.readouterr().out.splitlines()[0])
  assert row["uncertain"] is False  # 0: every face is answered
  for bad in ("1.5", "-0.1", "nan"):
    with pytest.raises(SystemExit) as e:
      run_cli(lambda bad=bad: predict.main([str(crop), "--min-confidence", bad]))
    assert e.value.code == 2
    assert "--min-confidence must be 0 to 1" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_a_file_with_a_bad_temperature_is_refused(tiny_weights, tmp_path, scale):
  info, params, stats = inference.load_weights(tiny_weights)
  bad = dict(single={"scale": [scale] * 6, "bias": [0.0] * 6})
  import dataclasses
  path = inference.save_weights(tmp_path / "bad.npz", params=params, batch_stats=stats,
                                info=dataclasses.replace(info, calibration=bad))
  with pytest.raises(inference.WeightsError, match="invalid calibration"):
    inference.Classifier.load(path)


def test_an_uncalibrated_model_says_how_to_calibrate_it_and_a_final_fit_why_not(
    tiny_weights, toy_zip, tfds_dir, tmp_path, capsys):
  import dataclasses

  from PIL import Image
  old = _uncalibrated(tiny_weights, tmp_path)
  info, params, stats = inference.load_weights(old)
  final = inference.save_weights(
      tmp_path / "final.npz", params=params, batch_stats=stats,
      info=dataclasses.replace(info, source={**info.source, "final_fit": True}))
  crop = tmp_path / "face.png"
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48), np.uint8)).save(crop)
  for weights, says, not_says in ((old, "python -m ferjax.calibrate", "final fit"),
                                  (final, "final fit", "python -m ferjax.calibrate")):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
      run_cli(lambda w=weights: predict.main([str(crop), "--no-detect", "--weights",
                                              str(w), "--json"]))
    err = capsys.readouterr().err
    assert e.value.code == 0 and "not calibrated" in err and says in err, err
    assert not_says not in err
    out = evaluate.evaluate(weights=weights, data=toy_zip, data_dir=tfds_dir,
                            split="train", tta=False)
    assert out["calibrated"] is False and says in out["calibration_advice"]
