"""ferjax.configs: every variant round-trips; --set reaches every field; bad values and
unknown keys are refused when the config is built."""

import dataclasses
import json

import pytest

from ferjax import configs, train
from ferjax.errors import ConfigError


@pytest.mark.parametrize("variant", list(configs.VARIANTS))
def test_every_variant_round_trips_through_json(variant):
  config = configs.get_config(variant)
  assert configs.Config.from_dict(json.loads(config.to_json())) == config


def test_set_reaches_top_level_and_augment_fields():
  args = train.build_parser().parse_args(
      ["--variant", "augmented", "--set", "weight_decay=1e-4",
       "--set", "augment.max_rotation=15", "--set", "augment.erase_area=0.1,0.3",
       "--set", "early_stopping=false", "--set", "input_size=44", "--epochs", "7"])
  c = train.config_from_args(args)
  assert (c.weight_decay, c.augment.max_rotation, c.augment.erase_area) == (
      1e-4, 15.0, (0.1, 0.3))
  assert c.early_stopping is False and c.input_size == 44 and c.epochs == 7
  assert c.augment.flip  # untouched fields keep the variant's values


@pytest.mark.parametrize("assignment, message", [
    ("monitor=val_acc", "monitor must be one of val_loss, val_accuracy"),
    ("optimizer=rmsprop", "optimizer must be one of adam, adamw, sgd"),
    ("schedule=step", "schedule must be one of constant, cosine"),
    ("input_size=64", "input_size must be 16 to 48"),
    ("learning_rate=-1", "learning_rate must be positive"),
    ("val_fraction=1.5", "val_fraction must be between 0 and 1"),
    ("epochs=ten", "invalid literal"),
    ("conv_impl=fft", "conv_impl must be one of auto, xla, im2col, chunked, winograd"),
    ("early_stopping=maybe", "is not true or false"),
    ("no_such_field=1", "expected KEY=VALUE with KEY one of"),
    ("model=resnet99", "model must be one of"),
    ("augment.erase_area=0.1", "augment.erase_area must be two fractions"),
    ("augment.erase_prob=2", "augment.erase_prob must be between 0 and 1"),
    ("augment.max_rotation=-5", "augment.max_rotation must be at least 0"),
    ("weight_decay", "expected KEY=VALUE"),
    ("train_limit=-5", "train_limit must be at least 1"),
    ("train_limit=0", "train_limit must be at least 1"),
    ("label_smoothing=5", "label_smoothing must be at least 0 and below 1"),
    ("label_smoothing=1", "label_smoothing must be at least 0 and below 1"),
    ("seed=-1", "seed must be 0 to"),
    ("val_seed=-3", "val_seed must be 0 to"),
    ("weight_decay=nan", "weight_decay must be at least 0"),
    ("dtype=float16", "dtype must be one of float32, bfloat16, auto"),
    ("ema_decay=1", "ema_decay must be at least 0 and below 1"),
    ("ema_decay=-0.1", "ema_decay must be at least 0 and below 1"),
    ("final_lr_fraction=nan", "final_lr_fraction must be at least 0 and below 1"),
    ("final_fit=maybe", "is not true or false"),
    ("conv_tuning.winograd_mb=0", "conv_tuning.winograd_mb must be a positive number of MB"),
    ("conv_tuning.taps_mb=nan", "conv_tuning.taps_mb must be a positive number of MB"),
    ("conv_tuning.chunk_mb=inf", "conv_tuning.chunk_mb must be a positive number of MB"),
    ("conv_tuning.winograd_whole_mb=-1", "conv_tuning.winograd_whole_mb must be at least 0"),
    ("conv_tuning.winograd_mb=big", "could not convert"),
    ("conv_tuning.cache_mb=1", "expected KEY=VALUE with KEY one of"),
    ("low_res_fraction=0.5", "low_res_fraction needs low_res_size"),
    ("low_res_size=40", r"low_res_size must be at least 8 and below input_size \(40\)"),
    ("low_res_size=32", "low_res_fraction must be above 0 and below 1; got 0.0"),
    ("low_res_size=28", "low_res_size 28 gives vgg_slim's dense head a 1x1 map where "
                        "input_size 40 gives 2x2: use a size from 32 to 39"),
])
def test_bad_values_are_refused_when_the_config_is_built(assignment, message):
  with pytest.raises(ConfigError, match=message):
    configs.with_overrides(configs.get_config("augmented"), [assignment])


def test_progressive_resizing_trains_its_first_epochs_small():
  c = configs.with_overrides(configs.get_config("augmented"),
                             ["low_res_size=32", "low_res_fraction=0.6", "epochs=10"])
  assert [c.train_size(e) for e in range(10)] == [32] * 6 + [40] * 4
  assert configs.get_config("augmented").train_size(0) == 40  # off by default
  # Rounded half up, at least one epoch small and one at full size.
  low = lambda f, e: configs.with_overrides(configs.get_config("augmented"), [
      "low_res_size=32", f"low_res_fraction={f}", f"epochs={e}"]).low_res_epochs()
  assert [low(0.5, 5), low(0.5, 7), low(0.01, 10), low(0.99, 10), low(0.5, 1)] == [
      3, 4, 1, 9, 0]
  with pytest.raises(ConfigError, match="no size below 48 gives that map"):
    configs.with_overrides(configs.get_config("tiny"), ["low_res_size=40",
                                                        "low_res_fraction=0.5"])


def test_unknown_keys_in_a_saved_config_are_refused():
  d = json.loads(configs.get_config("tiny").to_json())
  with pytest.raises(ConfigError, match="unknown config keys: colour"):
    configs.Config.from_dict({**d, "colour": "blue"})
  d["augment"]["sharpness"] = 1
  with pytest.raises(ConfigError, match="augment.sharpness"):
    configs.Config.from_dict(d)
  # A config written before a field existed still loads, with the default.
  d = json.loads(configs.get_config("tiny").to_json())
  del d["input_size"]
  assert configs.Config.from_dict(d).input_size == 48


def test_the_cosine_schedule_ends_at_its_floor():
  from ferjax import state as state_lib
  for fraction in (0.0, 0.05):
    config = configs.with_overrides(configs.get_config("augmented"),
                                    [f"final_lr_fraction={fraction}"])
    _, schedule = state_lib.make_optimizer(config, steps_per_epoch=10)
    peak, end = float(schedule(10)), float(schedule(config.epochs * 10))
    assert peak == pytest.approx(config.learning_rate)
    assert end == pytest.approx(fraction * config.learning_rate, abs=1e-9)


def test_steps_per_epoch_drops_the_remainder():
  assert configs.steps_per_epoch(1000, 128) == 7
  assert dataclasses.replace(configs.get_config("tiny"), epochs=1).epochs == 1


def test_conv_impl_is_one_switch_recorded_with_the_run():
  from ferjax import ops, state
  assert configs.CONV_IMPLS == ("auto", *ops.CONV_IMPLS)  # the two lists agree
  args = train.build_parser().parse_args(["--variant", "tiny", "--set", "conv_impl=xla"])
  c = train.config_from_args(args)
  assert state.create_model(c).conv_impl == "xla"
  assert json.loads(c.to_json())["conv_impl"] == "xla"
  # Workdirs written before the field existed read as "auto".
  old = json.loads(configs.tiny().to_json())
  del old["conv_impl"]
  assert configs.Config.from_dict(old).conv_impl == "auto"


def test_conv_tuning_is_set_field_by_field_and_recorded_with_the_run():
  from ferjax import ops, state
  args = train.build_parser().parse_args(
      ["--variant", "tiny", "--set", "conv_tuning.winograd_mb=64",
       "--set", "conv_tuning.winograd_whole_mb=0"])
  c = train.config_from_args(args)
  want = dataclasses.replace(ops.DEFAULT_TUNING, winograd_mb=64, winograd_whole_mb=0)
  assert c.conv_tuning == want and state.create_model(c).conv_tuning == want
  assert json.loads(c.to_json())["conv_tuning"]["winograd_mb"] == 64
  assert configs.Config.from_dict(json.loads(c.to_json())) == c
  assert configs.tiny().conv_tuning == ops.DEFAULT_TUNING
  # Workdirs written before the field existed (or before one of its fields) read as
  # the defaults; unknown nested keys are refused like the others.
  old = json.loads(configs.tiny().to_json())
  del old["conv_tuning"]
  assert configs.Config.from_dict(old) == configs.tiny()
  old["conv_tuning"] = {"winograd_mb": 64}
  assert configs.Config.from_dict(old).conv_tuning == dataclasses.replace(
      ops.DEFAULT_TUNING, winograd_mb=64)
  old["conv_tuning"]["l2_mb"] = 1
  with pytest.raises(ConfigError, match="unknown config keys: conv_tuning.l2_mb"):
    configs.Config.from_dict(old)


def _help(main, capsys) -> str:
  with pytest.raises(SystemExit):
    main(["--help"])
  return " ".join(capsys.readouterr().out.split())


def test_commands_share_the_data_dtype_and_set_flags(capsys):
  from ferjax import bench, evaluate
  helps = {name: _help(m, capsys) for name, m in (
      ("train", train.main), ("evaluate", evaluate.main), ("bench", bench.main))}
  data = "--data DATA FER2013 zip, csv or folder (default: $FERJAX_DATA"
  assert data in helps["train"] and data in helps["evaluate"]
  assert "--dtype {float32,bfloat16} " in helps["evaluate"]  # predicting: no auto
  for name in ("train", "bench"):
    assert "--dtype {float32,bfloat16,auto}" in helps[name]
  for name in ("train", "bench"):
    assert "--set KEY=VALUE set any config field" in helps[name]
