"""Data-parallel training over several devices, emulated with 2 CPU devices.

The device count is fixed when JAX starts, so on a 1-device process the test at the
bottom re-runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=2.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import checkpointing, configs, train
from ferjax import state as state_lib

TWO = pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 devices")
CONFIG = dataclasses.replace(configs.tiny(), epochs=2, num_classes=7,
                             early_stopping=False, augment=configs.augmented().augment)


def _final_params(workdir, mesh):
  ckpt = checkpointing.Checkpoints(workdir)
  state, _ = ckpt.restore("latest", state_lib.abstract_state(CONFIG, mesh=mesh,
                                                         steps_per_epoch=1))
  ckpt.close()
  return jax.device_get(state.params)


def _relative_differences(a, b) -> dict[str, float]:
  """Per parameter array: the largest difference of a and b, over a's largest magnitude."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  return {jax.tree_util.keystr(path): float(np.abs(x - y).max() / np.abs(x).max())
          for (path, x), y in zip(flat_a, jax.tree.leaves(b))}


def _nudged(init_state):
  """`init_state` with every nonzero initial parameter moved by one float32 ulp (a
  random direction each): one rounding's difference at the start of training. (Zeros,
  the biases' start, would move to denormals, which the CPU flushes back to zero.)"""
  def init(config, **kwargs):
    state = init_state(config, **kwargs)
    leaves, treedef = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    moved = [jnp.nextafter(x, jax.random.rademacher(k, x.shape, x.dtype) * jnp.inf)
             for k, x in zip(keys, leaves)]
    return state.replace(params=jax.tree.unflatten(treedef, moved))
  return init


# Splitting a batch over devices sums its gradients and BatchNorm statistics in another
# order: float32 rounding differs at every step, and training carries such differences
# on. How far depends on the training (and the CPU's rounding), so the tolerance is
# measured with them: the difference that one ulp at the start makes (`noise_floor`, one
# draw of the directions), times TIMES_FLOOR for differences made at every step rather
# than once (a margin, not a bound: the two-device run differed by 2x the floor on a
# 2-core AMD EPYC). A wrong all-reduce (a sum for a mean, statistics of one device's
# half) changes the parameters by a good fraction of their scale; the floor must stay
# far below that (MAX_TOLERANCE) for the comparison to tell the two apart.
TIMES_FLOOR = 10
MAX_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory, toy_zip, tfds_dir):
  """The run on one device that the others are compared with (trained once)."""
  workdir = tmp_path_factory.mktemp("one") / "run"
  report = train.train_and_evaluate(CONFIG, workdir, data=toy_zip, data_dir=tfds_dir,
                                    mesh=state_lib.make_mesh(jax.devices()[:1]))
  return workdir, report


@pytest.fixture(scope="module")
def noise_floor(tmp_path_factory, toy_zip, tfds_dir, one_device_run):
  """The largest relative parameter difference that one ulp at the start makes."""
  workdir = tmp_path_factory.mktemp("nudged") / "run"
  one = state_lib.make_mesh(jax.devices()[:1])
  with pytest.MonkeyPatch.context() as m:
    m.setattr(train, "init_state", _nudged(train.init_state))
    train.train_and_evaluate(CONFIG, workdir, data=toy_zip, data_dir=tfds_dir, mesh=one)
  floor = max(_relative_differences(_final_params(one_device_run[0], one),
                                    _final_params(workdir, one)).values())
  assert floor > 0, "moving every initial parameter by one ulp changed nothing"
  assert TIMES_FLOOR * floor <= MAX_TOLERANCE, (
      f"one ulp at the start moves the trained parameters by {floor:.3g} of their scale: "
      "this training is too chaotic for the comparison to catch a wrong all-reduce")
  return floor


def _assert_close(a, b, floor):
  diffs = _relative_differences(a, b)
  worst = max(diffs, key=diffs.get)
  assert diffs[worst] <= TIMES_FLOOR * floor, (
      f"{worst}: differs by {diffs[worst]:.3g} of its scale, more than {TIMES_FLOOR}x "
      f"the {floor:.3g} that one ulp at the start makes")


@TWO
def test_two_devices_compute_what_one_does(tmp_path, toy_zip, tfds_dir, one_device_run,
                                          noise_floor):
  one = state_lib.make_mesh(jax.devices()[:1])
  two = state_lib.make_mesh(jax.devices()[:2])
  ref, r1 = one_device_run
  r2 = train.train_and_evaluate(CONFIG, tmp_path / "two", data=toy_zip,
                                data_dir=tfds_dir, mesh=two)
  _assert_close(_final_params(ref, one), _final_params(tmp_path / "two", one), noise_floor)
  assert abs(r1["validation"]["accuracy"] - r2["validation"]["accuracy"]) < 0.08


@TWO
@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_checkpoint_restores_on_another_device_count(tmp_path, toy_zip, tfds_dir,
                                                     one_device_run, noise_floor, first,
                                                     second):
  meshes = {n: state_lib.make_mesh(jax.devices()[:n]) for n in (1, 2)}
  ref, _ = one_device_run
  assert train.train_and_evaluate(CONFIG, tmp_path / "moved", data=toy_zip,
                                  data_dir=tfds_dir, mesh=meshes[first],
                                  stop_after_steps=5) is None
  train.train_and_evaluate(CONFIG, tmp_path / "moved", data=toy_zip, data_dir=tfds_dir,
                           mesh=meshes[second])
  _assert_close(_final_params(ref, meshes[1]),
                _final_params(tmp_path / "moved", meshes[1]), noise_floor)


def test_batch_must_divide_over_devices():
  mesh = state_lib.make_mesh(jax.devices()[:1])
  state_lib.check_batch_size(33, mesh)  # one device: anything goes
  if jax.device_count() >= 2:
    from ferjax.errors import ConfigError
    with pytest.raises(ConfigError, match="does not divide evenly over 2 devices"):
      state_lib.check_batch_size(33, state_lib.make_mesh(jax.devices()[:2]))


@pytest.mark.skipif(jax.device_count() >= 2, reason="already multi-device")
def test_rerun_with_two_emulated_cpu_devices():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        __file__], capture_output=True, text=True, env=env, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "4 passed, 1 skipped" in out.stdout, out.stdout[-2000:]
