#!/usr/bin/env bash
# Stages under .deps/ (git-ignored) what scripts/gpu_check.sh needs on a GPU machine with no network
# and no Debian dev packages:
#   .deps/googletest/         GoogleTest sources (Debian's /usr/src/googletest), built there by gpu_check.sh
#   .deps/mnist/              the MNIST IDX files (from ../shared/data/mnist, or $MNIST_SRC)
#   .deps/sysroot.tar.gz      a relocatable prefix of this host's build dependencies: OpenBLAS (+ its
#                             libgfortran/libquadmath), nlohmann_json, CLI11, stb, zlib and Google
#                             Benchmark (headers, libraries, CMake configs); gpu_check.sh uses each
#                             only where the GPU machine lacks it.
# Carry `.deps` with the run (about 30 MB). Usage: scripts/prepare_gpu_deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS=$ROOT/.deps
MNIST_SRC=${MNIST_SRC:-$ROOT/../shared/data/mnist}
ARCHLIB=/usr/lib/x86_64-linux-gnu
mkdir -p "$DEPS"

note() { echo "prepare_gpu_deps: $*"; }

# ---- GoogleTest sources
if [ -f /usr/src/googletest/CMakeLists.txt ]; then
  rm -rf "$DEPS/googletest"
  cp -r /usr/src/googletest "$DEPS/googletest"
  note "googletest sources -> .deps/googletest"
else
  note "WARNING: /usr/src/googletest not found (apt-get install googletest); CUDA tests cannot be built"
fi

# ---- MNIST
if [ -d "$MNIST_SRC" ]; then
  mkdir -p "$DEPS/mnist"
  find "$MNIST_SRC" -maxdepth 1 -type f \( -name '*-ubyte' -o -name '*-ubyte.gz' \) -exec cp {} "$DEPS/mnist/" \;
  note "MNIST ($(find "$DEPS/mnist" -type f | wc -l) files) -> .deps/mnist"
else
  note "WARNING: MNIST not found at $MNIST_SRC"
fi

# ---- sysroot: copy a file to PREFIX/DEST, resolving symlinks, then recreate the given link names.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/sysroot
mkdir -p "$P/include" "$P/lib" "$P/share/cmake"
put_lib() {  # put_lib SRC DESTDIR REALNAME [LINK...]
  local src=$1 dest=$2 name=$3
  shift 3
  [ -e "$src" ] || { note "WARNING: missing $src"; return 0; }
  mkdir -p "$dest"
  cp -L "$src" "$dest/$name"
  for l in "$@"; do ln -sf "$name" "$dest/$l"; done
}
put_dir() {  # put_dir SRC DEST
  [ -d "$1" ] || { note "WARNING: missing $1"; return 0; }
  mkdir -p "$(dirname "$2")"
  cp -rL "$1" "$2"
}

# OpenBLAS (OpenMP flavour): headers in include/openblas, library in lib/.
OB_INC=/usr/include/x86_64-linux-gnu/openblas-openmp
OB_LIB=$ARCHLIB/openblas-openmp
if [ -d "$OB_INC" ]; then
  put_dir "$OB_INC" "$P/include/openblas"
  put_lib "$OB_LIB/libopenblas.so.0" "$P/lib" libopenblas.so.0 libopenblas.so
  put_lib "$(readlink -f $ARCHLIB/libgfortran.so.5)" "$P/lib" libgfortran.so.5
  put_lib "$(readlink -f $ARCHLIB/libquadmath.so.0)" "$P/lib" libquadmath.so.0
fi
# Header-only libraries with relocatable CMake configs (prefix = three levels above the config).
put_dir /usr/include/nlohmann "$P/include/nlohmann"
put_dir /usr/share/cmake/nlohmann_json "$P/share/cmake/nlohmann_json"
put_dir /usr/include/CLI "$P/include/CLI"
put_dir /usr/share/cmake/CLI11 "$P/share/cmake/CLI11"
put_dir /usr/include/stb "$P/include/stb"
# zlib: link-time only (every system has the libz.so.1 runtime), so it stays off LD_LIBRARY_PATH.
mkdir -p "$P/include/zlib"
cp -L /usr/include/zlib.h /usr/include/zconf.h "$P/include/zlib/" 2>/dev/null || note "WARNING: zlib headers missing"
put_lib "$(readlink -f $ARCHLIB/libz.so.1)" "$P/lib/zlib" libz.so.1 libz.so
# Google Benchmark (its CMake config expects PREFIX/lib/x86_64-linux-gnu/...).
if [ -f "$ARCHLIB/cmake/benchmark/benchmarkConfig.cmake" ]; then
  put_dir /usr/include/benchmark "$P/include/benchmark"
  put_dir "$ARCHLIB/cmake/benchmark" "$P/lib/x86_64-linux-gnu/cmake/benchmark"
  BM=$(readlink -f $ARCHLIB/libbenchmark.so)
  put_lib "$BM" "$P/lib/x86_64-linux-gnu" "$(basename "$BM")" libbenchmark.so.1debian libbenchmark.so
  cp -L "$ARCHLIB/libbenchmark_main.a" "$P/lib/x86_64-linux-gnu/" 2>/dev/null || true
  note "Google Benchmark (prebuilt $(basename "$BM")) staged"
else
  note "Google Benchmark not installed here: gpu_check.sh will build with -DENGINE_BENCH=OFF"
fi
tar -C "$STAGE" -czf "$DEPS/sysroot.tar.gz" sysroot
note "sysroot -> .deps/sysroot.tar.gz ($(du -h "$DEPS/sysroot.tar.gz" | cut -f1))"
note "total .deps: $(du -sh "$DEPS" | cut -f1)"
