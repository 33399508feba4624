#!/usr/bin/env bash
# Data-parallel scaling of fm_train on one machine: the seed model, the same global batch, on 1 rank with
# all THREADS threads and on R ranks with THREADS / R threads each (same cores in total), default mode and
# --grad-chunk mode. Prints ms/step (fm_train's own average over the steps after the first) and the
# efficiency t1 / tR (1.0 = as fast as one process on the same cores; data parallelism on one machine only
# pays when the per-process kernels do not use the cores well). Then the collective times (allreduce_bench).
# Usage: bench/mpi_scaling.sh BIN_DIR MNIST_DIR [THREADS=2] [RANKS="2"] [BATCH=32] [STEPS=6]
# Timings on a shared machine are indicative only.
set -euo pipefail
export OMP_WAIT_POLICY=passive  # waiting OpenMP threads sleep: spinning ones distort a loaded machine
BIN=${1:?usage: mpi_scaling.sh BIN_DIR MNIST_DIR [THREADS] [RANKS] [BATCH] [STEPS]}
MNIST=${2:?}
THREADS=${3:-2} RANKS=${4:-2} BATCH=${5:-32} STEPS=${6:-6}
T=$(mktemp -d /tmp/mpi_scaling.XXXXXX)
trap 'rm -rf "$T"' EXIT
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader
        --mca btl_vader_single_copy_mechanism none)
ms() { sed -n 's/.*, \([0-9.]*\) ms\/step.*/\1/p' "$1"; }
train() {  # train LOG THREADS EXTRA...
  local log=$1 th=$2; shift 2
  OMP_NUM_THREADS=$th "$@" --no-samples --threads "$th" --data "$MNIST" --batch-size "$BATCH" \
    --max-steps "$STEPS" --checkpoint-every 0 --ema-decay 0 --out "$T/run" >"$log" 2>&1
  rm -rf "$T/run"
}
echo "fm_train seed model, global batch $BATCH, $STEPS steps, $THREADS threads in total"
echo "| mode | ranks x threads | ms/step | efficiency |"
echo "|---|---|---|---|"
for mode in "" "--grad-chunk $((BATCH / 4))"; do
  train "$T/1.log" "$THREADS" "$BIN/fm_train" $mode
  t1=$(ms "$T/1.log")
  echo "| ${mode:-default} | 1 x $THREADS | $t1 | 1.00 |"
  for R in $RANKS; do
    th=$((THREADS / R)); [ "$th" -ge 1 ] || th=1
    train "$T/$R.log" "$th" "${MPIRUN[@]}" -np "$R" "$BIN/fm_train" $mode
    tR=$(ms "$T/$R.log")
    echo "| ${mode:-default} | $R x $th | $tR | $(awk -v a="$t1" -v b="$tR" 'BEGIN { printf "%.2f", a / b }') |"
  done
done
for R in $RANKS; do
  echo; OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np "$R" "$BIN/allreduce_bench" --iters 10
done
