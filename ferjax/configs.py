"""Run configurations: one frozen dataclass, one function per variant.

The variant sets every field; the command line overrides single fields with
`dataclasses.replace`. A run's config is written to `workdir/config.json` and compared
with the saved one on resume. Durations are in epochs everywhere; `steps_per_epoch`
is the one place that converts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from ferjax.augment import NO_AUGMENT, AugmentConfig
from ferjax.errors import ConfigError
from ferjax.ops import DEFAULT_TUNING, ConvTuning

# Compute dtypes (bfloat16: mixed precision, float32 parameters).
DTYPES = ("float32", "bfloat16")
# A training run may also ask for "auto": bfloat16 where the hardware computes it natively
# and it measures faster, else float32 (ferjax.precision); resolved when the run starts.
AUTO_DTYPE = "auto"
TRAIN_DTYPES = (*DTYPES, AUTO_DTYPE)
# How convolutions are computed (ferjax.ops): "auto" picks per layer and backend; "xla"
# is XLA's own convolution everywhere; the others force one CPU kernel for every layer.
CONV_IMPLS = ("auto", "xla", "im2col", "chunked", "winograd")
# The allowed values of the config's string fields.
CHOICES = {"optimizer": ("adam", "adamw", "sgd"), "schedule": ("constant", "cosine"),
           "monitor": ("val_loss", "val_accuracy"), "dtype": TRAIN_DTYPES,
           "conv_impl": CONV_IMPLS}
# The config's nested dataclasses, set field by field as '<name>.<field>'.
NESTED = {"augment": AugmentConfig, "conv_tuning": ConvTuning}


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that determines a training run (the data path aside)."""
  variant: str
  model: str
  num_classes: int = 6
  epochs: int = 10
  batch_size: int = 64
  learning_rate: float = 1e-3
  optimizer: str = "adam"  # adam | adamw | sgd (Nesterov momentum 0.9)
  weight_decay: float = 0.0
  schedule: str = "constant"  # constant | cosine (linear warm-up, cosine decay to 0)
  warmup_epochs: float = 0.0
  # The cosine schedule ends at this fraction of the peak learning rate (0: at zero).
  final_lr_fraction: float = 0.0
  label_smoothing: float = 0.0
  # An exponential moving average of the weights (and BatchNorm statistics), updated
  # every step with decay min(ema_decay, (1 + step) / (10 + step)); when on (> 0) it is
  # what is validated, kept as the best checkpoint, reported and exported. 0: off.
  ema_decay: float = 0.0
  early_stopping: bool = False
  patience: int = 3
  monitor: str = "val_loss"  # val_loss (lower is better) | val_accuracy
  augment: AugmentConfig = NO_AUGMENT
  seed: int = 0
  val_fraction: float = 0.1
  val_seed: int = 0
  train_limit: int | None = None
  # Train on all of train/, the validation images too, for `epochs`, and keep the last
  # epoch: nothing is held out, so nothing is chosen, monitored or calibrated. For a
  # recipe whose every choice an earlier run fixed on the validation split.
  final_fit: bool = False
  dtype: str = "float32"  # one of TRAIN_DTYPES (compute; parameters stay float32)
  # Side of the square the network sees. Below 48, training takes a random crop of
  # each augmented image, evaluation the centre crop and TTA the ten-crop views.
  input_size: int = 48
  # Progressive resizing: the first `low_res_fraction` of the epochs (rounded) train on
  # each crop resized to low_res_size x low_res_size, which costs fewer FLOPs a step;
  # later epochs, validation, evaluation and TTA see input_size. 0: off.
  low_res_size: int = 0
  low_res_fraction: float = 0.0
  # How the convolutions are computed (CONV_IMPLS): the same parameters and, to
  # float rounding, the same outputs; only speed differs (docs/performance.md).
  conv_impl: str = "auto"
  # The CPU kernels' memory budgets (ferjax.ops.ConvTuning): they change what is
  # compiled, not what is computed; tuned with `python -m ferjax.bench`.
  conv_tuning: ConvTuning = DEFAULT_TUNING

  def __post_init__(self):
    for name, allowed in CHOICES.items():
      if getattr(self, name) not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got "
                          f"'{getattr(self, name)}'")
    if self.num_classes not in (6, 7):
      raise ConfigError(f"num_classes must be 6 or 7; got {self.num_classes}")
    positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                "patience": self.patience, "learning_rate": self.learning_rate}
    for name, value in positive.items():
      if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be positive; got {value}")
    if not 16 <= self.input_size <= 48:
      raise ConfigError(f"input_size must be 16 to 48 (a crop of the 48x48 image); got "
                        f"{self.input_size}")
    if not 0 < self.val_fraction < 1:
      raise ConfigError(f"val_fraction must be between 0 and 1; got {self.val_fraction}")
    for name in ("weight_decay", "warmup_epochs"):
      if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
        raise ConfigError(f"{name} must be at least 0; got {getattr(self, name)}")
    for name in ("ema_decay", "final_lr_fraction"):
      if not 0 <= getattr(self, name) < 1:
        raise ConfigError(f"{name} must be at least 0 and below 1; got "
                          f"{getattr(self, name)}")
    if not 0 <= self.label_smoothing < 1:
      raise ConfigError("label_smoothing must be at least 0 and below 1; got "
                        f"{self.label_smoothing}")
    for name in ("seed", "val_seed"):
      if not 0 <= getattr(self, name) < 2**31:
        raise ConfigError(f"{name} must be 0 to 2**31 - 1; got {getattr(self, name)}")
    if self.train_limit is not None and self.train_limit < 1:
      raise ConfigError(f"train_limit must be at least 1 (or none for all images); got "
                        f"{self.train_limit}")
    from ferjax.models import MODELS
    if self.model not in MODELS:
      raise ConfigError(f"model must be one of {', '.join(MODELS)}; got '{self.model}'")
    self._check_low_res()
    _check_augment(self.augment)
    _check_conv_tuning(self.conv_tuning)

  def _check_low_res(self) -> None:
    if not self.low_res_size:
      if self.low_res_fraction:
        raise ConfigError("low_res_fraction needs low_res_size (the side the first "
                          "epochs train at); set both, or neither")
      return
    if not 8 <= self.low_res_size < self.input_size:
      raise ConfigError(f"low_res_size must be at least 8 and below input_size "
                        f"({self.input_size}); got {self.low_res_size}")
    # A dense head sees the last stage's map flattened: both sizes must give one map.
    from ferjax.architectures import settings
    arch = settings(self.model)
    if arch["dense"]:
      down = 2 ** len(arch["widths"])  # one 2x2 pooling (flooring) a stage
      side = lambda size: size // down
      if side(self.low_res_size) != side(self.input_size):
        lowest = max(8, side(self.input_size) * down)
        fix = (f"use a size from {lowest} to {self.input_size - 1}"
               if lowest < self.input_size else
               f"no size below {self.input_size} gives that map, so progressive "
               "resizing does not fit this network at this input_size")
        raise ConfigError(
            f"low_res_size {self.low_res_size} gives {self.model}'s dense head a "
            f"{side(self.low_res_size)}x{side(self.low_res_size)} map where input_size "
            f"{self.input_size} gives {side(self.input_size)}x{side(self.input_size)}: "
            + fix)
    if not 0 < self.low_res_fraction < 1:
      raise ConfigError("low_res_fraction must be above 0 and below 1; got "
                        f"{self.low_res_fraction}")

  def low_res_epochs(self) -> int:
    """How many epochs, from the first, train at low_res_size: the fraction of the
    epochs rounded half up, at least one and leaving at least one at input_size (so
    none in a one-epoch run). A run fixes it when it starts (`LoopState`)."""
    if not self.low_res_size:
      return 0
    return min(max(math.floor(self.low_res_fraction * self.epochs + 0.5), 1),
               self.epochs - 1)

  def train_size(self, epoch: int, low_res_epochs: int | None = None) -> int:
    """The side of the images that epoch `epoch` (0-based) trains on: small for the
    first `low_res_epochs` (default: this config's; a resumed run passes the boundary
    it started with, `LoopState.low_res_epochs`)."""
    if low_res_epochs is None:
      low_res_epochs = self.low_res_epochs()
    return self.low_res_size if epoch < low_res_epochs else self.input_size

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> Config:
    """A Config from its JSON form; unknown keys are refused, missing ones (a nested
    config's too, or the whole of one) default: a config.json written before a field
    existed reads as that field's default."""
    d = dict(d)
    nested = {name: dict(d.pop(name, {})) for name in NESTED}
    if "erase_area" in nested["augment"]:
      nested["augment"]["erase_area"] = tuple(nested["augment"]["erase_area"])
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)}) + sorted(
        f"{name}.{k}" for name, kind in NESTED.items()
        for k in set(nested[name]) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
      raise ConfigError(f"unknown config keys: {', '.join(unknown)} (known: "
                        f"{', '.join(sorted(field_types()))})")
    return cls(**{name: NESTED[name](**nested[name]) for name in NESTED}, **d)


CONFIG_FILE = "config.json"
# Where a workdir keeps its checkpoints: CHECKPOINTS/<kind>/<step>, one folder per kind
# (written by ferjax.checkpointing, which owns their contents).
CHECKPOINTS = "checkpoints"
CHECKPOINT_KINDS = ("latest", "best")


def read_config_json(workdir: str | os.PathLike) -> dict | None:
  """The JSON object in `workdir/config.json`, or None where there is no such file.

  Raises ConfigError, with what is wrong, where the file cannot be read or is not a
  JSON object (for example, something else was written over it).
  """
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    d = json.loads(path.read_bytes().decode("utf-8"))
  except OSError as e:
    raise ConfigError(f"cannot read '{path}': {e.strerror or e}") from None
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(
        f"'{path}' is not a run's config (not valid JSON: {e}); was another file "
        "written over it? Start a new run with another --workdir, or restore the file."
    ) from None
  if not isinstance(d, dict):
    raise ConfigError(f"'{path}' is not a run's config (a JSON {type(d).__name__}, "
                      "not an object).")
  return d


def load_run_config(workdir: str | os.PathLike) -> Config:
  """The Config of the run in `workdir`; ConfigError where it has none or a bad one."""
  d = read_config_json(workdir)
  if d is None:
    raise ConfigError(f"'{workdir}' is not a ferjax run: it has no {CONFIG_FILE}. Pass "
                      "the --workdir that `python -m ferjax.train` wrote to.")
  try:
    return Config.from_dict(d)
  except ConfigError as e:
    raise ConfigError(f"'{Path(workdir) / CONFIG_FILE}': {e}") from None
  except TypeError as e:
    raise ConfigError(f"'{Path(workdir) / CONFIG_FILE}' is not a valid config: {e}"
                      ) from None


def is_run_dir(path: str | os.PathLike) -> bool:
  """Whether `path` is a training run's workdir (it holds config.json or checkpoints)."""
  path = Path(path)
  return (path / CONFIG_FILE).is_file() or (path / CHECKPOINTS).is_dir()


def _check_augment(a: AugmentConfig) -> None:
  for name in ("max_rotation", "max_scale", "max_translate", "brightness", "contrast"):
    if not getattr(a, name) >= 0:
      raise ConfigError(f"augment.{name} must be at least 0; got {getattr(a, name)}")
  if not 0 <= a.erase_prob <= 1:
    raise ConfigError(f"augment.erase_prob must be between 0 and 1; got {a.erase_prob}")
  area = tuple(a.erase_area)
  if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
    raise ConfigError("augment.erase_area must be two fractions MIN,MAX with "
                      f"0 < MIN <= MAX <= 1; got {a.erase_area}")


def _check_conv_tuning(t: ConvTuning) -> None:
  if not isinstance(t, ConvTuning):
    raise ConfigError(f"conv_tuning must be a ferjax.ops.ConvTuning; got {t!r}")
  for f in dataclasses.fields(t):
    value = getattr(t, f.name)
    if f.name == "winograd_whole_mb":
      if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"conv_tuning.{f.name} must be at least 0 MB (0: never one "
                          f"chunk for the whole batch); got {value}")
    elif not (value > 0 and math.isfinite(value)):
      raise ConfigError(f"conv_tuning.{f.name} must be a positive number of MB; got "
                        f"{value}")


def field_types() -> dict[str, type]:
  """Every settable field ('augment.x', 'conv_tuning.x' for the nested ones) and its
  type."""
  hints = typing.get_type_hints(Config)
  out = {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name not in NESTED}
  for name, kind in NESTED.items():
    sub = typing.get_type_hints(kind)
    out.update({f"{name}.{f.name}": sub[f.name] for f in dataclasses.fields(kind)})
  return out


def _parse(text: str, kind) -> object:
  origin = typing.get_origin(kind)
  args = [a for a in typing.get_args(kind) if a is not type(None)]
  if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
    if text.lower() in ("none", "null", ""):
      return None
    return _parse(text, args[0])
  if origin is tuple:
    return tuple(_parse(v, args[0]) for v in text.split(","))
  if kind is bool:
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"'{text}' is not true or false")
  return kind(text)


def with_overrides(config: Config, assignments: Sequence[str]) -> Config:
  """`config` with each 'key=value' applied ('augment.max_rotation=15'), checked."""
  types = field_types()
  top, nested = {}, {name: {} for name in NESTED}
  for item in assignments:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in types:
      raise ConfigError(f"--set {item}: expected KEY=VALUE with KEY one of "
                        f"{', '.join(sorted(types))}")
    try:
      parsed = _parse(value.strip(), types[key])
    except (TypeError, ValueError) as e:
      raise ConfigError(f"--set {item}: {e}") from None
    name, dot, sub = key.partition(".")
    if dot:
      nested[name][sub] = parsed
    else:
      top[key] = parsed
  for name, values in nested.items():
    if values:
      top[name] = dataclasses.replace(getattr(config, name), **values)
  return dataclasses.replace(config, **top)


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped so that shapes never change)."""
  return num_train // batch_size


def basic() -> Config:
  """The seed's model 1: a plain 3-stage CNN, 5 epochs, no early stopping, no augmentation."""
  return Config(variant="basic", model="seed_cnn", epochs=5)


def early_stopping() -> Config:
  """The seed's model 2: the same CNN, up to 10 epochs, early stopping (patience 3, val loss)."""
  return Config(variant="early-stopping", model="seed_cnn", epochs=10,
                early_stopping=True, patience=3, monitor="val_loss")


def augmented() -> Config:
  """The seed's model 3 in two CPU-hours: vgg_slim on random 40x40 crops, 40 epochs, TTA."""
  return Config(variant="augmented", model="vgg_slim", epochs=40, batch_size=128,
                learning_rate=0.05, optimizer="sgd", weight_decay=5e-4,
                schedule="cosine", warmup_epochs=1, label_smoothing=0.1,
                early_stopping=True, patience=30, monitor="val_accuracy",
                input_size=40,
                augment=AugmentConfig(max_translate=0.0, erase_prob=0.25))


def augmented_long() -> Config:
  """The longer recipe: the full-width VGG on whole 48x48 images, up to 100 epochs (GPU)."""
  return Config(variant="augmented-long", model="vgg", epochs=100, batch_size=128,
                learning_rate=0.05, optimizer="sgd", weight_decay=5e-4,
                schedule="cosine", warmup_epochs=2, label_smoothing=0.1,
                early_stopping=True, patience=30, monitor="val_accuracy",
                augment=AugmentConfig())


def shipped() -> Config:
  """The shipped model's recipe (minutes on a GPU): augmented's network, 200 epochs.

  `vgg_slim` classifies over 500 crops/s on a 2-core CPU; the epoch with the best
  validation accuracy is kept.
  """
  return Config(variant="shipped", model="vgg_slim", epochs=200, batch_size=128,
                learning_rate=0.05, optimizer="sgd", weight_decay=5e-4,
                schedule="cosine", warmup_epochs=2, label_smoothing=0.1,
                early_stopping=True, patience=200, monitor="val_accuracy",
                input_size=40, augment=AugmentConfig(max_translate=0.0))


def tiny() -> Config:
  """A tiny CNN for smoke runs and tests: 2 stages, about 75k parameters."""
  return Config(variant="tiny", model="tiny", epochs=3, batch_size=32,
                learning_rate=3e-3, early_stopping=True, patience=2)


VARIANTS: dict[str, Callable[[], Config]] = {
    "basic": basic, "early-stopping": early_stopping, "augmented": augmented,
    "augmented-long": augmented_long, "shipped": shipped, "tiny": tiny}


def get_config(variant: str) -> Config:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant '{variant}'; known: {', '.join(VARIANTS)}")
  return VARIANTS[variant]()
