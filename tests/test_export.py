"""python -m ferjax.export: never replaces a file without --force, never writes into a
run's workdir, and a run whose config.json was written over gets a message."""

import shutil

import pytest

from ferjax import evaluate, export, inference, train
from ferjax.errors import run_cli


def _run(main, args, capsys):
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: main(args))
  return e.value.code, capsys.readouterr().err


def test_an_existing_file_is_kept_unless_force(trained_tiny, tmp_path, capsys):
  out = tmp_path / "model.npz"
  out.write_bytes(b"the user's file")
  code, err = _run(export.main, ["--workdir", str(trained_tiny), str(out)], capsys)
  assert code == 2 and "already exists; pass --force" in err and "Traceback" not in err
  assert out.read_bytes() == b"the user's file"
  export.main(["--workdir", str(trained_tiny), str(out), "--force"])
  assert inference.Classifier.load(out).info.model == "tiny"
  assert not list(tmp_path.glob("*.tmp"))


def test_no_output_inside_a_workdir_or_onto_a_folder(trained_tiny, tmp_path, capsys):
  run = tmp_path / "run"
  shutil.copytree(trained_tiny, run)
  config = (run / "config.json").read_bytes()
  for target, message in ((run / "config.json", "inside the training run"),
                          (run / "new.npz", "inside the training run"),
                          (run / "checkpoints" / "w.npz", "inside the training run"),
                          (tmp_path, "is a folder")):
    code, err = _run(export.main, ["--workdir", str(run), str(target), "--force"],
                     capsys)
    assert code == 2 and message in err and "Traceback" not in err, err
  assert (run / "config.json").read_bytes() == config
  assert not (run / "new.npz").exists()


def test_an_unwritable_place_is_a_message(trained_tiny, tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("x")  # a file where the output's folder would have to be
  code, err = _run(export.main, ["--workdir", str(trained_tiny),
                                 str(blocker / "sub" / "m.npz")], capsys)
  assert code == 2 and "cannot write" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"PK\x03\x04\x00\xff\xfe binary", b"[1, 2]",
                                     b'{"variant": "tiny", "model": "resnet99"}'])
def test_a_config_written_over_is_a_message(trained_tiny, tmp_path, toy_zip, tfds_dir,
                                            capsys, content):
  run = tmp_path / "run"
  shutil.copytree(trained_tiny, run)
  (run / "config.json").write_bytes(content)
  code, err = _run(train.main, ["--variant", "tiny", "--workdir", str(run), "--data",
                                str(toy_zip), "--data-dir", str(tfds_dir)], capsys)
  assert code == 2 and "config.json" in err and "Traceback" not in err, err
  code, err = _run(evaluate.main, ["--workdir", str(run), "--data", str(toy_zip),
                                   "--data-dir", str(tfds_dir)], capsys)
  assert code == 2 and "config.json" in err and "Traceback" not in err, err
  code, err = _run(export.main, ["--workdir", str(run), str(tmp_path / "m.npz")],
                   capsys)
  assert code == 2 and "config.json" in err and "Traceback" not in err, err
