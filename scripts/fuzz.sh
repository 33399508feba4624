#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang (ASan + UBSan + libFuzzer, CPU-only build in
# build-fuzz/) and runs each for a bounded time on a scratch copy of its committed regression corpus.
# Exits non-zero on the first crash, sanitizer report, leak, timeout or out-of-memory; the reproducer is
# left in build-fuzz/findings/<harness>/ (add it to tests/fuzz/corpus/<harness>/ with the fix).
#   bash scripts/fuzz.sh              # 20 s per harness
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-20}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
HARNESSES=("$@")
((${#HARNESSES[@]})) || HARNESSES=(safetensors checkpoint model_config idx)

bash scripts/install_deps.sh
# clang, its compiler-rt (libFuzzer + sanitizer runtimes) and OpenMP runtime.
for p in clang libclang-rt-dev libomp-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-dev libomp-dev
  break
done

CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_CUDA=OFF \
  -DENGINE_BENCH=OFF -DENGINE_TESTS=OFF -DENGINE_FUZZ=ON >/dev/null
ninja -C "$BUILD" -j"$(nproc)" $(printf '%s_fuzz ' "${HARNESSES[@]}")

for h in "${HARNESSES[@]}"; do
  work="$BUILD/corpus/$h" findings="$BUILD/findings/$h"
  rm -rf "$work" && mkdir -p "$work" "$findings"
  cp tests/fuzz/corpus/"$h"/* "$work"/
  echo "== fuzz $h: ${SECONDS_EACH}s"
  # -max_len 200000 fits the 140 KB deep-nesting inputs; 2 GB RSS and 10 s per input are generous
  # bounds for parsers whose inputs are this small (a finding means a real leak of the bounds).
  rc=0
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    OMP_NUM_THREADS=1 "$BUILD/bin/${h}_fuzz" -max_total_time="$SECONDS_EACH" -max_len=200000 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/" "$work" \
    >"$findings/log.txt" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    grep -v '^#[0-9]' "$findings/log.txt" | tail -60
    echo "FUZZ FAILURE in $h (exit $rc); reproducer(s) and log in $findings/" >&2
    exit 1
  fi
  grep -E '^(Done |stat::(new_units_added|peak_rss_mb))' "$findings/log.txt"
done
echo "fuzzing passed"
