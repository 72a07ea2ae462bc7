#!/usr/bin/env bash
# Issue 10's capacity screen: where does a model learn the transfer's sign (the default task's
# reasoning rule)? Each configuration is one task_probe.py process, all in parallel (a GPU machine
# runs the grid in minutes; accuracies carry over to CPU, times do not).
#   bash benchmarks/screens/probe_grid.sh cuda OUTDIR [PARALLEL] [TIME_LIMIT_S]
# Writes OUTDIR/probe.csv (task_probe rows) and OUTDIR/probe_logs.txt.
set -u
DEVICE=${1:-cuda}; OUT_DIR=${2:-/tmp/sx-probe}; PAR=${3:-16}; LIMIT=${4:-420}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR" /tmp/sx-probe-logs /tmp/sx-probe-csv
# The default's task, read from experiments.yaml (tiny-synthetic); n-train = two epochs of the steps unless named.
CFG=$($PY -c "import dataclasses, json; from sx_dagster.config import get_experiment
print(json.dumps(dataclasses.asdict(get_experiment('tiny-synthetic').task.synthetic)))") || exit 1
GRID=(
  "p01-h128L2-b16-1k|--hidden 128 --layers 2 --batch 16 --lr 2e-3 --steps 1000 --n-train 8000"
  "p02-h128L2-b16-2k|--hidden 128 --layers 2 --batch 16 --lr 2e-3 --steps 2000 --n-train 16000"
  "p03-h128L2-b16-4k|--hidden 128 --layers 2 --batch 16 --lr 2e-3 --steps 4000 --n-train 32000"
  "p04-h128L2-b16-6k|--hidden 128 --layers 2 --batch 16 --lr 2e-3 --steps 6000 --n-train 48000"
  "p05-h128L2-b64-4k|--hidden 128 --layers 2 --batch 64 --lr 2e-3 --steps 4000 --n-train 128000"
  "p06-h128L3-b16-4k|--hidden 128 --layers 3 --batch 16 --lr 2e-3 --steps 4000 --n-train 32000"
  "p07-h128L4-b16-4k-lr1e-3|--hidden 128 --layers 4 --batch 16 --lr 1e-3 --steps 4000 --n-train 32000"
  "p08-h256L2-b16-4k-lr1e-3|--hidden 256 --layers 2 --batch 16 --lr 1e-3 --steps 4000 --n-train 32000"
  "p09-h256L4-b16-4k-lr1e-3|--hidden 256 --layers 4 --batch 16 --lr 1e-3 --steps 4000 --n-train 32000"
  "p10-h256L4-b64-4k-lr1e-3|--hidden 256 --layers 4 --batch 64 --lr 1e-3 --steps 4000 --n-train 128000"
  "p11-h512L4-b64-4k-lr5e-4|--hidden 512 --layers 4 --batch 64 --lr 5e-4 --steps 4000 --n-train 128000"
  "p12-h512L6-b64-4k-lr3e-4|--hidden 512 --layers 6 --batch 64 --lr 3e-4 --steps 4000 --n-train 128000"
  "p13-h128L2-b16-4k-lr1e-3|--hidden 128 --layers 2 --batch 16 --lr 1e-3 --steps 4000 --n-train 32000"
  "p14-h128L2-b16-4k-n8000|--hidden 128 --layers 2 --batch 16 --lr 2e-3 --steps 4000 --n-train 8000"
  "p15-h128L2-2heads-b16-4k|--hidden 128 --layers 2 --heads 2 --batch 16 --lr 2e-3 --steps 4000 --n-train 32000"
  "p16-h256L4-b64-6k-lr1e-3|--hidden 256 --layers 4 --batch 64 --lr 1e-3 --steps 6000 --n-train 192000"
)
# GRID_NAME=seeds: SFT's spread over seeds against its length, on 1,000 test questions (issue 10's
# "SFT within 3 points across 3 seeds"): the default's shape at 1,000 / 1,500 / 2,000 / 3,000
# steps of lr 2e-3 and 1,000 / 1,500 of lr 3e-3, two epochs each (run with PASS_N=0).
if [ "${GRID_NAME:-capacity}" = seeds ]; then
  GRID=()
  for run in "1000 2e-3" "1500 2e-3" "2000 2e-3" "3000 2e-3" "1000 3e-3" "1500 3e-3"; do
    read -r steps lr <<<"$run"
    for s in 0 1 2; do
      GRID+=("v-h128L2-${steps}-lr${lr}-s$s|--seed $s --hidden 128 --layers 2 --batch 16 --lr $lr --steps $steps --n-train $((steps * 8)) --n-dev 1000")
    done
  done
fi
# GRID_NAME=stable (issue 23): which task and SFT recipe converge so that seeds agree (dev std
# <= 1.5), within the CPU budget? The default's task without transfers (A), and without
# distractors too (B); 1,000-2,000 steps of 16 and 750 of 32 (two epochs); 5 seeds, 1,000 dev questions.
if [ "${GRID_NAME:-capacity}" = stable ]; then
  A='{"max_start": 10, "max_operand": 5, "max_factor": 2, "max_value": 30, "distractor_prob": 0.5}'
  B='{"max_start": 10, "max_operand": 5, "max_factor": 2, "max_value": 30}'
  GRID=()
  for run in "A 1000 16 2e-3" "A 1500 16 2e-3" "A 2000 16 2e-3" "B 1000 16 2e-3" "B 1500 16 2e-3" "A 750 32 3e-3" "B 750 32 3e-3"; do
    read -r task steps batch lr <<<"$run"
    for s in 0 1 2 3 4; do
      GRID+=("s$task-${steps}x$batch-lr$lr-s$s|--cfg ${!task// /} --seed $s --batch $batch --lr $lr --steps $steps --n-train $((steps * batch / 2)) --n-dev 1000")
    done
  done
fi
jobs_file=/tmp/sx-probe-jobs.txt; : >"$jobs_file"
for entry in "${GRID[@]}"; do echo "$entry" >>"$jobs_file"; done
run_one() {
  IFS='|' read -r label args <<<"$1"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 $PY benchmarks/screens/task_probe.py --device "$DEVICE" --cfg "$CFG" $args \
    --pass-n "${PASS_N:-8}" --results "/tmp/sx-probe-csv/$label.csv" >"/tmp/sx-probe-logs/$label.log" 2>&1
}
export -f run_one; export PY DEVICE CFG PASS_N=${PASS_N:-8}
timeout "$LIMIT" xargs -P "$PAR" -d '\n' -I{} bash -c 'run_one "$@"' _ {} <"$jobs_file"
echo "grid exit $?"
for f in /tmp/sx-probe-csv/*.csv; do
  label=$(basename "$f" .csv)
  awk -v l="$label" 'NR==1 {print "label," $0; next} {print l "," $0}' "$f"
done | awk 'NR==1 || !/^label,date,/' >"$OUT_DIR/probe.csv"
for f in /tmp/sx-probe-logs/*.log; do echo "== $f"; grep -v -i warn "$f" | tail -5; done >"$OUT_DIR/probe_logs.txt"
for f in /tmp/sx-probe-logs/*.log; do echo "$(basename "$f" .log): $(grep '^seed' "$f" | tail -1)"; done
