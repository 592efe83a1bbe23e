"""ferjax.evaluate: a run, its exported file and the shipped model, on any split."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import configs, evaluate, input_pipeline, train
from ferjax.errors import ConfigError, run_cli


def test_evaluate_a_weights_file_like_its_run(trained_tiny, tiny_weights, toy_zip,
                                              tfds_dir, capsys):
  by_run = evaluate.evaluate(workdir=trained_tiny, data=toy_zip, data_dir=tfds_dir)
  evaluate.main(["--weights", str(tiny_weights), "--data", str(toy_zip), "--data-dir",
                 str(tfds_dir), "--json"])
  by_file = json.loads(capsys.readouterr().out)
  assert by_file["n"] == by_run["n"] == 36  # 6 classes x 6 test images
  assert abs(by_file["accuracy"] - by_run["accuracy"]) <= 1 / 36
  # Validation: the same cut of train/ as the run's (recorded in the file).
  val = evaluate.evaluate(weights=tiny_weights, data=toy_zip, data_dir=tfds_dir,
                          split="validation")
  assert val["n"] == json.loads((trained_tiny / "report.json").read_text())[
      "validation"]["n"]
  quick = evaluate.evaluate(weights=tiny_weights, data=toy_zip, data_dir=tfds_dir,
                            tta=False)
  assert quick["accuracy_tta"] is None and quick["accuracy"] == by_file["accuracy"]
  with pytest.raises(ConfigError, match="Say which model"):
    evaluate.evaluate(data=toy_zip)
  assert not (tiny_weights.parent / "checkpoints").exists()


def test_bad_choices_are_messages(tmp_path, capsys):
  with pytest.raises(ConfigError, match="unknown split 'dev'"):
    evaluate.load_split("dev", num_classes=6)
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: evaluate.main(["--weights", str(tmp_path / "none.npz"),
                                   "--data", str(tmp_path)]))
  err = capsys.readouterr().err
  assert e.value.code == 2 and "Traceback" not in err and "none.npz" in err


def test_json_stdout_is_pure_even_when_the_data_is_prepared_first(
    tiny_weights, toy_zip, tmp_path, capsys):
  fresh = tmp_path / "fresh_tfds"  # nothing prepared here yet
  evaluate.main(["--weights", str(tiny_weights), "--data", str(toy_zip), "--data-dir",
                 str(fresh), "--json", "--no-tta"])
  captured = capsys.readouterr()
  assert "Preparing FER2013" in captured.err  # the notices went to stderr
  assert json.loads(captured.out)["n"] == 36  # and stdout is one JSON object


def test_evaluate_a_run_as_its_report_did_and_in_bfloat16(tmp_path, toy_zip, tfds_dir,
                                                           capsys):
  config = dataclasses.replace(configs.tiny(), epochs=3, num_classes=7,
                               early_stopping=False)
  rep = train.train_and_evaluate(config, tmp_path, data=toy_zip, data_dir=tfds_dir)
  capsys.readouterr()
  evaluate.main(["--workdir", str(tmp_path), "--data", str(toy_zip), "--data-dir",
                 str(tfds_dir), "--json"])
  out = json.loads(capsys.readouterr().out)
  assert {"split", "n", "accuracy", "accuracy_tta", "per_class_recall",
          "confusion_matrix", "classes"} <= set(out)
  assert out["accuracy"] == rep["test"]["accuracy"] and out["n"] == 42

  # Predicting in bfloat16: the same float32 parameters, computed in bfloat16, give
  # the float32 predictions up to bfloat16 rounding.
  test = input_pipeline.load_fer2013(toy_zip, splits=("test",),
                                     num_classes=config.num_classes,
                                     data_dir=tfds_dir)["test"]
  c32 = evaluate.load_classifier(workdir=tmp_path)
  c16 = evaluate.load_classifier(workdir=tmp_path, dtype="bfloat16")
  assert c16.state.apply_fn.__self__.dtype == jnp.bfloat16
  assert c32.state.apply_fn.__self__.dtype == jnp.float32
  p32 = c32.classify(test.images)
  p16 = c16.classify(test.images)
  assert not np.array_equal(p16, p32)  # computed in another dtype
  np.testing.assert_allclose(p16, p32, atol=0.05)
  assert (p16.argmax(-1) == p32.argmax(-1)).mean() >= 0.95
  evaluate.main(["--workdir", str(tmp_path), "--data", str(toy_zip), "--data-dir",
                 str(tfds_dir), "--dtype", "bfloat16", "--json"])
  assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"
  with pytest.raises(ConfigError, match="unknown dtype 'float16'; choose one of float32"):
    evaluate.load_classifier(workdir=tmp_path, dtype="float16")
