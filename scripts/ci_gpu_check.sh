#!/usr/bin/env bash
# CI for the GPU check (no GPU needed): scripts/gpu_check.sh prepare, reusing an existing CUDA build
# (default build/, as built by scripts/test.sh) and checking the bundle's size limit; then the run half as a
# dry run, which must pass, report the CUDA-only steps as "skipped: no GPU" and keep to the output contract
# (at most 8 files, no subfolders); then the same dry run on a copy of the bundle with a corrupted fixture,
# which must fail (a real failure of a CPU-runnable step fails the check).
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

bash scripts/gpu_check.sh prepare --build-dir "$BUILD" --mnist "$MNIST" --max-mb 40

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
echo "ci_gpu_check: ok (bundle $(du -sh .gpu-bundle | cut -f1), dry run passed, corrupted fixture detected)"
