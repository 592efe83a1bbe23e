"""The train step: one optimisation step of a config's recipe, pure and jitted on a mesh.

The training loop (`ferjax.train`), the benchmark and experiments that train build on
it. Predicting is `ferjax.inference` (`predict_step`, `SplitPredictor`).
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ferjax import augment as augment_lib
from ferjax.configs import Config
from ferjax.inference import to_unit
from ferjax.state import TrainState

# Donation is a no-op on some CPU builds, which warn once per compile.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


def train_inputs(step_key: jax.Array, images: jax.Array, config: Config,
                 size: int | None = None) -> jax.Array:
  """What the network trains on: a batch of uint8 images [B, 48, 48] augmented, cropped
  to config.input_size and, where `size` is smaller, resized to size x size (linear,
  antialiased: the same field of view at a lower resolution). [B, size, size, 1].
  `step_key` is the step's key (`train_step` splits it the same way for dropout)."""
  aug_key, _ = jax.random.split(step_key)
  x = augment_lib.augment_batch(aug_key, to_unit(images), config.augment)
  if config.input_size < x.shape[1]:
    x = augment_lib.random_crop(jax.random.fold_in(step_key, 2), x, config.input_size)
  size = size or config.input_size
  if size != x.shape[1]:
    x = jax.image.resize(x, (x.shape[0], size, size), method="linear", antialias=True)
  return x[..., None]


def train_step(state: TrainState, images: jax.Array, labels: jax.Array,
               loop_key: jax.Array, *, config: Config,
               size: int | None = None) -> tuple[TrainState, dict]:
  """One optimisation step on a batch of uint8 images [B, 48, 48] and labels [B], the
  network seeing them at `size` (default config.input_size; see `train_inputs`).

  Returns the new state and the batch's metric sums (loss_sum, correct, count).
  """
  step_key = jax.random.fold_in(loop_key, state.step)
  _, dropout_key = jax.random.split(step_key)
  x = train_inputs(step_key, images, config, size)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, config.num_classes),
                                config.label_smoothing)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates.get("batch_stats", {}))
  if state.ema is not None:
    state = state.replace(ema=update_ema(state.ema, state, config.ema_decay))
  n = labels.shape[0]
  metrics = {"loss_sum": loss * n,
             "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
             "count": jnp.asarray(n, jnp.int32)}
  return state, metrics


def update_ema(ema: dict, state: TrainState, decay: float) -> dict:
  """The moving average after `state`'s step: decay min(decay, (1 + t) / (10 + t)) at
  step t, so that the first steps' random weights fade quickly."""
  t = state.step.astype(jnp.float32)
  d = jnp.minimum(decay, (1 + t) / (10 + t))
  new = {"params": state.params, "batch_stats": state.batch_stats}
  return jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, new)


def jit_train_step(config: Config, mesh: Mesh, *, size: int | None = None):
  """`train_step` for `config` (at `size`), compiled for `mesh`: called as
  `step(state, images, labels, loop_key) -> (state, metrics)`, with the state
  replicated (and donated) and the batch sharded along 'data'."""
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  return jax.jit(partial(train_step, config=config, size=size),
                 in_shardings=(replicated, data, data, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)
