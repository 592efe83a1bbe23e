"""Exports a trained run as one small weights file that `ferjax.Classifier.load`,
`python -m ferjax.predict --weights` and `python -m ferjax.evaluate --weights` read.

    python -m ferjax.export --workdir runs/augmented my_model.npz

The file holds the best checkpoint's parameters in float16 and its BatchNorm
statistics, with the network's name, classes and input size; no optimizer state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ferjax import inference
from ferjax.configs import Config
from ferjax.errors import run_cli


def export(workdir: str | Path, out: str | Path) -> Path:
  """Writes the best checkpoint of `workdir` to the weights file `out`."""
  info, params, batch_stats = inference.restore_run(workdir)
  config = Config.from_dict(json.loads((Path(workdir) / "config.json").read_text()))
  source = {**info.source, "val_fraction": config.val_fraction,
            "val_seed": config.val_seed, "train_limit": config.train_limit}
  report_path = Path(workdir) / "report.json"
  if report_path.is_file():
    rep = json.loads(report_path.read_text())
    source["best_epoch"] = rep.get("best_epoch")
    source["validation_accuracy"] = (rep.get("validation") or {}).get("accuracy")
  info = dataclasses.replace(info, source=source)
  return inference.save_weights(out, info=info, params=params, batch_stats=batch_stats)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a training run's workdir")
  p.add_argument("out", help="the weights file to write (.npz)")
  args = p.parse_args(argv)
  path = export(args.workdir, args.out)
  print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
  run_cli(main)
