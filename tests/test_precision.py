"""`--dtype auto` (ferjax.precision): the CPU's flags, the decision, the timing of the real
step, and a run that resolves it once and keeps it on resume."""

from __future__ import annotations

import dataclasses
import json
import types

import jax.numpy as jnp
import pytest

from ferjax import configs, precision, train
from ferjax import workdir as workdir_lib
from ferjax.errors import ConfigError

TINY = dataclasses.replace(configs.tiny(), epochs=1, num_classes=7, early_stopping=False)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\n"
                  "flags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
  assert precision.cpu_flags(info) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
  assert precision.cpu_flags(tmp_path / "missing") is None
  info.write_text("processor\t: 0\n")
  assert precision.cpu_flags(info) is None


@pytest.mark.parametrize("platform, flags, native", [
    ("cpu", {"avx512f", "avx512_bf16"}, True),
    ("cpu", {"amx_bf16", "amx_tile"}, True),
    ("cpu", {"avx512f", "avx2"}, False),
    ("cpu", set(), False),
    ("gpu", set(), True),
])
def test_native_bfloat16_from_platform_and_flags(platform, flags, native):
  assert precision.native_bf16(platform, flags) is native


def test_the_decision():
  emulated = precision.decide(False, None)
  assert emulated.dtype == "float32" and not emulated.native_bf16
  assert emulated.images_per_second is None
  faster = precision.decide(True, {"float32": 150.0, "bfloat16": 180.0})
  assert faster.dtype == "bfloat16" and "1.20x" in faster.reason
  # Within the margin, or slower (as vgg_fast_dropout measured on AVX512-BF16): float32.
  assert precision.decide(True, {"float32": 150.0, "bfloat16": 155.0}).dtype == "float32"
  slower = precision.decide(True, {"float32": 298.0, "bfloat16": 223.0})
  assert slower.dtype == "float32" and "0.75x" in slower.reason


def test_choose_does_not_time_where_bfloat16_is_emulated(monkeypatch):
  monkeypatch.setattr(precision, "native_bf16", lambda: False)
  monkeypatch.setattr(precision, "time_dtypes", lambda *a, **k: pytest.fail("timed"))
  assert precision.choose(TINY).dtype == "float32"
  assert precision.choose(TINY, native=False).dtype == "float32"
  monkeypatch.setattr(precision, "time_dtypes",
                      lambda *a, **k: {"float32": 100.0, "bfloat16": 130.0})
  assert precision.choose(TINY, native=True).dtype == "bfloat16"


def test_time_dtypes_times_the_real_step_in_both(monkeypatch):
  from ferjax import steps as steps_lib
  compiled, real = [], steps_lib.jit_train_step
  monkeypatch.setattr(steps_lib, "jit_train_step", lambda config, mesh, size=None: (
      compiled.append((config.dtype, size)) or real(config, mesh, size=size)))
  rates = precision.time_dtypes(dataclasses.replace(TINY, batch_size=8), rounds=2,
                                steps=1)
  assert compiled == [("float32", 48), ("bfloat16", 48)]
  assert set(rates) == {"float32", "bfloat16"}
  assert all(r > 0 for r in rates.values())


def test_time_dtypes_weighs_each_size_by_its_share_of_a_progressive_run(monkeypatch):
  # A step that takes (on a fake clock) 1 s at 44x44 and 3 s at 47x47 in float32,
  # twice that in bfloat16; the run trains 1 of its 4 epochs at 44 (tiny's dense head
  # sees 11x11 maps from 44 to 47 pixels).
  from ferjax import steps as steps_lib
  clock = [0.0]
  cost = {("float32", 44): 1.0, ("float32", 47): 3.0, ("bfloat16", 44): 2.0,
          ("bfloat16", 47): 6.0}

  def fake_step(config, mesh, size=None):
    def step(state, images, labels, key):
      clock[0] += cost[config.dtype, size]
      return state, jnp.zeros(())
    return step

  monkeypatch.setattr(steps_lib, "jit_train_step", fake_step)
  monkeypatch.setattr(precision, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
  config = dataclasses.replace(TINY, batch_size=8, epochs=4, input_size=47,
                               low_res_size=44, low_res_fraction=0.25)
  assert [config.train_size(e) for e in range(4)] == [44, 47, 47, 47]
  rates = precision.time_dtypes(config, rounds=2, steps=1)
  # 8 images a step; a step of the run takes (1 + 3 * 3) / 4 = 2.5 s on average.
  assert rates == {"float32": 8 / 2.5, "bfloat16": 8 / 5.0}


def test_a_model_is_never_built_in_auto():
  from ferjax import state as state_lib
  with pytest.raises(ConfigError, match="resolved"):
    state_lib.create_model(dataclasses.replace(TINY, dtype="auto"))


def test_a_run_resolves_auto_once_and_resumes_with_its_choice(tmp_path, toy_zip, tfds_dir,
                                                              monkeypatch):
  chosen = precision.Choice("bfloat16", "bfloat16 trained 1.20x as fast", True,
                            {"float32": 100.0, "bfloat16": 120.0})
  monkeypatch.setattr(precision, "choose", lambda config, **kwargs: chosen)
  auto = dataclasses.replace(TINY, dtype="auto")
  # Interrupted after two steps (checkpoint, config.json, no report).
  assert train.train_and_evaluate(auto, tmp_path, data=toy_zip, data_dir=tfds_dir,
                                  stop_after_steps=2) is None
  assert configs.load_run_config(tmp_path).dtype == "bfloat16"
  assert json.loads((tmp_path / workdir_lib.DTYPE_CHOICE).read_text()) == chosen.to_json()

  # Resumed with auto, the run keeps its dtype without timing again, whatever this
  # machine would choose now.
  monkeypatch.setattr(precision, "choose", lambda *a, **k: pytest.fail("timed again"))
  report = train.train_and_evaluate(auto, tmp_path, data=toy_zip, data_dir=tfds_dir)
  assert report["epochs_run"] == 1
  assert configs.load_run_config(tmp_path).dtype == "bfloat16"
  # An explicit other dtype is still a different run.
  with pytest.raises(ConfigError, match="dtype"):
    train.train_and_evaluate(dataclasses.replace(TINY, dtype="float32"), tmp_path,
                             data=toy_zip, data_dir=tfds_dir)


def test_the_cli_accepts_auto_where_it_trains_only(capsys):
  from ferjax import evaluate
  assert train.build_parser().parse_args(["--dtype", "auto"]).dtype == "auto"
  with pytest.raises(SystemExit) as e:  # predicting has nothing to time: a dtype
    evaluate.main(["--pretrained", "--dtype", "auto"])
  assert e.value.code == 2 and "invalid choice: 'auto'" in capsys.readouterr().err
