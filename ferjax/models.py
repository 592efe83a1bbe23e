"""Flax Linen CNNs for 48x48 grayscale faces, and the registry of architectures by name.

One parameterised module, `ConvNet`: stages of 3x3 convolutions (optionally with
BatchNorm) each followed by 2x2 max pooling, then a dense head. The named architectures
are `functools.partial`s of it, with the settings in `ferjax.architectures`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from ferjax.architectures import ARCHITECTURES, PIXEL_MEAN, PIXEL_STD
from ferjax.ops import (CONV_IMPLS, DEFAULT_TUNING, ConvTuning, auto_conv_impl,
                        conv_general_dilated, max_pool_2x2)

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "ConvNet", "MODELS", "create_model"]

# Every BatchNorm's running statistics: m * running + (1 - m) * batch.
BN_MOMENTUM = 0.9


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
    pool_first: pool after each stage's first convolution instead of its last (as
      airbench's blocks do): the stage's other convolutions run at a quarter of the
      pixels, so the network costs about 2.3x fewer multiply-adds at 40x40.
    dtype: computation dtype (bfloat16 for mixed precision); parameters stay float32.
    conv_impl: how convolutions are computed, not what: "xla" (lax's convolution),
      "im2col" (`im2col_conv`), "chunked" (`chunked_conv`), "winograd"
      (`winograd_conv`), or "auto": per layer, the fastest measured here
      (`ferjax.ops.auto_conv_impl`). Parameters are the same for all.
    conv_tuning: the CPU kernels' memory budgets (`ferjax.ops.ConvTuning`): what is
      compiled, not what is computed.
  """
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 2
  batch_norm: bool = False
  dense: int = 256
  stage_dropout: float = 0.25
  head_dropout: float = 0.5
  pool_first: bool = False
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"
  conv_tuning: ConvTuning = DEFAULT_TUNING

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x: [B, 48, 48, 1] (or [B, 48, 48]) floats in [0, 1]. Returns logits [B, C]."""
    if x.ndim == 3:
      x = x[..., None]
    x = ((x - PIXEL_MEAN) / PIXEL_STD).astype(self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=BN_MOMENTUM, dtype=self.dtype)
    for width in self.widths:
      for i in range(self.convs_per_stage):
        impl = self.conv_impl
        if impl == "auto":
          impl = auto_conv_impl(train=train, dtype=self.dtype,
                                pixels=x.shape[1] * x.shape[2], cin=x.shape[3])
        x = nn.Conv(width, (3, 3), use_bias=not self.batch_norm, dtype=self.dtype,
                    conv_general_dilated=conv_general_dilated(impl, self.conv_tuning))(x)
        if self.batch_norm:
          x = norm()(x)
        x = nn.relu(x)
        if self.pool_first and i == 0:
          x = max_pool_2x2(x)
      if not self.pool_first:
        x = max_pool_2x2(x)
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


# The named networks (ferjax/architectures.py says what each is, without JAX).
MODELS = {name: functools.partial(ConvNet, **arch) for name, arch in ARCHITECTURES.items()}


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(name: str, *, num_classes: int, dtype=jnp.float32,
                 conv_impl: str = "auto", conv_tuning: ConvTuning = DEFAULT_TUNING
                 ) -> nn.Module:
  """The architecture registered as `name`, computing in `dtype` (a dtype or one of
  COMPUTE_DTYPES' names), its convolutions by `conv_impl` ("auto" or CONV_IMPLS) within
  the CPU kernels' budgets `conv_tuning`."""
  dtype = COMPUTE_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
  if name not in MODELS:
    raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
  if conv_impl != "auto" and conv_impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv_impl '{conv_impl}'; known: auto, "
                     f"{', '.join(CONV_IMPLS)}")
  return MODELS[name](num_classes=num_classes, dtype=dtype, conv_impl=conv_impl,
                      conv_tuning=conv_tuning)
