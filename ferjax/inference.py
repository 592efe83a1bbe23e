"""Inference: the predict step, trained weights as a file, and a classifier of face crops.

Using a model never imports the training loop: this module needs the model registry
(`ferjax.models`) and, to read a run's checkpoint, the state's shape (`ferjax.state`).

A weights file (`.npz`, written by `save_weights` and `python -m ferjax.export`) holds
the parameters (float16) and BatchNorm statistics (float32) of one network, with a JSON
entry naming the model, its classes and input size, so that `Classifier.load(path)`
needs nothing else. The package ships one (`ferjax/pretrained/`), which
`load_pretrained()` loads.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ferjax import augment as augment_lib
from ferjax import models
from ferjax.classes import class_names
from ferjax.errors import FerjaxError

WEIGHTS_FORMAT = "ferjax-weights"
WEIGHTS_VERSION = 1
# The shipped model's file name inside the package (ferjax/pretrained/).
PRETRAINED = "fer6.npz"
# Batch sizes the classifier compiles for; a call pads its crops up to the next one
# (several calls for more), so varying face counts never recompile.
BUCKETS = (1, 8, 64, 256)
# Images per pass of the network when predicting on a CPU: one pass's activations
# (48x48x64 floats per image in the first stage) then stay in cache from layer to layer
# (docs/performance.md).
CPU_EVAL_CHUNK = 8


class WeightsError(FerjaxError):
  """A weights file is missing, corrupt, or does not fit the model it names."""


def to_unit(images: jax.Array) -> jax.Array:
  """uint8 pixels to floats in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def _apply_in_chunks(apply, x: jax.Array, n: int) -> jax.Array:
  """`apply(x)` for a per-image function, computed as passes over n images at a time.

  The batch is padded to a multiple of n. Pass j takes images j, j + B/n, j + 2B/n, ...
  so that a batch sharded over devices along its first axis stays sharded in each pass.
  """
  b = x.shape[0]
  x = jnp.pad(x, [(0, -b % n)] + [(0, 0)] * (x.ndim - 1))
  passes = x.reshape(n, x.shape[0] // n, *x.shape[1:]).swapaxes(0, 1)
  out = jax.lax.map(apply, passes)  # [B/n, n, ...]
  return out.swapaxes(0, 1).reshape(x.shape[0], *out.shape[2:])[:b]


def predict_step(state: Any, images: jax.Array, scaling=None, *, tta: bool,
                 input_size: int = 48, logits: bool = False) -> jax.Array:
  """Class probabilities [B, C] for uint8 images [B, 48, 48]; TTA averages 10 views.

  `scaling`: (scale [C], bias [C]) applied to the logits before the softmax (the
  calibration, ferjax.calibration). `logits=True` returns the raw logits instead:
  [B, C], or [10, B, C] with TTA.

  `state` is anything with `apply_fn`, `params` and `batch_stats` (a TrainState or
  `Classifier.state`). A network that sees input_size < 48 gets the centre crop
  (TTA: the ten crops). On a CPU the network runs over CPU_EVAL_CHUNK images at a
  time, and TTA one view after another: a CPU gains nothing from a large batch, whose
  activations no longer fit in cache.
  """
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  apply = lambda x: state.apply_fn(variables, x[..., None], train=False)
  on_cpu = jax.default_backend() == "cpu"
  if on_cpu:
    apply = partial(_apply_in_chunks, apply, n=min(CPU_EVAL_CHUNK, images.shape[0]))
  x = to_unit(images)
  if not tta:
    z = apply(augment_lib.center_crop(x, input_size))
  else:
    views = augment_lib.tta_views(x, size=input_size)  # [V, B, S, S]
    if on_cpu:
      z = jax.lax.map(apply, views)
    else:
      v, b = views.shape[:2]
      z = apply(views.reshape(v * b, *views.shape[2:])).reshape(v, b, -1)
  if logits:
    return z
  if scaling is not None:
    z = z * scaling[0] + scaling[1]
  p = jax.nn.softmax(z)
  return p.mean(0) if tta else p


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class InferenceState:
  """What predicting needs: the network's apply function and its variables."""
  params: Any
  batch_stats: Any
  apply_fn: Any = dataclasses.field(metadata={"static": True})


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
    from ferjax.calibration import Scaling
    entry = self.calibration.get("tta" if tta else "single")
    if entry is None:
      return Scaling.identity(self.num_classes)
    return Scaling.from_dict(entry, self.num_classes)

  def threshold(self, tta: bool) -> float:
    """The top probability below which a face is uncertain (0 without calibration)."""
    t = float(self.calibration.get("threshold", {}).get("tta" if tta else "single", 0.0))
    if not 0.0 <= t <= 1.0:
      raise ValueError(f"a calibration threshold must be 0 to 1; got {t}")
    return t


class Classifier:
  """Classifies 48x48 grayscale face crops with one trained network.

  `classify(crops)` takes uint8 [N, 48, 48] and returns probabilities [N, C] in the
  order of `classes`. Crops go through the network in fixed bucket sizes (BUCKETS), so
  any count reuses a handful of compiled functions.
  """

  def __init__(self, info: ModelInfo, params, batch_stats):
    self.info = info
    self.classes = info.classes
    self.calibrated = bool(info.calibration)
    self._scaling = {tta: info.scaling(tta).arrays() for tta in (False, True)}
    net = models.create_model(info.model, num_classes=info.num_classes, dtype=info.dtype)
    self.state = InferenceState(params=params, batch_stats=batch_stats,
                                apply_fn=net.apply)
    self._steps = {(tta, logits): jax.jit(partial(predict_step, tta=tta, logits=logits,
                                                  input_size=info.input_size))
                   for tta in (False, True) for logits in (False, True)}

  # -- constructors
  @classmethod
  def load(cls, path: str | Path) -> Classifier:
    """A classifier from a weights file written by `save_weights`."""
    info, params, batch_stats = load_weights(path)
    return cls(info, params, batch_stats)

  @classmethod
  def from_workdir(cls, workdir: str | Path, *, dtype: str | None = None
                   ) -> Classifier:
    """A classifier from the best checkpoint of a training run's workdir."""
    info, params, batch_stats = restore_run(workdir)
    if dtype is not None:
      info = dataclasses.replace(info, dtype=dtype)
    return cls(info, params, batch_stats)

  # -- prediction
  def classify(self, crops: np.ndarray, *, tta: bool = False,
               calibrated: bool = True) -> np.ndarray:
    """Probabilities [N, C] for uint8 crops [N, 48, 48]: calibrated where the
    weights carry a calibration (`info.calibration`) unless `calibrated=False`."""
    scaling = self._scaling[tta] if calibrated else None
    return self._run(crops, tta=tta, logits=False, scaling=scaling)

  def logits(self, crops: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Raw logits: [N, C], or [10, N, C] (one per view) with `tta`."""
    return self._run(crops, tta=tta, logits=True, scaling=None)

  def _run(self, crops, *, tta: bool, logits: bool, scaling) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim != 3 or crops.shape[1:] != (48, 48):
      raise ValueError(f"crops must be [N, 48, 48] uint8, got shape {crops.shape}")
    out, step = [], self._steps[tta, logits]
    axis = 1 if (logits and tta) else 0
    for i in range(0, len(crops), BUCKETS[-1]):
      chunk = crops[i:i + BUCKETS[-1]].astype(np.uint8)
      size = next(b for b in BUCKETS if b >= len(chunk))
      padded = np.zeros((size, 48, 48), np.uint8)
      padded[:len(chunk)] = chunk
      res = np.asarray(step(self.state, padded, scaling))
      out.append(res[:, :len(chunk)] if axis else res[:len(chunk)])
    if out:
      return np.concatenate(out, axis=axis)
    empty = (10, 0, len(self.classes)) if axis else (0, len(self.classes))
    return np.zeros(empty, np.float32)

  def warm_up(self, *, tta: bool = False) -> None:
    """Compiles every bucket size now rather than on first use."""
    for b in BUCKETS:
      self.classify(np.zeros((b, 48, 48), np.uint8), tta=tta)


# ----------------------------------------------------------------------------- files

def save_weights(path: str | Path, *, info: ModelInfo, params, batch_stats,
                 overwrite: bool = True) -> Path:
  """Writes a weights file: float16 parameters, float32 statistics, and `info`.

  The file appears whole or not at all. With `overwrite=False` an existing file is
  never replaced (FileExistsError), even one that appears while this one is written.
  """
  path = Path(path)
  arrays = {}
  for prefix, tree, dtype in (("params", params, np.float16),
                              ("batch_stats", batch_stats, np.float32)):
    for k, v in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items():
      arrays[f"{prefix}/{k}"] = np.asarray(v, dtype)
  meta = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION,
          **dataclasses.asdict(info), "classes": list(info.classes)}
  arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("wb") as f:
    np.savez_compressed(f, **arrays)
  if overwrite:
    tmp.replace(path)
    return path
  try:
    os.link(tmp, path)  # atomic, and fails where `path` exists
  finally:
    tmp.unlink()
  return path


def load_weights(path: str | Path) -> tuple[ModelInfo, Any, Any]:
  """(info, params, batch_stats) of a weights file, checked against its model."""
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
  if info.model not in models.MODELS:
    raise WeightsError(f"'{path}' holds a '{info.model}' network, which this ferjax "
                       f"does not know (known: {', '.join(models.MODELS)}).")
  trees = {"params": {}, "batch_stats": {}}
  for k, v in arrays.items():
    prefix, _, rest = k.partition("/")
    if prefix not in trees:
      raise WeightsError(f"'{path}' has an unexpected entry '{k}'.")
    trees[prefix][rest] = jnp.asarray(v, jnp.float32)
  params = traverse_util.unflatten_dict(trees["params"], sep="/")
  batch_stats = traverse_util.unflatten_dict(trees["batch_stats"], sep="/")
  _check_shapes(path, info, params, batch_stats)
  try:
    for tta in (False, True):
      info.scaling(tta)
      info.threshold(tta)
  except (ValueError, TypeError, KeyError) as e:
    raise WeightsError(f"'{path}' holds an invalid calibration ({e}); calibrate the "
                       "model again with `python -m ferjax.calibrate`.") from None
  return info, params, batch_stats


def _check_shapes(path, info: ModelInfo, params, batch_stats) -> None:
  """Raises WeightsError unless the trees have exactly the model's shapes."""
  net = models.create_model(info.model, num_classes=info.num_classes)
  side = info.input_size
  want = jax.eval_shape(lambda: net.init(jax.random.key(0),
                                         jnp.zeros((1, side, side, 1)), train=False))
  got = {"params": params, "batch_stats": batch_stats}
  flat_want = traverse_util.flatten_dict(
      {k: want.get(k, {}) for k in got}, sep="/")
  flat_got = traverse_util.flatten_dict(got, sep="/")
  missing = sorted(set(flat_want) - set(flat_got))
  extra = sorted(set(flat_got) - set(flat_want))
  wrong = sorted(k for k in set(flat_want) & set(flat_got)
                 if tuple(flat_want[k].shape) != tuple(flat_got[k].shape))
  if missing or extra or wrong:
    detail = "; ".join(f"{name}: {', '.join(keys[:3])}" for name, keys in
                       (("missing", missing), ("unexpected", extra),
                        ("wrong shape", wrong)) if keys)
    raise WeightsError(f"'{path}' does not fit a '{info.model}' network with "
                       f"{info.num_classes} classes and {side}x{side} input ({detail}).")


def restore_run(workdir: str | Path) -> tuple[ModelInfo, Any, Any]:
  """(info, params, batch_stats) of the best checkpoint of a training run."""
  from ferjax import checkpointing, state
  from ferjax.configs import load_run_config
  workdir = Path(workdir)
  config = load_run_config(workdir)
  if not (workdir / "checkpoints" / "best").is_dir():
    raise WeightsError(f"'{workdir}' has no best checkpoint yet: train for at least "
                       "one epoch first.")
  mesh = state.make_mesh(jax.devices()[:1])
  # The optimizer's shape does not depend on the schedule length; any count will do.
  template = state.abstract_state(config, mesh=mesh, steps_per_epoch=1)
  ckpt = checkpointing.Checkpoints(workdir, create=False)
  try:
    restored = ckpt.restore("best", template)
  finally:
    ckpt.close()
  if restored is None:
    raise WeightsError(f"'{workdir}' has no best checkpoint yet: train for at least "
                       "one epoch first.")
  best = restored[0]
  info = ModelInfo(model=config.model, num_classes=config.num_classes,
                   input_size=config.input_size, dtype=config.dtype,
                   source={"variant": config.variant, "step": int(best.step)},
                   calibration=_run_calibration(workdir, int(best.step)))
  return info, best.params, best.batch_stats


def _run_calibration(workdir: Path, step: int) -> dict:
  """The calibration that the run's report fitted for its best checkpoint, or {} (a
  run from before calibration, or one whose best checkpoint changed since)."""
  from ferjax.calibration import RUN_FILE
  path = workdir / RUN_FILE
  try:
    entry = json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
  if not isinstance(entry, dict) or entry.get("step") not in (None, step):
    return {}
  return entry


def pretrained_path() -> Path:
  """Where the shipped weights file lies inside the installed package."""
  return Path(str(importlib.resources.files("ferjax") / "pretrained" / PRETRAINED))


def load_pretrained() -> Classifier:
  """The model that ships with ferjax (6 classes), ready to classify 48x48 crops."""
  return Classifier.load(pretrained_path())
