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


def _assert_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5), a, b)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory, toy_zip, tfds_dir):
  """The run on one device that the others are compared with (trained once)."""
  workdir = tmp_path_factory.mktemp("one") / "run"
  report = train.train_and_evaluate(CONFIG, workdir, data=toy_zip, data_dir=tfds_dir,
                                    mesh=state_lib.make_mesh(jax.devices()[:1]))
  return workdir, report


@TWO
def test_two_devices_compute_what_one_does(tmp_path, toy_zip, tfds_dir, one_device_run):
  one = state_lib.make_mesh(jax.devices()[:1])
  two = state_lib.make_mesh(jax.devices()[:2])
  ref, r1 = one_device_run
  r2 = train.train_and_evaluate(CONFIG, tmp_path / "two", data=toy_zip,
                                data_dir=tfds_dir, mesh=two)
  _assert_close(_final_params(ref, one), _final_params(tmp_path / "two", one))
  assert abs(r1["validation"]["accuracy"] - r2["validation"]["accuracy"]) < 0.08


@TWO
@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_checkpoint_restores_on_another_device_count(tmp_path, toy_zip, tfds_dir,
                                                     one_device_run, first, second):
  meshes = {n: state_lib.make_mesh(jax.devices()[:n]) for n in (1, 2)}
  ref, _ = one_device_run
  assert train.train_and_evaluate(CONFIG, tmp_path / "moved", data=toy_zip,
                                  data_dir=tfds_dir, mesh=meshes[first],
                                  stop_after_steps=5) is None
  train.train_and_evaluate(CONFIG, tmp_path / "moved", data=toy_zip, data_dir=tfds_dir,
                           mesh=meshes[second])
  _assert_close(_final_params(ref, meshes[1]),
                _final_params(tmp_path / "moved", meshes[1]))


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
