#!/usr/bin/env bash
# gpu_check.sh: the GPU check in two halves, so a short GPU window is spent checking, not building.
#
#   prepare  (on a CPU machine with nvcc, in the repository)
#       builds engine_tests, fm_train, fm_sample, fm_bench, reference_check and cuda_kernels_bench for
#       sm_90 (plus the local GPU's architecture, if there is one), strips them and stages into one
#       git-ignored folder (default .gpu-bundle/, at most --max-mb MB) everything the GPU machine lacks:
#       the binaries, a sysroot (OpenBLAS + libgfortran + libquadmath, Google Benchmark, and the headers
#       for a fallback build), the MNIST .gz files, the reference fixtures, bench/torch_baseline.py, the
#       sources (for a fallback build there) and this script. Prints the command to run on the GPU machine.
#         scripts/gpu_check.sh prepare [--out DIR] [--build-dir DIR] [--mnist DIR] [--max-mb N] [--jobs N]
#       --build-dir reuses an existing Release build whose CMAKE_CUDA_ARCHITECTURES include 90 (CI's build/).
#
#   run  (on the GPU machine, from the bundle; needs bash, python3, cmake/ninja only for a fallback build)
#         bash .gpu-bundle/gpu_check.sh run --out OUT [--budget 360] [--dry-run] [--steps 1,2,...]
#                                         [--force-build]
#       Steps, in priority order, each under a timeout clipped to the budget left:
#         1 environment (GPU, driver, nvcc, torch)     5 fm_bench vs bench/torch_baseline.py (4 modes)
#         2 every Cuda* test, one process each         6 the seed recipe (fm_train, SIGINT at the budget),
#         3 reference_check --device cuda, per fixture   then fm_sample
#         4 compute-sanitizer memcheck + racecheck     7 cuda_kernels_bench --check
#       The staged binaries are used; only if they do not start (or --force-build) is the project built
#       there from the staged sources. OUT receives at most 8 files, none in subfolders: summary.md
#       (rewritten after every step, ready to paste into docs/gpu-runs.md), log.txt, cuda_tests.txt,
#       bench.json, kernels.txt, grid.png, metrics.csv.
#       --dry-run (a CPU machine, CI): the binaries see no GPU (CUDA_VISIBLE_DEVICES=""); CUDA-only
#       verdicts read "skipped: no GPU"; steps 3, 5 and 6 run a small CPU stand-in so the plumbing is
#       exercised. Exit status: 0 = no step failed, 1 = a step failed or timed out, 2 = bad usage/bundle.
set -uo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
SELF_DIR=$(dirname "$SELF")
die() {
  echo "gpu_check: $*" >&2
  exit 2
}
# The machine's online CPUs (not nproc: it honours OMP_NUM_THREADS, which a dry run sets to 1).
ncpu() { getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"; }

# =====================================================================================================
# prepare
# =====================================================================================================
TARGETS=(engine_tests fm_train fm_sample fm_bench reference_check cuda_kernels_bench)

# cache_get BUILD VAR: a value from BUILD/CMakeCache.txt (empty when absent).
cache_get() { sed -n "s/^$2:[A-Z]*=//p" "$1/CMakeCache.txt" 2>/dev/null | head -1; }

# Stages a relocatable prefix of this host's libraries and headers into $1 (a directory).
stage_sysroot() {
  local P=$1 A=/usr/lib/x86_64-linux-gnu
  mkdir -p "$P/include" "$P/lib" "$P/share/cmake"
  put_lib() { # put_lib SRC DESTDIR NAME [LINK...]: a resolved copy plus link names
    local src=$1 dest=$2 name=$3
    shift 3
    [ -e "$src" ] || {
      echo "prepare: WARNING: missing $src"
      return 0
    }
    mkdir -p "$dest" && cp -L "$src" "$dest/$name"
    for l in "$@"; do ln -sf "$name" "$dest/$l"; done
  }
  put_dir() {
    [ -d "$1" ] || {
      echo "prepare: WARNING: missing $1"
      return 0
    }
    mkdir -p "$(dirname "$2")" && cp -rL "$1" "$2"
  }
  # OpenBLAS (OpenMP flavour) and its Fortran runtime: the binaries load these at run time.
  put_dir /usr/include/x86_64-linux-gnu/openblas-openmp "$P/include/openblas"
  put_lib $A/openblas-openmp/libopenblas.so.0 "$P/lib" libopenblas.so.0 libopenblas.so
  put_lib "$(readlink -f $A/libgfortran.so.5)" "$P/lib" libgfortran.so.5
  put_lib "$(readlink -f $A/libquadmath.so.0)" "$P/lib" libquadmath.so.0
  # Google Benchmark: the prebuilt library (its CMake config expects PREFIX/lib/x86_64-linux-gnu/).
  if [ -f $A/cmake/benchmark/benchmarkConfig.cmake ]; then
    local bm
    bm=$(readlink -f $A/libbenchmark.so)
    put_dir /usr/include/benchmark "$P/include/benchmark"
    put_dir $A/cmake/benchmark "$P/lib/x86_64-linux-gnu/cmake/benchmark"
    put_lib "$bm" "$P/lib/x86_64-linux-gnu" "$(basename "$bm")" libbenchmark.so
    cp -L $A/libbenchmark_main.a "$P/lib/x86_64-linux-gnu/" 2>/dev/null || true
  fi
  # Headers (fallback build only): nlohmann_json, CLI11, stb, zlib (link-time libz; the runtime is everywhere).
  put_dir /usr/include/nlohmann "$P/include/nlohmann"
  put_dir /usr/share/cmake/nlohmann_json "$P/share/cmake/nlohmann_json"
  put_dir /usr/include/CLI "$P/include/CLI"
  put_dir /usr/share/cmake/CLI11 "$P/share/cmake/CLI11"
  put_dir /usr/include/stb "$P/include/stb"
  mkdir -p "$P/include/zlib"
  cp -L /usr/include/zlib.h /usr/include/zconf.h "$P/include/zlib/" 2>/dev/null ||
    echo "prepare: WARNING: zlib headers missing"
  put_lib "$(readlink -f $A/libz.so.1)" "$P/lib/zlib" libz.so.1 libz.so
  put_dir /usr/src/googletest "$P/src/googletest"
}

# Copies into $1 every shared library the given binaries load (ldd) that a GPU machine with PyTorch cannot
# be assumed to have: everything but glibc, the GCC runtime (libstdc++, libgcc_s, libgomp), zlib and the
# CUDA libraries (those come from the machine's CUDA / PyTorch). Picks up optional dependencies such as
# PLplot without listing them. PLplot's dlopen'ed cairo driver is not staged: without it the apps print a
# note and write no plots (apps/common/plot.cpp), which does not affect any check.
stage_linked_libs() {
  local dest=$1 lib path
  shift
  mkdir -p "$dest"
  for path in $(ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do
    lib=$(basename "$path")
    case "$lib" in
      linux-vdso* | ld-linux* | libc.so* | libm.so* | libpthread* | libdl.so* | librt.so* | libutil.so* | \
        libstdc++* | libgcc_s* | libgomp* | libz.so* | libcud* | libcublas* | libnvidia* | libnvrtc*) ;;
      *) [ -e "$dest/$lib" ] || cp -L "$path" "$dest/$lib" ;;
    esac
  done
}

# stdin -> xz on stdout (the xz tool, else Python's lzma module).
xz_compress() {
  if command -v xz >/dev/null; then
    xz -6 -T1
  else
    python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.compress(sys.stdin.buffer.read(), preset=6))'
  fi
}

cmd_prepare() {
  local ROOT OUT BUILD="" MNIST="" MAX_MB=48 JOBS
  ROOT=$(cd "$SELF_DIR/.." && pwd)
  [ -f "$ROOT/CMakeLists.txt" ] && [ -f "$ROOT/bench/torch_baseline.py" ] ||
    die "prepare runs from the repository (scripts/gpu_check.sh), not from a bundle"
  OUT=$ROOT/.gpu-bundle
  MNIST=${MNIST_DIR:-$ROOT/../shared/data/mnist}
  JOBS=$(ncpu)
  while [ $# -gt 0 ]; do
    case $1 in
      --out) OUT=$2; shift 2 ;;
      --build-dir) BUILD=$2; shift 2 ;;
      --mnist) MNIST=$2; shift 2 ;;
      --max-mb) MAX_MB=$2; shift 2 ;;
      --jobs) JOBS=$2; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) die "prepare: unknown argument '$1' (see --help)" ;;
    esac
  done
  [ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
  command -v nvcc >/dev/null || die "prepare: nvcc not found: the bundle needs binaries built with CUDA"
  ls "$MNIST"/train-images-idx3-ubyte* >/dev/null 2>&1 || die "prepare: no MNIST files in '$MNIST' (--mnist DIR)"
  local t0 archs="90" cc
  t0=$(date +%s)
  # The local GPU's architecture too, when there is one (e.g. 8.9 -> 89).
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$cc" =~ ^[0-9]+$ ]] && [ "$cc" != 90 ] && archs="90;$cc"

  if [ -n "$BUILD" ]; then
    # Reuse: a configured Release build with CUDA for (at least) every wanted architecture.
    BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || die "prepare: --build-dir '$BUILD' does not exist"
    [ -f "$BUILD/CMakeCache.txt" ] || die "prepare: $BUILD is not a CMake build folder"
    local have
    have=";$(cache_get "$BUILD" CMAKE_CUDA_ARCHITECTURES);"
    [ -n "$(cache_get "$BUILD" CMAKE_CUDA_COMPILER)" ] || die "prepare: $BUILD was configured without CUDA"
    [ "$(cache_get "$BUILD" CMAKE_BUILD_TYPE)" = Release ] || die "prepare: $BUILD is not a Release build"
    for a in ${archs//;/ }; do
      [[ "$have" == *";$a;"* || "$have" == *";$a-real;"* ]] ||
        die "prepare: $BUILD has CUDA architectures '${have//;/ }', not $a (use another --build-dir or none)"
    done
  else
    BUILD=$ROOT/build-gpu
    if [ "$(cache_get "$BUILD" CMAKE_CUDA_ARCHITECTURES)" != "$archs" ]; then
      cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON \
        "-DCMAKE_CUDA_ARCHITECTURES=$archs" -DENGINE_BENCH=ON "-DMNIST_DIR=$MNIST" >/dev/null ||
        die "prepare: cmake configure failed in $BUILD"
    fi
  fi
  echo "prepare: building ${TARGETS[*]} in $BUILD (CUDA architectures $(cache_get "$BUILD" CMAKE_CUDA_ARCHITECTURES))"
  local t all
  local -a targets=()
  # Not `ninja ... | grep -q`: under pipefail grep's early exit can fail the pipeline (SIGPIPE).
  all=$(ninja -C "$BUILD" -t targets all 2>/dev/null)
  for t in "${TARGETS[@]}"; do
    # cuda_kernels_bench exists only with ENGINE_BENCH (Google Benchmark installed).
    if [ "$t" = cuda_kernels_bench ] && ! grep -q "^$t:" <<<"$all"; then
      echo "prepare: WARNING: $BUILD has no cuda_kernels_bench target (ENGINE_BENCH off?); step 7 will be skipped"
      continue
    fi
    targets+=("$t")
  done
  ninja -C "$BUILD" -j"$JOBS" "${targets[@]}" || die "prepare: build failed"

  # ---- stage
  case "$OUT" in /* | ./* | ../*) ;; *) OUT=$ROOT/$OUT ;; esac
  rm -rf "$OUT" && mkdir -p "$OUT" || die "prepare: cannot create $OUT"
  ST=$(mktemp -d) || die "prepare: mktemp failed" # global: the EXIT trap runs after this function
  trap 'rm -rf "$ST"' EXIT
  mkdir -p "$ST/bin"
  for t in "${targets[@]}"; do
    cp "$BUILD/bin/$t" "$ST/bin/" && strip --strip-unneeded "$ST/bin/$t" || die "prepare: cannot stage $t"
  done
  # xz, not gzip: its 8 MB window also removes the copies of the CUDA fatbin that every binary embeds
  # (8 MB gzip -> 2.4 MB xz for sm_90).
  tar -C "$ST" -cf - bin | xz_compress >"$OUT/bin.tar.xz" || die "prepare: cannot compress the binaries (xz)"
  stage_sysroot "$ST/sysroot"
  stage_linked_libs "$ST/sysroot/lib" "${targets[@]/#/$BUILD/bin/}"
  tar -C "$ST" -czf "$OUT/sysroot.tar.gz" sysroot
  # Sources for a fallback build: the files git knows about (committed or not), without the fixtures.
  (cd "$ROOT" && git ls-files -co --exclude-standard -z 2>/dev/null | grep -zv '\.safetensors$' |
    tar --null -T - -czf "$OUT/src.tar.gz") || die "prepare: cannot archive the sources"
  mkdir -p "$OUT/mnist" "$OUT/fixtures"
  local f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$MNIST/$f.gz" ]; then
      cp "$MNIST/$f.gz" "$OUT/mnist/"
    elif [ -f "$MNIST/$f" ]; then
      gzip -c "$MNIST/$f" >"$OUT/mnist/$f.gz"
    else
      die "prepare: $MNIST/$f(.gz) missing"
    fi
  done
  # Fixtures: the .safetensors files whose metadata has a 'config' (tiny_state_dict.safetensors has not).
  for f in "$ROOT"/tests/reference/*.safetensors; do
    python3 - "$f" <<'EOF' && cp "$f" "$OUT/fixtures/"
import json, struct, sys
with open(sys.argv[1], "rb") as fh:
    n = struct.unpack("<Q", fh.read(8))[0]
    sys.exit(0 if "config" in json.loads(fh.read(n)).get("__metadata__", {}) else 1)
EOF
  done
  cp "$ROOT/bench/torch_baseline.py" "$OUT/"
  cp "$ROOT"/.whl/diffusers*.whl "$OUT/" 2>/dev/null || true # carried wheel, if one was downloaded
  cp "$SELF" "$OUT/gpu_check.sh"
  {
    echo "commit: $(git -C "$ROOT" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+uncommitted')"
    echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*')"
    echo "cuda_architectures: $(cache_get "$BUILD" CMAKE_CUDA_ARCHITECTURES)"
    echo "binaries: ${targets[*]}"
  } >"$OUT/build-info.txt"

  local bytes max
  bytes=$(du -sb "$OUT" | cut -f1)
  max=$((MAX_MB * 1000000))
  echo "prepare: bundle $OUT: $((bytes / 1000000)) MB in $(find "$OUT" -type f | wc -l) files, $(($(date +%s) - t0)) s"
  (cd "$OUT" && du -b ./* | sort -k2 | awk '{printf "  %8.1f MB  %s\n", $1 / 1e6, $2}')
  if [ "$bytes" -gt "$max" ]; then
    echo "prepare: FAIL: the bundle is $bytes bytes, over the limit of $MAX_MB MB" >&2
    exit 1
  fi
  local rel=${OUT#"$ROOT"/}
  echo "prepare: ok. Copy the repository's $rel/ to the GPU machine (or carry it), then run there:"
  echo "  timeout 400 bash $rel/gpu_check.sh run --out gpu-out --budget 360"
  echo "(a CPU-only rehearsal here: bash $rel/gpu_check.sh run --dry-run --out out/gpu-dry)"
}

# =====================================================================================================
# run
# =====================================================================================================
T0=$(date +%s)
BUDGET=360
RESERVE=10 # seconds kept back for the summary
DRY=0
HAVE_GPU=0
FAILS=0
STEPS_WANTED=",1,2,3,4,5,6,7,"
ROWS=() # summary table rows: "| step | verdict | seconds | detail |"
NOTES=() # extra summary sections, markdown
HEADER=""

elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(elapsed) - RESERVE)); }
log() { echo "$*" >>"$OUT/log.txt"; }
want() { [[ "$STEPS_WANTED" == *",$1,"* ]]; }

# record NAME VERDICT SECONDS DETAIL: one summary row. Verdicts: pass, FAIL..., TIMEOUT, skipped: ...
record() {
  ROWS+=("| $1 | $2 | $3 | $4 |")
  case $2 in FAIL* | TIMEOUT*) FAILS=$((FAILS + 1)) ;; esac
  log "=== [$(elapsed)s] $1: $2 ($3 s) $4"
  write_summary
}

write_summary() {
  {
    echo "$HEADER"
    echo
    echo "| step | verdict | s | detail |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    local n
    for n in "${NOTES[@]}"; do printf '%s\n\n' "$n"; done
    echo "Steps failed or timed out: $FAILS. Wall time so far: $(elapsed) s of a ${BUDGET} s budget."
  } >"$OUT/summary.md"
}

# limit CAP: the timeout for a step: min(CAP, budget left); prints 0 when under 5 s are left.
limit() {
  local l
  l=$(left)
  [ "$l" -gt "$1" ] && l=$1
  [ "$l" -lt 5 ] && l=0
  echo "$l"
}

# timed NAME CAP CMD...: runs CMD under a clipped timeout, output appended to log.txt; sets RC, SECS.
timed() {
  local name=$1 cap=$2 t s
  shift 2
  t=$(limit "$cap")
  if [ "$t" -eq 0 ]; then
    RC=-1 SECS=0
    : >"$W/last.out"
    return
  fi
  log "--- [$(elapsed)s] $name (timeout ${t}s): $*"
  : >"$W/last.out"
  s=$(date +%s)
  timeout -k 5 "$t" "$@" >"$W/last.out" 2>&1
  RC=$?
  SECS=$(($(date +%s) - s))
  cat "$W/last.out" >>"$OUT/log.txt"
}

# verdict RC: pass / TIMEOUT / FAIL(rc) / skipped: budget
verdict() {
  case $1 in
    0) echo pass ;;
    -1) echo "skipped: budget" ;;
    124 | 137) echo TIMEOUT ;;
    *) echo "FAIL (exit $1)" ;;
  esac
}

# cpu_verdict RC: for a CPU stand-in of a CUDA step in a dry run.
cpu_verdict() {
  case $1 in
    0) echo "skipped: no GPU (CPU stand-in passed)" ;;
    -1) echo "skipped: budget" ;;
    124 | 137) echo "TIMEOUT (CPU stand-in)" ;;
    *) echo "FAIL (CPU stand-in, exit $1)" ;;
  esac
}

# untar ARCHIVE DIR: tar, or Python's tarfile where tar cannot (no xz binary).
untar() {
  tar -C "$2" -xf "$1" 2>/dev/null && return 0
  python3 - "$1" "$2" <<'EOF2'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    try:
        t.extractall(sys.argv[2], filter="tar")
    except TypeError:  # Python < 3.12 has no filter argument
        t.extractall(sys.argv[2])
EOF2
}

setup_env() {
  export PATH=/usr/local/cuda/bin:$PATH
  mkdir -p "$W/sysroot" "$W/bin"
  untar "$BUNDLE/sysroot.tar.gz" "$W" || die "run: cannot unpack $BUNDLE/sysroot.tar.gz"
  untar "$BUNDLE/bin.tar.xz" "$W" || die "run: cannot unpack $BUNDLE/bin.tar.xz"
  local ldp="$W/sysroot/lib:$W/sysroot/lib/x86_64-linux-gnu" d cudalib pylib
  cudalib=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")")/lib64
  [ -d "$cudalib" ] && ldp=$ldp:$cudalib
  [ -d /usr/local/cuda/lib64 ] && ldp=$ldp:/usr/local/cuda/lib64
  # cuBLAS/cuDNN from PyTorch's pip packages (nvidia/*/lib) where the toolkit lacks them.
  pylib=$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)
  if [ -n "$pylib" ]; then
    for d in "$pylib"/nvidia/*/lib; do [ -d "$d" ] && ldp=$ldp:$d; done
  fi
  export LD_LIBRARY_PATH=$ldp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  B=$W/bin
}

binaries_start() {
  "$B/engine_tests" --gtest_list_tests >/dev/null 2>>"$OUT/log.txt" &&
    "$B/fm_bench" --help >/dev/null 2>>"$OUT/log.txt" &&
    "$B/reference_check" --help >/dev/null 2>>"$OUT/log.txt"
}

# The fallback: build on this machine from the staged sources (GoogleTest first).
fallback_build() {
  local S=$W/sysroot j s cc archs="90" cudnn
  j=$(ncpu)
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$cc" =~ ^[0-9]+$ ]] && [ "$cc" != 90 ] && archs="90;$cc"
  mkdir -p "$W/src" && untar "$BUNDLE/src.tar.gz" "$W/src"
  s=$(date +%s)
  timed gtest 90 bash -c "cmake -S '$S/src/googletest' -B '$W/gtb' -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_INSTALL_PREFIX='$W/gtest' && cmake --build '$W/gtb' -j$j \
    && cmake --install '$W/gtb'"
  local -a A=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$archs"
    "-DCMAKE_PREFIX_PATH=$W/gtest;$S" "-DMNIST_DIR=$BUNDLE/mnist"
    "-DOPENBLAS_INCLUDE=$S/include/openblas" "-DOPENBLAS_LIB=$S/lib/libopenblas.so")
  command -v nvcc >/dev/null && A+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc)")
  [ -f /usr/include/stb/stb_image_write.h ] || A+=("-DSTB_INCLUDE=$S/include/stb")
  [ -f /usr/include/zlib.h ] || A+=("-DZLIB_INCLUDE_DIR=$S/include/zlib" "-DZLIB_LIBRARY=$S/lib/zlib/libz.so")
  cudnn=$(python3 -c 'import nvidia.cudnn, os; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null)
  [ -n "$cudnn" ] && [ -f "$cudnn/include/cudnn.h" ] &&
    A+=("-DCUDNN_INCLUDE=$cudnn/include" "-DCUDNN_LIB=$(ls "$cudnn"/lib/libcudnn.so* | head -1)")
  [ "$RC" -eq 0 ] && timed configure 60 cmake -S "$W/src" -B "$W/build" "${A[@]}"
  [ "$RC" -eq 0 ] && timed build 240 cmake --build "$W/build" -j"$j" --target "${TARGETS[@]}"
  record "0 fallback build" "$(verdict "$RC")" "$(($(date +%s) - s))" "--force-build, or the staged binaries did not start here"
  [ "$RC" -eq 0 ] && B=$W/build/bin
}

step_env() {
  local s gpu torchv sani cpu
  s=$(date +%s)
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)
  torchv=$(timeout 60 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>/dev/null || echo "torch not importable")
  sani=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo "not found")
  cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')
  HEADER="## GPU check: $(date -u '+%Y-%m-%d %H:%M UTC'), bundle $(sed -n 's/^commit: //p' "$BUNDLE/build-info.txt" 2>/dev/null)$([ $DRY = 1 ] && echo ' (DRY RUN: no GPU used)')

- GPU: ${gpu:-none (nvidia-smi found no GPU)}
- host: $(uname -n), $(ncpu) cores, ${cpu:-unknown CPU}
- nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found'); compute-sanitizer: $sani
- python: $(python3 --version 2>&1); $torchv
- binaries: $(sed -n 's/^built: //p' "$BUNDLE/build-info.txt" 2>/dev/null), CUDA architectures $(sed -n 's/^cuda_architectures: //p' "$BUNDLE/build-info.txt" 2>/dev/null)
- budget: ${BUDGET} s"
  log "$HEADER"
  command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/log.txt" 2>&1
  if [ $DRY = 1 ]; then
    record "1 environment" "pass" "$(($(date +%s) - s))" "dry run: GPU hidden (CUDA_VISIBLE_DEVICES='')"
  elif [ "$HAVE_GPU" = 1 ]; then
    record "1 environment" "pass" "$(($(date +%s) - s))" "$gpu"
  else
    record "1 environment" "FAIL: no GPU" "$(($(date +%s) - s))" "nvidia-smi found no GPU; on a CPU machine use --dry-run"
  fi
}

step_cuda_tests() {
  local s t p f k n_pass n_skip n_fail n_none unexpected=0
  s=$(date +%s)
  "$B/engine_tests" --gtest_list_tests 2>>"$OUT/log.txt" |
    awk '/^[^ ]/{s=$1} /^  /{print s $1}' | grep -E '^Cuda' >"$W/cudatests"
  mkdir -p "$W/ct"
  t=$(limit 60)
  if [ "$t" -eq 0 ]; then
    record "2 CUDA tests" "skipped: budget" 0 ""
    return
  fi
  p=$(ncpu)
  [ "$p" -gt 8 ] && p=8
  # Each test in its own process: a sticky CUDA error (illegal address) cannot poison the others.
  # 8 processes at a time, 2 OpenMP threads each for their CPU references.
  export B W
  OMP_NUM_THREADS=2 timeout -k 5 "$t" xargs -P "$p" -I{} bash -c \
    'timeout 60 "$B/engine_tests" --gtest_filter="$1" >"$W/ct/$1.log" 2>&1; echo $? >"$W/ct/$1.rc"' _ {} <"$W/cudatests"
  : >"$OUT/cuda_tests.txt"
  while read -r k; do
    f=$W/ct/$k.log
    if [ ! -f "$W/ct/$k.rc" ]; then
      echo "NOT RUN  $k (step timeout)" >>"$OUT/cuda_tests.txt"
    elif grep -q '^\[  SKIPPED \]' "$f"; then
      echo "SKIPPED  $k: $(grep -m1 -o 'skipped: .*\|present; .*' "$f" | head -1)" >>"$OUT/cuda_tests.txt"
    elif [ "$(cat "$W/ct/$k.rc")" = 0 ] && grep -q '^\[  PASSED  \] 1 test' "$f"; then
      echo "PASS     $k" >>"$OUT/cuda_tests.txt"
    else
      echo "FAIL     $k (exit $(cat "$W/ct/$k.rc"))" >>"$OUT/cuda_tests.txt"
      grep -E 'Failure|error|Expected|Which is|what\(\)|rel_err|gradient|forward' "$f" | head -20 | sed 's/^/    /' \
        >>"$OUT/cuda_tests.txt"
      { echo "--- $k"; cat "$f"; } >>"$OUT/log.txt"
    fi
  done <"$W/cudatests"
  n_pass=$(grep -c '^PASS' "$OUT/cuda_tests.txt")
  n_skip=$(grep -c '^SKIPPED' "$OUT/cuda_tests.txt")
  n_fail=$(grep -c '^FAIL' "$OUT/cuda_tests.txt")
  n_none=$(grep -c '^NOT RUN' "$OUT/cuda_tests.txt")
  local detail
  detail="$(wc -l <"$W/cudatests") tests: $n_pass pass, $n_skip skipped, $n_fail fail, $n_none not run"
  local v
  if [ "$(wc -l <"$W/cudatests")" -eq 0 ]; then
    v="FAIL: no Cuda* tests listed"
  elif [ "$n_fail" -gt 0 ]; then
    v="FAIL"
  elif [ "$n_none" -gt 0 ]; then
    v="TIMEOUT"
  elif [ "$HAVE_GPU" = 1 ]; then
    # With a GPU only NoCudaGivesClearError may skip (it covers machines without one).
    unexpected=$(grep '^SKIPPED' "$OUT/cuda_tests.txt" | grep -vc 'NoCudaGivesClearError')
    if [ "$unexpected" -gt 0 ]; then v="FAIL: $unexpected unexpected skips"; else v=pass; fi
  else
    # Without a GPU every test skips except NoCudaGivesClearError, which must pass.
    if grep -q '^PASS     CudaParity.NoCudaGivesClearError' "$OUT/cuda_tests.txt" &&
      [ "$n_pass" -eq 1 ]; then
      v="skipped: no GPU"
      detail="$detail (NoCudaGivesClearError passed)"
    else
      v="FAIL: unexpected results without a GPU"
    fi
  fi
  record "2 CUDA tests (one process each)" "$v" "$(($(date +%s) - s))" "$detail; see cuda_tests.txt"
}

step_refcheck() {
  local f n any=0
  for f in "$BUNDLE"/fixtures/*.safetensors; do
    [ -f "$f" ] || continue
    any=1
    n=$(basename "$f" .safetensors)
    if [ "$HAVE_GPU" = 1 ]; then
      timed "reference_check $n" 30 "$B/reference_check" "$f" --device cuda
      record "3 reference_check --device cuda $n" "$(verdict "$RC")" "$SECS" \
        "$(grep -v '^\s*$' "$W/last.out" | tail -1 | tr '|' '/' | cut -c1-120)"
    else
      timed "reference_check $n (cpu)" 60 "$B/reference_check" "$f" --device cpu
      record "3 reference_check $n" "$(cpu_verdict "$RC")" "$SECS" \
        "--device cpu stand-in: $(grep -v '^\s*$' "$W/last.out" | tail -1 | tr '|' '/' | cut -c1-100)"
    fi
  done
  [ $any = 1 ] || record "3 reference_check" "FAIL: no fixtures in the bundle" 0 ""
}

step_sanitizer() {
  if [ "$HAVE_GPU" != 1 ]; then
    record "4 compute-sanitizer" "skipped: no GPU" 0 ""
    return
  fi
  local cs
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  if [ -z "$cs" ]; then
    record "4 compute-sanitizer" "skipped: not installed" 0 ""
    return
  fi
  timed memcheck 60 "$cs" --tool memcheck --error-exitcode 9 "$B/engine_tests" \
    --gtest_filter='CudaKernel.Conv2dOddShapes:CudaParity.GroupNorm:CudaParity.Attention*:CudaParity.Embedding'
  record "4 memcheck" "$(verdict "$RC")" "$SECS" \
    "Conv2dOddShapes, GroupNorm, Attention*, Embedding: $(grep -o 'ERROR SUMMARY: [0-9]* errors\?' "$W/last.out" | tail -1)"
  timed racecheck 30 "$cs" --tool racecheck --error-exitcode 9 "$B/engine_tests" \
    --gtest_filter='CudaParity.GroupNorm:CudaKernel.Attention:CudaParity.Sum'
  record "4 racecheck" "$(verdict "$RC")" "$SECS" \
    "GroupNorm, Attention, Sum: $(grep -o 'RACECHECK SUMMARY: [0-9]* hazards\?\|ERROR SUMMARY: [0-9]* errors\?' "$W/last.out" | tail -1)"
}

step_bench() {
  local -a fb tb
  if [ "$HAVE_GPU" = 1 ]; then
    fb=(--device cuda --batch 128 --warmup 5 --iters 30 --sample-iters 3)
    # Most telling first, in case the budget cuts the run: strict fp32 eager (the like-for-like baseline),
    # then the fastest PyTorch has (CUDA graphs + fused AdamW), then eager TF32 and torch.compile TF32.
    # shellcheck disable=SC2054 # the commas belong to --modes
    tb=(--device cuda --batch 128 --warmup 3 --iters 20 --sample-iters 2 --sample-batch 1024
      --modes eager,compile-ro,eager-tf32,compile-tf32 --sample-modes eager,compile-tf32 --large-modes eager)
  else
    fb=(--device cpu --threads 1 --model-config "$TINY" --batch 8 --warmup 0 --iters 1 --sample-iters 1
      --sample-batch 0)
    tb=(--device cpu --threads 1 --batch 8 --warmup 1 --iters 1 --sample-modes "" --sample-batch 0 --modes eager)
  fi
  timed fm_bench 60 "$B/fm_bench" "${fb[@]}" --json "$W/fm_bench.json"
  if [ "$HAVE_GPU" = 1 ]; then
    record "5 fm_bench --device cuda" "$(verdict "$RC")" "$SECS" "batch 128"
  else
    record "5 fm_bench" "$(cpu_verdict "$RC")" "$SECS" "--device cpu stand-in: tiny UNet, batch 8"
  fi
  if ! timeout 60 python3 -c 'import torch' 2>/dev/null; then
    record "5 torch_baseline.py" "skipped: torch not importable" 0 ""
  elif ! timeout 60 python3 -c 'import diffusers' 2>/dev/null && ! ls "$BUNDLE"/diffusers*.whl >/dev/null 2>&1; then
    record "5 torch_baseline.py" "skipped: diffusers not importable" 0 "no diffusers, and no diffusers*.whl in the bundle"
  else
    # A private inductor cache: a shared one half-written by another process breaks imports.
    export TORCHINDUCTOR_CACHE_DIR=$W/inductor
    # Up to 150 s, but at least 60 s stay for training and 65 s for sampling and the kernel check.
    local cap=$(($(left) - 125))
    [ "$cap" -gt 150 ] && cap=150
    [ "$cap" -lt 40 ] && cap=40
    timed torch_baseline "$cap" python3 "$BUNDLE/torch_baseline.py" "${tb[@]}" --json "$W/torch_baseline.json"
    local done_modes v
    done_modes=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(",".join(k for k in d if k != "meta"))' \
      "$W/torch_baseline.json" 2>/dev/null)
    v=$(verdict "$RC")
    # A baseline cut by the budget is not a failure of the engine: the finished modes are kept.
    case $RC in 124 | 137) v="cut: budget (${cap} s)" ;; esac
    if [ "$HAVE_GPU" = 1 ]; then
      record "5 torch_baseline.py --device cuda" "$v" "$SECS" "modes done: ${done_modes:-none} (of eager, compile-ro, eager-tf32, compile-tf32)"
    else
      record "5 torch_baseline.py" "$(cpu_verdict "$RC")" "$SECS" "--device cpu stand-in: eager, batch 8, no sampling"
    fi
  fi
  # bench.json = {engine: fm_bench's, torch: torch_baseline's}; a side-by-side table for the summary.
  python3 - "$W/fm_bench.json" "$W/torch_baseline.json" "$OUT/bench.json" >"$W/bench_table.md" 2>>"$OUT/log.txt" <<'EOF'
import json, os, sys
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return {}
ours, torch = load(sys.argv[1]), load(sys.argv[2])
json.dump({"engine": ours, "torch": torch}, open(sys.argv[3], "w"), indent=2)
cols = [("engine", ours.get("engine", {}))] + [
    ("torch " + k, v) for k, v in torch.items() if k != "meta" and isinstance(v, dict)]
rows = [("train ms/step", "train_ms_per_step", 1, "{:.1f}"), ("train img/s", "train_img_per_s", 1, "{:.0f}"),
        ("peak MiB", "peak_mem_bytes", 2**-20, "{:.0f}"), ("sample80 img/s", "sample80_img_per_s", 1, "{:.0f}"),
        ("sample-large img/s", "sample_large_img_per_s", 1, "{:.0f}")]
print("| metric | " + " | ".join(c[0] for c in cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for label, key, sc, fmt in rows:
    cells = []
    for _, r in cols:
        v = r.get(key) if "error" not in r else None
        cells.append(fmt.format(v * sc) if isinstance(v, (int, float)) else "-")
    print(f"| {label} | " + " | ".join(cells) + " |")
for name, r in cols:
    if "error" in r:
        print(f"\n{name}: {r['error']}")
EOF
  [ -s "$W/bench_table.md" ] && NOTES+=("### fm_bench vs PyTorch (same machine)
$(cat "$W/bench_table.md")")
  write_summary
}

step_train() {
  local dev=cuda t cap=300 s last
  local -a extra=() sextra=()
  local -a textra=()
  if [ "$HAVE_GPU" != 1 ]; then
    dev=cpu cap=10
    extra=(--threads 1)
    textra=(--model-config "$TINY" --batch-size 32) # the stand-in: a tiny UNet
    sextra=(--per-class 1)                          # 10 images
  fi
  # Leave time for fm_sample (20 s) and the kernel check (step 7, 45 s) after training.
  t=$(($(left) - 65))
  if [ "$t" -lt 15 ] && [ "$t" -lt "$cap" ]; then
    record "6 fm_train (seed recipe)" "skipped: budget" 0 ""
    return
  fi
  [ "$t" -gt "$cap" ] && t=$cap
  log "--- [$(elapsed)s] fm_train --device $dev, SIGINT after ${t}s"
  s=$(date +%s)
  timeout --preserve-status -s INT -k 30 "$t" "$B/fm_train" --device "$dev" --data "$BUNDLE/mnist" --out "$W/run" \
    --no-samples "${extra[@]}" "${textra[@]}" >"$W/train.log" 2>&1
  RC=$?
  tr '\r' '\n' <"$W/train.log" | grep -v '^\s*$' | tail -n 40 >>"$OUT/log.txt"
  last=$(tr '\r' '\n' <"$W/train.log" | grep -E 'fm_train: (stopped|done) at step' | tail -1)
  cp "$W/run/metrics.csv" "$OUT/metrics.csv" 2>/dev/null
  local v
  case $RC in
    0 | 130) v=pass ;;
    *) v="FAIL (exit $RC)" ;;
  esac
  [ "$HAVE_GPU" != 1 ] && [ "$v" = pass ] && v="skipped: no GPU (CPU stand-in passed)"
  [ "$HAVE_GPU" != 1 ] && [ "$v" != "skipped: no GPU (CPU stand-in passed)" ] && v="$v (CPU stand-in)"
  local what="seed recipe"
  [ "$HAVE_GPU" != 1 ] && what="tiny UNet, batch 32"
  record "6 fm_train --device $dev ($what, SIGINT at ${t}s)" "$v" "$(($(date +%s) - s))" \
    "$(echo "${last#fm_train: }" | sed 's/; checkpoint.*//')"
  # The full-run estimate from the steady ms/step and the planned step count.
  local total ms
  total=$(grep -o 'steps [0-9]* -> [0-9]*' "$W/train.log" | awk '{print $4}')
  ms=$(echo "$last" | grep -o '[0-9.]* ms/step' | awk '{print $1}')
  [ -n "$total" ] && [ -n "$ms" ] &&
    NOTES+=("Training: $(echo "${last#fm_train: }" | sed 's/; checkpoint.*//'); a full run ($total steps) extrapolates to $(awk -v n="$total" -v m="$ms" 'BEGIN{printf "%.0f", n*m/1000}') s at that rate.")
  if [ -f "$W/run/checkpoint.safetensors" ]; then
    timed fm_sample 20 "$B/fm_sample" --device "$dev" --checkpoint "$W/run/checkpoint.safetensors" --seed 123 \
      --out "$OUT/grid.png" "${extra[@]}" "${sextra[@]}"
    if [ "$HAVE_GPU" = 1 ]; then
      record "6 fm_sample --device cuda (80 images)" "$(verdict "$RC")" "$SECS" "grid.png"
    else
      record "6 fm_sample" "$(cpu_verdict "$RC")" "$SECS" "--device cpu stand-in, grid.png"
    fi
  else
    record "6 fm_sample" "FAIL: no checkpoint" 0 "fm_train wrote no checkpoint"
  fi
}

step_kernels() {
  if [ ! -x "$B/cuda_kernels_bench" ]; then
    record "7 cuda_kernels_bench --check" "skipped: not in the bundle" 0 ""
    return
  fi
  local t s rc
  t=$(limit 60)
  if [ "$t" -eq 0 ]; then
    record "7 cuda_kernels_bench --check" "skipped: budget" 0 ""
    return
  fi
  s=$(date +%s)
  timeout -k 5 "$t" "$B/cuda_kernels_bench" --check --quick >"$W/kernels.txt" 2>&1
  rc=$?
  cp "$W/kernels.txt" "$OUT/kernels.txt"
  log "--- cuda_kernels_bench --check --quick: exit $rc (table in kernels.txt)"
  if [ "$HAVE_GPU" = 1 ]; then
    record "7 cuda_kernels_bench --check" "$(verdict $rc)" "$(($(date +%s) - s))" \
      "$(grep -ciE '(^|[ |])ok([ |]|$)' "$W/kernels.txt") rows ok; table in kernels.txt"
  elif [ "$rc" -lt 128 ]; then
    # Without a GPU the binary only reports that it checked nothing; that is neither a pass nor a fail.
    record "7 cuda_kernels_bench --check" "skipped: no GPU" "$(($(date +%s) - s))" "exit $rc: $(head -1 "$W/kernels.txt")"
  else
    record "7 cuda_kernels_bench --check" "FAIL (crashed, exit $rc)" "$(($(date +%s) - s))" "without a GPU"
  fi
}

cmd_run() {
  local FORCE_BUILD=0 GIVEN_BUNDLE=0
  BUNDLE=$SELF_DIR
  OUT=""
  while [ $# -gt 0 ]; do
    case $1 in
      --out) OUT=$2; shift 2 ;;
      --bundle) BUNDLE=$2 GIVEN_BUNDLE=1; shift 2 ;;
      --budget) BUDGET=$2; shift 2 ;;
      --dry-run) DRY=1; shift ;;
      --force-build) FORCE_BUILD=1; shift ;;
      --steps) STEPS_WANTED=",$2,"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) die "run: unknown argument '$1' (see --help)" ;;
    esac
  done
  [ -n "$OUT" ] || die "run: --out DIR is required"
  [[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -ge 30 ] || die "run: --budget must be a number of seconds >= 30"
  # From the repository, scripts/gpu_check.sh run uses the default bundle .gpu-bundle/.
  [ $GIVEN_BUNDLE = 1 ] || [ -f "$BUNDLE/bin.tar.xz" ] || BUNDLE=$SELF_DIR/../.gpu-bundle
  BUNDLE=$(cd "$BUNDLE" 2>/dev/null && pwd) || die "run: bundle folder not found"
  for f in bin.tar.xz sysroot.tar.gz build-info.txt torch_baseline.py; do
    [ -f "$BUNDLE/$f" ] || die "run: $BUNDLE/$f missing: not a bundle (make one with scripts/gpu_check.sh prepare)"
  done
  mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || die "run: cannot create $OUT"
  W=$(mktemp -d /tmp/gpu_check.XXXXXX) || die "run: mktemp failed"
  trap 'rm -rf "$W"' EXIT
  : >"$OUT/log.txt"
  if [ $DRY = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""
  elif grep -q '^GPU ' <<<"$(nvidia-smi -L 2>/dev/null)"; then
    HAVE_GPU=1
  fi
  # One thread per CPU stand-in in a dry run: OpenMP barriers crawl on a loaded CI machine.
  [ $DRY = 1 ] && export OMP_NUM_THREADS=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(ncpu)}
  setup_env
  # The CPU stand-ins of a dry run train and time this small UNet (the shape of tests/apps_test.cpp's).
  TINY=$W/tiny.json
  cat >"$TINY" <<'EOF2'
{"sample_size": 28, "in_channels": 2, "out_channels": 1, "block_out_channels": [8, 16],
 "layers_per_block": 1, "norm_num_groups": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "num_classes": 10,
 "class_emb_size": 1}
EOF2

  want 1 && step_env
  [ -n "$HEADER" ] || HEADER="## GPU check: $(date -u '+%Y-%m-%d %H:%M UTC')"
  if [ $FORCE_BUILD = 1 ] || ! binaries_start; then
    log "the staged binaries do not start here (or --force-build): $(ldd "$B/fm_bench" 2>&1 | grep 'not found' | tr '\n' ' ')"
    fallback_build
  fi
  want 2 && step_cuda_tests
  want 3 && step_refcheck
  want 4 && step_sanitizer
  want 5 && step_bench
  want 6 && step_train
  want 7 && step_kernels
  write_summary

  # The output contract: at most 8 files, nothing in subfolders.
  local nfiles nested
  nfiles=$(find "$OUT" -mindepth 1 -maxdepth 1 | wc -l)
  nested=$(find "$OUT" -mindepth 2 | wc -l)
  if [ "$nfiles" -gt 8 ] || [ "$nested" -gt 0 ]; then
    echo "gpu_check: output contract broken: $nfiles entries in $OUT (max 8), $nested nested" >>"$OUT/summary.md"
    FAILS=$((FAILS + 1))
  fi
  cat "$OUT/summary.md"
  [ "$FAILS" -eq 0 ]
}

main() {
  case ${1:-} in
    prepare) shift; cmd_prepare "$@" ;;
    run) shift; cmd_run "$@" ;;
    -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}
# One line, so bash has read all of it before it runs: editing this file during a run cannot break the run.
main "$@"; exit $?
