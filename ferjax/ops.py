"""CPU convolution kernels for Flax's `nn.Conv`, and the rule that picks one per layer.

XLA's CPU backward convolutions run far below its forward ones; these compute the same
3x3 stride-1 convolutions (NHWC inputs, HWIO kernels) with matmuls, in cache-sized
chunks, or by Winograd's minimal filtering, each with a custom VJP whose gradients are
matmuls too. They are injected into layers through `nn.Conv(conv_general_dilated=...)`
(as Flax does with `flax/linen/fp8_ops.py`); `ferjax.models` only composes them.
Measurements behind every budget and choice: docs/performance.md ("Numbers behind
ops.py's choices"). The budgets travel as a value, `ConvTuning`, never as globals.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax


def _is_plain(lhs, window_strides, lhs_dilation, rhs_dilation, feature_group_count):
  """Whether a convolution is a 2-D stride-1, undilated, ungrouped one."""
  return (all(s == 1 for s in window_strides) and feature_group_count == 1
          and all(d == 1 for d in (lhs_dilation or (1,)))
          and all(d == 1 for d in (rhs_dilation or (1,))) and lhs.ndim == 4)


def _explicit_pads(lhs, rhs, padding):
  """A stride-1 2-D convolution's padding as ((top, bottom), (left, right)) ints
  ("SAME" and "VALID" spelled out), hashable for a custom VJP's static argument."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
  return tuple(tuple(int(p) for p in pair) for pair in padding)


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
  if not _is_plain(lhs, window_strides, lhs_dilation, rhs_dilation, feature_group_count):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision)
  kh, kw, cin, cout = rhs.shape
  padding = _explicit_pads(lhs, rhs, padding)
  x = jnp.pad(lhs, ((0, 0), padding[0], padding[1], (0, 0)))
  b, h, w = lhs.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
  cols = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(kh)
                          for j in range(kw)], axis=-1)
  out = jnp.dot(cols.reshape(b * h * w, kh * kw * cin), rhs.reshape(kh * kw * cin, cout),
                precision=precision)
  return out.reshape(b, h, w, cout)


@dataclasses.dataclass(frozen=True)
class ConvTuning:
  """The memory budgets of the CPU kernels, in MB (2**20 bytes): how finely they cut a
  batch into chunks so that each chunk's intermediates stay in cache. They change what
  is compiled, never the function computed (up to float rounding). The defaults were
  measured best on a 2-core Xeon (docs/performance.md, "Numbers behind ops.py's
  choices"); a run sets them as `--set conv_tuning.winograd_mb=...`.

  Attributes:
    chunk_mb: one chunk's (transposed) patch matrix in `chunked_conv`'s kernel gradient.
    taps_mb: one chunk's float32 tap products in `chunked_conv`'s forward pass.
    winograd_mb: one chunk's transformed input tiles ((m+2)^2 x tiles x Cin, float32)
      in `winograd_conv`'s forward pass and input gradient.
    winograd_grad_mb: the same for its kernel gradient, whose chunks also hold the
      transformed output gradient.
    winograd_whole_mb: a layer whose whole batch of transformed input tiles fits in
      this runs as one chunk, whatever the two budgets above: small layers then make
      a few large operations instead of many small ones, where the cost per operation
      outweighs the cache misses (0: never).
  """
  chunk_mb: float = 10.0
  taps_mb: float = 24.0
  winograd_mb: float = 10.0
  winograd_grad_mb: float = 5.0
  winograd_whole_mb: float = 80.0


DEFAULT_TUNING = ConvTuning()


def _bytes(mb: float) -> int:
  return int(mb * 2**20)


def _images_per_chunk(batch: int, bytes_per_image: int, budget: int) -> int:
  """The largest divisor of `batch` whose chunk fits in `budget` bytes (at least 1)."""
  fit = max(1, budget // bytes_per_image)
  return max(d for d in range(1, min(batch, fit) + 1) if batch % d == 0)


def _patches_t(x, kh, kw, padding):
  """[B, H, W, C] -> [kh*kw*C, B*Ho*Wo]: the kh*kw shifted views stacked along rows
  (the transposed im2col patch matrix, built in that layout)."""
  x = jnp.pad(x.transpose(3, 0, 1, 2),
              ((0, 0), (0, 0), tuple(padding[0]), tuple(padding[1])))
  h, w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
  cols = jnp.concatenate([x[:, :, i:i + h, j:j + w] for i in range(kh)
                          for j in range(kw)], axis=0)
  return cols.reshape(cols.shape[0], -1)


def _chunked_forward(x, k, padding, tuning: ConvTuning):
  """Stride-1 NHWC/HWIO convolution, a few images at a time, without a patch matrix.

  Each chunk of the padded input is multiplied once by all kh*kw taps of the kernel,
  [n*Hp*Wp, Cin] @ [Cin, kh*kw*Cout] (one wide matmul), and the output is the sum of
  the kh*kw shifted slices of that product, one fused elementwise pass. The product of
  a chunk is sized (`tuning.taps_mb`) to stay in cache until it is summed.
  """
  kh, kw, cin, cout = k.shape
  b = x.shape[0]
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  hp, wp = x.shape[1:3]
  ho, wo = hp - kh + 1, wp - kw + 1
  n = _images_per_chunk(b, hp * wp * kh * kw * cout * 4, _bytes(tuning.taps_mb))
  taps = k.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)

  def one_chunk(xc):
    z = jnp.dot(xc.reshape(-1, cin), taps, preferred_element_type=jnp.float32)
    z = z.reshape(n, hp, wp, kh * kw, cout)
    out = sum(z[:, i:i + ho, j:j + wo, i * kw + j] for i in range(kh) for j in range(kw))
    return out.astype(x.dtype)

  out = lax.map(one_chunk, x.reshape(b // n, n, hp, wp, cin))
  return out.reshape(b, ho, wo, cout)


def _transposed(k, padding):
  """The kernel and padding of a convolution's input gradient: a stride-1 convolution
  of the output gradient with the flipped kernel, in/out channels swapped, and the
  complementary padding."""
  kh, kw = k.shape[:2]
  return (jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2),
          ((kh - 1 - padding[0][0], kh - 1 - padding[0][1]),
           (kw - 1 - padding[1][0], kw - 1 - padding[1][1])))


def _kernel_grad(x, g, k, padding, tuning: ConvTuning):
  """A convolution's kernel gradient: patches^T @ g, summed over chunks of images."""
  kh, kw, cin, cout = k.shape
  b, h, w, _ = x.shape
  ho, wo = g.shape[1:3]
  n = _images_per_chunk(b, h * w * kh * kw * cin * x.dtype.itemsize,
                        _bytes(tuning.chunk_mb))

  def add_chunk(dk, xg):
    xc, gc = xg
    cols_t = _patches_t(xc, kh, kw, padding)
    return dk + jnp.dot(cols_t, gc.reshape(-1, cout), preferred_element_type=jnp.float32), None

  dk, _ = lax.scan(add_chunk, jnp.zeros((kh * kw * cin, cout), jnp.float32),
                   (x.reshape(b // n, n, h, w, cin),
                    g.astype(x.dtype).reshape(b // n, n, ho, wo, cout)))
  return dk.reshape(k.shape).astype(k.dtype)


def _conv_with_vjp(forward, kernel_grad):
  """A stride-1 convolution `conv(x, k, padding, tuning)` computed by
  `forward(x, k, padding, tuning)`, with a custom VJP: the input gradient is `forward`
  applied to the output gradient with the transposed kernel (`_chunked_forward` where
  that padding is negative), the kernel gradient `kernel_grad(x, g, k, padding,
  tuning)`. The padding and the (hashable) tuning are static."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
  def conv(x, k, padding, tuning):
    return forward(x, k, padding, tuning)

  def conv_fwd(x, k, padding, tuning):
    return forward(x, k, padding, tuning), (x, k)

  def conv_bwd(padding, tuning, res, g):
    x, k = res
    flipped, back_pad = _transposed(k, padding)
    fwd = forward if min(min(p) for p in back_pad) >= 0 else _chunked_forward
    dx = fwd(g.astype(x.dtype), flipped.astype(x.dtype), back_pad, tuning)
    return dx.astype(x.dtype), kernel_grad(x, g, k, padding, tuning)

  conv.defvjp(conv_fwd, conv_bwd)
  return conv


_chunked_conv = _conv_with_vjp(_chunked_forward, _kernel_grad)


def chunked_conv(lhs, rhs, window_strides, padding, *, lhs_dilation=None,
                 rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                 precision=None, tuning: ConvTuning = DEFAULT_TUNING):
  """`lax.conv_general_dilated` for Flax's stride-1 NHWC/HWIO convolutions, for CPUs.

  The same function as XLA's convolution (up to float rounding), computed a few images
  at a time so that each chunk's intermediates are still in cache when they are used: on
  a CPU the whole batch's im2col patch matrix (680 MB for 128 images of 48x48x64) makes
  the step memory-bound. Forward (`_chunked_forward`): input @ all taps of the kernel,
  then a shifted sum. Backward, matmuls too: the input gradient as the same chunked
  convolution of the output gradient with the flipped kernel, the kernel gradient as
  transposed patches @ output gradient. Products accumulate in float32 whatever the
  compute dtype (in bfloat16 that is what sends them to AMX). Fewer than 16 input
  channels go to `im2col_conv`; anything but a plain stride-1, undilated, ungrouped
  convolution goes to lax. `tuning` sizes the chunks (`ConvTuning`).
  """
  # A few input channels (the first layer): the patch matrix is small and the per-chunk
  # matmuls too narrow; the whole-batch im2col is faster. im2col_conv also hands
  # anything that is not plain to lax.
  if rhs.shape[2] < 16 or not _is_plain(lhs, window_strides, lhs_dilation, rhs_dilation,
                                        feature_group_count):
    return im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                       rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                       feature_group_count=feature_group_count, precision=precision)
  return _chunked_conv(lhs, rhs, _explicit_pads(lhs, rhs, padding), tuning)


# Winograd F(m x m, 3x3) (Lavin & Gray, 2016): an m x m output tile from an
# (m+2) x (m+2) input tile in (m+2)^2 products instead of 9 m^2. Input transform
# B^T d B, kernel transform G g G^T, output transform A^T M A; per m: (B^T, G, A^T).
# F(2x2) has coefficients 0 and +-1 (adds only) and is used everywhere; F(4x4), 4x fewer
# multiplications but costlier transforms, is used for kernel gradients whose output
# divides into 4x4 tiles (measured: python experiments/winograd_chunks.py).
_WINOGRAD = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (.5, .5, .5), (.5, -.5, .5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0),
         (0, 1, -1, 8, -8, 1))),
}


def _combine(coefs, terms):
  """sum(c * t), skipping zero coefficients and multiplying only where c is not +-1."""
  out = None
  for c, t in zip(coefs, terms):
    if not c:
      continue
    if c not in (1, -1):
      t, c = c * t, 1
    out = (t if c > 0 else -t) if out is None else (out + t if c > 0 else out - t)
  return out


def _winograd_images_per_chunk(batch: int, bytes_per_image: int, budget: int, *,
                               whole: int) -> int:
  """Images per chunk of a Winograd loop: the whole batch if it fits in `whole` bytes,
  else the largest divisor that fits in `budget` bytes."""
  if batch * bytes_per_image <= whole:
    return batch
  return _images_per_chunk(batch, bytes_per_image, budget)


def _winograd_tiles(x_shape, padding, m=2):
  """Output size, tiles per side and input padding of a stride-1 3x3 convolution in
  m x m output tiles: the padding makes the tiles cover the output (an output size
  that m does not divide gets extra rows or columns, cropped at the end)."""
  h, w = x_shape[1:3]
  ho, wo = h + sum(padding[0]) - 2, w + sum(padding[1]) - 2
  th, tw = -(-ho // m), -(-wo // m)
  pads = ((0, 0), (padding[0][0], m * th + 2 - h - padding[0][0]),
          (padding[1][0], m * tw + 2 - w - padding[1][0]), (0, 0))
  return (ho, wo), (th, tw), pads


def _input_tiles(xc, th, tw, m=2):
  """The (m+2)^2 entries of the transformed input tiles B^T d B of a padded chunk
  [n, m*th+2, m*tw+2, C], each of them [n, th, tw, C] straight from the input's
  stride-m slices, so that each entry's transform is one fused pass."""
  bt, t = _WINOGRAD[m][0], m + 2
  d = [[lax.slice_in_dim(lax.slice_in_dim(xc, r, r + m * (th - 1) + 1, m, axis=1),
                         s, s + m * (tw - 1) + 1, m, axis=2) for s in range(t)]
       for r in range(t)]
  return [_combine([br * bs for br in bt[a] for bs in bt[c]],
                   [d[r][s] for r in range(t) for s in range(t)])
          for a in range(t) for c in range(t)]


def _winograd_forward(x, k, padding, tuning: ConvTuning, m=2):
  """Stride-1 3x3 NHWC/HWIO convolution by Winograd F(m x m, 3x3), a chunk of images at a time.

  Per chunk: each of the (m+2)^2 entries of the transformed input tiles (stride m),
  [tiles, Cin], is multiplied by the same entry of the transformed kernel [Cin, Cout],
  and each m x m output tile is read back from the products. Transforms run in
  float32; the matmuls take the compute dtype and accumulate in float32.
  """
  _, g_, at = _WINOGRAD[m]
  t = m + 2
  b, cin = x.shape[0], x.shape[3]
  cout = k.shape[-1]
  (ho, wo), (th, tw), pads = _winograd_tiles(x.shape, padding, m)
  # Transformed kernel G g G^T, one [Cin, Cout] matrix per tile entry.
  kf = k.astype(jnp.float32)
  u = [sum(ga * gb * kf[i, j] for i, ga in enumerate(g_[a])
           for j, gb in enumerate(g_[c]) if ga * gb).astype(k.dtype)
       for a in range(t) for c in range(t)]
  n = _winograd_images_per_chunk(b, t * t * th * tw * cin * 4,
                                 _bytes(tuning.winograd_mb),
                                 whole=_bytes(tuning.winograd_whole_mb))

  def one_chunk(chunk):  # sliced from x itself: see _winograd_kernel_grad
    xc = lax.dynamic_slice_in_dim(x, chunk * n, n)
    v = _input_tiles(jnp.pad(xc.astype(jnp.float32), pads), th, tw, m)
    prods = [jnp.dot(vt.reshape(-1, cin).astype(k.dtype), ut,
                     preferred_element_type=jnp.float32).reshape(n, th, tw, cout)
             for vt, ut in zip(v, u)]
    y = jnp.stack([jnp.stack([
        _combine([ai * aj for ai in at[i] for aj in at[j]], prods)
        for j in range(m)], axis=3) for i in range(m)], axis=2)  # [n, th, m, tw, m, cout]
    y = y.reshape(n, m * th, m * tw, cout)
    return y[:, :ho, :wo].astype(x.dtype)

  out = lax.map(one_chunk, jnp.arange(b // n))
  return out.reshape(b, ho, wo, cout)


def _winograd_kernel_grad(x, g, k, padding, tuning: ConvTuning, m=None):
  """The kernel gradient of a stride-1 3x3 convolution by Winograd F(m x m, 3x3): per
  tile entry, transformed input tiles^T @ transformed output-gradient tiles (A g A^T),
  summed over chunks of images, then G^T (.) G back to the 3x3 kernel. m=None: 4 where
  the output divides into 4x4 tiles, else 2. Both operands stay channels last
  ([tiles, C]) and the matmul contracts their first axis: transposing the input chunk
  to channels first instead, for a plain [Cin, tiles] @ [tiles, Cout], was slower per
  layer (the transpose copies every chunk; docs/performance.md)."""
  b, cin = x.shape[0], x.shape[3]
  cout = k.shape[-1]
  if m is None:  # g has the output's shape
    m = 4 if g.shape[1] % 4 == 0 and g.shape[2] % 4 == 0 else 2
  _, g_, at = _WINOGRAD[m]
  t = m + 2
  (ho, wo), (th, tw), pads = _winograd_tiles(x.shape, padding, m)
  n = _winograd_images_per_chunk(b, t * t * th * tw * cin * 4,
                                 _bytes(tuning.winograd_grad_mb),
                                 whole=_bytes(tuning.winograd_whole_mb))
  gpad = ((0, 0), (0, m * th - ho), (0, m * tw - wo), (0, 0))
  tiles_t_at = (((0,), (0,)), ((), ()))  # dot_general: contract the tiles of both

  # Chunks are sliced from x and g themselves, not from a [chunks, n, ...] reshape:
  # this loop and the forward one, which chunk differently, then read one buffer.
  # With reshapes, XLA materialised x once per chunk layout, recomputing the
  # BatchNorm+ReLU that produces it.
  def add_chunk(du, chunk):
    xc = lax.dynamic_slice_in_dim(x, chunk * n, n)
    gc = lax.dynamic_slice_in_dim(g, chunk * n, n)
    v = _input_tiles(jnp.pad(xc.astype(jnp.float32), pads), th, tw, m)
    gc = jnp.pad(gc.astype(jnp.float32), gpad)
    gs = [gc[:, i::m, j::m] for i in range(m) for j in range(m)]
    dm = [_combine([at[i][a] * at[j][c] for i in range(m) for j in range(m)], gs)
          for a in range(t) for c in range(t)]
    return [dut + lax.dot_general(vt.reshape(-1, cin).astype(x.dtype),
                                  dmt.reshape(-1, cout).astype(x.dtype), tiles_t_at,
                                  preferred_element_type=jnp.float32)
            for dut, vt, dmt in zip(du, v, dm)], None

  du, _ = lax.scan(add_chunk, [jnp.zeros((cin, cout), jnp.float32)] * (t * t),
                   jnp.arange(b // n))
  # The adjoint of u = G k G^T.
  dk = jnp.stack([jnp.stack([
      sum(g_[a][i] * g_[c][j] * du[t * a + c] for a in range(t)
          for c in range(t) if g_[a][i] * g_[c][j])
      for j in range(3)]) for i in range(3)])
  return dk.astype(k.dtype)


_winograd_conv = _conv_with_vjp(_winograd_forward, _winograd_kernel_grad)


def winograd_conv(lhs, rhs, window_strides, padding, *, lhs_dilation=None,
                  rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                  precision=None, tuning: ConvTuning = DEFAULT_TUNING):
  """`lax.conv_general_dilated` for Flax's stride-1 3x3 NHWC/HWIO convolutions, for CPUs.

  The same function as XLA's convolution up to float rounding (relative error near
  1e-6 in float32), with 2.25x fewer multiplications: Winograd F(2x2, 3x3), computed a
  chunk of images at a time so that the transformed tiles stay in cache
  (`_winograd_forward`). Its gradients use the same transform: the input gradient is
  the Winograd convolution of the output gradient with the flipped kernel, the kernel
  gradient transformed input tiles^T @ transformed output-gradient tiles
  (`_winograd_kernel_grad`; F(4x4, 3x3), relative error near 1e-5, where the output
  divides into 4x4 tiles). Float32 accumulation in every dtype (AMX in bfloat16).
  Fewer than 16 input channels, kernels other than 3x3 and negative paddings go to
  `chunked_conv` (and from there to `im2col_conv` or lax). `tuning` sizes the chunks
  (`ConvTuning`).
  """
  kh, kw, cin = rhs.shape[:3]
  padding = _explicit_pads(lhs, rhs, padding)
  if (cin < 16 or (kh, kw) != (3, 3) or min(min(p) for p in padding) < 0
      or not _is_plain(lhs, window_strides, lhs_dilation, rhs_dilation,
                       feature_group_count)):
    return chunked_conv(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                        feature_group_count=feature_group_count, precision=precision,
                        tuning=tuning)
  return _winograd_conv(lhs, rhs, padding, tuning)


CONV_IMPLS = {"xla": None, "im2col": im2col_conv, "chunked": chunked_conv,
              "winograd": winograd_conv}


def conv_general_dilated(impl: str, tuning: ConvTuning = DEFAULT_TUNING):
  """The `conv_general_dilated` that makes `nn.Conv` compute by `impl` (one of
  CONV_IMPLS) within `tuning`'s budgets; None (lax's own) for "xla"."""
  fn = CONV_IMPLS[impl]
  if fn in (chunked_conv, winograd_conv):
    return functools.partial(fn, tuning=tuning)
  return fn


def auto_conv_impl(*, train: bool, dtype, pixels: int, cin: int) -> str:
  """The fastest way to compute one 3x3 convolution here, as measured.

  XLA's convolution on GPUs and TPUs. On a CPU (per layer from
  `python experiments/conv_backward.py`, whole networks from
  `python experiments/eval_conv_impls.py` and `python -m ferjax.bench`; the numbers are
  in docs/performance.md), in float32 and bfloat16 alike: for training, the first layer
  (a few input channels) as one im2col matmul and every other layer by Winograd
  F(2x2, 3x3) (`winograd_conv`); for inference (which runs a few images at a time, see
  `ferjax.inference.predict_step`), XLA's convolution for the first layer and the
  layers larger than 24x24, Winograd for the others.
  """
  del dtype
  if jax.default_backend() != "cpu":
    return "xla"
  if train:
    return "im2col" if cin < 16 else "winograd"
  return "xla" if cin < 16 or pixels > 24 * 24 else "winograd"


def max_pool_2x2(x):
  """`nn.max_pool(x, (2, 2), strides=(2, 2))` (VALID) as a reshape and a max.

  The same values; its gradient goes through JAX's max reduction (elementwise masks)
  instead of XLA's select-and-scatter, which XLA's CPU backend lowers to a reduce-window
  over four full-size index arrays (its cost: docs/performance.md). Between tied maxima
  the gradient is shared rather than given to the first.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
