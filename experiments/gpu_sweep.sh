#!/usr/bin/env bash
# Runs on a lent GPU machine (experiments/README.md: "The shipped model" and "The
# two-hour recipe"), all at once on one GPU, each as `python -m ferjax.train` runs it,
# on the images `experiments/gpu_runs.py pack` made. SET=1 (the first call):
#   shipped-s{0,1,2}: `--variant shipped --seed S` (the shipped model's recipe)
#   augmented-s0:     `--variant augmented` (the two-hour CPU recipe of the time)
#   slim40-s{0,1}, slim30-s0: `--variant augmented --set model=vgg_slim --set epochs=E`
#                     (about as many epochs of the slimmer net as two hours buy on a
#                     2-core AMD EPYC, 40, and on a 2-core Xeon, 30)
# SET=2 (the second call, more seeds of the two-hour candidates):
#   augmented-s{1,2}, slim40-s2
# SET=3 (prepared for the next lease, not run yet; the shipped model's 0.72 with TTA):
#   shipped-s{3,4,5}:   more seeds of the shipped recipe, to choose among six
#   shipped44-s{0,1,2}: the same on 44x44 crops (`--set input_size=44`; the
#                       classifier takes about 518 crops/s there, 574 at 40x40)
#   then, on each exported file, six epochs of weight averaging
#   (`experiments/swa_finetune.py --lr-max 0.005`, into $OUT/swa-NAME/)
# SET=4 (prepared for the next lease, not run yet; issue 22's two-hour screens, three
# seeds each at the CPU image budget, float32; rule in experiments/README.md,
# "Screens for the next GPU lease"):
#   b48-s{0,1,2}:      `--variant augmented --epochs 48` (the budget of the
#                      bfloat16 48-epoch CPU runs)
#   ema48-s{0,1,2}:    the same with `--set ema_decay=0.998 --set final_lr_fraction=0.05`
#   prog60-s{0,1,2}:   `--epochs 60 --set low_res_size=32 --set low_res_fraction=0.6`
#                      (36 epochs at 32x32, 24 at 40x40: 46.8 epochs of 40x40 work)
#   progema60-s{0,1,2}: both
# SET=5 (prepared, not run yet; networks with a higher ceiling at the same CPU time as
# b48, three seeds each; run SET=4 first, whose b48 runs they are compared with):
#   vgg32-s{0,1,2}:      `--variant augmented --set model=vgg --epochs 32` (the full
#                        width: 0.66x vgg_slim's train images/s on a CPU)
#   fastwide66-s{0,1,2}: `--variant augmented --set model=vgg_fast_wide --epochs 66
#                        --patience 66` (1.37x its images/s)
# Every run ends in time: at DEADLINE seconds it is interrupted (it saves and exits 3)
# and its best checkpoint is exported all the same; the log says so.
# Usage (on the GPU machine, from the project root):
#   OUT=dir SET=1|2|3|4|5 bash experiments/gpu_sweep.sh
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PACK=${PACK:-.gpu/train6.zip}
DEADLINE=${DEADLINE:-480}
W=runs/gpu
mkdir -p "$W"
nvidia-smi -L
python3 -c 'import jax, flax, optax, orbax.checkpoint as o; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS started" || echo "MPS not started"

start=$(date +%s)
launch() {  # NAME ARGS...
  local name=$1; shift
  timeout -s INT -k 30 "$DEADLINE" python3 experiments/gpu_runs.py train --pack "$PACK" \
      -- --workdir "$W/$name" "$@" >"$W/$name.log" 2>&1 &
}
slim() {  # EPOCHS SEED
  launch slim$1-s$2 --variant augmented --seed $2 --set model=vgg_slim --set epochs=$1
}
if [ "${SET:-1}" = 1 ]; then
  for s in 0 1 2; do launch shipped-s$s --variant shipped --seed $s; done
  launch augmented-s0 --variant augmented --seed 0
  slim 40 0; slim 40 1; slim 30 0
elif [ "$SET" = 2 ]; then
  for s in 1 2; do launch augmented-s$s --variant augmented --seed $s; done
  slim 40 2
elif [ "$SET" = 4 ]; then
  ema=(--set ema_decay=0.998 --set final_lr_fraction=0.05)
  prog=(--set low_res_size=32 --set low_res_fraction=0.6)
  for s in 0 1 2; do
    launch b48-s$s --variant augmented --seed $s --epochs 48
    launch ema48-s$s --variant augmented --seed $s --epochs 48 "${ema[@]}"
    launch prog60-s$s --variant augmented --seed $s --epochs 60 "${prog[@]}"
    launch progema60-s$s --variant augmented --seed $s --epochs 60 "${prog[@]}" "${ema[@]}"
  done
elif [ "$SET" = 5 ]; then
  for s in 0 1 2; do
    launch vgg32-s$s --variant augmented --seed $s --set model=vgg --epochs 32
    launch fastwide66-s$s --variant augmented --seed $s --set model=vgg_fast_wide \
        --epochs 66 --patience 66
  done
else
  for s in 3 4 5; do launch shipped-s$s --variant shipped --seed $s; done
  for s in 0 1 2; do
    launch shipped44-s$s --variant shipped --seed $s --set input_size=44
  done
fi
while [ "$(jobs -r | wc -l)" -gt 0 ]; do
  sleep ${POLL:-60}
  echo "t=$(( $(date +%s) - start ))s running=$(jobs -r | wc -l)" \
       "$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  for f in "$W"/*.log; do
    printf '  %s: %s\n' "$(basename "$f" .log)" \
        "$(grep -a -o 'epoch [0-9]*/[0-9]*.*' "$f" | tail -1 | cut -c1-100)"
  done
done
wait
echo "all runs ended after $(( $(date +%s) - start ))s"
for d in "$W"/*/; do
  name=$(basename "$d")
  python3 -m ferjax.export --workdir "$d" "$OUT/$name.npz" || echo "export $name failed" &
done
wait
if [ "${SET:-1}" = 3 ]; then
  for d in "$W"/*/; do
    name=$(basename "$d")
    [ -f "$OUT/$name.npz" ] || continue
    timeout -k 30 "${SWA_DEADLINE:-240}" python3 experiments/gpu_runs.py swa --pack "$PACK" \
        -- --weights "$OUT/$name.npz" --run "$d" --epochs 6 --lr-max 0.005 \
        --out "$OUT/swa-$name" --results "$OUT/swa-$name" >"$OUT/swa-$name.log" 2>&1 &
  done
  wait
fi
tar czf "$OUT/runs.tar.gz" --exclude='checkpoints' --exclude='*.lock' "$W"
ls -la "$OUT"
