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


def _outputs_and_grads(model, variables, x):
  def f(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True,
                         mutable=["batch_stats"])
    return jnp.sum(out ** 2)
  return (model.apply(variables, x, train=False),
          jax.tree.leaves(jax.grad(f)(variables["params"])))


def _assert_as_float64(model, variables, x, outputs_and_grads):
  """`outputs_and_grads` (of `model` at variables, x, in float32) are as close to the
  float64 network's (XLA's convolution) as float32 arithmetic allows: errors bounded
  relative to each output's and each gradient's scale, so the bound holds on any CPU's
  rounding (FMA or not, any vector width)."""
  out, grads = outputs_and_grads
  with jax.enable_x64(True):
    ref_model = model.clone(conv_impl="xla", dtype=jnp.float64)
    v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
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


@pytest.mark.parametrize("impl", ["xla", "im2col", "chunked", "winograd"])
def test_conv_impls_share_parameters_outputs_and_gradients(impl):
  """Each implementation, in float32, is as close to a float64 reference as float32
  arithmetic allows (`_assert_as_float64`)."""
  x = jax.random.uniform(jax.random.key(0), (4, 48, 48, 1))
  keywords = {**models.MODELS["vgg_small"].keywords, "widths": (8, 16),
              "num_classes": 6, "stage_dropout": 0.0, "head_dropout": 0.0}
  model = models.ConvNet(**keywords, conv_impl=impl)
  v = model.init(jax.random.key(0), x, train=False)
  _assert_as_float64(model, v, x, _outputs_and_grads(model, v, x))


def test_the_conv_tuning_reaches_every_convolution():
  """create_model's conv_tuning is what the network's kernels chunk by: one image a
  chunk compiles another train step than the defaults, with the same gradients."""
  one_image = ops.ConvTuning(chunk_mb=1e-6, taps_mb=1e-6, winograd_mb=1e-6,
                             winograd_grad_mb=1e-6, winograd_whole_mb=0)
  x = jax.random.uniform(jax.random.key(0), (4, 48, 48, 1))
  # tiny's widths, 16 and 32: its second layer has the 16 input channels that
  # Winograd needs (fewer go to im2col, which has no chunks).
  nets = [models.create_model("tiny", num_classes=6, conv_impl="winograd",
                              conv_tuning=t).clone(widths=(16, 32))
          for t in (ops.DEFAULT_TUNING, one_image)]
  assert nets[1].conv_tuning == one_image
  v = nets[0].init(jax.random.key(0), x, train=False)
  steps = [jax.jit(lambda v, x, net=net: _outputs_and_grads(net, v, x)) for net in nets]
  assert steps[0].lower(v, x).as_text() != steps[1].lower(v, x).as_text()
  # Both give the float64 network's outputs and gradients, within float32's bounds.
  for net, step in zip(nets, steps):
    _assert_as_float64(net, v, x, step(v, x))


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
