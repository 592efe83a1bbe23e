"""ONNX export: the same probabilities as JAX, a file usable without ferjax, and clear
refusals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import export, inference, models, onnx_export
from ferjax.errors import run_cli

import reference

ROOT = Path(__file__).resolve().parents[1]


def _random_model(name: str, input_size: int, seed: int = 0):
  """(info, params, batch_stats) of a randomly initialised network, with random
  BatchNorm statistics and a non-trivial calibration, so that folding is tested."""
  net = models.create_model(name, num_classes=6)
  v = net.init(jax.random.key(seed), jnp.zeros((1, input_size, input_size, 1)),
               train=False)
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda a: np.asarray(a), v.get("batch_stats", {}))
  for layer in stats.values():
    layer["mean"] = rng.normal(0, 0.3, layer["mean"].shape).astype(np.float32)
    layer["var"] = rng.uniform(0.5, 2.0, layer["var"].shape).astype(np.float32)
  params = jax.tree.map(lambda a: np.asarray(a), v["params"])
  for layer in params.values():
    if "scale" in layer:
      layer["scale"] = rng.uniform(0.5, 1.5, layer["scale"].shape).astype(np.float32)
      layer["bias"] = rng.normal(0, 0.2, layer["bias"].shape).astype(np.float32)
  cal = {"single": {"scale": rng.uniform(0.5, 2, 6).tolist(),
                    "bias": rng.normal(0, 0.3, 6).tolist()},
         "tta": {"scale": [1.0] * 6, "bias": [0.0] * 6},
         "threshold": {"single": 0.5, "tta": 0.5}}
  info = inference.ModelInfo(model=name, num_classes=6, input_size=input_size,
                             calibration=cal)
  return info, params, stats


@pytest.mark.parametrize("name,size", [("tiny", 48), ("seed_cnn", 48), ("vgg_fast", 40)])
def test_onnx_gives_jax_probabilities(name, size):
  import onnxruntime as ort
  info, params, stats = _random_model(name, size)
  model = onnx_export.to_onnx(info, params, stats)
  sess = ort.InferenceSession(model.SerializeToString(),
                              providers=["CPUExecutionProvider"])
  crops = np.random.default_rng(1).integers(0, 256, (37, 48, 48), np.uint8)
  logits, probs = sess.run(None, {"crops": crops})
  # The folded graph in onnxruntime's float32 is the float64 network within float32
  # rounding (tests/reference.py), calibration included, as JAX's float32 is.
  ref = reference.logits64(info, params, stats, crops)
  reference.assert_logits_close(logits, ref, what="onnx logits")
  reference.assert_probs_close(probs, info, ref, what="onnx probabilities")
  want = inference.Classifier(info, params, stats).classify(crops)
  reference.assert_probs_close(want, info, ref, what="jax probabilities")
  # The same class wherever float64's top two are apart (most crops, on any machine).
  clear = reference.clear_top(info, ref)
  assert clear.mean() >= 0.9
  top = reference.probs64(info, ref).argmax(-1)[clear]
  assert (probs.argmax(-1)[clear] == top).all() and (want.argmax(-1)[clear] == top).all()
  # A different batch size works (the batch is dynamic).
  assert sess.run(["probabilities"], {"crops": crops[:1]})[0].shape == (1, 6)
  meta = {p.key: p.value for p in model.metadata_props}
  assert json.loads(meta["classes"]) == list(info.classes)
  assert json.loads(meta["calibration"]) == info.calibration
  assert int(meta["input_size"]) == size


def test_export_cli_writes_onnx_and_refuses_what_it_should(tiny_weights, tmp_path,
                                                           capsys):
  import onnx
  out = tmp_path / "tiny.onnx"
  export.main(["--weights", str(tiny_weights), str(out)])
  assert onnx.load(str(out)).graph.input[0].name == "crops"
  before = out.read_bytes()
  for argv, msg in (([str(out)], "already exists"),
                    ([str(tmp_path / "model.pt")], "must end in .npz")):
    with pytest.raises(SystemExit) as e:
      run_cli(lambda argv=argv: export.main(["--weights", str(tiny_weights), *argv]))
    assert e.value.code == 2
    assert msg in capsys.readouterr().err
  assert out.read_bytes() == before
  assert not list(tmp_path.glob("*.tmp"))
  nested = tmp_path / "new" / "dir" / "tiny.onnx"  # folders are made, as for .npz
  export.main(["--weights", str(tiny_weights), str(nested)])
  assert nested.is_file()


def _deploy_snippet() -> str:
  text = (ROOT / "docs" / "deploy.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  (snippet,) = [b for b in blocks if "onnxruntime" in b]
  return snippet


def test_the_deploy_snippet_runs_with_onnxruntime_alone(tiny_weights, tmp_path):
  """docs/deploy.md's Python example, run where ferjax, jax and flax cannot be
  imported, gives the probabilities ferjax gives."""
  from PIL import Image
  out = tmp_path / "model.onnx"
  export.export_onnx(out, weights=tiny_weights)
  crop = np.random.default_rng(3).integers(0, 256, (48, 48), np.uint8)
  Image.fromarray(crop).save(tmp_path / "face.png")
  guard = ("import sys\n"
           "for name in ('ferjax', 'jax', 'jaxlib', 'flax', 'optax'):\n"
           "    sys.modules[name] = None\n")
  script = guard + _deploy_snippet() + (
      "\nimport json\nprint(json.dumps({'label': label, 'probs': probs.tolist()}))\n")
  res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr
  got = json.loads(res.stdout.strip().splitlines()[-1])
  info, params, stats = inference.load_weights(tiny_weights)
  ref = reference.logits64(info, params, stats, crop[None])
  reference.assert_probs_close(np.asarray(got["probs"])[None], info, ref)
  assert reference.clear_top(info, ref)[0]  # so the label is the same on any machine
  assert got["label"] == info.classes[int(reference.probs64(info, ref)[0].argmax())]


# tiny at 40: the centre crop and the corner views without a large network to compile
# (vgg_fast's graph is checked above).
@pytest.mark.parametrize("name,size", [("tiny", 48), ("tiny", 40)])
def test_onnx_classifier_matches_jax_with_and_without_tta(name, size):
  from ferjax.onnx_runtime import OnnxClassifier
  info, params, stats = _random_model(name, size, seed=2)
  # A TTA calibration unlike the single-view one, so that mixing them up shows.
  info = inference.ModelInfo(**{**info.__dict__, "calibration": {
      **info.calibration, "tta": {"scale": [0.7, 1.3, 1.0, 0.9, 1.1, 1.2],
                                  "bias": [0.1, -0.2, 0.0, 0.3, 0.0, -0.1]}}})
  jax_clf = inference.Classifier(info, params, stats)
  ort_clf = OnnxClassifier(info, onnx_export.to_onnx(info, params, stats)
                           .SerializeToString())
  crops = np.random.default_rng(4).integers(0, 256, (300, 48, 48), np.uint8)
  # Both held to the float64 network (tests/reference.py), each calibration its own.
  for tta in (False, True):
    ref = reference.logits64(info, params, stats, crops, tta=tta)
    for backend, clf in (("onnx", ort_clf), ("jax", jax_clf)):
      for calibrated in (False, True):
        reference.assert_probs_close(clf.classify(crops, tta=tta, calibrated=calibrated),
                                     info, ref, tta=tta, calibrated=calibrated,
                                     what=f"{backend}, tta={tta}, calibrated={calibrated}")
    reference.assert_logits_close(ort_clf.logits(crops, tta=tta), ref,
                                  what=f"onnx logits, tta={tta}")
  for tta in (False, True):  # a photo with no face
    assert ort_clf.classify(np.zeros((0, 48, 48), np.uint8), tta=tta).shape == (0, 6)
  assert ort_clf.logits(np.zeros((0, 48, 48), np.uint8), tta=True).shape == (10, 0, 6)


def test_predict_on_onnx_never_imports_jax(tiny_weights, tmp_path):
  """`predict --backend onnx` with a weights file and with an exported .onnx, in a
  process where importing jax or flax fails."""
  from PIL import Image
  crop = tmp_path / "face.png"
  Image.fromarray(np.random.default_rng(5).integers(0, 256, (48, 48), np.uint8)).save(crop)
  onnx_file = tmp_path / "tiny.onnx"
  export.export_onnx(onnx_file, weights=tiny_weights)
  info, params, stats = inference.load_weights(tiny_weights)
  ref = reference.logits64(info, params, stats, np.asarray(Image.open(crop))[None])
  for argv in (["--weights", str(tiny_weights), "--backend", "onnx"],
               ["--weights", str(onnx_file)]):
    script = ("import sys\n"
              "for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax'):\n"
              "    sys.modules[name] = None\n"
              "from ferjax import predict\n"
              f"predict.main({[str(crop), '--json', *argv]!r})\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[0])
    assert list(row["probabilities"]) == list(info.classes)
    # --json prints 4 decimals.
    reference.assert_probs_close(np.asarray([list(row["probabilities"].values())]), info,
                                 ref, decimals=4, what=" ".join(argv))


def test_bad_onnx_files_get_a_message(tiny_weights, tmp_path, capsys):
  import onnx
  from onnx import TensorProto, helper

  from ferjax import predict
  crop = tmp_path / "face.png"
  from PIL import Image
  Image.fromarray(np.zeros((48, 48), np.uint8)).save(crop)
  garbage = tmp_path / "garbage.onnx"
  garbage.write_bytes(b"\x00\x01 not a model" * 10)
  # A valid ONNX model that is not a ferjax classifier.
  other = tmp_path / "other.onnx"
  x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
  y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
  onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])],
                                                "g", [x], [y])), str(other))
  # An exported model whose metadata was edited to name other classes.
  relabelled = tmp_path / "relabelled.onnx"
  export.export_onnx(relabelled, weights=tiny_weights)
  m = onnx.load(str(relabelled))
  helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props},
                             "classes": json.dumps(["a", "b", "c", "d", "e", "f"])})
  onnx.save(m, str(relabelled))
  # A weights file whose metadata names another network than its arrays fit.
  wrong = tmp_path / "wrong.npz"
  with np.load(tiny_weights) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(arrays["__meta__"].tobytes())
  arrays["__meta__"] = np.frombuffer(json.dumps({**meta, "model": "vgg_slim"}).encode(),
                                     np.uint8)
  np.savez(wrong, **arrays)
  for path, msg in ((garbage, "is not a readable ONNX model"),
                    (other, "not one written by `python -m ferjax.export`"),
                    (relabelled, "not one written by `python -m ferjax.export`"),
                    (wrong, "does not fit a 'vgg_slim' network"),
                    (tmp_path / "missing.onnx", "No ONNX model at")):
    with pytest.raises(SystemExit) as e:
      run_cli(lambda path=path: predict.main([str(crop), "--weights", str(path)]))
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert msg in err and "Traceback" not in err


def test_the_web_example_gives_pythons_label_in_chromium(tiny_weights, tmp_path):
  """examples/onnx-web (onnxruntime-web from the npm registry) in headless Chromium
  classifies a face crop as ferjax does."""
  import functools
  import http.server
  import shutil
  import threading

  from PIL import Image
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  npm = shutil.which("npm")
  if chromium is None or npm is None:
    pytest.skip("needs Chromium and npm (.ci/run installs both)")
  sync_api = pytest.importorskip("playwright.sync_api")
  site = tmp_path / "site"
  shutil.copytree(ROOT / "examples" / "onnx-web", site)
  subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                 cwd=site, check=True, timeout=300)
  export.export_onnx(site / "model.onnx", weights=tiny_weights)
  crop = np.random.default_rng(6).integers(0, 256, (48, 48), np.uint8)
  Image.fromarray(crop).save(site / "face.png")
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
  handler.log_message = lambda *a: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    with sync_api.sync_playwright() as p:
      browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
      page = browser.new_page()
      page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
      page.wait_for_selector("#result[data-label], body[data-error]", timeout=60_000)
      error = page.get_attribute("body", "data-error")
      assert error is None, error
      label = page.get_attribute("#result", "data-label")
      probs = json.loads(page.get_attribute("#result", "data-probs"))
      browser.close()
  finally:
    server.shutdown()
  info, params, stats = inference.load_weights(tiny_weights)
  ref = reference.logits64(info, params, stats, crop[None])
  reference.assert_probs_close(np.asarray(probs)[None], info, ref, what="onnxruntime-web")
  assert reference.clear_top(info, ref)[0]  # so the label is the same on any machine
  assert label == info.classes[int(reference.probs64(info, ref)[0].argmax())]
