#!/usr/bin/env bash
# Ships a trained model as ferjax's pretrained model and records what the README shows.
#   bash experiments/ship_model.sh RUN WEIGHTS OUT [DATA]
# RUN: the run's folder (config.json, metrics.jsonl, report.json; its
#   checkpoints may stay on the machine that trained it);
# WEIGHTS: `python -m ferjax.export --workdir RUN WEIGHTS`, written where it trained;
# OUT: the results folder (experiments/results/...) for the figures measured here.
# The shipped model: RUN=experiments/results/gpu_h200/shipped-s1, its weights from
# experiments/gpu_sweep.sh, OUT=RUN (experiments/README.md, "The shipped model").
set -euo pipefail
RUN=$1 WEIGHTS=$2 OUT=$3
DATA=${4:-../shared/data/fer2013.zip}
mkdir -p "$OUT" docs/img
for f in config.json metrics.jsonl report.json data.json; do
  [ -f "$OUT/$f" ] || cp "$RUN/$f" "$OUT"/
done
cp "$WEIGHTS" ferjax/pretrained/fer6.npz
# The float16 file on this CPU: test, validation and clean train (the run's own cut; a
# final fit trained on the validation images too, so it has no validation figure).
SPLITS="test validation"
if python -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("final_fit") else 1)' "$RUN/config.json"; then
  SPLITS="test"
fi
for split in $SPLITS; do
  python -m ferjax.evaluate --pretrained --data "$DATA" --split $split --json \
    > "$OUT/pretrained_$split.json"
done
python -m ferjax.evaluate --pretrained --data "$DATA" --split train --no-tta --json \
  > "$OUT/pretrained_train.json"
python -m ferjax.bench --predict --json > "$OUT/bench_predict.json"
python -m ferjax.loadtest --clients 16 --seconds 20 > "$OUT/loadtest.json"
python -m ferjax.predict --sample --annotate docs/img/ > "$OUT/predict_sample.txt"
python experiments/screenshot_page.py "$(python -c 'from ferjax.predict import sample_photo_path as p; print(p())')" docs/img/page.png
# The pictures live once, in docs/img/ (the README shows them): the run's curves, from
# its metrics, and the confusion matrix of the shipped file on the test split.
python - "$RUN" "$OUT/pretrained_test.json" <<'EOF'
import json, sys
from pathlib import Path
from ferjax import configs, report, workdir
run, test = Path(sys.argv[1]), Path(sys.argv[2])
config = configs.Config.from_dict(json.loads((run / "config.json").read_text()))
report.plot_run_curves(workdir.read_metrics(run / "metrics.jsonl"), Path("docs/img/curves.png"),
                       variant=config.variant, model=config.model,
                       augmented=config.augment.enabled)
summary = json.loads(test.read_text())
report.plot_confusion(summary, Path("docs/img/confusion.png"),
                      title=f"the shipped model ({summary['model']}, float16 file)")
EOF
