"""Evaluates a model on a FER2013 split: a run's best checkpoint, an exported weights
file, or the model that ships with ferjax.

    python -m ferjax.evaluate (--workdir DIR | --weights FILE | --pretrained)
                              --data PATH [--split public_test] [--dtype bfloat16] [--json]

Splits: test (the whole test/ folder, or both csv test halves), public_test and
private_test (the csv's halves, or the files of test/ named PublicTest_* and
PrivateTest_*, as Kaggle names them), validation and train (the run's own cut of
train/).
--dtype bfloat16 predicts in bfloat16 (the float32 parameters as they are, products
accumulated in float32): faster on CPUs with AMX (Intel Xeon since Sapphire Rapids;
docs/performance.md gives the figures); on CPUs without bfloat16 arithmetic it is
emulated and may well be slower. The default is the dtype the run trained in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from ferjax.errors import require_extra

if __name__ == "__main__":  # name the extra to install before its imports fail
  require_extra("train", what="python -m ferjax.evaluate", command=True)

from ferjax import calibration, cli, inference, input_pipeline, malloc, report
from ferjax.configs import DTYPES, load_run_config
from ferjax.errors import ConfigError, DataError, run_cli

SPLITS = ("test", "public_test", "private_test", "validation", "train")


def load_classifier(*, workdir=None, weights=None, pretrained: bool = False,
                    dtype: str | None = None) -> inference.Classifier:
  """The classifier to evaluate: a run's best checkpoint, a weights file, or the
  shipped model (exactly one of them)."""
  if sum(x is not None and x is not False for x in (workdir, weights, pretrained)) != 1:
    raise ConfigError("Say which model to evaluate: --workdir DIR (a training run), "
                      "--weights FILE (an exported model) or --pretrained.")
  if dtype is not None and dtype not in DTYPES:
    raise ConfigError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
  if workdir is not None:
    return inference.Classifier.from_workdir(workdir, dtype=dtype)
  clf = inference.Classifier.load(weights or inference.pretrained_path())
  if dtype is not None and dtype != clf.info.dtype:
    clf = inference.Classifier(dataclasses.replace(clf.info, dtype=dtype),
                               clf.state.params, clf.state.batch_stats)
  return clf


def load_split(split: str, *, num_classes: int, data=None, data_dir=None,
               val_fraction: float = 0.1, val_seed: int = 0,
               train_limit: int | None = None, final_fit: bool = False
               ) -> input_pipeline.Split:
  """One of SPLITS (validation and train: the cut that training makes of train/;
  a final fit's model has no validation split, since it trained on those images)."""
  if split not in SPLITS:
    raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
  if split == "validation" and final_fit:
    raise ConfigError(
        "This model is a final fit: it trained on the validation images too, so a "
        "validation figure would be a training figure. Measure it on a test split "
        "(--split public_test), or on the validation split of the run that fixed its "
        "recipe.")
  if split not in ("validation", "train"):
    return input_pipeline.load_fer2013(data, splits=(split,), num_classes=num_classes,
                                       data_dir=data_dir, required=(split,))[split]
  full = input_pipeline.load_fer2013(data, splits=("train",), num_classes=num_classes,
                                     data_dir=data_dir)["train"]
  train, val = input_pipeline.cut_validation(full, fraction=val_fraction, seed=val_seed,
                                             train_limit=train_limit, final_fit=final_fit)
  return val if split == "validation" else train


def evaluate(*, workdir=None, weights=None, pretrained: bool = False, data=None,
             data_dir=None, split: str | None = None, dtype: str | None = None,
             tta: bool = True) -> dict:
  """Accuracy without and (if `tta`) with TTA, per-class recall and confusion matrix
  on `split`, predicted in `dtype` (default: the model's own). No `split`: PublicTest
  where the source tells the two halves of test/ apart, else all of test/."""
  if split is not None and split not in SPLITS:
    raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
  clf = load_classifier(workdir=workdir, weights=weights, pretrained=pretrained,
                        dtype=dtype)
  if split is None:
    found = input_pipeline.load_test_split(data, num_classes=clf.info.num_classes,
                                           data_dir=data_dir)
    if found is None:
      raise DataError(f"'{data}' has no test images (test/<class>/*.jpg, or the csv's "
                      "PublicTest/PrivateTest rows); choose another --split.")
    split, data_split = found
  else:
    data_split = load_split(split, num_classes=clf.info.num_classes, data=data,
                            data_dir=data_dir, **data_cut(clf, workdir))
  labels = data_split.labels
  predictor = inference.SplitPredictor(input_size=clf.info.input_size)
  out, probs = {}, {}
  for tta_on in (False, True) if tta else (False,):
    logits = predictor.logits(clf.state, data_split, tta=tta_on)
    sfx = "_tta" if tta_on else ""
    raw = calibration.calibrated_probs(logits, calibration.Scaling.identity(
        len(clf.classes)))
    probs[tta_on] = calibration.calibrated_probs(logits, clf.info.scaling(tta_on))
    for name, value in calibration.measures(probs[tta_on], labels).items():
      if name != "accuracy":
        out[name + sfx] = value
    for name, value in calibration.measures(raw, labels).items():
      out[f"{name}{sfx}_uncalibrated"] = value
    at = calibration.coverage(probs[tta_on], labels, clf.info.threshold(tta_on))
    out.update({f"{k}{sfx}": v for k, v in at.items()})
  summary = report.summarize(labels, probs[False], probs.get(True), clf.classes, split)
  return {**summary, **out, "calibrated": clf.calibrated,
          "calibration_advice": None if clf.calibrated else clf.info.calibration_advice(),
          "model": clf.info.model,
          "dtype": clf.info.dtype}


def data_cut(clf: inference.Classifier, workdir=None) -> dict:
  """The validation cut of train/ that the model was trained beside: its run's
  config, or what its weights file recorded."""
  if workdir is not None:
    config = load_run_config(workdir)
    return {"val_fraction": config.val_fraction, "val_seed": config.val_seed,
            "train_limit": config.train_limit, "final_fit": config.final_fit}
  return {k: v for k, v in clf.info.source.items()
          if k in ("val_fraction", "val_seed", "train_limit", "final_fit")}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_model_flags(p)
  cli.add_data_flags(p)
  p.add_argument("--split", default=None, choices=SPLITS,
                 help="test: all of test/ (Kaggle's has both halves); public_test, "
                 "private_test: one half (the README's test figures are public_test); "
                 "validation, train: the run's own cut of train/ (default: public_test "
                 "where the source tells test/'s halves apart, else test)")
  cli.add_dtype_flag(p, help="compute dtype to predict in (default: the run's training "
                     "dtype)")
  p.add_argument("--no-tta", action="store_true",
                 help="skip the ten-view TTA pass (it takes ten times as long)")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  args = p.parse_args(argv)
  out = evaluate(workdir=args.workdir, weights=args.weights, pretrained=args.pretrained,
                 data=args.data, data_dir=args.data_dir, split=args.split,
                 dtype=args.dtype, tta=not args.no_tta)
  if args.json:
    print(json.dumps(out))
    return
  tta = "" if out["accuracy_tta"] is None else f", with TTA {out['accuracy_tta']:.4f}"
  print(f"{out['split']}: {out['n']} images, accuracy {out['accuracy']:.4f}{tta} "
        f"({out['model']}, {out['dtype']})")
  if out["calibrated"]:
    print(f"  calibration (single view): ECE {out['ece_uncalibrated']:.4f} -> "
          f"{out['ece']:.4f}, NLL {out['nll_uncalibrated']:.4f} -> {out['nll']:.4f}, "
          f"Brier {out['brier_uncalibrated']:.4f} -> {out['brier']:.4f}; answers "
          f"{out['coverage']:.4f} of faces (confidence >= {out['threshold']:.3f}), "
          f"{out['answered_accuracy']:.4f} of them correct")
  else:
    print(f"  not calibrated (ECE {out['ece']:.4f}): {out['calibration_advice']}")
  for name, r in out["per_class_recall"].items():
    print(f"  {name:9s} recall {'-' if r is None else f'{r:.4f}'}")


if __name__ == "__main__":
  malloc.reexec_with_mimalloc()
  run_cli(main)
