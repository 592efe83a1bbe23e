"""What predicting in bfloat16 does to a float32-trained run: accuracy and changed predictions.

    python experiments/bf16_inference.py --workdir runs/basic --data fer2013.zip \
        [--splits validation,test]

The same checkpoint is evaluated in float32 and in bfloat16 (`python -m ferjax.evaluate
--dtype`: the float32 parameters, computed in bfloat16), with and without TTA. Prints
one JSON object per split: both accuracies and how many predictions differ.
"""

import argparse
import json

from pathlib import Path

from ferjax import evaluate
from ferjax.configs import Config


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--data")
  p.add_argument("--data-dir")
  p.add_argument("--splits", default="validation,test")
  args = p.parse_args()
  runs = {dtype: evaluate.load_classifier(workdir=args.workdir, dtype=dtype)
          for dtype in ("float32", "bfloat16")}
  config = Config.from_dict(json.loads((Path(args.workdir) / "config.json").read_text()))
  for split in args.splits.split(","):
    data = evaluate.load_split(split, num_classes=config.num_classes, data=args.data,
                               data_dir=args.data_dir, val_fraction=config.val_fraction,
                               val_seed=config.val_seed, train_limit=config.train_limit,
                               final_fit=config.final_fit)
    out = {"workdir": args.workdir, "split": split, "n": len(data)}
    for tta in (False, True):
      preds = {dtype: clf.classify(data.images, tta=tta).argmax(-1)
               for dtype, clf in runs.items()}
      key = "tta_" if tta else ""
      for dtype, pr in preds.items():
        out[f"{key}accuracy_{dtype}"] = float((pr == data.labels).mean())
      out[f"{key}changed_predictions"] = int((preds["float32"] != preds["bfloat16"]).sum())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
