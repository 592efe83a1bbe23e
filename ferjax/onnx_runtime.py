"""The classifier on onnxruntime: the same answers as `ferjax.inference.Classifier`,
without importing JAX.

    clf = OnnxClassifier.load("fer6.npz")     # a weights file, or an exported .onnx
    probs = clf.classify(crops)               # uint8 [N, 48, 48] -> [N, C]

A weights file is turned into an ONNX graph in memory (`ferjax.onnx_export`, about
0.2 s; a network trained in bfloat16 runs here in float32); an `.onnx` file written by
`python -m ferjax.export` is read as it is, its classes, input size and calibration
from its metadata. Test-time augmentation builds
the ten views with NumPy, each placed so that the graph's centre crop is that view,
and averages their calibrated probabilities as `predict_step` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ferjax.modelfile import (
    ModelInfo,
    WeightsError,
    check_calibration,
    check_shapes,
    pretrained_path,
    read_weights,
)

IMAGE = 48
# Crops per run of the graph: onnxruntime on a 2-core CPU classified the most crops a
# second at 256 (of 8 to 1,024 tried; docs/deploy.md).
CHUNK = 256


def _softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def tta_views(images: np.ndarray, size: int, shift: int = 2) -> np.ndarray:
  """`ferjax.augment.tta_views` in NumPy: [10, N, S, S] uint8."""
  h, w = images.shape[1:]
  if size < h:
    y0, x0 = (h - size) // 2, (w - size) // 2
    views = [images[:, y0:y0 + size, x0:x0 + size]]
    for y, x in ((0, 0), (0, w - size), (h - size, 0), (h - size, w - size)):
      views.append(images[:, y:y + size, x:x + size])
  else:
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
    views = [images]
    for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
      views.append(padded[:, shift + dy:shift + dy + h, shift + dx:shift + dx + w])
  views += [v[:, :, ::-1] for v in views]
  return np.stack(views)


def _info_from_onnx(path: Path, meta: dict) -> ModelInfo:
  """The ModelInfo that an exported model's metadata describes, checked."""
  try:
    classes = json.loads(meta["classes"])
    calibration = json.loads(meta.get("calibration", "{}"))
    info = ModelInfo(model=meta.get("model", "onnx"), num_classes=len(classes),
                     input_size=int(meta.get("input_size", IMAGE)),
                     calibration=calibration, source={"onnx": str(path)})
    if not isinstance(calibration, dict) or list(info.classes) != classes:
      raise ValueError("classes or calibration")
  except (KeyError, ValueError, TypeError) as e:
    raise WeightsError(f"'{path}' is an ONNX model but not one written by `python -m "
                       f"ferjax.export` (its metadata lacks or garbles {e}); export "
                       "the model again.") from None
  check_calibration(path, info)
  return info


class OnnxClassifier:
  """Classifies 48x48 grayscale face crops with onnxruntime (CPU).

  The same interface as `ferjax.inference.Classifier` where a Predictor uses it:
  `classify`, `logits`, `warm_up`, `info`, `classes`, `calibrated`.
  """

  def __init__(self, info: ModelInfo, model: bytes, *, threads: int | None = None):
    import onnxruntime as ort
    self.info = info
    self.classes = info.classes
    self.calibrated = bool(info.calibration)
    self._scaling = {tta: info.scaling(tta).arrays() for tta in (False, True)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as faces.py
    if threads:
      opts.intra_op_num_threads = threads
    try:
      self._session = ort.InferenceSession(model, sess_options=opts,
                                           providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
      raise WeightsError(f"onnxruntime cannot load the model ({str(e).strip()[:300]})"
                         ) from None
    names = [i.name for i in self._session.get_inputs()]
    outs = [o.name for o in self._session.get_outputs()]
    if names != ["crops"] or not {"logits", "probabilities"} <= set(outs):
      raise WeightsError("the ONNX model does not take 'crops' and give 'logits' and "
                         f"'probabilities' (it takes {names}, gives {outs}); export it "
                         "with `python -m ferjax.export`.")

  @classmethod
  def load(cls, path: str | Path, **kwargs) -> OnnxClassifier:
    """A weights file (.npz) or an ONNX model written by `python -m ferjax.export`."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
      return cls._load_onnx(path, **kwargs)
    from ferjax import onnx_export
    info, params, stats = read_weights(path)
    check_shapes(path, info, params, stats)
    check_calibration(path, info)
    model = onnx_export.to_onnx(info, params, stats).SerializeToString()
    return cls(info, model, **kwargs)

  @classmethod
  def _load_onnx(cls, path: Path, **kwargs) -> OnnxClassifier:
    import onnx
    if not path.is_file():
      raise WeightsError(f"No ONNX model at '{path}'. Write one with `python -m "
                         "ferjax.export --pretrained OUT.onnx`.")
    try:
      data = path.read_bytes()
      proto = onnx.load_from_string(data)
    except PermissionError:
      raise WeightsError(f"'{path}' cannot be read: permission denied.") from None
    except Exception as e:  # protobuf's DecodeError and the like
      raise WeightsError(f"'{path}' is not a readable ONNX model ({type(e).__name__}); "
                         "export it again with `python -m ferjax.export`.") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    return cls(_info_from_onnx(path, meta), data, **kwargs)

  @classmethod
  def from_pretrained(cls, **kwargs) -> OnnxClassifier:
    return cls.load(pretrained_path(), **kwargs)

  def _run(self, crops: np.ndarray, output: str) -> np.ndarray:
    if len(crops) == 0:
      return np.zeros((0, len(self.classes)), np.float32)
    return np.concatenate([
        self._session.run([output], {"crops": np.ascontiguousarray(
            crops[i:i + CHUNK], np.uint8)})[0] for i in range(0, len(crops), CHUNK)])

  def _views(self, crops: np.ndarray) -> np.ndarray:
    """[10, N, 48, 48]: each TTA view where the graph's centre crop will find it."""
    s = self.info.input_size
    views = tta_views(crops, s)
    if s == IMAGE:
      return views
    off = (IMAGE - s) // 2
    canvas = np.zeros(views.shape[:2] + (IMAGE, IMAGE), np.uint8)
    canvas[:, :, off:off + s, off:off + s] = views
    return canvas

  def _check(self, crops) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim != 3 or crops.shape[1:] != (IMAGE, IMAGE):
      raise ValueError(f"crops must be [N, 48, 48] uint8, got shape {crops.shape}")
    return crops.astype(np.uint8, copy=False)

  def logits(self, crops: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Raw logits: [N, C], or [10, N, C] (one per view) with `tta`."""
    crops = self._check(crops)
    if not tta:
      return self._run(crops, "logits")
    if len(crops) == 0:
      return np.zeros((10, 0, len(self.classes)), np.float32)
    views = self._views(crops)
    z = self._run(views.reshape(-1, IMAGE, IMAGE), "logits")
    return z.reshape(views.shape[0], len(crops), -1)

  def classify(self, crops: np.ndarray, *, tta: bool = False,
               calibrated: bool = True) -> np.ndarray:
    """Probabilities [N, C], calibrated where the model carries a calibration."""
    crops = self._check(crops)
    if not tta and calibrated:
      return self._run(crops, "probabilities")
    z = self.logits(crops, tta=tta)
    if calibrated:
      scale, bias = self._scaling[tta]
      z = z * scale + bias
    p = _softmax(z.astype(np.float32))
    return p.mean(0) if tta else p

  def warm_up(self, *, tta: bool = False) -> None:
    self.classify(np.zeros((1, IMAGE, IMAGE), np.uint8), tta=tta)
