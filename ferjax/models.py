"""Flax Linen CNNs for 48x48 grayscale faces, and the registry of architectures by name.

One parameterised module, `ConvNet`: stages of 3x3 convolutions (optionally with
BatchNorm) each followed by 2x2 max pooling, then a dense head. The named architectures
are `functools.partial`s of it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

# FER2013's pixel mean and standard deviation over the training set, in [0, 1] units.
PIXEL_MEAN = 0.508
PIXEL_STD = 0.255


def im2col_conv(lhs, rhs, window_strides, padding, *, lhs_dilation=None,
                rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                precision=None):
  """`lax.conv_general_dilated` for Flax's NHWC/HWIO stride-1 convolutions, as a matmul.

  The kh*kw shifted views of the padded input are concatenated into patches
  [B*H*W, kh*kw*Cin] and multiplied by the kernel reshaped to [kh*kw*Cin, Cout]. The
  function is the same as XLA's convolution (up to float rounding); what changes is its
  gradient: XLA's CPU backward convolutions run far below its forward ones, while here
  both gradients are matmuls too (see experiments/conv_backward.py). Anything other than
  a plain stride-1, undilated, ungrouped convolution goes to lax.
  """
  plain = (all(s == 1 for s in window_strides) and feature_group_count == 1
           and all(d == 1 for d in (lhs_dilation or (1,))) and
           all(d == 1 for d in (rhs_dilation or (1,))) and lhs.ndim == 4)
  if not plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision)
  kh, kw, cin, cout = rhs.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (1, 1), padding)
  x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  b, h, w = lhs.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
  cols = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(kh)
                          for j in range(kw)], axis=-1)
  out = jnp.dot(cols.reshape(b * h * w, kh * kw * cin), rhs.reshape(kh * kw * cin, cout),
                precision=precision)
  return out.reshape(b, h, w, cout)


class ConvNet(nn.Module):
  """A VGG-style CNN.

  Attributes:
    num_classes: outputs (logits).
    widths: channels of each stage; each stage halves the resolution.
    convs_per_stage: 3x3 convolutions per stage.
    batch_norm: BatchNorm after each convolution and the hidden dense layer.
    dense: width of the hidden dense layer (0: none, global average pooling instead of
      flattening).
    stage_dropout: dropout after each stage's pooling.
    head_dropout: dropout before the classifier.
    dtype: computation dtype (bfloat16 for mixed precision); parameters stay float32.
    conv_impl: how convolutions are computed, not what: "xla" (lax's convolution),
      "im2col" (`im2col_conv`), or "auto": im2col when training on a CPU, where its
      backward pass is faster, and XLA's otherwise. Parameters are the same for all.
  """
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 2
  batch_norm: bool = False
  dense: int = 256
  stage_dropout: float = 0.25
  head_dropout: float = 0.5
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x: [B, 48, 48, 1] (or [B, 48, 48]) floats in [0, 1]. Returns logits [B, C]."""
    if x.ndim == 3:
      x = x[..., None]
    x = ((x - PIXEL_MEAN) / PIXEL_STD).astype(self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             dtype=self.dtype)
    impl = self.conv_impl
    if impl == "auto":
      impl = "im2col" if train and jax.default_backend() == "cpu" else "xla"
    conv_fn = {"im2col": im2col_conv, "xla": None}[impl]
    for width in self.widths:
      for _ in range(self.convs_per_stage):
        x = nn.Conv(width, (3, 3), use_bias=not self.batch_norm, dtype=self.dtype,
                    conv_general_dilated=conv_fn)(x)
        if self.batch_norm:
          x = norm()(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
      if self.stage_dropout:
        x = nn.Dropout(self.stage_dropout, deterministic=not train)(x)
    if self.dense:
      x = x.reshape((x.shape[0], -1))
      x = nn.Dense(self.dense, use_bias=not self.batch_norm, dtype=self.dtype)(x)
      if self.batch_norm:
        x = norm()(x)
      x = nn.relu(x)
    else:
      x = jnp.mean(x, axis=(1, 2))
    if self.head_dropout:
      x = nn.Dropout(self.head_dropout, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
    return x.astype(jnp.float32)


# The seed project's plain CNN (its models 1 and 2): three stages, no BatchNorm.
SeedCNN = functools.partial(ConvNet, widths=(32, 64, 128), convs_per_stage=2,
                            batch_norm=False, dense=256)
# The augmented variant's network: VGG-style, four BatchNorm stages.
VGG = functools.partial(ConvNet, widths=(64, 128, 256, 512), convs_per_stage=2,
                        batch_norm=True, dense=256, stage_dropout=0.1, head_dropout=0.4)
VGGSmall = functools.partial(ConvNet, widths=(32, 64, 128, 256), convs_per_stage=2,
                             batch_norm=True, dense=256, stage_dropout=0.1,
                             head_dropout=0.4)
# For tests: a few thousand parameters, compiles and runs in well under a second.
Tiny = functools.partial(ConvNet, widths=(8, 16), convs_per_stage=1, batch_norm=True,
                         dense=32, stage_dropout=0.0, head_dropout=0.0)

MODELS = {"seed_cnn": SeedCNN, "vgg": VGG, "vgg_small": VGGSmall, "tiny": Tiny}


def create_model(name: str, *, num_classes: int, dtype=jnp.float32) -> nn.Module:
  """The architecture registered as `name`."""
  if name not in MODELS:
    raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
  return MODELS[name](num_classes=num_classes, dtype=dtype)
