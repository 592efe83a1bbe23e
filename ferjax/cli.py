"""Command-line flags that several commands share, declared once.

`--data`/`--data-dir` (where FER2013 is), `--dtype` (the compute dtype) and
`--set KEY=VALUE` (any config field) mean the same in `ferjax.train`,
`ferjax.evaluate` and `ferjax.bench`, and `--workdir | --weights | --pretrained` in
`ferjax.evaluate` and `ferjax.calibrate`; each command adds them from here.
"""

from __future__ import annotations

import argparse

from ferjax import configs


def add_data_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--data", default=None,
                 help="FER2013 zip, csv or folder (default: $FERJAX_DATA, else the TFDS "
                      "manual dir)")
  p.add_argument("--data-dir", default=None,
                 help="TFDS data dir for the prepared data (default: ~/tensorflow_datasets)")


def add_model_flags(p: argparse.ArgumentParser) -> None:
  """--workdir | --weights | --pretrained: which trained model (exactly one)."""
  which = p.add_mutually_exclusive_group(required=True)
  which.add_argument("--workdir", help="a training run's workdir (its best checkpoint)")
  which.add_argument("--weights", help="a weights file from `python -m ferjax.export`")
  which.add_argument("--pretrained", action="store_true",
                     help="the model that ships with ferjax")


def add_dtype_flag(p: argparse.ArgumentParser, *, flag: str = "--dtype",
                   help: str, auto: bool = False) -> None:
  """`flag` with the compute dtypes as choices, and `auto` where the command trains."""
  p.add_argument(flag, choices=configs.TRAIN_DTYPES if auto else configs.DTYPES,
                 help=help)


def add_set_flag(p: argparse.ArgumentParser) -> None:
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="set any config field, e.g. --set weight_decay=1e-4 --set "
                 "augment.max_rotation=15 --set conv_impl=xla (repeatable; fields: "
                 + ", ".join(sorted(configs.field_types())) + ")")
