"""Exports a trained model as one small file: a ferjax weights file (.npz) that
`ferjax.Classifier.load`, `python -m ferjax.predict --weights` and `python -m
ferjax.evaluate --weights` read, or an ONNX model (.onnx) for onnxruntime and any
other ONNX runtime, with no ferjax or JAX needed (docs/deploy.md).

    python -m ferjax.export --workdir runs/augmented my_model.npz
    python -m ferjax.export --pretrained fer6.onnx
    python -m ferjax.export --weights my_model.npz my_model.onnx

A weights file holds the parameters in float16 and the BatchNorm statistics, with the
network's name, classes, input size and calibration; no optimizer state. An ONNX file
takes uint8 face crops [N, 48, 48] and gives `logits` and calibrated `probabilities`
(`ferjax.onnx_export`). An existing file is never replaced without --force, and
nothing is written inside a training run's workdir (where it could replace the run's
own files).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from ferjax.errors import require_extra

if __name__ == "__main__":  # name the extra to install before its imports fail
  require_extra("jax", what="python -m ferjax.export", command=True)

from ferjax import cli, configs, inference
from ferjax.errors import ConfigError, FerjaxError, describe_os_error, run_cli


def check_output(out: str | Path, *, force: bool = False) -> Path:
  """`out` if a weights file may be written there; otherwise a ConfigError that says
  why: a folder, an existing file without `force`, or a place inside a run's workdir."""
  out = Path(out)
  if out.is_dir():
    raise ConfigError(f"'{out}' is a folder; give the weights file's name, for example "
                      f"'{out / 'model.npz'}'.")
  if out.exists() and not force:
    raise ConfigError(f"'{out}' already exists; pass --force to replace it, or choose "
                      "another name.")
  for parent in out.absolute().parents:
    if configs.is_run_dir(parent):
      raise ConfigError(f"'{out}' is inside the training run '{parent}', whose files it "
                        "could replace; write the weights file outside the workdir.")
  return out


def export(workdir: str | Path, out: str | Path, *, force: bool = False) -> Path:
  """Writes the best checkpoint of `workdir` to the weights file `out` (see
  `check_output` for what is refused)."""
  out = check_output(out, force=force)
  info, params, batch_stats = inference.restore_run(workdir)
  config = configs.load_run_config(workdir)
  source = {**info.source, "val_fraction": config.val_fraction,
            "val_seed": config.val_seed, "train_limit": config.train_limit}
  report_path = Path(workdir) / "report.json"
  if report_path.is_file():
    try:
      rep = json.loads(report_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
      rep = {}  # the report only adds provenance; the weights do not need it
    if isinstance(rep, dict):
      source["best_epoch"] = rep.get("best_epoch")
      source["validation_accuracy"] = (rep.get("validation") or {}).get("accuracy")
  info = dataclasses.replace(info, source=source)
  return write_weights(out, info=info, params=params, batch_stats=batch_stats,
                       force=force)


def write_weights(out: Path, *, info, params, batch_stats, force: bool) -> Path:
  """`inference.save_weights` to a place `check_output` accepted, its failures as
  messages (a file that appeared meanwhile is never replaced without `force`)."""
  try:
    return inference.save_weights(out, info=info, params=params,
                                  batch_stats=batch_stats, overwrite=force)
  except FileExistsError:
    raise ConfigError(f"'{out}' appeared while the weights were written; it was left "
                      "as it is. Pass --force to replace it.") from None
  except OSError as e:
    raise FerjaxError(f"cannot write '{out}': {describe_os_error(e)}") from None


def export_onnx(out: str | Path, *, workdir=None, weights=None, force: bool = False
                ) -> Path:
  """Writes the model (a run's best checkpoint, a weights file, or the shipped one) as
  ONNX to `out` (refused as `check_output` says); the file appears whole or not at all.
  """
  import onnx

  from ferjax import __version__, onnx_export
  out = check_output(out, force=force)
  if workdir is not None:
    info, params, batch_stats = inference.restore_run(workdir)
  else:
    info, params, batch_stats = inference.load_weights(
        weights if weights is not None else inference.pretrained_path())
  model = onnx_export.to_onnx(info, params, batch_stats, producer_version=__version__)
  tmp = out.with_name(out.name + ".tmp")
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(tmp))
    if force:
      os.replace(tmp, out)
    else:
      os.link(tmp, out)  # never replaces a file that appeared meanwhile
  except FileExistsError:
    raise ConfigError(f"'{out}' appeared while the model was written; it was left as "
                      "it is. Pass --force to replace it.") from None
  except OSError as e:
    raise FerjaxError(f"cannot write '{out}': {describe_os_error(e)}") from None
  finally:
    tmp.unlink(missing_ok=True)
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_model_flags(p)
  p.add_argument("out", help="the file to write: .npz (a ferjax weights file) or .onnx")
  p.add_argument("--force", action="store_true",
                 help="replace OUT if it exists (never a file inside a workdir)")
  args = p.parse_args(argv)
  check_output(args.out, force=args.force)  # a folder, a taken name, a workdir: said first
  suffix = Path(args.out).suffix.lower()
  if suffix not in (".npz", ".onnx"):
    p.error(f"OUT must end in .npz (a ferjax weights file) or .onnx; got '{args.out}'")
  if suffix == ".onnx":
    path = export_onnx(args.out, workdir=args.workdir, weights=args.weights,
                       force=args.force)
  elif args.workdir is not None:
    path = export(args.workdir, args.out, force=args.force)
  else:
    src = args.weights if args.weights is not None else inference.pretrained_path()
    info, params, batch_stats = inference.load_weights(src)
    path = write_weights(Path(args.out), info=info, params=params,
                         batch_stats=batch_stats, force=args.force)
  print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
  run_cli(main)
