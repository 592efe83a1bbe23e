"""The model registry: every architecture maps 48x48 faces to class logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import models, ops


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_output_shape_and_batch_stats(name):
  model = models.create_model(name, num_classes=6)
  x = jnp.zeros((2, 48, 48, 1))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert out.shape == (2, 6) and out.dtype == jnp.float32
  assert ("batch_stats" in variables) == model.batch_norm


def test_tiny_is_tiny():
  model = models.create_model("tiny", num_classes=7)
  params = model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)), train=False)["params"]
  n = sum(p.size for p in jax.tree.leaves(params))
  assert n < 100_000


def test_bfloat16_compute_keeps_float32_params():
  model = models.create_model("tiny", num_classes=6, dtype=jnp.bfloat16)
  x = jnp.ones((2, 48, 48, 1))
  v = model.init(jax.random.key(0), x, train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  assert model.apply(v, x, train=False).dtype == jnp.float32


def test_unknown_model():
  with pytest.raises(ValueError, match="unknown model 'resnet'"):
    models.create_model("resnet", num_classes=6)


def _assert_conv_equals_lax(conv, batch, cin, cout, padding, *, value_atol, grad_atol):
  """`conv` (a lax.conv_general_dilated stand-in) gives lax's values and gradients."""
  from jax import lax
  x = jax.random.normal(jax.random.key(0), (batch, 10, 9, cin))
  k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
  dn = ("NHWC", "HWIO", "NHWC")
  ref = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=dn)
  got = lambda x, k: conv(x, k, (1, 1), padding, dimension_numbers=dn)
  np.testing.assert_allclose(got(x, k), ref(x, k), rtol=1e-5, atol=value_atol)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  for a, b in zip(jax.grad(loss(got), (0, 1))(x, k), jax.grad(loss(ref), (0, 1))(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=grad_atol)


@pytest.mark.parametrize("cin,cout,padding", [(1, 8, "SAME"), (5, 7, ((1, 1), (1, 1))),
                                              (4, 6, "VALID")])
def test_im2col_conv_equals_lax_conv_and_its_gradients(cin, cout, padding):
  _assert_conv_equals_lax(ops.im2col_conv, 3, cin, cout, padding, value_atol=1e-5,
                          grad_atol=1e-4)


@pytest.mark.parametrize("impl", ["chunked", "winograd"])
@pytest.mark.parametrize("batch,cin,cout,padding", [
    (3, 16, 8, "SAME"), (4, 17, 5, ((0, 2), (1, 0))), (6, 16, 6, "VALID"),
    (2, 3, 4, "SAME")])  # the last: few input channels, handed on to im2col
def test_cpu_conv_equals_lax_conv_and_its_gradients(monkeypatch, impl, batch, cin, cout,
                                                    padding):
  # Tiny cache budgets, so the batch is split into several chunks. The 10x9 input
  # gives Winograd odd output sizes (a cropped tile row or column).
  monkeypatch.setattr(ops, "CHUNK_BYTES", 10 * 9 * 9 * cin * 4)
  monkeypatch.setattr(ops, "TAPS_BYTES", 12 * 11 * 9 * cout * 4)
  monkeypatch.setattr(ops, "WINOGRAD_BYTES", 16 * 6 * 5 * cin * 4)
  monkeypatch.setattr(ops, "WINOGRAD_GRAD_BYTES", 16 * 6 * 5 * cin * 4)
  monkeypatch.setattr(ops, "WINOGRAD_WHOLE_BYTES", 0)
  _assert_conv_equals_lax(ops.CONV_IMPLS[impl], batch, cin, cout, padding,
                          value_atol=1e-4, grad_atol=1e-3)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("size,padding", [((12, 8), ((1, 1), (1, 1))),  # tiles fit
                                          ((10, 9), ((0, 2), (1, 0)))])  # cropped
def test_winograd_tile_sizes_give_lax_values_and_kernel_gradient(monkeypatch, m, size,
                                                                 padding):
  from jax import lax
  monkeypatch.setattr(ops, "WINOGRAD_BYTES", 1)  # one image a chunk
  monkeypatch.setattr(ops, "WINOGRAD_GRAD_BYTES", 1)
  monkeypatch.setattr(ops, "WINOGRAD_WHOLE_BYTES", 0)
  x = jax.random.normal(jax.random.key(0), (3, *size, 16))
  k = jax.random.normal(jax.random.key(1), (3, 3, 16, 8))
  ref = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = ref(x, k)
  np.testing.assert_allclose(ops._winograd_forward(x, k, padding, m), y, rtol=1e-5,
                             atol=1e-4)
  g = jnp.cos(y)
  _, vjp = jax.vjp(lambda k: ref(x, k), k)
  np.testing.assert_allclose(ops._winograd_kernel_grad(x, g, k, padding, m), vjp(g)[0],
                             rtol=1e-4, atol=1e-3)


def test_winograd_runs_a_small_layer_as_one_chunk(monkeypatch):
  monkeypatch.setattr(ops, "WINOGRAD_WHOLE_BYTES", 64 * 100)
  assert ops._winograd_images_per_chunk(64, 100, 1000) == 64  # the whole batch fits
  assert ops._winograd_images_per_chunk(64, 101, 1000) == 8  # chunks within 1000 B
  assert ops._winograd_images_per_chunk(66, 101, 350) == 3  # a divisor of the batch


def _bfloat16_case(conv):
  """A bfloat16 convolution by `conv`, and its float32 reference on the same inputs."""
  from jax import lax
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 64)).astype(jnp.bfloat16)
  k = (jax.random.normal(jax.random.key(1), (3, 3, 64, 32)) * 0.05).astype(jnp.bfloat16)
  ref = lax.conv_general_dilated(x.astype(jnp.float32), k.astype(jnp.float32), (1, 1),
                                 "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
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


def _outputs_and_grads(model, variables, x):
  def f(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True,
                         mutable=["batch_stats"])
    return jnp.sum(out ** 2)
  return (model.apply(variables, x, train=False),
          jax.tree.leaves(jax.grad(f)(variables["params"])))


@pytest.mark.parametrize("impl", ["xla", "im2col", "chunked", "winograd"])
def test_conv_impls_share_parameters_outputs_and_gradients(impl):
  """Each implementation, in float32, is as close to a float64 reference as float32
  arithmetic allows: errors are bounded relative to each output's and each gradient's
  scale, so the bound holds on any CPU's rounding (FMA or not, any vector width)."""
  x = jax.random.uniform(jax.random.key(0), (4, 48, 48, 1))
  keywords = {**models.MODELS["vgg_small"].keywords, "widths": (8, 16),
              "num_classes": 6, "stage_dropout": 0.0, "head_dropout": 0.0}
  model = models.ConvNet(**keywords, conv_impl=impl)
  v = model.init(jax.random.key(0), x, train=False)
  out, grads = _outputs_and_grads(model, v, x)
  with jax.enable_x64(True):
    ref_model = models.ConvNet(**keywords, conv_impl="xla", dtype=jnp.float64)
    v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v)
    out_ref, grads_ref = _outputs_and_grads(ref_model, v64, jnp.asarray(x, jnp.float64))
    out_ref, grads_ref = np.asarray(out_ref), [np.asarray(g) for g in grads_ref]
  # float32 has 2^-24 = 6e-8 relative rounding; sums over thousands of terms and
  # Winograd's transforms (entries up to 4 in magnitude) grow that by a few hundred.
  scale = np.abs(out_ref).max()
  assert np.abs(np.asarray(out, np.float64) - out_ref).max() <= 1e-4 * scale
  assert len(grads) == len(grads_ref)
  for g, g_ref in zip(grads, grads_ref):
    err = np.abs(np.asarray(g, np.float64) - g_ref).max()
    assert err <= 1e-3 * np.abs(g_ref).max(), (err, np.abs(g_ref).max())


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


def test_every_network_is_its_architecture_table_entry():
  """ferjax.architectures (read without JAX by the ONNX path) and the Flax modules
  describe the same networks, ConvNet's defaults included."""
  from ferjax import architectures
  assert set(models.MODELS) == set(architectures.ARCHITECTURES)
  for name in models.MODELS:
    net = models.create_model(name, num_classes=6)
    for key, value in architectures.settings(name).items():
      assert getattr(net, key) == value, (name, key)


@pytest.mark.parametrize("size", [40, 48])
def test_expected_shapes_are_flax_shapes(size):
  """The shapes a weights file is checked against (computed without JAX) are the
  Flax networks' own, for every network."""
  from flax import traverse_util

  from ferjax import modelfile
  for name in models.MODELS:
    net = models.create_model(name, num_classes=6)
    v = jax.eval_shape(lambda net=net: net.init(
        jax.random.key(0), jnp.zeros((1, size, size, 1)), train=False))
    flax_shapes = {k: tuple(a.shape)
                   for k, a in traverse_util.flatten_dict(dict(v), sep="/").items()}
    info = modelfile.ModelInfo(model=name, num_classes=6, input_size=size)
    assert modelfile.expected_shapes(info) == flax_shapes, name
