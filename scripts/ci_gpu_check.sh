#!/usr/bin/env bash
# CI for the GPU check (no GPU needed): scripts/gpu_check.sh prepare, reusing an existing CUDA build
# (default build/, as built by scripts/test.sh) and checking the bundle's size limit; then the run half as a
# dry run, which must pass, report the CUDA-only steps as "skipped: no GPU" and keep to the output contract
# (at most 8 files, no subfolders); then the same dry run on a copy of the bundle with a corrupted fixture,
# which must fail (a real failure of a CPU-runnable step fails the check); then the run half's GPU branch
# against fakes (nvidia-smi, compute-sanitizer and the six binaries as small scripts that print what the
# real ones print on a GPU; one CUDA test fails), which must parse every step and fail on that test.
# Usage: scripts/ci_gpu_check.sh [BUILD_DIR]      (MNIST from $MNIST_DIR, else ../shared/data/mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MNIST=${MNIST_DIR:-$(pwd)/../shared/data/mnist}
OUT=out/gpu-dry
fail() {
  echo "ci_gpu_check: FAIL: $*" >&2
  exit 1
}

bash scripts/gpu_check.sh prepare --build-dir "$BUILD" --mnist "$MNIST" --max-mb 48

rm -rf "$OUT"
bash .gpu-bundle/gpu_check.sh run --dry-run --out "$OUT" || fail "the dry run failed (see $OUT/summary.md)"
[ "$(find "$OUT" -mindepth 1 | wc -l)" -le 8 ] || fail "more than 8 entries in $OUT"
[ -z "$(find "$OUT" -mindepth 1 -type d)" ] || fail "subfolders in $OUT"
for s in "2 CUDA tests" "4 compute-sanitizer" "7 cuda_kernels_bench"; do
  grep -q "^| ${s}[^|]* | skipped: no GPU" "$OUT/summary.md" || fail "step '$s' is not reported as skipped: no GPU"
done
for f in summary.md log.txt cuda_tests.txt bench.json grid.png metrics.csv; do
  [ -s "$OUT/$f" ] || fail "$OUT/$f missing or empty"
done
! grep -q '| FAIL\|| TIMEOUT' "$OUT/summary.md" || fail "a step failed in the dry run"

# Negative check: a corrupted fixture must fail the run (only step 3 runs).
BAD=$(mktemp -d)
trap 'rm -rf "$BAD"' EXIT
cp -r .gpu-bundle "$BAD/bundle"
head -c 1000 .gpu-bundle/fixtures/tiny.safetensors >"$BAD/bundle/fixtures/tiny.safetensors"
if bash "$BAD/bundle/gpu_check.sh" run --dry-run --steps 3 --out "$BAD/out" >/dev/null; then
  fail "the dry run passed with a corrupted fixture"
fi
grep -q '^| 3 reference_check tiny | FAIL' "$BAD/out/summary.md" || fail "the corrupted fixture is not reported as FAIL"
# The GPU branch against fakes: the plumbing a real GPU run depends on (verdicts, parsing, SIGINT, budget).
F=$BAD/fake
mkdir -p "$F/bin" "$F/path"
cp -r .gpu-bundle "$F/bundle"
fake() { printf '#!/bin/bash\n%s\n' "$2" >"$F/$1" && chmod +x "$F/$1"; }
fake path/nvidia-smi 'case "$*" in -L) echo "GPU 0: Fake GPU";; *name*) echo "Fake GPU, 580.00, 1000 MiB, 9.0";; esac'
fake path/compute-sanitizer 'echo "========= ERROR SUMMARY: 0 errors"'
fake bin/engine_tests 'if [ "$1" = --gtest_list_tests ]; then printf "CudaParity.\n  Conv2d\n  GroupNorm\n  NoCudaGivesClearError\nGradCheck.\n  Conv2d\n"; exit 0; fi
case $1 in *NoCuda*) echo "[  SKIPPED ] 1 test";; *GroupNorm) echo "Failure: rel_err 3e-3"; exit 1;; *) echo "[  PASSED  ] 1 test.";; esac'
fake bin/reference_check 'echo "OK (fake, device cuda)"'
fake bin/fm_bench 'while [ $# -gt 0 ]; do [ "$1" = --json ] && j=$2; shift; done
[ -n "$j" ] && echo "{\"engine\": {\"train_ms_per_step\": 50}}" >"$j"; exit 0'
fake bin/fm_train 'while [ $# -gt 0 ]; do [ "$1" = --out ] && o=$2; shift; done; mkdir -p "$o"
echo "fm_train: steps 0 -> 4690, output in $o"
trap "echo \"fm_train: stopped at step 7 (last loss 0.5, 50.0 ms/step, 2560.0 img/s)\"; touch $o/checkpoint.safetensors; echo step >$o/metrics.csv; exit 130" INT
while true; do sleep 0.2; done'
fake bin/fm_sample 'while [ $# -gt 0 ]; do [ "$1" = --out ] && o=$2; shift; done; echo png >"$o"'
fake bin/cuda_kernels_bench 'echo "conv fwd ok"'
tar -C "$F" -cf - bin | xz >"$F/bundle/bin.tar.xz"
if PATH=$F/path:$PATH bash "$F/bundle/gpu_check.sh" run --out "$F/out" --budget 100 >/dev/null; then
  fail "the fake GPU run passed although a CUDA test failed"
fi
S=$F/out/summary.md
for want in '^| 1 environment | pass | .*Fake GPU' '^| 2 CUDA tests[^|]* | FAIL | .*3 tests: 1 pass, 1 skipped, 1 fail' \
  '^| 3 reference_check --device cuda tiny | pass' '^| 4 memcheck | pass | .*0 errors' '^| 5 fm_bench --device cuda | pass' \
  '^| 6 fm_train --device cuda[^|]* | pass | [0-9]* | stopped at step 7' '^| 6 fm_sample --device cuda[^|]* | pass' \
  '^| 7 cuda_kernels_bench --check | pass' 'a full run (4690 steps) extrapolates to 234 s'; do
  grep -q "$want" "$S" || fail "fake GPU run: '$want' not in $S"
done
grep -q '^FAIL     CudaParity.GroupNorm' "$F/out/cuda_tests.txt" || fail "fake GPU run: the failing test is not listed"
echo "ci_gpu_check: ok (bundle $(du -sh .gpu-bundle | cut -f1), dry run passed, corrupted fixture detected, GPU branch ok on fakes)"
