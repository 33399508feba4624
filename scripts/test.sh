#!/usr/bin/env bash
# The test command: installs the Debian packages it needs, configures and builds (the CUDA
# sources too whenever nvcc exists), then runs the whole CTest suite. CUDA tests skip with a
# reason when no GPU is present.
#   bash scripts/test.sh            # build dir: build/
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
export MNIST_DIR="${MNIST_DIR:-$(pwd)/../shared/data/mnist}"
bash scripts/install_deps.sh
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMNIST_DIR="$MNIST_DIR"
ninja -C "$BUILD" -j"$(nproc)"
cd "$BUILD"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ctest --output-on-failure --timeout 1200
