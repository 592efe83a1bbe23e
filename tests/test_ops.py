"""ferjax.ops: the CPU convolution kernels compute lax's convolution and its gradients,
whatever their chunk budgets (`ConvTuning`); the rule that picks one; max pooling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ferjax import ops
from ferjax.ops import ConvTuning

DN = ("NHWC", "HWIO", "NHWC")


def _mb(nbytes: int) -> float:
  """A budget of `nbytes` bytes in ConvTuning's unit (exact: a power-of-two scaling)."""
  return nbytes / 2**20


def _conv64_fn(padding):
  return lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                               dimension_numbers=DN)


def _conv64(x, k, padding):
  """lax's convolution in float64: its value and the gradients of the loss
  sum(sin(conv)). The reference the float32 kernels are held to: float32 lax has
  rounding errors of its own, which differ from CPU to CPU."""
  conv = _conv64_fn(padding)
  with jax.enable_x64(True):
    x64, k64 = jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64)
    grads = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), (0, 1))(x64, k64)
    return np.asarray(conv(x64, k64)), *(np.asarray(g) for g in grads)


def _conv64_value(x, k, padding):
  """lax's convolution in float64, its value alone."""
  with jax.enable_x64(True):
    return np.asarray(_conv64_fn(padding)(jnp.asarray(x, jnp.float64),
                                          jnp.asarray(k, jnp.float64)))


def _conv64_kernel_vjp(x, k, padding, cotangent):
  """The float64 kernel gradient of <cotangent, conv(x, k)>."""
  conv = _conv64_fn(padding)
  with jax.enable_x64(True):
    x64, k64 = jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64)
    _, vjp = jax.vjp(lambda k: conv(x64, k), k64)
    return np.asarray(vjp(jnp.asarray(cotangent, jnp.float64))[0])


def _assert_within(got, ref, rel, name):
  """`got` is within `rel` of the float64 reference's scale (its largest magnitude)."""
  err = np.abs(np.asarray(got, np.float64) - ref).max()
  scale = np.abs(ref).max()
  assert err <= rel * scale, (f"{name}: largest error {err:.3g} is {err / scale:.2g} of "
                              f"the scale {scale:.3g}; at most {rel:g} is float32 rounding")


# Each value is a sum of at most 9*17 = 153 products (each gradient entry of a few
# hundred), and float32 rounds each step by at most 2^-24 = 6e-8 relative: errors of
# about 1e-6 of the result's scale on any CPU's rounding (FMA or not, any vector
# width). Winograd's transforms (coefficients up to 8 for F(4x4)) grow that by up to
# about a hundred. A chunk or tile computed wrongly would be off by the scale itself.
DIRECT_REL = 1e-5
WINOGRAD_REL = 1e-4


def _assert_conv_equals_lax(conv, batch, cin, cout, padding, *, rel):
  """`conv` (a lax.conv_general_dilated stand-in) gives lax's values and gradients."""
  x = jax.random.normal(jax.random.key(0), (batch, 10, 9, cin))
  k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
  got = lambda x, k: conv(x, k, (1, 1), padding, dimension_numbers=DN)
  loss = lambda x, k: jnp.sum(jnp.sin(got(x, k)))
  refs = _conv64(x, k, padding)
  for name, a, b in zip(("output", "input gradient", "kernel gradient"),
                        (got(x, k), *jax.grad(loss, (0, 1))(x, k)), refs):
    _assert_within(a, b, rel, name)


@pytest.mark.parametrize("cin,cout,padding", [(1, 8, "SAME"), (5, 7, ((1, 1), (1, 1))),
                                              (4, 6, "VALID")])
def test_im2col_conv_equals_lax_conv_and_its_gradients(cin, cout, padding):
  _assert_conv_equals_lax(ops.im2col_conv, 3, cin, cout, padding, rel=DIRECT_REL)


@pytest.mark.parametrize("impl", ["chunked", "winograd"])
@pytest.mark.parametrize("batch,cin,cout,padding", [
    (3, 16, 8, "SAME"), (4, 17, 5, ((0, 2), (1, 0))), (6, 16, 6, "VALID"),
    (2, 3, 4, "SAME")])  # the last: few input channels, handed on to im2col
def test_cpu_conv_equals_lax_conv_and_its_gradients(impl, batch, cin, cout, padding):
  # Tiny cache budgets, so the batch is split into several chunks. The 10x9 input
  # gives Winograd odd output sizes (a cropped tile row or column).
  tuning = ConvTuning(chunk_mb=_mb(10 * 9 * 9 * cin * 4), taps_mb=_mb(12 * 11 * 9 * cout * 4),
                      winograd_mb=_mb(16 * 6 * 5 * cin * 4),
                      winograd_grad_mb=_mb(16 * 6 * 5 * cin * 4), winograd_whole_mb=0)
  _assert_conv_equals_lax(ops.conv_general_dilated(impl, tuning), batch, cin, cout,
                          padding, rel=WINOGRAD_REL if impl == "winograd" else DIRECT_REL)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("size,padding", [((12, 8), ((1, 1), (1, 1))),  # tiles fit
                                          ((10, 9), ((0, 2), (1, 0)))])  # cropped
def test_winograd_tile_sizes_give_lax_values_and_kernel_gradient(m, size, padding):
  one_image_a_chunk = ConvTuning(winograd_mb=_mb(1), winograd_grad_mb=_mb(1),
                                 winograd_whole_mb=0)
  x = jax.random.normal(jax.random.key(0), (3, *size, 16))
  k = jax.random.normal(jax.random.key(1), (3, 3, 16, 8))
  y = _conv64_value(x, k, padding)
  _assert_within(ops._winograd_forward(x, k, padding, one_image_a_chunk, m), y,
                 WINOGRAD_REL, "output")
  g = jnp.cos(jnp.asarray(y, jnp.float32))
  _assert_within(ops._winograd_kernel_grad(x, g, k, padding, one_image_a_chunk, m),
                 _conv64_kernel_vjp(x, k, padding, g), WINOGRAD_REL, "kernel gradient")


def test_winograd_runs_a_small_layer_as_one_chunk():
  per_chunk = lambda *a: ops._winograd_images_per_chunk(*a, whole=64 * 100)
  assert per_chunk(64, 100, 1000) == 64  # the whole batch fits
  assert per_chunk(64, 101, 1000) == 8  # chunks within 1000 B
  assert per_chunk(66, 101, 350) == 3  # a divisor of the batch


@pytest.mark.parametrize("impl", ["chunked", "winograd"])
def test_the_tuning_changes_what_is_compiled_not_the_result(impl):
  """Two budgets (the defaults: the whole batch of 8 in one chunk; tiny ones: one
  image a chunk) compile different programs that compute the same convolution and
  gradients: each within float32 rounding of a float64 reference."""
  tunings = (ops.DEFAULT_TUNING,
             ConvTuning(chunk_mb=_mb(1), taps_mb=_mb(1), winograd_mb=_mb(1),
                        winograd_grad_mb=_mb(1), winograd_whole_mb=0))
  x = jax.random.normal(jax.random.key(0), (8, 12, 12, 32))
  k = jax.random.normal(jax.random.key(1), (3, 3, 32, 24)) / np.sqrt(9 * 32)
  w = jax.random.normal(jax.random.key(2), (8, 12, 12, 24))

  def value_and_grads(conv, x, k, w):
    y = conv(x, k, (1, 1), "SAME", dimension_numbers=DN)
    loss = lambda x, k: jnp.sum(w * conv(x, k, (1, 1), "SAME", dimension_numbers=DN))
    return (y, *jax.grad(loss, (0, 1))(x, k))

  runs = [jax.jit(functools.partial(value_and_grads, ops.conv_general_dilated(impl, t)))
          for t in tunings]
  assert runs[0].lower(x, k, w).as_text() != runs[1].lower(x, k, w).as_text()
  with jax.enable_x64(True):
    x64, k64, w64 = (jnp.asarray(a, jnp.float64) for a in (x, k, w))
    conv64 = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                   dimension_numbers=DN)
    refs = (conv64(x64, k64),
            *jax.grad(lambda x, k: jnp.sum(w64 * conv64(x, k)), (0, 1))(x64, k64))
    refs = [np.asarray(r) for r in refs]
  # Each result is a sum of hundreds of products (9*32 for the output, 9*24 for the
  # input gradient, 8*12*12 per tile entry for the kernel gradient); float32 rounds
  # each step by at most 2^-24 = 6e-8 relative, and Winograd F(4x4)'s transforms
  # (coefficients up to 8, used for this kernel gradient) grow that by about a hundred:
  # errors of a few 1e-6 of the result's scale, on any CPU's rounding (FMA or not, any
  # vector width). A chunk computed wrongly would be off by the scale itself.
  results = [[np.asarray(a, np.float64) for a in f(x, k, w)] for f in runs]
  for name, ref, *got in zip(("output", "input gradient", "kernel gradient"), refs,
                             *results):
    scale = np.abs(ref).max()
    for tuned in got:
      _assert_within(tuned, ref, WINOGRAD_REL, name)
    assert np.abs(got[0] - got[1]).max() <= 2e-4 * scale, name


def _bfloat16_case(conv):
  """A bfloat16 convolution by `conv`, and its float32 reference on the same inputs."""
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 64)).astype(jnp.bfloat16)
  k = (jax.random.normal(jax.random.key(1), (3, 3, 64, 32)) * 0.05).astype(jnp.bfloat16)
  ref = lax.conv_general_dilated(x.astype(jnp.float32), k.astype(jnp.float32), (1, 1),
                                 "SAME", dimension_numbers=DN)
  got = conv(x, k, (1, 1), "SAME")
  assert got.dtype == jnp.bfloat16
  dk = jax.grad(lambda k: jnp.sum(conv(x, k, (1, 1), "SAME").astype(jnp.float32)))(k)
  assert dk.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(dk.astype(jnp.float32))))
  return got.astype(jnp.float32), ref


def test_chunked_conv_in_bfloat16_accumulates_in_float32():
  got, ref = _bfloat16_case(ops.chunked_conv)
  # Only the final rounding to bfloat16 (8 bits of mantissa) separates them.
  np.testing.assert_allclose(got, ref, rtol=2**-7, atol=1e-2)


def test_winograd_conv_in_bfloat16_is_within_bfloat16_rounding():
  got, ref = _bfloat16_case(ops.winograd_conv)
  # The transformed tiles and kernel are rounded to bfloat16 as well as the output
  # (8 bits of mantissa): about one unit of bfloat16 rounding on average (measured
  # 1.1), a few at most.
  err = jnp.abs(got - ref)
  assert float(jnp.mean(err)) < 2 * 2**-8 * float(jnp.mean(jnp.abs(ref)))
  assert float(jnp.max(err)) < 4 * 2**-8 * float(jnp.max(jnp.abs(ref)))


def test_max_pool_2x2_equals_flax_max_pool_and_its_gradient():
  from flax import linen as nn
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))  # odd height: VALID drops a row
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(ops.max_pool_2x2(x), ref(x))
  loss = lambda f: lambda x: jnp.sum(jnp.sin(f(x)))
  # Random floats have no ties, so both gradients go to the same elements.
  np.testing.assert_allclose(jax.grad(loss(ops.max_pool_2x2))(x), jax.grad(loss(ref))(x),
                             rtol=1e-6)


def test_auto_conv_impl_on_this_backend():
  pick = lambda **kw: ops.auto_conv_impl(**{"train": True, "dtype": jnp.float32,
                                                "pixels": 48 * 48, "cin": 64, **kw})
  if jax.default_backend() != "cpu":
    assert pick() == "xla" and pick(train=False) == "xla"
    return
  assert pick(cin=1) == "im2col"
  for kw in ({}, {"dtype": jnp.bfloat16}, {"pixels": 6 * 6}):
    assert pick(**kw) == "winograd"
  assert pick(train=False, cin=1) == "xla" and pick(train=False) == "xla"
  assert pick(train=False, pixels=24 * 24) == "winograd"
