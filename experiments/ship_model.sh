#!/usr/bin/env bash
# Ships a finished `augmented` run as ferjax's pretrained model and records what the
# README shows: python -m ferjax.train --variant augmented --data "$DATA" first, then
#   bash experiments/ship_model.sh [RUN_DIR] [DATA]
set -euo pipefail
RUN=${1:-runs/augmented}
DATA=${2:-../shared/data/fer2013.zip}
OUT=experiments/results/augmented_cpu
mkdir -p "$OUT" docs/img
cp "$RUN"/{config.json,metrics.jsonl,report.json} "$OUT"/
[ -f "$RUN/data.json" ] && cp "$RUN/data.json" "$OUT"/
python -m ferjax.export --workdir "$RUN" ferjax/pretrained/fer6.npz
# The float16 file against the float32 run, on test and validation.
for split in test validation; do
  python -m ferjax.evaluate --pretrained --data "$DATA" --split $split --json \
    > "$OUT/pretrained_$split.json"
done
python -m ferjax.bench --predict --json > "$OUT/bench_predict.json"
python -m ferjax.loadtest --clients 16 --seconds 20 > "$OUT/loadtest.json"
python -m ferjax.predict --sample --annotate docs/img/ > "$OUT/predict_sample.txt"
python experiments/screenshot_page.py "$(python -c 'from ferjax.predict import sample_photo_path as p; print(p())')" docs/img/page.png
# The run's pictures live once, in docs/img/ (the README shows them).
cp "$RUN/curves.png" docs/img/curves.png
cp "$RUN/confusion.png" docs/img/confusion.png
