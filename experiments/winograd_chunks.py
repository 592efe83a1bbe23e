"""How many images per chunk suit `ferjax.ops.winograd_conv` on this CPU.

    python experiments/winograd_chunks.py [--batch-size 128]

For each convolution of the augmented network (VGG 64-128-256-512 on 48x48, the first
layer aside), GFLOP/s (direct-convolution FLOPs, so "effective" for Winograd) of the
Winograd forward pass and of its kernel gradient, with 2x2 (F2) and 4x4 (F4) output
tiles, for several chunk budgets (MB of transformed input tiles per chunk:
`ops.ConvTuning`'s winograd_mb for the forward pass and the input gradient,
winograd_grad_mb for the kernel gradient), with XLA's forward convolution and
the chunked kernel gradient (`ops._kernel_grad`) for reference.
"""

import argparse

import jax
from conv_backward import LAYERS, best_time, conv_xla  # this folder's per-layer script

from ferjax import ops

BUDGETS_MB = (2, 5, 10, 20)
PAD = ((1, 1), (1, 1))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch-size", type=int, default=128)
  b = p.parse_args().batch_size
  print(f"batch {b}, float32; GFLOP/s by chunk budget (MB of transformed tiles)")
  for h, ci, co in LAYERS[1:]:
    x = jax.random.normal(jax.random.key(0), (b, h, h, ci))
    k = jax.random.normal(jax.random.key(1), (3, 3, ci, co)) * 0.05
    g = jax.random.normal(jax.random.key(2), (b, h, h, co))
    flops = 2 * b * h * h * 9 * ci * co
    rate = lambda f, *a, flops=flops: f"{flops / best_time(jax.jit(f), *a) / 1e9:5.0f}"
    fwd = [f"xla {rate(conv_xla, x, k)}"]
    chunked = lambda x, g, k=k: ops._kernel_grad(x, g, k, PAD, ops.DEFAULT_TUNING)
    grad = [f"chunked {rate(chunked, x, g)}"]
    for m in (2, 4):
      for mb in BUDGETS_MB:
        t = ops.ConvTuning(winograd_mb=mb, winograd_grad_mb=mb)
        forward = lambda x, k, m=m, t=t: ops._winograd_forward(x, k, PAD, t, m)
        kernel_grad = lambda x, g, k=k, m=m, t=t: ops._winograd_kernel_grad(x, g, k, PAD, t, m)
        fwd.append(f"F{m} {mb}MB {rate(forward, x, k)}")
        grad.append(f"F{m} {mb}MB {rate(kernel_grad, x, g)}")
    print(f"{h:2d}x{h:<2d} {ci:3d}->{co:3d} forward:  " + " | ".join(fwd))
    print(f"{'':14s} kernel gradient: " + " | ".join(grad), flush=True)


if __name__ == "__main__":
  main()
