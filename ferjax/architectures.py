"""The named networks as plain settings of `ferjax.models.ConvNet`, with no JAX import,
so that code that only runs a model (the ONNX path) can read them.

`ferjax.models` builds its registry from this table; `ferjax.onnx_export` writes each
network's graph from it.
"""

from __future__ import annotations

# FER2013's pixel mean and standard deviation over the training set, in [0, 1] units.
PIXEL_MEAN = 0.508
PIXEL_STD = 0.255

ARCHITECTURES: dict[str, dict] = {
    # The seed project's plain CNN (its models 1 and 2): three stages, no BatchNorm.
    "seed_cnn": dict(widths=(32, 64, 128), convs_per_stage=2, batch_norm=False,
                     dense=256),
    # The augmented variant's network: VGG-style, four BatchNorm stages.
    "vgg": dict(widths=(64, 128, 256, 512), convs_per_stage=2, batch_norm=True,
                dense=256, stage_dropout=0.1, head_dropout=0.4),
    # Three quarters of VGG's width (half its FLOPs): the shipped model's network, which
    # classifies over 500 crops/s on a 2-core CPU (docs/performance.md).
    "vgg_slim": dict(widths=(48, 96, 192, 384), convs_per_stage=2, batch_norm=True,
                     dense=256, stage_dropout=0.1, head_dropout=0.4),
    "vgg_small": dict(widths=(32, 64, 128, 256), convs_per_stage=2, batch_norm=True,
                      dense=256, stage_dropout=0.1, head_dropout=0.4),
    # vgg_slim's widths with each stage pooled after its first convolution and no
    # dropout inside the stages: about 2.3x fewer multiply-adds, for short CPU schedules.
    "vgg_fast": dict(widths=(48, 96, 192, 384), convs_per_stage=2, batch_norm=True,
                     dense=256, stage_dropout=0.0, head_dropout=0.4, pool_first=True),
    # vgg_fast with vgg_slim's dropout after each stage (vgg_fast alone overfit its
    # 70-epoch two-hour schedule: experiments/README.md).
    "vgg_fast_dropout": dict(widths=(48, 96, 192, 384), convs_per_stage=2,
                             batch_norm=True, dense=256, stage_dropout=0.1,
                             head_dropout=0.4, pool_first=True),
    "vgg_fast_wide": dict(widths=(64, 128, 256, 512), convs_per_stage=2,
                          batch_norm=True, dense=256, stage_dropout=0.0,
                          head_dropout=0.4, pool_first=True),
    # For tests: about 75k parameters, compiles and runs in well under a second.
    "tiny": dict(widths=(8, 16), convs_per_stage=1, batch_norm=True, dense=32,
                 stage_dropout=0.0, head_dropout=0.0),
}
# ConvNet's defaults for the settings a network above leaves out.
DEFAULTS = dict(widths=(32, 64, 128), convs_per_stage=2, batch_norm=False, dense=256,
                stage_dropout=0.25, head_dropout=0.5, pool_first=False)


def settings(name: str) -> dict:
  """Every ConvNet setting of the network `name` (KeyError if unknown)."""
  return {**DEFAULTS, **ARCHITECTURES[name]}
