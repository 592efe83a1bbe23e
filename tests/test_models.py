"""The model registry: every architecture maps 48x48 faces to class logits."""

import jax
import jax.numpy as jnp
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
