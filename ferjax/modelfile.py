"""A trained model's description and its weights file, read without JAX.

`ModelInfo` (what a weights file says about its network: name, classes, input size,
calibration), `Scaling` (a calibration's per-class map of the logits) and
`read_weights` (a `.npz` written by `ferjax.inference.save_weights`, checked, as NumPy
arrays) need only NumPy, so that the ONNX path (`ferjax.onnx_runtime`) runs a model
without importing JAX. `ferjax.inference.load_weights` adds the check of every array's
shape against the Flax network.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ferjax.architectures import ARCHITECTURES, settings
from ferjax.classes import class_names
from ferjax.errors import FerjaxError

WEIGHTS_FORMAT = "ferjax-weights"
WEIGHTS_VERSION = 1
# The shipped model's file name inside the package (ferjax/pretrained/).
PRETRAINED = "fer6.npz"


class WeightsError(FerjaxError):
  """A weights file is missing, corrupt, or does not fit the model it names."""


@dataclasses.dataclass(frozen=True)
class Scaling:
  """z -> z * scale + bias, per class (the identity: scale 1, bias 0)."""
  scale: tuple[float, ...]
  bias: tuple[float, ...]

  @classmethod
  def identity(cls, num_classes: int) -> Scaling:
    return cls(scale=(1.0,) * num_classes, bias=(0.0,) * num_classes)

  @classmethod
  def from_dict(cls, d: dict, num_classes: int) -> Scaling:
    """A Scaling from its JSON form, checked: finite, positive scales, C entries."""
    scale = tuple(float(v) for v in d["scale"])
    bias = tuple(float(v) for v in d["bias"])
    if len(scale) != num_classes or len(bias) != num_classes:
      raise ValueError(f"a calibration needs {num_classes} scales and biases; got "
                       f"{len(scale)} and {len(bias)}")
    if not all(np.isfinite(scale)) or not all(np.isfinite(bias)) or min(scale) <= 0:
      raise ValueError("a calibration's scales must be positive and finite (a "
                       f"temperature of 1/scale), its biases finite; got scale "
                       f"{list(scale)}, bias {list(bias)}")
    return cls(scale=scale, bias=bias)

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(self.scale, np.float32), np.asarray(self.bias, np.float32)

  @property
  def is_identity(self) -> bool:
    return all(s == 1.0 for s in self.scale) and all(b == 0.0 for b in self.bias)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a weights file says about its network."""
  model: str
  num_classes: int
  input_size: int = 48
  dtype: str = "float32"
  source: dict = dataclasses.field(default_factory=dict)
  # Fitted on the validation split (ferjax.calibration): {"single": {"scale": [C],
  # "bias": [C]}, "tta": {...}, "threshold": {"single": t, "tta": t}, "fit": {...}}.
  # Empty for a file written before calibration existed: probabilities as they are.
  calibration: dict = dataclasses.field(default_factory=dict)

  @property
  def classes(self) -> tuple[str, ...]:
    return class_names(self.num_classes)

  def scaling(self, tta: bool):
    """The calibration's Scaling for single-view or TTA predictions (identity if
    there is none); ValueError where the stored one is invalid."""
    entry = self.calibration.get("tta" if tta else "single")
    if entry is None:
      return Scaling.identity(self.num_classes)
    return Scaling.from_dict(entry, self.num_classes)

  @property
  def final_fit(self) -> bool:
    """Whether the network trained on the validation images too (`final_fit`)."""
    return bool(self.source.get("final_fit"))

  def calibration_advice(self) -> str:
    """For a model without calibration: how to get calibrated probabilities."""
    if self.final_fit:
      return ("it is a final fit, trained on the validation images too, so none are "
              "held out to calibrate it on; the same recipe with `--set "
              "final_fit=false` (and the epochs its screen used) holds them out and "
              "calibrates itself, and the shipped model is calibrated")
    return "`python -m ferjax.calibrate` fits a calibration on the validation split"

  def threshold(self, tta: bool) -> float:
    """The top probability below which a face is uncertain (0 without calibration)."""
    t = float(self.calibration.get("threshold", {}).get("tta" if tta else "single", 0.0))
    if not 0.0 <= t <= 1.0:
      raise ValueError(f"a calibration threshold must be 0 to 1; got {t}")
    return t


def pretrained_path() -> Path:
  """Where the shipped weights file lies inside the installed package."""
  return Path(str(importlib.resources.files("ferjax") / "pretrained" / PRETRAINED))


def read_weights(path: str | Path) -> tuple[ModelInfo, dict, dict]:
  """(info, params, batch_stats) of a weights file, the trees flat ("Conv_0/kernel":
  float32 array), checked except for the arrays' shapes."""
  path = Path(path)
  if not path.is_file():
    if path == pretrained_path():
      raise WeightsError(f"The model that ships with ferjax is missing ('{path}'); "
                         "reinstall ferjax.")
    raise WeightsError(f"No weights file at '{path}'. Write one from a trained run with "
                       "`python -m ferjax.export --workdir DIR OUT.npz`.")
  if os.access(path, os.R_OK) and not zipfile.is_zipfile(path):
    # np.load would try it as a pickle and advise allow_pickle=True: never for weights.
    raise WeightsError(f"'{path}' is not a readable ferjax weights file (not an .npz "
                       "archive, or a truncated one); export it again with "
                       "`python -m ferjax.export`.")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except PermissionError:
    raise WeightsError(f"'{path}' cannot be read: permission denied.") from None
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise WeightsError(f"'{path}' is not a readable ferjax weights file ({e}); export "
                       "it again with `python -m ferjax.export`.") from None
  try:
    meta = json.loads(arrays.pop("__meta__").tobytes())
  except (KeyError, ValueError):
    meta = None
  if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
    raise WeightsError(f"'{path}' is not a ferjax weights file (no ferjax metadata); "
                       "write one with `python -m ferjax.export`.")
  if meta.get("version", 0) > WEIGHTS_VERSION:
    raise WeightsError(f"'{path}' was written by a newer ferjax (format version "
                       f"{meta['version']}); upgrade ferjax to read it.")
  fields = {f.name for f in dataclasses.fields(ModelInfo)}
  info = ModelInfo(**{k: v for k, v in meta.items() if k in fields})
  if info.model not in ARCHITECTURES:
    raise WeightsError(f"'{path}' holds a '{info.model}' network, which this ferjax "
                       f"does not know (known: {', '.join(ARCHITECTURES)}).")
  trees = {"params": {}, "batch_stats": {}}
  for k, v in arrays.items():
    prefix, _, rest = k.partition("/")
    if prefix not in trees:
      raise WeightsError(f"'{path}' has an unexpected entry '{k}'.")
    trees[prefix][rest] = np.asarray(v, np.float32)
  return info, trees["params"], trees["batch_stats"]


def check_calibration(path, info: ModelInfo) -> None:
  """A WeightsError unless the file's calibration is valid for its classes (checked
  after its arrays' shapes, so that a wrong class count is said as such)."""
  try:
    for tta in (False, True):
      info.scaling(tta)
      info.threshold(tta)
  except (ValueError, TypeError, KeyError) as e:
    raise WeightsError(f"'{path}' holds an invalid calibration ({e}); calibrate the "
                       "model again with `python -m ferjax.calibrate`.") from None


def expected_shapes(info: ModelInfo) -> dict[str, tuple[int, ...]]:
  """Every array a weights file of `info`'s network holds, flat ("params/Conv_0/kernel")
  with its shape, from `ferjax.architectures` (no JAX)."""
  net = settings(info.model)
  out: dict[str, tuple[int, ...]] = {}
  conv = bn = dense = 0
  side, cin = info.input_size, 1

  def norm(width: int) -> None:
    nonlocal bn
    if net["batch_norm"]:
      out[f"params/BatchNorm_{bn}/scale"] = out[f"params/BatchNorm_{bn}/bias"] = (width,)
      out[f"batch_stats/BatchNorm_{bn}/mean"] = (width,)
      out[f"batch_stats/BatchNorm_{bn}/var"] = (width,)
      bn += 1

  for width in net["widths"]:
    for i in range(net["convs_per_stage"]):
      out[f"params/Conv_{conv}/kernel"] = (3, 3, cin, width)
      if not net["batch_norm"]:
        out[f"params/Conv_{conv}/bias"] = (width,)
      conv, cin = conv + 1, width
      norm(width)
      if net["pool_first"] and i == 0:
        side //= 2
    if not net["pool_first"]:
      side //= 2
  features = cin
  if net["dense"]:
    out[f"params/Dense_{dense}/kernel"] = (side * side * cin, net["dense"])
    if not net["batch_norm"]:
      out[f"params/Dense_{dense}/bias"] = (net["dense"],)
    dense, features = dense + 1, net["dense"]
    norm(net["dense"])
  out[f"params/Dense_{dense}/kernel"] = (features, info.num_classes)
  out[f"params/Dense_{dense}/bias"] = (info.num_classes,)
  return out


def check_shapes(path, info: ModelInfo, params: dict, batch_stats: dict) -> None:
  """A WeightsError unless the flat trees hold exactly `expected_shapes(info)`."""
  want = expected_shapes(info)
  got = {**{f"params/{k}": tuple(v.shape) for k, v in params.items()},
         **{f"batch_stats/{k}": tuple(v.shape) for k, v in batch_stats.items()}}
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing or extra or wrong:
    detail = "; ".join(f"{name}: {', '.join(keys[:3])}" for name, keys in
                       (("missing", missing), ("unexpected", extra),
                        ("wrong shape", wrong)) if keys)
    raise WeightsError(f"'{path}' does not fit a '{info.model}' network with "
                       f"{info.num_classes} classes and {info.input_size}x"
                       f"{info.input_size} input ({detail}).")


