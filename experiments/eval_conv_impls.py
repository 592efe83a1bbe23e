"""Whole-network inference speed on this machine for each way of computing convolutions.

    python experiments/eval_conv_impls.py [--batch-size 256]

For the seed CNN and the VGG, in float32 and bfloat16: images/s of a jitted eval
forward pass (train=False) with conv_impl "xla", "im2col", "chunked", "winograd" and
"auto" (best of 3 timed runs after compilation) over the whole batch at once, and
"auto/n": in passes of n images, as `ferjax.inference.predict_step` runs it on a CPU (with
n = inference.CPU_EVAL_CHUNK). The same parameters serve every implementation; this is
what `ops.auto_conv_impl` and CPU_EVAL_CHUNK were chosen from.
"""

import argparse

import jax
import jax.numpy as jnp
from conv_backward import best_time  # this folder's per-layer script

from ferjax import inference, models

PASSES = (4, 8, 16, 32)  # images per pass of the network


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch-size", type=int, default=256)
  b = p.parse_args().batch_size
  x = jax.random.uniform(jax.random.key(0), (b, 48, 48, 1))
  print(f"batch {b}; eval images/s")
  for name in ("seed_cnn", "vgg"):
    for dtype in (jnp.float32, jnp.bfloat16):
      model = models.create_model(name, num_classes=6, dtype=dtype)
      variables = model.init(jax.random.key(1), x[:1], train=False)
      row = []
      for impl in ("xla", "im2col", "chunked", "winograd", "auto"):
        m = model.clone(conv_impl=impl)
        f = jax.jit(lambda v, x, m=m: m.apply(v, x, train=False))
        row.append(f"{impl} {b / best_time(f, variables, x):6.0f}")
      for n in PASSES:
        f = jax.jit(lambda v, x, m=model, n=n: inference._apply_in_chunks(
            lambda c: m.apply(v, c, train=False), x, n))
        row.append(f"auto/{n} {b / best_time(f, variables, x):6.0f}")
      print(f"{name:8s} {jnp.dtype(dtype).name:8s}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
  main()
