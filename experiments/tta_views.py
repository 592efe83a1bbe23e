"""How much each test-time view buys, on validation: 1 view, flip (2 views), all 10.

    python experiments/tta_views.py --workdir runs/augmented --data fer2013.zip

Measured on the validation split only (it is what choices may be made on).
"""

import argparse
import json

import jax
import numpy as np

from ferjax import augment, evaluate, input_pipeline, train


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--workdir", required=True)
  p.add_argument("--data")
  p.add_argument("--data-dir")
  args = p.parse_args()
  config, steps, state = evaluate.load_run(args.workdir)
  val = train.prepare_data(config, data=args.data, data_dir=args.data_dir).val

  @jax.jit
  def view_probs(state, images):
    x = images.astype(np.float32) / 255.0
    views = augment.tta_views(x)  # [10, B, H, W]
    v, b = views.shape[:2]
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                            views.reshape(v * b, *x.shape[1:], 1), train=False)
    return jax.nn.softmax(logits).reshape(v, b, -1)

  probs = np.concatenate([np.asarray(view_probs(state, im))[:, m] for im, _, m in
                          input_pipeline.eval_batches(val, batch_size=256)], axis=1)
  labels = val.labels
  acc = lambda pr: float((pr.argmax(-1) == labels).mean())
  out = {"n": len(labels), "1_view": acc(probs[0]), "flip_2_views": acc(probs[[0, 5]].mean(0)),
         "shifts_5_views": acc(probs[:5].mean(0)), "all_10_views": acc(probs.mean(0))}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
