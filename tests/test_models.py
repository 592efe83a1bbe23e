"""The model registry: every architecture maps 48x48 faces to class logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import models


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


@pytest.mark.parametrize("cin,cout,padding", [(1, 8, "SAME"), (5, 7, ((1, 1), (1, 1))),
                                              (4, 6, "VALID")])
def test_im2col_conv_equals_lax_conv_and_its_gradients(cin, cout, padding):
  from jax import lax
  x = jax.random.normal(jax.random.key(0), (3, 10, 9, cin))
  k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
  dn = ("NHWC", "HWIO", "NHWC")
  ref = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=dn)
  got = lambda x, k: models.im2col_conv(x, k, (1, 1), padding, dimension_numbers=dn)
  np.testing.assert_allclose(got(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  for a, b in zip(jax.grad(loss(got), (0, 1))(x, k), jax.grad(loss(ref), (0, 1))(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_impls_share_parameters_and_outputs():
  x = jax.random.uniform(jax.random.key(0), (2, 48, 48, 1))
  a = models.create_model("tiny", num_classes=6)
  b = models.ConvNet(**{**models.MODELS["tiny"].keywords, "num_classes": 6,
                        "conv_impl": "im2col"})
  v = a.init(jax.random.key(0), x, train=False)
  np.testing.assert_allclose(a.apply(v, x, train=False), b.apply(v, x, train=False),
                             rtol=1e-4, atol=1e-5)
