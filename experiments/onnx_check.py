"""The shipped model exported to ONNX against ferjax's JAX classifier, on the first
1,000 PublicTest crops: largest differences and top-class agreement, and the two
runtimes' batched speed on this machine (issue 25).

    python experiments/onnx_check.py --data ../shared/data/fer2013.zip \
        > experiments/results/onnx/shipped_public_test.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from ferjax import evaluate, inference, onnx_export


def rate(fn, crops, repeats: int = 3) -> float:
  fn(crops)  # warm up (JAX compiles)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn(crops)
    best = min(best, time.perf_counter() - t0)
  return len(crops) / best


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("-n", type=int, default=1000)
  args = p.parse_args()
  import onnxruntime as ort
  info, params, stats = inference.load_weights(inference.pretrained_path())
  clf = inference.Classifier(info, params, stats)
  t0 = time.perf_counter()
  model = onnx_export.to_onnx(info, params, stats).SerializeToString()
  build_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
  session_s = time.perf_counter() - t0
  test = evaluate.load_split("public_test", num_classes=info.num_classes, data=args.data)
  crops = test.images[:args.n]
  logits, probs = sess.run(None, {"crops": crops})
  want_logits, want = clf.logits(crops), clf.classify(crops)
  batch = crops[:512] if len(crops) >= 512 else crops
  print(json.dumps({
      "split": "public_test", "n": int(len(crops)),
      "max_abs_probability_difference": float(np.abs(probs - want).max()),
      "max_abs_logit_difference": float(np.abs(logits - want_logits).max()),
      "same_top_class": float((probs.argmax(-1) == want.argmax(-1)).mean()),
      "accuracy_onnx": float((probs.argmax(-1) == test.labels[:args.n]).mean()),
      "accuracy_jax": float((want.argmax(-1) == test.labels[:args.n]).mean()),
      "onnx_file_mib": len(model) / 2**20, "build_seconds": build_s,
      "session_seconds": session_s,
      "crops_per_second_batch512": {
          "onnxruntime": rate(lambda x: sess.run(["probabilities"], {"crops": x}), batch),
          "jax": rate(clf.classify, batch)},
      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
      "onnxruntime": ort.__version__,
  }, indent=1))


if __name__ == "__main__":
  main()
