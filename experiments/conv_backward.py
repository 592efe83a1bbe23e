"""Where the CPU train step loses time: forward vs backward of each 3x3 convolution.

    python experiments/conv_backward.py [--batch-size 128]

For each convolution of the augmented network (VGG 64-128-256-512 on 48x48), times
forward alone and forward+backward (gradients for input and kernel) for three ways of
computing the same function:
  xla     lax.conv_general_dilated and its autodiff (XLA's backward convolutions);
  im2col  patches (9 shifted slices concatenated) times the kernel as one matmul;
  hybrid  XLA's forward conv; backward: input gradient as a forward conv with the
          flipped kernel, kernel gradient as one patches^T @ grad matmul (custom_vjp).
  fast    XLA's forward conv; backward entirely as matmuls on recomputed patches:
          kernel gradient patches^T @ grad, input gradient (grad @ kernel^T) folded
          back onto the image by the transpose of the patch extraction (custom_vjp).
  chunked ferjax.ops.chunked_conv: a few images at a time, input @ all 9 taps of
          the kernel then a shifted sum (forward and input gradient), transposed
          patches @ grad (kernel gradient), float32 accumulation.
  winograd ferjax.ops.winograd_conv: Winograd F(2x2, 3x3) (2.25x fewer
          multiplications) for the forward pass and both gradients.
Reports GFLOP/s (forward = 2*B*H*W*9*Cin*Cout, forward+backward = 3x that) and checks
that every variant's gradients match XLA's. --dtype bfloat16 runs all of them in
bfloat16 (the reference for the check is then XLA's bfloat16 convolution).
"""

import argparse
import time

import jax
import jax.numpy as jnp
from jax import lax

from ferjax import ops

DN = ("NHWC", "HWIO", "NHWC")
LAYERS = [(48, 1, 64), (48, 64, 64), (24, 64, 128), (24, 128, 128), (12, 128, 256),
          (12, 256, 256), (6, 256, 512), (6, 512, 512)]


def conv_xla(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DN)


def _patches(x):
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)],
                         axis=-1).reshape(b * h * w, 9 * c)


def conv_im2col(x, k):
  b, h, w, c = x.shape
  return jnp.dot(_patches(x), k.reshape(9 * c, -1)).reshape(b, h, w, -1)


@jax.custom_vjp
def conv_hybrid(x, k):
  return conv_xla(x, k)


def _hybrid_fwd(x, k):
  return conv_xla(x, k), (x, k)


def _hybrid_bwd(res, g):
  x, k = res
  b, h, w, _ = x.shape
  dx = conv_xla(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2))
  dk = lax.dot_general(_patches(x), g.reshape(b * h * w, -1), (((0,), (0,)), ((), ())))
  return dx, dk.reshape(k.shape)


conv_hybrid.defvjp(_hybrid_fwd, _hybrid_bwd)


@jax.custom_vjp
def conv_fast(x, k):
  return conv_xla(x, k)


def _fast_bwd(res, g):
  x, k = res
  b, h, w, c = x.shape
  cols, patches_transpose = jax.vjp(_patches, x)
  g2 = g.reshape(b * h * w, -1)
  dk = lax.dot_general(cols, g2, (((0,), (0,)), ((), ())))
  (dx,) = patches_transpose(jnp.dot(g2, k.reshape(9 * c, -1).T))
  return dx, dk.reshape(k.shape)


conv_fast.defvjp(_hybrid_fwd, _fast_bwd)
VARIANTS = {"xla": conv_xla, "im2col": conv_im2col, "hybrid": conv_hybrid,
            "fast": conv_fast,
            "chunked": lambda x, k: ops.chunked_conv(x, k, (1, 1), "SAME"),
            "winograd": lambda x, k: ops.winograd_conv(x, k, (1, 1), "SAME")}


def best_time(f, *args, repeats=3):
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t)
  return min(times)


def layer_args(doc):
  """The command line of the per-layer scripts (this one, torch_conv_layers.py)."""
  p = argparse.ArgumentParser(description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  return p.parse_args()


def main():
  args = layer_args(__doc__)
  b, dtype = args.batch_size, jnp.dtype(args.dtype)
  total = {v: [0.0, 0.0] for v in VARIANTS}
  print(f"batch {b}, {dtype.name}; GFLOP/s forward / forward+backward")
  for h, ci, co in LAYERS:
    x = jax.random.normal(jax.random.key(0), (b, h, h, ci)).astype(dtype)
    k = (jax.random.normal(jax.random.key(1), (3, 3, ci, co)) * 0.1).astype(dtype)
    flops = 2 * b * h * h * 9 * ci * co
    row, ref = [], None
    for name, conv in VARIANTS.items():
      fwd = jax.jit(conv)
      grad = jax.jit(jax.grad(
          lambda x, k, conv=conv: jnp.sum(conv(x, k).astype(jnp.float32) ** 2), argnums=(0, 1)))
      g = grad(x, k)
      if ref is None:
        ref = g
      err = max(float(jnp.linalg.norm((a - r).astype(jnp.float32))
                      / jnp.linalg.norm(r.astype(jnp.float32))) for a, r in zip(g, ref))
      assert err < (1e-4 if dtype == jnp.float32 else 2e-2), (name, err)
      tf, tg = best_time(fwd, x, k), best_time(grad, x, k)
      total[name][0] += tf
      total[name][1] += tg
      row.append(f"{name} {flops / tf / 1e9:5.0f} / {3 * flops / tg / 1e9:5.0f}")
    print(f"{h:2d}x{h:<2d} {ci:3d}->{co:3d}: " + " | ".join(row), flush=True)
  print("whole network, seconds forward / forward+backward: " + " | ".join(
      f"{n} {f:.3f} / {g:.3f}" for n, (f, g) in total.items()))


if __name__ == "__main__":
  main()
