#!/usr/bin/env bash
# Issue 22, target 1: the default training command as a new user runs it, timed whole
# (data preparation into a fresh folder, the dtype choice, training, the final report)
# with its peak memory, then its weights exported.
#   bash experiments/timed_default.sh [OUT [DATA [TRAIN_ARGS...]]]
# From the project root, with nothing else running on the machine. Files in OUT
# (default experiments/results/augmented_cpu_2h): time_v.txt (/usr/bin/time -v: wall
# clock, peak resident memory), train.log, the run's config, data, metrics, report and
# figures, and weights.npz (`python -m ferjax.export`). TRAIN_ARGS go to the training
# command (for a smoke check of this script: --train-limit 640 --epochs 1).
set -euo pipefail
OUT=${1:-experiments/results/augmented_cpu_2h}
DATA=${2:-../shared/data/fer2013.zip}
shift $(( $# < 2 ? $# : 2 ))
WORK=${WORK:-runs/augmented-timed}
if [ -e "$WORK" ]; then
  echo "$WORK exists; a timed run starts from nothing: move it away first" >&2
  exit 2
fi
PREP=$(mktemp -d)
trap 'rm -rf "$PREP"' EXIT
mkdir -p "$OUT"
date -u +%FT%TZ > "$OUT/started.txt"
/usr/bin/time -v -o "$OUT/time_v.txt" \
  python -m ferjax.train --variant augmented --data "$DATA" --data-dir "$PREP" \
  --workdir "$WORK" "$@" 2> >(tee "$OUT/train.log" >&2)
date -u +%FT%TZ > "$OUT/finished.txt"
# Exported before the run's files are copied: export writes nothing into a run's folder.
python -m ferjax.export --workdir "$WORK" "$OUT/weights.npz"
for f in config.json data.json metrics.jsonl report.json curves.png confusion.png; do
  if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$OUT/"; fi
done
grep -E "Elapsed|Maximum resident" "$OUT/time_v.txt"
