"""predict --out DIR: results written as the job goes; an interrupted job, run again,
ends with the same results as one never interrupted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ferjax import predict
from ferjax.errors import run_cli
from ferjax.results import FILES, RESULTS, ResultsDir


@pytest.fixture
def inputs(tmp_path):
  """Seven face crops (classified whole) and a file that is not an image."""
  folder = tmp_path / "in"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(7):
    Image.fromarray(rng.integers(0, 256, (48, 48), np.uint8)).save(folder / f"f{i}.png")
  (folder / "broken.png").write_bytes(b"not a png")
  return folder


def _job(inputs, out, weights, *extra):
  with pytest.raises(SystemExit) as e:
    run_cli(lambda: predict.main([str(inputs), "--weights", str(weights), "--out",
                                  str(out), *extra]))
  return e.value.code


def _read(out):
  return ([json.loads(x) for x in (out / RESULTS).read_text().splitlines()],
          [json.loads(x) for x in (out / FILES).read_text().splitlines()])


def test_an_interrupted_job_resumes_to_the_same_results(inputs, tmp_path, tiny_weights,
                                                        monkeypatch, capsys):
  whole = tmp_path / "whole"
  assert _job(inputs, whole, tiny_weights) == predict.EXIT_SOME_FAILED
  results, files = _read(whole)
  assert len(results) == 7 and len(files) == 8
  (bad,) = [f for f in files if f["status"] == "failed"]
  assert bad["file"].endswith("broken.png") and "not an image" in bad["error"]

  # Killed while finishing the fourth image: its face is written, its record is not.
  cut = tmp_path / "cut"
  real_done, calls = ResultsDir.done, []

  def dying_done(self, file, faces):
    calls.append(file)
    if len(calls) == 4:
      raise KeyboardInterrupt
    real_done(self, file, faces)

  monkeypatch.setattr(ResultsDir, "done", dying_done)
  with pytest.raises(KeyboardInterrupt):
    predict.main([str(inputs), "--weights", str(tiny_weights), "--out", str(cut)])
  monkeypatch.undo()
  partial, _ = _read(cut)
  assert len(partial) == 4  # the fourth face is there, uncommitted
  # And a torn write at the end of each file, as a power cut might leave.
  with open(cut / FILES, "ab") as f:
    f.write(b'{"file": "half a rec')
  with open(cut / RESULTS, "ab") as f:
    f.write(b'{"file": "x", "face": 0, "lab')
  capsys.readouterr()
  assert _job(inputs, cut, tiny_weights) == predict.EXIT_SOME_FAILED
  assert "resuming" in capsys.readouterr().err
  assert _read(cut) == (results, files)
  # Run again: nothing to do, nothing changes, the failure is still reported.
  assert _job(inputs, cut, tiny_weights) == predict.EXIT_SOME_FAILED
  assert _read(cut) == (results, files)


def test_out_folders_that_cannot_be_used_get_a_message(inputs, tmp_path, tiny_weights,
                                                       capsys):
  a_file = tmp_path / "file.txt"
  a_file.write_text("mine")
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  job = tmp_path / "job"
  assert _job(inputs, job, tiny_weights) == predict.EXIT_SOME_FAILED
  capsys.readouterr()
  for out, extra, msg in ((a_file, [], "is a file"),
                          (other, [], "is not empty and holds no job"),
                          (job, ["--tta"], "holds the results of another job")):
    assert _job(inputs, out, tiny_weights, *extra) == predict.EXIT_USAGE
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
  assert a_file.read_text() == "mine" and (other / "notes.txt").read_text() == "mine"
