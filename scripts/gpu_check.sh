#!/usr/bin/env bash
# One-shot validation on a GPU machine (H200: 16 cores, cmake, ninja, nvcc 13; no network, no
# GoogleTest package). Needs .deps/ from scripts/prepare_gpu_deps.sh carried along.
# Steps: build GoogleTest from .deps/googletest; configure (sm_90, Ninja) and build; ctest (all tests,
# CUDA ones included); reference_check --device cuda on each tests/reference/*.safetensors;
# compute-sanitizer memcheck on the Cuda* tests; a 300-step fm_train and fm_sample on cuda; the
# benchmarks if built. Every step has a timeout, a failure never stops the script, and the whole run
# is kept inside $GPU_CHECK_BUDGET_S seconds (default 480).
# Writes OUTDIR/summary.txt (date, commit, GPU, pass/fail and seconds per step) and OUTDIR/steps.log.
# Usage: scripts/gpu_check.sh OUTDIR
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DEPS=$ROOT/.deps
BUILD=${GPU_CHECK_BUILD_DIR:-$ROOT/build-gpu}  # not build/: a local run must not touch the dev build
WORK=/tmp/gpu_check
GTEST_PREFIX=/tmp/gtest-install
SYSROOT=/tmp/engine-sysroot
BUDGET=${GPU_CHECK_BUDGET_S:-480}
T0=$(date +%s)
SUMMARY=$OUT/summary.txt
LOG=$OUT/steps.log
mkdir -p "$WORK"
: >"$LOG"
export PATH=/usr/local/cuda/bin:$PATH
NPROC=$(nproc 2>/dev/null || echo 16)
FAILS=0

{
  echo "engine gpu_check"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit:  ${GIT_COMMIT:-$(git -C "$ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo unknown)}"
  echo "gpu:     $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'nvidia-smi failed')"
  echo "nvcc:    $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"
  echo "cmake:   $(cmake --version 2>/dev/null | head -1)"
  echo "budget:  ${BUDGET}s"
  echo
  printf '%-40s %-8s %8s\n' step result seconds
} >"$SUMMARY"

# step NAME TIMEOUT_S CMD...: runs CMD under `timeout`, clipped to the time left; logs and records it.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - T0)))
  if [ "$left" -lt 15 ]; then
    printf '%-40s %-8s %8s\n' "$name" SKIPPED "-" >>"$SUMMARY"
    echo "=== $name: skipped (budget spent)" >>"$LOG"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (timeout ${limit}s): $*" >>"$LOG"
  local s e rc result
  s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$WORK/step.out" 2>&1
  rc=$?
  e=$(date +%s)
  # Long outputs (build, ctest) keep their head and tail.
  if [ "$(wc -l <"$WORK/step.out")" -gt 400 ]; then
    head -n 100 "$WORK/step.out" >>"$LOG"
    echo "... ($(wc -l <"$WORK/step.out") lines, middle cut) ..." >>"$LOG"
    tail -n 300 "$WORK/step.out" >>"$LOG"
  else
    cat "$WORK/step.out" >>"$LOG"
  fi
  case $rc in
    0) result=PASS ;;
    124 | 137) result=TIMEOUT ;;
    *) result="FAIL($rc)" ;;
  esac
  [ "$rc" -ne 0 ] && FAILS=$((FAILS + 1))
  echo "=== $name: $result in $((e - s))s" >>"$LOG"
  printf '%-40s %-8s %8s\n' "$name" "$result" "$((e - s))" >>"$SUMMARY"
  return "$rc"
}

# ---- dependencies: GoogleTest from source; the staged sysroot for whatever the machine lacks.
if [ -f "$DEPS/sysroot.tar.gz" ]; then
  rm -rf "$SYSROOT" && mkdir -p "$SYSROOT"
  tar -C "$SYSROOT" --strip-components=1 -xzf "$DEPS/sysroot.tar.gz"
fi
# Only OpenBLAS (+ libgfortran, libquadmath) and Google Benchmark are loaded from the sysroot at run time.
export LD_LIBRARY_PATH=$SYSROOT/lib:$SYSROOT/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# `timeout` runs programs, not shell functions: the GoogleTest build is one bash -c.
GTEST_CMD="cmake -S '$DEPS/googletest' -B '$WORK/gtest-build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_INSTALL_PREFIX='$GTEST_PREFIX' \
  && cmake --build '$WORK/gtest-build' -j $NPROC && cmake --install '$WORK/gtest-build'"
if [ -f "$DEPS/googletest/CMakeLists.txt" ]; then
  step gtest-build 120 bash -c "$GTEST_CMD"
else
  echo "no .deps/googletest: run scripts/prepare_gpu_deps.sh first" >>"$LOG"
  printf '%-40s %-8s %8s\n' gtest-build MISSING - >>"$SUMMARY"
fi

CMAKE_ARGS=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DENGINE_CUDA=ON
  "-DCMAKE_PREFIX_PATH=$GTEST_PREFIX;$SYSROOT" "-DMNIST_DIR=$DEPS/mnist")
command -v nvcc >/dev/null && CMAKE_ARGS+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc)")
# Fall back to the staged copies only where the machine has no system package.
[ -f /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h ] ||
  CMAKE_ARGS+=("-DOPENBLAS_INCLUDE=$SYSROOT/include/openblas" "-DOPENBLAS_LIB=$SYSROOT/lib/libopenblas.so")
[ -f /usr/include/stb/stb_image_write.h ] || CMAKE_ARGS+=("-DSTB_INCLUDE=$SYSROOT/include/stb")
[ -f /usr/include/zlib.h ] ||
  CMAKE_ARGS+=("-DZLIB_INCLUDE_DIR=$SYSROOT/include/zlib" "-DZLIB_LIBRARY=$SYSROOT/lib/zlib/libz.so")
BENCH=OFF
for f in /usr/lib/x86_64-linux-gnu/cmake/benchmark/benchmarkConfig.cmake /usr/lib/cmake/benchmark/benchmarkConfig.cmake \
  /usr/local/lib/cmake/benchmark/benchmarkConfig.cmake "$SYSROOT/lib/x86_64-linux-gnu/cmake/benchmark/benchmarkConfig.cmake"; do
  [ -f "$f" ] && BENCH=ON
done
CMAKE_ARGS+=("-DENGINE_BENCH=$BENCH")

step configure 90 cmake -S "$ROOT" -B "$BUILD" "${CMAKE_ARGS[@]}"
step build 300 cmake --build "$BUILD" -j "$NPROC"

# ---- tests
step ctest 150 ctest --test-dir "$BUILD" --output-on-failure -j 8 --timeout 120

shopt -s nullglob
for fx in "$ROOT"/tests/reference/*.safetensors; do
  step "reference_check $(basename "$fx")" 60 "$BUILD/bin/reference_check" "$fx" --device cuda
done
shopt -u nullglob

if command -v compute-sanitizer >/dev/null; then
  step memcheck-cuda-tests 90 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$BUILD/bin/engine_tests" \
    --gtest_filter='CudaKernel.Conv2dOddShapes:CudaKernel.ElementwiseAndLayout:CudaKernel.ReductionsEmbeddingAdamWRandom:CudaParity.GroupNorm:CudaParity.Embedding:CudaParity.Upsample:CudaParity.MseLoss'
else
  printf '%-40s %-8s %8s\n' memcheck-cuda-tests "N/A" - >>"$SUMMARY"
fi

# ---- training demo
mkdir -p "$OUT/train"
step fm_train 150 "$BUILD/bin/fm_train" --device cuda --data "$DEPS/mnist" --max-steps 300 --out "$OUT/train"
step fm_sample 60 "$BUILD/bin/fm_sample" --device cuda --checkpoint "$OUT/train/checkpoint.safetensors" \
  --out "$OUT/grid.png"

# ---- benchmarks (short runs); the kernel bench first validates every kernel against cuDNN/cuBLAS
[ -x "$BUILD/bin/cuda_kernels_bench" ] &&
  step "cuda_kernels_bench --check" 120 "$BUILD/bin/cuda_kernels_bench" --check --quick
shopt -s nullglob
for b in "$BUILD"/bin/*_bench; do
  step "bench $(basename "$b")" 60 "$b" --benchmark_min_time=0.05
done
shopt -u nullglob

{
  echo
  echo "failed steps: $FAILS"
  echo "total seconds: $(($(date +%s) - T0))"
} >>"$SUMMARY"
cat "$SUMMARY"
exit 0
