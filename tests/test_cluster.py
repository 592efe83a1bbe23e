"""predict --dask: the same job on a local Dask cluster gives the same results as one
process."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dask.distributed")

from ferjax import predict  # noqa: E402
from conftest import run_main  # noqa: E402


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """Two dozen photos (a face each, turned a little differently), a face crop, a
  broken file and a short video."""
  import imageio_ffmpeg

  from ferjax import samples
  folder = tmp_path_factory.mktemp("job")
  face = Image.fromarray(samples.astronaut()).resize((240, 240))
  for i in range(24):
    canvas = Image.new("RGB", (320, 240), (50, 50, 50))
    canvas.paste(face.rotate(i - 12, fillcolor=(50, 50, 50)), (40, 0))
    canvas.save(folder / f"photo{i:02d}.jpg", quality=90)
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), np.uint8)).save(
      folder / "crop.png")
  (folder / "broken.jpg").write_bytes(b"not a jpeg")
  predict._no_python_in_forked_child()
  writer = imageio_ffmpeg.write_frames(str(folder / "clip.mp4"), (320, 240), fps=5,
                                       macro_block_size=1)
  writer.send(None)
  for i in range(6):
    canvas = Image.new("RGB", (320, 240), (50, 50, 50))
    canvas.paste(face, (10 * i, 0))
    writer.send(np.asarray(canvas).tobytes())
  writer.close()
  return folder


def _run(argv, capsys):
  return run_main(predict.main, argv, capsys)


def test_a_local_dask_cluster_gives_the_single_process_results(job, tiny_weights,
                                                               capsys):
  args = [str(job), "--weights", str(tiny_weights), "--json"]
  code, alone, err = _run(args, capsys)
  assert code == predict.EXIT_SOME_FAILED and "broken.jpg" in err
  code, spread, err = _run(args + ["--dask", "--workers", "2"], capsys)
  assert code == predict.EXIT_SOME_FAILED, err
  assert "broken.jpg: " in err and "Traceback" not in err
  assert spread == alone
  assert len(alone.splitlines()) == 24 + 1 + 6  # photos, the crop, the video's frames


def test_dask_refusals_are_messages(job, tiny_weights, capsys):
  code, _, err = _run([str(job), "--dask", "tcp://127.0.0.1:9", "--weights",
                       str(tiny_weights)], capsys)
  assert code == 2 and "no Dask scheduler answers at 'tcp://127.0.0.1:9'" in err
  assert "Traceback" not in err
  code, _, err = _run([str(job), "--dask", "--annotate", str(job / "ann")], capsys)
  assert code == 2 and "not available with --dask" in err
