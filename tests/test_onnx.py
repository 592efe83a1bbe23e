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
  clf = inference.Classifier(info, params, stats)
  want_logits = clf.logits(crops)
  want = clf.classify(crops)
  # float32 arithmetic in two orders of summation: errors of a few ulps of the logits'
  # scale, far below 1e-4 in probability.
  scale = np.abs(want_logits).max()
  np.testing.assert_allclose(logits, want_logits, atol=1e-5 * max(scale, 1.0))
  np.testing.assert_allclose(probs, want, atol=1e-4)
  assert (probs.argmax(-1) == want.argmax(-1)).all()
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
  clf = inference.Classifier.load(tiny_weights)
  want = clf.classify(crop[None])[0]
  np.testing.assert_allclose(got["probs"], want, atol=1e-4)
  assert got["label"] == clf.classes[int(want.argmax())]
