#!/usr/bin/env bash
# The NCCL path of data-parallel fm_train (docs/distributed.md), run by ctest as Nccl.fm_train_data_parallel
# in builds with CUDA + MPI + NCCL. Needs 2 GPUs: 20 steps of a tiny UNet on 2 GPU ranks (NCCL all-reduce)
# must match one GPU process to float tolerance (losses 1e-4 relative, checkpoint tensors 1e-3).
# Usage: scripts/test_nccl.sh BIN_DIR MNIST_DIR. Exit 0 pass, 1 fail, 77 skipped (fewer than 2 GPUs, no
# mpirun or no MNIST; ctest reports it as skipped with this script's reason).
set -uo pipefail
source "$(dirname "$0")/lib/dist_test_common.sh"
dist_test_setup "$@"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
[ "${ngpu:-0}" -ge 2 ] || { echo "SKIP: the NCCL test needs 2 GPUs, found ${ngpu:-0}"; exit 77; }
TRAIN=("$BIN/fm_train" --quiet --no-samples --device cuda --data "$MNIST" --model-config "$T/tiny.json"
       --batch-size 10 --limit 95 --max-steps 20 --seed 7 --dist-timeout 60)
"${TRAIN[@]}" --out "$T/g1" || { echo "FAIL: one-GPU run"; exit 1; }
mpirun --allow-run-as-root --oversubscribe -np 2 "${TRAIN[@]}" --out "$T/g2" || { echo "FAIL: 2-GPU run"; exit 1; }
fails=0
awk -F, 'NR == FNR { if (FNR > 1) a[FNR] = $3; next }
  FNR > 1 { d = $3 - a[FNR]; if (d < 0) d = -d; r = d / a[FNR]; if (r > m) m = r; n++ }
  END { printf "max relative loss difference %.3g over %d steps\n", m, n; exit !(n == 20 && m <= 1e-4) }' \
  "$T/g1/metrics.csv" "$T/g2/metrics.csv" || fails=1
"$BIN/ckpt_diff" "$T/g1/checkpoint.safetensors" "$T/g2/checkpoint.safetensors" 1e-3 || fails=1
[ "$fails" -eq 0 ] && echo "test_nccl.sh: passed" || echo "test_nccl.sh: FAILED"
exit "$fails"
