"""Inference: the predict step, trained weights as a file, and a classifier of face crops.

Using a model never imports the training loop: this module needs the model registry
(`ferjax.models`) and, to read a run's checkpoint, the state's shape (`ferjax.state`).

A weights file (`.npz`, written by `save_weights` and `python -m ferjax.export`) holds
the parameters (float16) and BatchNorm statistics (float32) of one network, with a JSON
entry naming the model, its classes and input size, so that `Classifier.load(path)`
needs nothing else. The package ships one (`ferjax/pretrained/`), which
`load_pretrained()` loads.

A whole data split is classified by `SplitPredictor`, in one place for training (each
epoch's validation, the report), `evaluate`, `bench` and the experiments.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

from ferjax import augment as augment_lib
from ferjax import input_pipeline, models, ops
from ferjax.modelfile import (  # noqa: F401 - re-exported: inference.ModelInfo, ...
    PRETRAINED,
    WEIGHTS_FORMAT,
    WEIGHTS_VERSION,
    ModelInfo,
    WeightsError,
    check_calibration,
    check_shapes,
    pretrained_path,
    read_weights,
)

# Batch sizes the classifier compiles for; a call pads its crops up to the next one
# (several calls for more), so varying face counts never recompile.
BUCKETS = (1, 8, 64, 256)
# Images per pass of the network when predicting on a CPU: one pass's activations
# (48x48x64 floats per image in the first stage) then stay in cache from layer to layer
# (docs/performance.md).
CPU_EVAL_CHUNK = 8
# Images per batch when classifying a whole split (rounded up to a multiple of the
# mesh's device count).
EVAL_BATCH_SIZE = 256


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


class Classifier:
  """Classifies 48x48 grayscale face crops with one trained network.

  `classify(crops)` takes uint8 [N, 48, 48] and returns probabilities [N, C] in the
  order of `classes`. Crops go through the network in fixed bucket sizes (BUCKETS), so
  any count reuses a handful of compiled functions. `conv_tuning` sizes the CPU
  kernels' chunks (`ferjax.ops.ConvTuning`).
  """

  def __init__(self, info: ModelInfo, params, batch_stats, *,
               conv_tuning: ops.ConvTuning = ops.DEFAULT_TUNING):
    self.info = info
    self.classes = info.classes
    self.calibrated = bool(info.calibration)
    self._scaling = {tta: info.scaling(tta).arrays() for tta in (False, True)}
    net = models.create_model(info.model, num_classes=info.num_classes, dtype=info.dtype,
                              conv_tuning=conv_tuning)
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


def eval_batch_size(mesh) -> int:
  """EVAL_BATCH_SIZE rounded up to a multiple of the mesh's device count."""
  n = mesh.devices.size
  return -(-EVAL_BATCH_SIZE // n) * n


class SplitPredictor:
  """Classifies whole data splits, in batches of one shape sharded over a device mesh.

  A split's images go through `predict_step` in batches of `batch_size` (the last one
  padded), each split along the mesh's 'data' axis; every host of a multi-host run
  feeds its part and gets the whole answer. `state` is anything `predict_step` takes
  (a TrainState, `Classifier.state`): each kind of answer (probabilities or logits,
  with or without TTA) compiles once for a state's structure, whatever the split.
  """

  def __init__(self, *, input_size: int, mesh=None, batch_size: int | None = None):
    """Args:
      input_size: the side of the images the network sees (`predict_step`).
      mesh: the devices to predict on (default: the first one, as a Classifier).
      batch_size: a multiple of the mesh's device count (default: EVAL_BATCH_SIZE
        rounded up to one).
    """
    from ferjax import state as state_lib  # for its mesh helpers only
    self.mesh = mesh if mesh is not None else state_lib.make_mesh(jax.devices()[:1])
    self.batch_size = batch_size or eval_batch_size(self.mesh)
    replicated = NamedSharding(self.mesh, P())
    data = NamedSharding(self.mesh, P("data"))
    self.steps = {(tta, logits): jax.jit(partial(predict_step, tta=tta, logits=logits,
                                                 input_size=input_size),
                                         in_shardings=(replicated, data),
                                         out_shardings=replicated)
                  for tta in (False, True) for logits in (False, True)}
    rows = state_lib.host_slice(self.batch_size)
    self._put = lambda images: state_lib.shard_batch(self.mesh, images[rows])[0]

  def probs(self, state, split: input_pipeline.Split, *, tta: bool = False
            ) -> np.ndarray:
    """Probabilities [N, C] of the split's images (TTA: the mean over the views)."""
    return self._run(state, split, tta=tta, logits=False)

  def logits(self, state, split: input_pipeline.Split, *, tta: bool = False
             ) -> np.ndarray:
    """Raw logits [N, C], or [10, N, C] (one per view) with `tta`."""
    return self._run(state, split, tta=tta, logits=True)

  def _run(self, state, split, *, tta: bool, logits: bool) -> np.ndarray:
    step, axis = self.steps[tta, logits], int(tta and logits)
    out = []
    for images, _, mask in input_pipeline.eval_batches(split, batch_size=self.batch_size):
      answer = np.asarray(jax.device_get(step(state, self._put(images))))
      out.append(answer[:, mask] if axis else answer[mask])
    if out:
      return np.concatenate(out, axis=axis)
    return np.zeros((10, 0, 0) if axis else (0, 0), np.float32)


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
  info, flat_params, flat_stats = read_weights(path)
  check_shapes(path, info, flat_params, flat_stats)
  check_calibration(path, info)
  params = traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flat_params.items()}, sep="/")
  batch_stats = traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flat_stats.items()}, sep="/")
  return info, params, batch_stats


def restore_run(workdir: str | Path) -> tuple[ModelInfo, Any, Any]:
  """(info, params, batch_stats) of the best checkpoint of a training run."""
  from ferjax import checkpointing, state
  from ferjax.configs import CHECKPOINTS, load_run_config
  workdir = Path(workdir)
  config = load_run_config(workdir)
  if not (workdir / CHECKPOINTS / "best").is_dir():
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
                   # A final fit trained on its validation images: evaluate and
                   # calibrate refuse them, and export carries this into the file.
                   source={"variant": config.variant, "step": int(best.step),
                           **({"final_fit": True} if config.final_fit else {})},
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


def load_pretrained() -> Classifier:
  """The model that ships with ferjax (6 classes), ready to classify 48x48 crops."""
  return Classifier.load(pretrained_path())
