"""The training loop: learning, early stopping, resume, recompilation, divergence, the
workdir's rules as the loop keeps them, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ferjax import checkpointing, configs, evaluate, train
from ferjax import state as state_lib
from ferjax import steps as steps_lib
from ferjax import workdir as workdir_lib
from ferjax.errors import ConfigError, DataError, TrainingDiverged, run_cli
from conftest import make_images, write_zip

TINY = dataclasses.replace(configs.tiny(), epochs=2, num_classes=7)


def _params(workdir: Path, which: str, config) -> dict:
  mesh = state_lib.make_mesh()
  ckpt = checkpointing.Checkpoints(workdir)
  state, extra = ckpt.restore(which, state_lib.abstract_state(config, mesh=mesh,
                                                          steps_per_epoch=1))
  ckpt.close()
  return jax.device_get(state.params), extra


def test_accuracy_rises_on_a_learnable_toy_set(tmp_path, toy_zip, tfds_dir):
  config = dataclasses.replace(TINY, epochs=4, early_stopping=False)
  rep = train.train_and_evaluate(config, tmp_path, data=toy_zip, data_dir=tfds_dir)
  rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
  assert rows[-1]["train_accuracy"] > rows[0]["train_accuracy"]
  assert rows[-1]["val_loss"] < rows[0]["val_loss"]
  # Chance is 1/7; the bars are easy.
  assert rep["test"]["accuracy"] > 0.6 and rep["train_accuracy_clean"] > 0.6
  assert rep["test"]["n"] == 42 and len(rep["test"]["confusion_matrix"]) == 7
  for f in ("config.json", "report.json", "curves.png", "confusion.png"):
    assert (tmp_path / f).stat().st_size > 0
  assert set(rows[0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy",
                          "learning_rate", "epoch_seconds", "images_per_second"}
  if sys.platform == "linux":  # resident memory, now and at its peak
    assert 0 < rows[-1]["rss_mib"] <= rows[-1]["peak_rss_mib"]


def test_early_stopping_stops_and_keeps_the_best(tmp_path, toy_zip, tfds_dir):
  # A learning rate of zero never improves after epoch 1: patience 2 stops at epoch 3.
  config = dataclasses.replace(TINY, epochs=10, learning_rate=1e-12, patience=2,
                               monitor="val_accuracy")
  rep = train.train_and_evaluate(config, tmp_path, data=toy_zip, data_dir=tfds_dir)
  assert rep["stopped_early"] and rep["epochs_run"] == 3 and rep["best_epoch"] == 1
  _, extra = _params(tmp_path, "best", config)
  assert extra["best_epoch"] == 1 and extra["epoch"] == 1


def test_resume_equals_uninterrupted_and_no_recompilation(tmp_path, toy_zip, tfds_dir,
                                                          monkeypatch):
  made, predictors = [], []
  real_step, real_predictor = steps_lib.jit_train_step, train.SplitPredictor
  monkeypatch.setattr(steps_lib, "jit_train_step",
                      lambda *a, **k: made.append(real_step(*a, **k)) or made[-1])
  monkeypatch.setattr(train, "SplitPredictor", lambda *a, **k: predictors.append(
      real_predictor(*a, **k)) or predictors[-1])
  config = dataclasses.replace(TINY, augment=configs.augmented().augment)
  ref = train.train_and_evaluate(config, tmp_path / "a", data=toy_zip, data_dir=tfds_dir)
  assert made[0]._cache_size() == 1  # two epochs, one compilation
  # Each epoch's validation and the report's splits, one compilation.
  assert predictors[0].steps[False, False]._cache_size() == 1

  # Interrupted twice: mid-epoch 1 and mid-epoch 2, each time resumed.
  assert train.train_and_evaluate(config, tmp_path / "b", data=toy_zip,
                                  data_dir=tfds_dir, stop_after_steps=3) is None
  assert train.train_and_evaluate(config, tmp_path / "b", data=toy_zip,
                                  data_dir=tfds_dir, stop_after_steps=5) is None
  got = train.train_and_evaluate(config, tmp_path / "b", data=toy_zip, data_dir=tfds_dir)

  a, _ = _params(tmp_path / "a", "latest", config)
  b, _ = _params(tmp_path / "b", "latest", config)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  rows = lambda d: (d / "metrics.jsonl").read_text().splitlines()
  strip = lambda r: {k: v for k, v in json.loads(r).items()
                     if k not in ("epoch_seconds", "images_per_second", "rss_mib",
                                  "peak_rss_mib")}
  assert [strip(r) for r in rows(tmp_path / "a")] == [strip(r) for r in rows(tmp_path / "b")]
  assert got["test"]["accuracy"] == ref["test"]["accuracy"]
  assert got["validation"]["confusion_matrix"] == ref["validation"]["confusion_matrix"]


def test_a_low_resolution_step_sees_the_same_crop_smaller():
  config = dataclasses.replace(TINY, augment=configs.NO_AUGMENT, input_size=40)
  key = jax.random.key(3)
  flat = jnp.broadcast_to(jnp.arange(4, dtype=jnp.uint8)[:, None, None] * 60,
                          (4, 48, 48))
  ramp = jnp.broadcast_to(jnp.arange(48, dtype=jnp.uint8) * 5, (4, 48, 48))
  full = steps_lib.train_inputs(key, ramp, config)
  small = steps_lib.train_inputs(key, ramp, config, 32)
  assert full.shape == (4, 40, 40, 1) and small.shape == (4, 32, 32, 1)
  # A flat image stays flat and keeps its level (float32 rounding of values <= 1).
  got = steps_lib.train_inputs(key, flat, config, 32)[..., 0]
  np.testing.assert_allclose(got, np.broadcast_to(np.arange(4)[:, None, None] * 60 / 255,
                                                  got.shape), atol=1e-6)
  # A ramp keeps its field of view: the same 40 columns span 32, so every 4 output
  # columns (away from the border) span 5 input columns, and the row's mean is kept.
  step_in = float(full[0, 0, 1, 0] - full[0, 0, 0, 0])
  np.testing.assert_allclose(small[:, 0, 5:-1, 0] - small[:, 0, 1:-5, 0], 5 * step_in,
                             atol=1e-6)
  np.testing.assert_allclose(small[:, 0, :, 0].mean(1), full[:, 0, :, 0].mean(1),
                             atol=1e-6)


def test_progressive_resizing_trains_small_then_full_and_resumes_exactly(
    tmp_path, toy_zip, tfds_dir, monkeypatch):
  sizes, real_step = [], steps_lib.jit_train_step
  monkeypatch.setattr(steps_lib, "jit_train_step",
                      lambda *a, **k: sizes.append(k["size"]) or real_step(*a, **k))
  # tiny's dense head sees 11x11 maps from 44 to 47 pixels.
  config = dataclasses.replace(TINY, epochs=4, early_stopping=False, input_size=47,
                               low_res_size=44, low_res_fraction=0.5)
  train.train_and_evaluate(config, tmp_path / "a", data=toy_zip, data_dir=tfds_dir)
  assert sizes == [44, 47]
  train_sizes = lambda d: [json.loads(r)["train_size"]
                           for r in (d / "metrics.jsonl").read_text().splitlines()]
  assert train_sizes(tmp_path / "a") == [44, 44, 47, 47]
  # Interrupted in epoch 2 (small), at its end (the boundary: 4 steps an epoch) and in
  # epoch 3 (full), each time resumed: the same weights, and after the boundary only
  # the full-size step is compiled.
  for stop, compiled in ((5, [44]), (3, [44]), (2, [47]), (None, [47])):
    sizes.clear()
    train.train_and_evaluate(config, tmp_path / "b", data=toy_zip, data_dir=tfds_dir,
                             stop_after_steps=stop)
    assert sizes == compiled, stop
  jax.tree.map(np.testing.assert_array_equal, _params(tmp_path / "a", "latest", config),
               _params(tmp_path / "b", "latest", config))
  # More epochs continue at full size: the boundary is the one the run started with
  # (2 of 4), not half of the new 6.
  train.train_and_evaluate(dataclasses.replace(config, epochs=6), tmp_path / "a",
                           data=toy_zip, data_dir=tfds_dir)
  assert train_sizes(tmp_path / "a") == [44, 44, 47, 47, 47, 47]


def test_the_moving_average_of_the_weights_follows_its_formula():
  config = dataclasses.replace(TINY, ema_decay=0.9)
  mesh = state_lib.make_mesh()
  state = state_lib.init_state(config, mesh=mesh, steps_per_epoch=4)
  images, labels = make_images(2, seed=0)
  batch = state_lib.shard_batch(mesh, images[:config.batch_size],
                                labels[:config.batch_size])
  step = steps_lib.jit_train_step(config, mesh)
  f64 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
  ema = f64(state.ema)
  for t in (1, 2, 3):  # decay min(0.9, (1 + t) / (10 + t)): 2/11, 3/12, 4/13
    state, _ = step(state, *batch, jax.random.key(0))
    d = min(0.9, (1 + t) / (10 + t))
    new = f64({"params": state.params, "batch_stats": state.batch_stats})
    ema = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, ema, new)
    for want, got in zip(jax.tree.leaves(ema), jax.tree.leaves(f64(state.ema))):
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * max(1.0, np.abs(want).max()))
  # Evaluation takes the average, in the same tree.
  evaluated = state_lib.for_evaluation(state)
  assert jax.tree.structure(evaluated) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, evaluated.params, state.ema["params"])
  assert state_lib.for_evaluation(state.replace(ema=None)).params is state.params


def test_a_run_with_a_moving_average_validates_keeps_and_resumes_it(tmp_path, toy_zip,
                                                                    tfds_dir):
  config = dataclasses.replace(TINY, ema_decay=0.6, early_stopping=False)
  ref = train.train_and_evaluate(config, tmp_path / "a", data=toy_zip, data_dir=tfds_dir)
  latest, _ = _params(tmp_path / "a", "latest", config)
  mesh = state_lib.make_mesh()
  ckpt = checkpointing.Checkpoints(tmp_path / "a")
  last = ckpt.restore("latest", state_lib.abstract_state(config, mesh=mesh,
                                                         steps_per_epoch=1))[0]
  best = ckpt.restore("best", state_lib.abstract_state(config, mesh=mesh,
                                                       steps_per_epoch=1))[0]
  ckpt.close()
  # The best (here: last) checkpoint holds the average, which is what was validated.
  jax.tree.map(np.testing.assert_array_equal, best.params, last.ema["params"])
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, best.params, latest)))
  rows = workdir_lib.read_metrics(tmp_path / "a" / workdir_lib.METRICS)
  assert rows[-1]["val_accuracy"] == ref["validation"]["accuracy"]
  from ferjax import report
  val = train.prepare_data(config, data=toy_zip, data_dir=tfds_dir).val
  predictor = train.SplitPredictor(input_size=config.input_size, mesh=mesh)
  loss = lambda s: report.loss_and_accuracy(predictor.probs(s, val), val.labels)[0]
  assert rows[-1]["val_loss"] == pytest.approx(loss(best), rel=1e-6)
  assert abs(loss(last) - loss(best)) > 1e-4  # the raw weights would have said otherwise
  # Interrupted mid-epoch and resumed: the same weights and the same average.
  assert train.train_and_evaluate(config, tmp_path / "b", data=toy_zip,
                                  data_dir=tfds_dir, stop_after_steps=3) is None
  train.train_and_evaluate(config, tmp_path / "b", data=toy_zip, data_dir=tfds_dir)
  ckpt = checkpointing.Checkpoints(tmp_path / "b")
  resumed = ckpt.restore("latest", state_lib.abstract_state(config, mesh=mesh,
                                                            steps_per_epoch=1))[0]
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, (resumed.params, resumed.ema),
               (last.params, last.ema))


def _rewrite_latest(workdir: Path, config, change) -> None:
  """Saves the latest checkpoint again as `change(state)` (a tree) makes it."""
  mesh = state_lib.make_mesh()
  ckpt = checkpointing.Checkpoints(workdir)
  state, extra = ckpt.restore("latest", state_lib.abstract_state(config, mesh=mesh,
                                                                 steps_per_epoch=1))
  ckpt.save("latest", int(state.step), change(state), extra)
  ckpt.close()


def test_a_checkpoint_from_before_the_moving_average_resumes_and_a_bad_one_is_a_message(
    tmp_path, toy_zip, tfds_dir, monkeypatch):
  config = TINY
  train.train_and_evaluate(config, tmp_path / "a", data=toy_zip, data_dir=tfds_dir)
  assert train.train_and_evaluate(config, tmp_path / "b", data=toy_zip,
                                  data_dir=tfds_dir, stop_after_steps=3) is None
  # As a version before `TrainState.ema` wrote it: no `ema` in the checkpoint, and a
  # config.json without the keys added since.
  old_tree = lambda s: {"step": s.step, "params": s.params, "batch_stats": s.batch_stats,
                        "opt_state": s.opt_state}
  _rewrite_latest(tmp_path / "b", config, old_tree)
  cfg_path = tmp_path / "b" / "config.json"
  old_cfg = json.loads(cfg_path.read_text())
  for key in ("ema_decay", "final_fit", "final_lr_fraction", "low_res_size",
              "low_res_fraction"):
    del old_cfg[key]
  cfg_path.write_text(json.dumps(old_cfg))
  old_bytes = cfg_path.read_bytes()

  # The same with a checkpoint that does not fit (a kernel of another shape): a
  # message, and config.json is left as its own version wrote it.
  shutil.copytree(tmp_path / "b", tmp_path / "c")
  _rewrite_latest(tmp_path / "c", config, lambda s: {
      **old_tree(s), "params": jax.tree.map(lambda x: x[..., :1], s.params)})
  # It is found from the saved shapes before any array is read: a restore that fails
  # part-way would leave orbax's other reads running.
  reads = []
  monkeypatch.setattr(ocp.CheckpointManager, "restore",
                      lambda self, *a, **kw: reads.append(a))
  with pytest.raises(checkpointing.CheckpointReadError,
                     match=r"'latest' checkpoint .* \(step 3\) does not fit .* the shapes of its "
                           r"params differ from the state's \(the state has \d+ array\(s\) "
                           r"of shape "
                           r"\([\d, ]*\), the checkpoint \d+\).* start a new --workdir"):
    train.train_and_evaluate(config, tmp_path / "c", data=toy_zip, data_dir=tfds_dir)
  assert reads == []
  monkeypatch.undo()
  assert (tmp_path / "c" / "config.json").read_bytes() == old_bytes

  # A config that keeps an average cannot take it from a checkpoint that has none.
  ckpt = checkpointing.Checkpoints(tmp_path / "b")
  with pytest.raises(checkpointing.CheckpointReadError, match="it holds no ema"):
    ckpt.restore("latest", state_lib.abstract_state(
        dataclasses.replace(config, ema_decay=0.9), mesh=state_lib.make_mesh(),
        steps_per_epoch=1))
  ckpt.close()
  # Nor a config without one from a checkpoint that has one: the field is named.
  shutil.copytree(tmp_path / "b", tmp_path / "d")
  _rewrite_latest(tmp_path / "d", config, lambda s: {**old_tree(s), "ema": s.params})
  ckpt = checkpointing.Checkpoints(tmp_path / "d")
  with pytest.raises(checkpointing.CheckpointReadError,
                     match="it holds ema, which the state has not"):
    ckpt.restore("latest", state_lib.abstract_state(config, mesh=state_lib.make_mesh(),
                                                    steps_per_epoch=1))
  ckpt.close()

  # The old layout, whole: it resumes and ends where the uninterrupted run ends.
  train.train_and_evaluate(config, tmp_path / "b", data=toy_zip, data_dir=tfds_dir)
  jax.tree.map(np.testing.assert_array_equal, _params(tmp_path / "a", "latest", config),
               _params(tmp_path / "b", "latest", config))
  assert "ema_decay" in json.loads(cfg_path.read_text())  # claimed once it restored


def test_more_epochs_continue_a_finished_run_but_other_changes_are_refused(
    tmp_path, toy_zip, tfds_dir):
  config = dataclasses.replace(TINY, epochs=1, early_stopping=False)
  train.train_and_evaluate(config, tmp_path, data=toy_zip, data_dir=tfds_dir)
  rep = train.train_and_evaluate(dataclasses.replace(config, epochs=2), tmp_path,
                                 data=toy_zip, data_dir=tfds_dir)
  assert rep["epochs_run"] == 2
  with pytest.raises(ConfigError, match="learning_rate: saved 0.003, now 0.1"):
    train.train_and_evaluate(dataclasses.replace(config, learning_rate=0.1), tmp_path,
                             data=toy_zip, data_dir=tfds_dir)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
    tmp_path, toy_zip, tfds_dir, monkeypatch):
  real_step = steps_lib.train_step

  def poisoned(state, images, labels, key, **kw):
    new, m = real_step(state, images, labels, key, **kw)
    m["loss_sum"] = jnp.where(state.step >= 6, jnp.nan, m["loss_sum"])  # in epoch 2
    return new, m

  monkeypatch.setattr(steps_lib, "train_step", poisoned)
  config = dataclasses.replace(TINY, epochs=3, early_stopping=False)
  with pytest.raises(TrainingDiverged, match="loss became nan in epoch 2 .* would most likely "
                     r"diverge again .* start a new --workdir with a lower learning rate"):
    train.train_and_evaluate(config, tmp_path, data=toy_zip, data_dir=tfds_dir)
  params, extra = _params(tmp_path, "latest", config)
  assert extra["epoch"] == 1  # the end of epoch 1 (4 steps), before the NaN
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_a_run_that_diverges_before_its_first_checkpoint_can_follow_the_advice(
    tmp_path, toy_zip, tfds_dir, monkeypatch):
  real_step = steps_lib.train_step
  too_high = dataclasses.replace(TINY, epochs=1, early_stopping=False, learning_rate=9.0)

  def poisoned(state, images, labels, key, *, config, **kw):
    new, m = real_step(state, images, labels, key, config=config, **kw)
    if config.learning_rate == too_high.learning_rate:  # diverges in epoch 1
      m["loss_sum"] = jnp.where(state.step >= 2, jnp.nan, m["loss_sum"])
    return new, m

  monkeypatch.setattr(steps_lib, "train_step", poisoned)
  with pytest.raises(TrainingDiverged, match="loss became nan in epoch 1 .* No checkpoint "
                     "was saved yet, so the same --workdir takes other options"):
    train.train_and_evaluate(too_high, tmp_path, data=toy_zip, data_dir=tfds_dir)
  assert configs.load_run_config(tmp_path) == too_high  # it had claimed the workdir
  # The advice, followed in the same workdir: a lower learning rate trains and claims it.
  lower = dataclasses.replace(too_high, learning_rate=TINY.learning_rate)
  assert train.train_and_evaluate(lower, tmp_path, data=toy_zip,
                                  data_dir=tfds_dir)["epochs_run"] == 1
  assert configs.load_run_config(tmp_path) == lower


def test_a_run_refuses_other_data_on_resume(tmp_path, toy_zip, tfds_dir):
  one = dataclasses.replace(TINY, epochs=1)
  train.train_and_evaluate(one, tmp_path / "w", data=toy_zip, data_dir=tfds_dir)
  other = write_zip(tmp_path / "other.zip", {"train": make_images(30, seed=5),
                                             "test": make_images(6, seed=1)})
  more = dataclasses.replace(one, epochs=2)
  with pytest.raises(ConfigError, match="trained on other data"):
    train.train_and_evaluate(more, tmp_path / "w", data=other, data_dir=tfds_dir)
  # The same data resumes.
  assert train.train_and_evaluate(more, tmp_path / "w", data=toy_zip,
                                  data_dir=tfds_dir)["epochs_run"] == 2


def test_a_run_that_fails_before_training_does_not_claim_the_workdir(
    tmp_path, toy_zip, tfds_dir):
  one = dataclasses.replace(TINY, epochs=1)
  too_big = dataclasses.replace(one, batch_size=4096)
  with pytest.raises(DataError, match="lower --batch-size"):
    train.train_and_evaluate(too_big, tmp_path / "w", data=toy_zip, data_dir=tfds_dir)
  assert not (tmp_path / "w" / "config.json").exists()
  # Following the advice in the same workdir works.
  assert train.train_and_evaluate(one, tmp_path / "w", data=toy_zip,
                                  data_dir=tfds_dir) is not None


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path, toy_zip, tfds_dir):
  one = dataclasses.replace(TINY, epochs=1)
  (tmp_path / "w").mkdir()
  with workdir_lib.Lock(tmp_path / "w"):
    with pytest.raises(ConfigError, match=r"in use by a running training \(pid \d+\)"):
      train.train_and_evaluate(one, tmp_path / "w", data=toy_zip, data_dir=tfds_dir)
  # Released: the run goes ahead.
  assert train.train_and_evaluate(one, tmp_path / "w", data=toy_zip,
                                  data_dir=tfds_dir) is not None


def test_torn_metrics_line_and_stale_checkpoint_tmp_are_survived(tmp_path, toy_zip,
                                                                 tfds_dir):
  one = dataclasses.replace(TINY, epochs=1)
  w = tmp_path / "w"
  train.train_and_evaluate(one, w, data=toy_zip, data_dir=tfds_dir)
  with (w / "metrics.jsonl").open("a") as f:
    f.write('{"epoch": 2, "train_lo')  # a crash in the middle of a write
  stale = w / "checkpoints" / "latest" / "99.orbax-checkpoint-tmp-123"
  stale.mkdir(parents=True)
  rep = train.train_and_evaluate(dataclasses.replace(one, epochs=2), w, data=toy_zip,
                                 data_dir=tfds_dir)
  assert rep["epochs_run"] == 2 and not stale.exists()
  rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2]


def test_a_final_fit_trains_on_validation_too_and_keeps_its_last_epoch(tmp_path, toy_zip,
                                                                       tfds_dir):
  from ferjax import calibrate, calibration, export, input_pipeline
  config = dataclasses.replace(TINY, final_fit=True)  # TINY stops early, patience 2
  run = tmp_path / "run"
  rep = train.train_and_evaluate(config, run, data=toy_zip, data_dir=tfds_dir)
  full = input_pipeline.load_fer2013(toy_zip, splits=("train",), num_classes=7,
                                     data_dir=tfds_dir)["train"]
  data = json.loads((run / workdir_lib.DATA).read_text())
  assert data["train"]["images"] == len(full) and "val" not in data
  rows = workdir_lib.read_metrics(run / workdir_lib.METRICS)
  assert [r["val_accuracy"] for r in rows] == [None, None]
  # Nothing held out: no validation figure, no calibration; the last epoch is the model.
  assert rep["validation"] is None and rep["calibration"] is None
  assert (rep["epochs_run"], rep["best_epoch"]) == (2, 2)
  assert not (run / calibration.RUN_FILE).exists()
  assert (run / workdir_lib.CURVES).is_file()
  last, _ = _params(run, "latest", TINY)
  best, _ = _params(run, "best", TINY)
  assert jax.tree.all(jax.tree.map(np.array_equal, last, best))
  from ferjax import inference
  assert inference.Classifier.from_workdir(run).info.final_fit  # its advice says so
  # Its validation images are training images: every way of measuring on them refuses.
  weights = export.export(run, tmp_path / "final.npz")
  for source in ({"workdir": run}, {"weights": weights}):
    with pytest.raises(ConfigError, match="final fit"):
      evaluate.evaluate(**source, data=toy_zip, data_dir=tfds_dir, split="validation")
    with pytest.raises(ConfigError, match="final fit"):
      calibrate.calibrate(**source, out=tmp_path / "cal.npz", data=toy_zip,
                          data_dir=tfds_dir)
  on_train = evaluate.evaluate(weights=weights, data=toy_zip, data_dir=tfds_dir,
                               split="train", tta=False)
  assert on_train["n"] == len(full)


def test_cli_errors_are_one_paragraph_not_a_traceback(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: train.main(["--variant", "tiny", "--data", str(tmp_path / "no.zip"),
                                "--workdir", str(tmp_path / "w")]))
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: FER2013 was not found") and "Traceback" not in err
  with pytest.raises(SystemExit):
    run_cli(lambda: train.main(["--variant", "tiny", "--epochs", "0"]))
  assert "--epochs must be positive" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    run_cli(lambda: evaluate.main(["--workdir", str(tmp_path / "none")]))
  assert "is not a ferjax run" in capsys.readouterr().err


def test_bad_arguments_get_messages_before_any_work(tmp_path, capsys):
  (tmp_path / "file").write_text("x")
  cases = [(["--workdir", str(tmp_path / "file")], "is a file, not a folder"),
           (["--seed", "-1"], "--seed must be between 0"),
           (["--seed", "18446744073709551616"], "--seed must be between 0"),
           (["--lr", "inf"], "--lr must be a positive number"),
           (["--lr", "nan"], "--lr must be a positive number")]
  for args, message in cases:
    with pytest.raises(SystemExit) as e:
      run_cli(lambda args=args: train.main(["--variant", "tiny", "--data",
                                            str(tmp_path / "no"), *args]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err


def test_help_lists_variants(capsys):
  with pytest.raises(SystemExit):
    train.main(["--help"])
  out = capsys.readouterr().out
  for v in ("basic", "early-stopping", "augmented"):
    assert f"  {v} " in out


def test_sigint_saves_a_checkpoint_and_the_run_resumes(tmp_path, toy_zip, tfds_dir):
  """A real SIGINT to the real command: checkpoint, clean exit, then resume to the end."""
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "ferjax.train", "--variant", "tiny", "--epochs", "40",
         "--patience", "100",
         "--classes", "7", "--data", str(toy_zip), "--data-dir", str(tfds_dir),
         "--workdir", str(workdir)]
  proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if line.startswith("epoch 2/40"):  # training is under way
      proc.send_signal(signal.SIGINT)
      break
  rest = proc.communicate(timeout=120)[1]
  assert proc.returncode == train.EXIT_INTERRUPTED, "".join(lines) + rest
  assert "Checkpoint saved" in rest and "Traceback" not in rest
  ckpt = checkpointing.Checkpoints(workdir)
  step = ckpt.latest_step()
  ckpt.close()
  assert step is not None and step > 0
  out = subprocess.run(cmd + ["--epochs", "3"], capture_output=True, text=True, timeout=300)
  # Interrupted beyond epoch 3? Then there is nothing left to train: it reports at once.
  assert out.returncode == 0, out.stderr
  assert "report in" in out.stderr and (workdir / "report.json").exists()
