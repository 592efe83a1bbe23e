"""Calibrates a model on its validation split and writes it as a weights file.

    python -m ferjax.calibrate (--pretrained | --weights FILE | --workdir DIR)
                               [--data PATH] OUT.npz [--temperature-only]
                               [--target-accuracy 0.8] [--json] [--force]

Fits, on the validation cut of train/ that the model was trained beside (recorded in
the weights file or the run), a per-class scaling of the logits for single-view and
for ten-view (TTA) predictions, and the confidence below which a face is reported as
uncertain: the lowest at which the answered validation faces are at least
--target-accuracy correct. The test splits are never read. OUT holds the same
network with the calibration in its metadata; every command that loads it
(`predict`, `serve`, `evaluate`, `Predictor`) then gives calibrated probabilities.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ferjax.errors import require_extra

if __name__ == "__main__":  # name the extra to install before its imports fail
  require_extra("train", what="python -m ferjax.calibrate", command=True)

from ferjax import calibration as cal
from ferjax import cli, evaluate, export, inference, malloc
from ferjax.errors import ConfigError, run_cli

DEFAULT_TARGET = cal.DEFAULT_TARGET


def fit_calibration(clf: inference.Classifier, split, *, vector: bool = True,
                    target: float = DEFAULT_TARGET) -> dict:
  """The calibration entry of a ModelInfo, fitted on `split` (an input_pipeline.Split),
  classified the way a training run's report classifies its validation split."""
  predictor = inference.SplitPredictor(input_size=clf.info.input_size)
  return cal.fit_entry(predictor.logits(clf.state, split),
                       predictor.logits(clf.state, split, tta=True), split.labels,
                       vector=vector, target=target)


def calibrate(*, workdir=None, weights=None, pretrained: bool = False, out,
              data=None, data_dir=None, vector: bool = True,
              target: float = DEFAULT_TARGET, force: bool = False) -> dict:
  """Fits the calibration (see the module's docstring) and writes OUT; returns the
  calibration entry."""
  if not 0 < target < 1:
    raise ConfigError(f"--target-accuracy must be between 0 and 1; got {target}")
  out = export.check_output(out, force=force)
  clf = evaluate.load_classifier(workdir=workdir, weights=weights, pretrained=pretrained)
  cut = evaluate.data_cut(clf, workdir)
  if cut.get("final_fit"):
    raise ConfigError(
        "This model is a final fit: it trained on the validation images too, so none "
        "are held out to calibrate on (a calibration fitted on training images would "
        "trust the model too much). Its weights are uncalibrated; the run that fixed "
        "its recipe on the validation split has a calibration of its own.")
  val = evaluate.load_split("validation", num_classes=clf.info.num_classes, data=data,
                            data_dir=data_dir, **cut)
  entry = fit_calibration(clf, val, vector=vector, target=target)
  info = dataclasses.replace(clf.info, calibration=entry,
                             source={**clf.info.source, **cut})
  export.write_weights(out, info=info, params=clf.state.params,
                       batch_stats=clf.state.batch_stats, force=force)
  return entry


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.calibrate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_model_flags(p)
  cli.add_data_flags(p)
  p.add_argument("out", help="the calibrated weights file to write (.npz)")
  p.add_argument("--temperature-only", action="store_true",
                 help="fit one temperature instead of a scale and bias per class")
  p.add_argument("--target-accuracy", type=float, default=DEFAULT_TARGET,
                 help="answered validation faces must be at least this fraction "
                 f"correct; the others are uncertain (default {DEFAULT_TARGET})")
  p.add_argument("--force", action="store_true", help="replace OUT if it exists")
  p.add_argument("--json", action="store_true", help="print the fit as JSON")
  args = p.parse_args(argv)
  entry = calibrate(workdir=args.workdir, weights=args.weights,
                    pretrained=args.pretrained, out=args.out, data=args.data,
                    data_dir=args.data_dir, vector=not args.temperature_only,
                    target=args.target_accuracy, force=args.force)
  if args.json:
    print(json.dumps(entry))
    return
  fit = entry["fit"]
  print(f"wrote {args.out}; fitted on {fit['n']} validation images ({fit['method']})",
        file=sys.stderr)
  for mode in ("single", "tta"):
    b, a = fit[mode]["before"], fit[mode]["after"]
    print(f"  {mode:6s} ECE {b['ece']:.4f} -> {a['ece']:.4f}, NLL {b['nll']:.4f} -> "
          f"{a['nll']:.4f}, accuracy {b['accuracy']:.4f} -> {a['accuracy']:.4f}; "
          f"uncertain below {fit[mode]['threshold']:.3f} (answers "
          f"{fit[mode]['coverage']:.3f} of faces, {fit[mode]['answered_accuracy']:.3f} "
          "correct)")


if __name__ == "__main__":
  malloc.reexec_with_mimalloc()
  run_cli(main)
