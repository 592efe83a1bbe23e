"""A trained classifier as an ONNX model, built with the `onnx` package's own helpers.

    model = to_onnx(info, params, batch_stats)      # an onnx.ModelProto
    onnx.save(model, "fer6.onnx")

The graph takes what `Classifier.classify` takes, uint8 face crops [N, 48, 48] (N is
dynamic), and gives `logits` [N, C] (the network's own) and `probabilities` [N, C]
(the single-view calibration applied, then a softmax). Inside: the centre crop the
network sees, the pixel normalisation, each convolution with its BatchNorm folded in
(one Conv with a bias), ReLU, 2x2 max pooling, the dense layers (the hidden one with its
BatchNorm folded), in NCHW with one transpose before flattening so that the flattened
order is Flax's NHWC order. Dropout is gone (inference).

The model's metadata (`metadata_props`) carries what a program without ferjax needs:
`classes` (JSON list), `input_size`, `pixel_mean`/`pixel_std`, `calibration` (JSON:
the single-view and TTA scalings and thresholds, as in the weights file), and the
network's name. docs/deploy.md says why this is built here rather than traced by a
converter, and how to use the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from ferjax import architectures

OPSET = 17
BN_EPSILON = 1e-5  # flax.linen.BatchNorm's default, which ConvNet uses
INPUT = "crops"
OUTPUTS = ("logits", "probabilities")


def _np(tree) -> dict:
  """A tree of arrays, nested or flat ("Conv_0/kernel"), as nested float64 NumPy."""
  out: dict = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out[k] = _np(v)
      continue
    *parents, leaf = k.split("/")
    node = out
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = np.asarray(v, np.float64)
  return out


class _Net:
  """A network's ConvNet settings as attributes (ferjax.architectures)."""

  def __init__(self, name: str):
    self.__dict__.update(architectures.settings(name))


def _fold(w: np.ndarray, b: np.ndarray | None, bn: dict | None, stats: dict | None,
          out_axis: int) -> tuple[np.ndarray, np.ndarray]:
  """Weights and bias with a following BatchNorm folded in (float64, then float32)."""
  bias = np.zeros(w.shape[out_axis]) if b is None else b
  if bn is not None:
    k = bn["scale"] / np.sqrt(stats["var"] + BN_EPSILON)
    shape = [1] * w.ndim
    shape[out_axis] = -1
    w = w * k.reshape(shape)
    bias = (bias - stats["mean"]) * k + bn["bias"]
  return w.astype(np.float32), bias.astype(np.float32)


def to_onnx(info, params, batch_stats, *, producer_version: str = ""):
  """The ONNX model of a classifier (`ModelInfo`, params, batch_stats as loaded by
  `ferjax.inference.load_weights` or `restore_run`, or flat as `ferjax.modelfile.
  read_weights` gives them). Needs NumPy and onnx only."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  net = _Net(info.model)
  params, stats = _np(params), _np(batch_stats)
  nodes, inits = [], []
  counter = {"conv": 0, "bn": 0, "dense": 0, "node": 0}

  def const(name: str, value) -> str:
    inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name

  def node(op: str, inputs, **attrs) -> str:
    counter["node"] += 1
    out = f"{op.lower()}_{counter['node']}"
    nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
    return out

  def next_bn():
    if not net.batch_norm:
      return None, None
    name = f"BatchNorm_{counter['bn']}"
    counter["bn"] += 1
    return params[name], stats[name]

  # uint8 [N, 48, 48] -> the centre crop the network sees, normalised, [N, 1, S, S].
  s, off = info.input_size, (48 - info.input_size) // 2
  x = node("Cast", [INPUT], to=TensorProto.FLOAT)
  if s < 48:
    x = node("Slice", [x, const("crop_starts", np.array([off, off], np.int64)),
                       const("crop_ends", np.array([off + s, off + s], np.int64)),
                       const("crop_axes", np.array([1, 2], np.int64))])
  x = node("Unsqueeze", [x, const("channel_axis", np.array([1], np.int64))])
  # (x / 255 - mean) / std as one multiply-add.
  mean, std = architectures.PIXEL_MEAN, architectures.PIXEL_STD
  x = node("Mul", [x, const("pixel_scale", np.array(1.0 / (255.0 * std), np.float32))])
  x = node("Add", [x, const("pixel_shift", np.array(-mean / std, np.float32))])
  for _ in net.widths:
    for i in range(net.convs_per_stage):
      conv = params[f"Conv_{counter['conv']}"]
      counter["conv"] += 1
      kernel = conv["kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
      bn, st = next_bn()
      w, b = _fold(kernel, conv.get("bias"), bn, st, out_axis=0)
      k = counter["conv"]
      x = node("Conv", [x, const(f"conv{k}_w", w), const(f"conv{k}_b", b)],
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
      x = node("Relu", [x])
      if net.pool_first and i == 0:
        x = node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    if not net.pool_first:
      x = node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
  if net.dense:
    x = node("Transpose", [x], perm=[0, 2, 3, 1])  # flatten in Flax's NHWC order
    x = node("Flatten", [x], axis=1)
    dense = params[f"Dense_{counter['dense']}"]
    counter["dense"] += 1
    bn, st = next_bn()
    w, b = _fold(dense["kernel"], dense.get("bias"), bn, st, out_axis=1)
    x = node("Gemm", [x, const("hidden_w", w), const("hidden_b", b)])
    x = node("Relu", [x])
  else:
    x = node("ReduceMean", [x], axes=[2, 3], keepdims=0)
  head = params[f"Dense_{counter['dense']}"]
  w, b = _fold(head["kernel"], head.get("bias"), None, None, out_axis=1)
  nodes.append(helper.make_node("Gemm", [x, const("head_w", w), const("head_b", b)],
                                ["logits"]))
  scaling = info.scaling(False)
  z = node("Mul", ["logits", const("calibration_scale",
                                   np.asarray(scaling.scale, np.float32))])
  z = node("Add", [z, const("calibration_bias", np.asarray(scaling.bias, np.float32))])
  nodes.append(helper.make_node("Softmax", [z], ["probabilities"], axis=-1))

  c = info.num_classes
  graph = helper.make_graph(
      nodes, f"ferjax_{info.model}",
      [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", 48, 48])],
      [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c])
       for name in OUTPUTS],
      initializer=inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            producer_name="ferjax", producer_version=producer_version)
  model.ir_version = 8  # what onnxruntime releases of the last years all read
  meta = {"classes": json.dumps(list(info.classes)), "model": info.model,
          "input_size": str(info.input_size), "pixel_mean": str(mean),
          "pixel_std": str(std),
          "calibration": json.dumps(info.calibration),
          "input": "uint8 face crops [N, 48, 48], framed like FER2013 (grayscale)"}
  helper.set_model_props(model, meta)
  onnx.checker.check_model(model, full_check=True)
  return model
