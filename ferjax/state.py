"""The train state and where it lives: the model and optimizer built from a config,
the state created or shaped for restoring, and the device mesh it is sharded over.

Training (`ferjax.steps`, `ferjax.train`) and inference (`ferjax.inference`, to restore
a run's checkpoint and to classify a split over a mesh) both build on this module; it
holds no step and no loop.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ferjax import configs, models
from ferjax.configs import Config
from ferjax.errors import ConfigError


class TrainState(train_state.TrainState):
  batch_stats: Any = None
  # The moving average of params and batch_stats ({"params", "batch_stats"}) where the
  # config keeps one (`ema_decay` > 0), else None (no leaves; a checkpoint written before
  # this field existed restores with it None: `checkpointing.Checkpoints.restore`).
  ema: Any = None


def for_evaluation(state: TrainState) -> TrainState:
  """The state to validate, keep as best and export: its moving average of the weights
  where it keeps one (in `params` and `batch_stats`; the same tree), else itself."""
  if state.ema is None:
    return state
  return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (of all hosts), axis 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(f"The batch size {batch_size} does not divide evenly over {n} "
                      f"devices; use a multiple of {n}.")


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Places this host's part of a global batch on the mesh, split along 'data'."""
  sharding = NamedSharding(mesh, P("data"))
  return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)


def host_slice(batch_size: int) -> slice:
  """This host's rows of a global batch."""
  per_host = batch_size // jax.process_count()
  return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def make_optimizer(config: Config, steps_per_epoch: int):
  """The optax transformation and its learning-rate schedule."""
  total = max(1, config.epochs * steps_per_epoch)
  if config.schedule == "cosine":
    warmup = int(config.warmup_epochs * steps_per_epoch)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1),
        end_value=config.final_lr_fraction * config.learning_rate)
  elif config.schedule == "constant":
    schedule = optax.constant_schedule(config.learning_rate)
  else:
    raise ConfigError(f"unknown schedule '{config.schedule}' (constant or cosine)")
  return optimizer_with_schedule(config, schedule), schedule


def optimizer_with_schedule(config: Config, schedule):
  """The config's optax optimizer (and weight decay) on a given learning-rate schedule."""
  # Weight decay on kernels only, not on biases or BatchNorm scales.
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if config.optimizer == "sgd":
    return optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask),
                       optax.sgd(schedule, momentum=0.9, nesterov=True))
  if config.optimizer in ("adam", "adamw"):
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask)
  raise ConfigError(f"unknown optimizer '{config.optimizer}' (adam, adamw or sgd)")


def create_model(config: Config):
  if config.dtype not in configs.DTYPES:  # "auto" is resolved when a run starts
    raise ConfigError(f"dtype '{config.dtype}' must be resolved to one of "
                      f"{', '.join(configs.DTYPES)} first (a run's config.json holds "
                      "the dtype that --dtype auto chose)")
  return models.create_model(config.model, num_classes=config.num_classes,
                             dtype=config.dtype, conv_impl=config.conv_impl,
                             conv_tuning=config.conv_tuning)


def create_train_state(config: Config, *, key: jax.Array, steps_per_epoch: int
                       ) -> TrainState:
  """Initialises the model and optimizer (pure: `jax.eval_shape` can trace it)."""
  model = create_model(config)
  side = config.input_size
  variables = model.init(key, jnp.zeros((1, side, side, 1), jnp.float32), train=False)
  tx, _ = make_optimizer(config, steps_per_epoch)
  batch_stats = variables.get("batch_stats", {})
  ema = None
  if config.ema_decay > 0:
    ema = jax.tree.map(jnp.copy, {"params": variables["params"],
                                  "batch_stats": batch_stats})
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                            batch_stats=batch_stats, ema=ema)
  # A strongly typed step: a restored one is, and a weak one would recompile the step.
  return state.replace(step=jnp.zeros((), jnp.int32))


def init_state(config: Config, *, mesh: Mesh, steps_per_epoch: int) -> TrainState:
  """A fresh state, replicated over the mesh."""
  init_key = jax.random.fold_in(jax.random.key(config.seed), 0)
  replicated = NamedSharding(mesh, P())
  create = partial(create_train_state, config, steps_per_epoch=steps_per_epoch)
  return jax.jit(create, out_shardings=replicated)(key=init_key)


def abstract_state(config: Config, *, mesh: Mesh, steps_per_epoch: int) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, for restoring."""
  shapes = jax.eval_shape(partial(create_train_state, config,
                                  steps_per_epoch=steps_per_epoch),
                          key=jax.random.key(0))
  return abstract_like(shapes, NamedSharding(mesh, P()))


def abstract_like(state: TrainState, sharding=None) -> TrainState:
  """A restore template with `state`'s structure, including its apply_fn and tx.

  Restoring into it gives a state that jitted steps compiled for `state` accept
  without recompiling (their cache key includes the tree's static fields).
  """
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
      a.shape, a.dtype, sharding=sharding or a.sharding), state)
