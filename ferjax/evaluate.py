"""Evaluates the best checkpoint of a run on a split.

    python -m ferjax.evaluate --workdir DIR --data PATH [--split test]
                              [--dtype bfloat16] [--json]

Splits: test (the Kaggle test/ folder, or both csv test halves), public_test,
private_test (csv only), validation and train (the run's own cut of train/).
--dtype bfloat16 predicts in bfloat16 (the float32 parameters as they are, products
accumulated in float32): faster on CPUs with AMX (Intel Xeon since Sapphire Rapids;
the README gives the figures); on CPUs without bfloat16 arithmetic it is emulated and
may well be slower. The default is the dtype the run trained in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ferjax import checkpointing, input_pipeline, malloc, report, train
from ferjax.classes import class_names
from ferjax.configs import DTYPES, Config
from ferjax.errors import ConfigError, run_cli

SPLITS = ("test", "public_test", "private_test", "validation", "train")


def load_run(workdir: str | Path, *, mesh=None, dtype: str | None = None):
  """(config, steps, best state) of the run in `workdir`, predicting in `dtype` (default:
  the dtype it trained in; the parameters are float32 either way)."""
  if dtype is not None and dtype not in DTYPES:
    raise ConfigError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
  workdir = Path(workdir)
  path = workdir / "config.json"
  if not path.exists():
    raise ConfigError(f"'{workdir}' is not a ferjax run: it has no config.json. Pass the "
                      "--workdir that `python -m ferjax.train` wrote to.")
  config = Config.from_dict(json.loads(path.read_text()))
  if dtype is not None:
    config = dataclasses.replace(config, dtype=dtype)
  mesh = mesh or train.make_mesh()
  ckpt = checkpointing.Checkpoints(workdir)
  # The optimizer's shape does not depend on the schedule length; any count will do.
  template = train.abstract_state(config, mesh=mesh, steps_per_epoch=1)
  restored = ckpt.restore("best", template)
  ckpt.close()
  if restored is None:
    raise ConfigError(f"'{workdir}' has no best checkpoint yet: train for at least one "
                      "epoch first.")
  return config, train.Steps(config, mesh), restored[0]


def load_split(config: Config, split: str, *, data=None, data_dir=None
               ) -> input_pipeline.Split:
  """One of SPLITS, for the run of `config` (validation and train: its own cut)."""
  if split in ("validation", "train"):
    ds = train.prepare_data(config, data=data, data_dir=data_dir)
    return ds.val if split == "validation" else ds.train
  return input_pipeline.load_fer2013(
      data, splits=(split,), num_classes=config.num_classes, data_dir=data_dir)[split]


def evaluate(workdir, *, data=None, data_dir=None, split: str = "test",
             dtype: str | None = None) -> dict:
  """Accuracy with and without TTA, per-class recall and confusion matrix on `split`,
  predicted in `dtype` (default: the run's)."""
  if split not in SPLITS:
    raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
  config, steps, state = load_run(workdir, dtype=dtype)
  data_split = load_split(config, split, data=data, data_dir=data_dir)
  probs = train.predict_split(steps, state, data_split)
  probs_tta = train.predict_split(steps, state, data_split, tta=True)
  out = report.summarize(data_split.labels, probs, probs_tta,
                         class_names(config.num_classes), split)
  return {**out, "dtype": config.dtype}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="the run's workdir")
  p.add_argument("--data", default=None, help="FER2013 zip, csv or folder")
  p.add_argument("--data-dir", default=None, help="TFDS data dir")
  p.add_argument("--split", default="test", choices=SPLITS)
  p.add_argument("--dtype", choices=DTYPES,
                 help="compute dtype to predict in (default: the run's training dtype)")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  args = p.parse_args(argv)
  out = evaluate(args.workdir, data=args.data, data_dir=args.data_dir, split=args.split,
                 dtype=args.dtype)
  if args.json:
    print(json.dumps(out))
    return
  print(f"{out['split']}: {out['n']} images, accuracy {out['accuracy']:.4f}, "
        f"with TTA {out['accuracy_tta']:.4f} ({out['dtype']})")
  for name, r in out["per_class_recall"].items():
    print(f"  {name:9s} recall {'-' if r is None else f'{r:.4f}'}")


if __name__ == "__main__":
  malloc.reexec_with_mimalloc()
  run_cli(main)
