#!/usr/bin/env bash
# Issue 10's SFT screen: each configuration x seed as its own sft_curve.py process, in parallel
# (a GPU machine runs the whole grid in minutes; accuracies carry over to CPU, times do not).
#   bash benchmarks/screens/sft_grid.sh cuda OUTDIR [PARALLEL] [TIME_LIMIT_S]
# Writes OUTDIR/screen.csv (sft_curve rows) and OUTDIR/screen_logs.txt.
set -u
DEVICE=${1:-cuda}; OUT_DIR=${2:-/tmp/sx-screen}; PAR=${3:-16}; LIMIT=${4:-420}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR" /tmp/sx-screen-logs /tmp/sx-screen-csv
M128="--set model.tiny.hidden_size=128 --set model.tiny.num_layers=2 --set model.tiny.intermediate_size=512"
GRID=(
  "c01-default|"
  "c02-h128L2-1500x12-lr3e-3|$M128 --set task.n_train=1500 --set sft.epochs=12 --set sft.learning_rate=3e-3"
  "c03-h128L2-4800x4-lr3e-3|$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.learning_rate=3e-3"
  "c04-h128L2-19200x1-lr3e-3|$M128 --set task.n_train=19200 --set sft.epochs=1 --set sft.learning_rate=3e-3"
  "c05-h128L2-9600x4-lr3e-3|$M128 --set task.n_train=9600 --set sft.epochs=4 --set sft.learning_rate=3e-3"
  "c06-h128L2-4800x4-lr1e-3|$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.learning_rate=1e-3"
  "c07-h128L2-4800x4-lr3e-3-v40|$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.learning_rate=3e-3 --set task.synthetic.max_value=40 --set task.synthetic.max_start=15"
  "c08-h128L2-4800x4-lr3e-3-distractor.5|$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.learning_rate=3e-3 --set task.synthetic.distractor_prob=0.5"
  "c09-h192L3-4800x4-lr2e-3|--set task.n_train=4800 --set sft.epochs=4"
  "c10-h128L2-bs32-4800x2-lr2e-3|$M128 --set task.n_train=4800 --set sft.epochs=2 --set sft.batch_size=32"
  "c11-h96L2-4800x4-lr3e-3|--set model.tiny.hidden_size=96 --set model.tiny.num_layers=2 --set model.tiny.intermediate_size=384 --set task.n_train=4800 --set sft.epochs=4 --set sft.learning_rate=3e-3"
  "c12-h128L2-4800x8-lr3e-3|$M128 --set task.n_train=4800 --set sft.epochs=8 --set sft.learning_rate=3e-3"
)
# Wave 2 (after wave 1 showed ~600 steps of batch 64 are needed): the same compute as 300
# batch-64 steps of h128L2, spent as smaller batches, higher learning rates, easier numbers.
if [ "${WAVE:-1}" = 2 ]; then
  B32="$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.batch_size=32"
  B16="$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.batch_size=16"
  GRID=(
    "d01-h128L2-bs32-600-lr3e-3|$B32 --set sft.learning_rate=3e-3"
    "d02-h128L2-bs32-600-lr5e-3|$B32 --set sft.learning_rate=5e-3"
    "d03-h128L2-bs16-1200-lr2e-3|$B16 --set sft.learning_rate=2e-3"
    "d04-h128L2-bs16-1200-lr4e-3|$B16 --set sft.learning_rate=4e-3"
    "d05-h128L2-bs64-300-lr6e-3|$M128 --set task.n_train=4800 --set sft.epochs=4 --set sft.learning_rate=6e-3"
    "d06-h128L2-bs32-600-lr3e-3-v40|$B32 --set sft.learning_rate=3e-3 --set task.synthetic.max_value=40 --set task.synthetic.max_start=15"
    "d07-h128L2-bs16-1200-lr3e-3-v40|$B16 --set sft.learning_rate=3e-3 --set task.synthetic.max_value=40 --set task.synthetic.max_start=15"
    "d08-h128L3-bs32-600-lr3e-3|$B32 --set model.tiny.num_layers=3 --set sft.learning_rate=3e-3"
    "d09-h128L2-bs32-900-lr3e-3|$M128 --set task.n_train=4800 --set sft.epochs=6 --set sft.batch_size=32 --set sft.learning_rate=3e-3"
    "d10-h128L2-bs16-1200-lr3e-3|$B16 --set sft.learning_rate=3e-3"
    "d11-h128L2-bs32-600-lr3e-3-maxstep2|$B32 --set sft.learning_rate=3e-3 --set task.synthetic.max_steps=2"
    "d12-h128L2-bs16-1200-lr3e-3-fresh|$M128 --set task.n_train=19200 --set sft.epochs=1 --set sft.batch_size=16 --set sft.learning_rate=3e-3"
  )
fi
SEEDS=${SEEDS:-0 1 2}
EXTRA=${EXTRA:-}
jobs_file=/tmp/sx-screen-jobs.txt; : >"$jobs_file"
for entry in "${GRID[@]}"; do
  label=${entry%%|*}; sets=${entry#*|}
  for s in $SEEDS; do echo "$label|$s|$sets" >>"$jobs_file"; done
done
run_one() {
  IFS='|' read -r label seed sets <<<"$1"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 $PY benchmarks/sft_curve.py --device "$DEVICE" --seeds "$seed" $sets $EXTRA \
    --n-test 500 --eval-every 50 --pass-n 8 --label "$label" --results "/tmp/sx-screen-csv/$label-$seed.csv" \
    >"/tmp/sx-screen-logs/$label-$seed.log" 2>&1
}
export -f run_one; export PY DEVICE EXTRA
timeout "$LIMIT" xargs -P "$PAR" -d '\n' -I{} bash -c 'run_one "$@"' _ {} <"$jobs_file"
echo "grid exit $?"
cat /tmp/sx-screen-csv/*.csv 2>/dev/null | awk 'NR==1 || !/^date,/' >"$OUT_DIR/screen.csv"
for f in /tmp/sx-screen-logs/*.log; do echo "== $f"; grep -v -i warn "$f"; done >"$OUT_DIR/screen_logs.txt"
grep -h "pass@" /tmp/sx-screen-logs/*.log | head -0
for f in /tmp/sx-screen-logs/*.log; do echo "$(basename "$f" .log): $(grep 'pass@' "$f" | tail -1)"; done
