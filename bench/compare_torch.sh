#!/usr/bin/env bash
# compare_torch.sh: the engine (build/bin/fm_bench) against PyTorch + diffusers (bench/torch_baseline.py, any of
# its modes) on the same machine, same device, batch and threads; prints a ratio table.
# Usage: bench/compare_torch.sh [--device cpu|cuda] [--batch 128] [--threads N] [--quick] [--precision fp32|bf16]
#                               [--iters N] [--warmup N] [--sample-iters N] [--sample-batch N]
#                               [--modes eager,eager-tf32,compile,compile-tf32,compile-ro,eager-bf16 | --mode both]
#                               [--rounds N] [--out DIR] [--bin DIR]
# Writes DIR/fm_bench.json, DIR/torch_baseline.json (default DIR: out/compare_<device>) and prints
# ours vs eager vs compile: train img/s, ms/step, peak memory, sample img/s, with ratios ours / torch
# (> 1 = ours faster for throughput; < 1 = ours smaller/faster for ms and memory). --precision goes to our
# side only (fm_bench; PyTorch runs its own modes, e.g. eager-tf32, or eager-bf16 for
# PyTorch's autocast bf16). --rounds N (default 1) alternates the
# two N times (DIR/round1 .. DIR/roundN) and prints the medians and each round's ratios
# (bench/compare_table.py): on a noisy host, quote those, not one run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=cpu BATCH=128 THREADS="" QUICK="" MODES=eager,compile OUT="" BIN="$ROOT/build/bin" ROUNDS=1
EXTRA=() OURS=()
while [ $# -gt 0 ]; do
  case $1 in
    --device | --batch | --threads | --mode | --modes | --out | --bin | --rounds | --precision | --iters | \
      --warmup | --sample-iters | --sample-batch)
      if [ $# -lt 2 ]; then
        echo "compare_torch.sh: $1 needs a value" >&2
        exit 2
      fi ;;&
    --device) DEVICE=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --quick) QUICK=--quick; shift ;;
    --mode) MODES=${2/both/eager,compile}; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --precision) OURS+=(--precision "$2"); shift 2 ;;
    --iters | --warmup | --sample-iters | --sample-batch) EXTRA+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "compare_torch.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# Digits only, no leading zero (bash arithmetic would read 010 as octal), at most 100.
if ! [[ $ROUNDS =~ ^[1-9][0-9]{0,2}$ ]] || [ "$ROUNDS" -gt 100 ]; then
  echo "compare_torch.sh: --rounds must be a whole number from 1 to 100, got '$ROUNDS'" >&2
  exit 2
fi
if [ ! -x "$BIN/fm_bench" ]; then
  echo "compare_torch.sh: $BIN/fm_bench not found (build it, or pass --bin DIR)" >&2
  exit 2
fi
OUT=${OUT:-$ROOT/out/compare_$DEVICE}
mkdir -p "$OUT"
COMMON=(--device "$DEVICE" --batch "$BATCH" ${QUICK:+$QUICK} "${EXTRA[@]}")
if [ -n "$THREADS" ]; then
  COMMON+=(--threads "$THREADS")
  export OMP_NUM_THREADS=$THREADS
fi

# A private inductor cache: a shared /tmp/torchinductor_* written by another process can be half-written
# ("file too short" on import).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor_cache}
HAVE_TORCH=1
python3 -c "import torch" 2>/dev/null || HAVE_TORCH=0

DIRS=()
for ((r = 1; r <= ROUNDS; r++)); do
  DIR=$OUT
  [ "$ROUNDS" -gt 1 ] && DIR=$OUT/round$r && echo "== round $r of $ROUNDS"
  mkdir -p "$DIR"
  rm -f "$DIR/fm_bench.json" "$DIR/torch_baseline.json"  # no stale results from an earlier run
  echo "== engine: $BIN/fm_bench ${COMMON[*]} ${OURS[*]}"
  "$BIN/fm_bench" "${COMMON[@]}" "${OURS[@]}" --json "$DIR/fm_bench.json"
  echo "== pytorch: bench/torch_baseline.py ${COMMON[*]} --modes $MODES"
  if [ "$HAVE_TORCH" = 1 ]; then
    python3 "$ROOT/bench/torch_baseline.py" "${COMMON[@]}" --modes "$MODES" --json "$DIR/torch_baseline.json" ||
      echo "compare_torch.sh: torch_baseline.py failed" >&2
  else
    echo "compare_torch.sh: torch is not importable; PyTorch columns will be empty" >&2
  fi
  DIRS+=("$DIR")
done

python3 "$ROOT/bench/compare_table.py" "${DIRS[@]}"
