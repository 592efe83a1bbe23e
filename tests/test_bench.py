"""The benchmark command: one JSON object with the figures the README's table reports."""

import dataclasses
import itertools
import json
import resource
import types

import pytest

from ferjax import bench, ops


def test_bench_json_reports_every_figure(capsys, monkeypatch):
  # Each getrusage call adds 0.25 s of kernel time and 1000 minor faults (and no user
  # time), so a timed pass's deltas are known: one call before it, one after.
  real, calls = resource.getrusage, itertools.count()

  def fake_getrusage(who):
    n = next(calls)
    return types.SimpleNamespace(ru_maxrss=real(who).ru_maxrss, ru_utime=0.0,
                                 ru_stime=0.25 * n, ru_minflt=1000 * n)

  monkeypatch.setattr(resource, "getrusage", fake_getrusage)
  bench.main(["--variant", "tiny", "--steps", "2", "--repeats", "1", "--json",
              "--eval-dtype", "bfloat16"])
  out = json.loads(capsys.readouterr().out)
  for key in ("train_images_per_second", "eval_images_per_second",
              "eval_tta_images_per_second"):
    assert 0 < out[key]["min"] <= out[key]["median"] <= out[key]["max"]
  assert out["eval_speedup_per_image"] > 0 and out["eval_tta_speedup_per_image"] > 0
  assert out["train_gflop_per_step"] > 0 and out["matmul_peak_gflops"] > 0
  assert 0 < out["fraction_of_peak"] == out["achieved_gflops"] / out["matmul_peak_gflops"]
  assert 0 <= out["input_wait_fraction"] < 1 and out["peak_rss_mib"] > 0
  # One pass of 2 steps of 32 images: 0.25 s of kernel time over its wall time (which
  # the rate gives), 1000 faults over its 2 steps.
  rate = out["train_images_per_second"]["median"]
  assert out["system_seconds_per_second"] == pytest.approx(0.25 * rate / (2 * 32))
  assert out["minor_faults_per_step"] == 500
  assert out["allocator"] in ("libc", "tcmalloc", "jemalloc", "mimalloc", "unknown")
  assert out["variant"] == "tiny" and out["batch_size"] == 32 and out["train_size"] == 48
  assert out["dtype"] == "float32" and out["eval_dtype"] == "bfloat16"
  default = ops.DEFAULT_TUNING
  assert out["winograd_mb"] == [default.winograd_mb, default.winograd_grad_mb,
                                default.winograd_whole_mb]
  assert out["conv_tuning"] == dataclasses.asdict(default)


def test_with_progressive_resizing_the_bench_times_the_small_step(capsys):
  flops = {}
  for low in ([], ["--set", "low_res_size=44", "--set", "low_res_fraction=0.5"]):
    bench.main(["--variant", "tiny", "--set", "input_size=47", *low, "--steps", "1",
                "--repeats", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    flops[out["train_size"]] = out["train_gflop_per_step"]
  # Fewer pixels through the convolutions (the augmentation, on 48x48, stays).
  assert set(flops) == {47, 44} and flops[44] < flops[47]


def test_winograd_budgets_are_set_and_reported_as_config_values(capsys, monkeypatch):
  """--winograd-mb (and --set conv_tuning.*) reach the step as the config's value;
  ferjax.ops is left as it was."""
  configs_run, real_run = [], bench.run

  def recording_run(config, **kwargs):
    configs_run.append(config)
    return real_run(config, **kwargs)

  monkeypatch.setattr(bench, "run", recording_run)
  before = {k: v for k, v in vars(ops).items() if not k.startswith("__")}
  whole = ops.DEFAULT_TUNING.winograd_whole_mb
  bench.main(["--variant", "tiny", "--steps", "1", "--repeats", "1", "--json",
              "--winograd-mb", "2.5,1", "--set", "conv_tuning.chunk_mb=4"])
  assert json.loads(capsys.readouterr().out)["winograd_mb"] == [2.5, 1.0, whole]
  assert configs_run[-1].conv_tuning == dataclasses.replace(
      ops.DEFAULT_TUNING, winograd_mb=2.5, winograd_grad_mb=1, chunk_mb=4)
  bench.main(["--variant", "tiny", "--steps", "1", "--repeats", "1", "--json",
              "--winograd-mb", "10,5,0"])
  assert json.loads(capsys.readouterr().out)["winograd_mb"] == [10.0, 5.0, 0.0]
  assert {k: v for k, v in vars(ops).items() if not k.startswith("__")} == before


@pytest.mark.parametrize("value", ["10", "10,x", "10,5,80,1"])
def test_bad_winograd_budgets_say_what_to_give(capsys, value):
  with pytest.raises(SystemExit):
    bench.main(["--winograd-mb", value])
  assert "give two or three sizes in MB, e.g. 10,5 or 10,5,80" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("10,-5", "conv_tuning.winograd_grad_mb must be a positive number of MB; got -5.0"),
    ("0,5", "conv_tuning.winograd_mb must be a positive number of MB; got 0.0"),
    ("10,5,-1", "conv_tuning.winograd_whole_mb must be at least 0 MB")])
def test_bad_winograd_budget_values_are_refused_by_the_config(value, message):
  from ferjax.errors import ConfigError
  with pytest.raises(ConfigError, match=message):
    bench.main(["--variant", "tiny", "--winograd-mb", value])


def test_warmup_repeats_run_untimed_through_the_pipeline(capsys, monkeypatch):
  from ferjax import input_pipeline
  passes = []
  real = input_pipeline.Prefetcher

  def counting(*args, **kwargs):
    passes.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(input_pipeline, "Prefetcher", counting)
  bench.main(["--variant", "tiny", "--steps", "1", "--repeats", "2", "--warmup", "3",
              "--json"])
  out = json.loads(capsys.readouterr().out)
  assert out["warmup_repeats"] >= 3 and out["repeats"] == 2
  assert len(passes) == out["warmup_repeats"] + 2  # warm-up passes, then the timed ones
  assert isinstance(out["heap_settled"], bool)
  assert out["train_images_per_second"]["min"] > 0


def test_bench_prints_a_summary(capsys):
  bench.main(["--variant", "tiny", "--steps", "1", "--repeats", "1", "--warmup", "2"])
  out = capsys.readouterr().out
  assert "tiny (tiny), batch 32" in out and "img/s" in out
  assert "untimed warm-up repeats (memory" in out


@pytest.mark.parametrize("grows_in, warmup, passes, settled", [
    ((), 1, 2, True),  # one pass, then one more to see two still passes
    ((), 3, 3, True),
    ((0, 2, 4), 1, 7, True),  # grows in passes 1, 3 and 5: runs until 6 and 7 are still
    (range(100), 2, 2 + bench.MAX_EXTRA_WARMUP, False),  # never settles: capped
    ((0,), 0, 0, False),  # --warmup 0: no warm-up at all
])
def test_warm_up_runs_until_memory_stops_growing(monkeypatch, grows_in, warmup, passes,
                                                 settled):
  rss = [1000.0]
  monkeypatch.setattr(bench, "_peak_rss_mib", lambda: rss[0])

  def one_pass(i):
    if i in grows_in:
      rss[0] += 1300  # one step's temporaries on fresh memory
    elif i % 2:
      rss[0] += bench.SETTLED_MIB / 2  # small growth counts as still

  assert bench.warm_up(one_pass, warmup) == (passes, settled)


@pytest.mark.parametrize("flags", [["--steps", "0"], ["--repeats", "0"],
                                   ["--warmup", "-1"]])
def test_bad_repeat_counts_say_what_to_give(capsys, flags):
  with pytest.raises(SystemExit):
    bench.main(["--variant", "tiny", *flags])
  assert "--steps and --repeats must be at least 1, --warmup at least 0" in (
      capsys.readouterr().err)
