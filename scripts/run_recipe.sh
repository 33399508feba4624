#!/usr/bin/env bash
# One command for the main job: installs the Debian packages, builds, trains the flow-matching
# model on MNIST with fm_train, then samples a 10-row grid with fm_sample.
#   bash scripts/run_recipe.sh            # the full reference recipe (10 epochs, batch 128; GPU if present)
#   bash scripts/run_recipe.sh --quick    # a short CPU-friendly run (batch 32, 300 steps)
# Extra arguments after the mode go to fm_train (e.g. --device cpu, --out DIR).
# MNIST comes from $MNIST_DIR, else the first of data/mnist and ../shared/data/mnist that holds the four
# IDX files (fm_train's lookup; scripts/download_mnist.sh data/mnist fetches them). Checked before building.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=full
if [ "${1:-}" = "--quick" ]; then MODE=quick; shift; fi
has_mnist() {
  local f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$1/$f" ] || [ -f "$1/$f.gz" ] || return 1
  done
}
if [ -n "${MNIST_DIR:-}" ]; then
  DATA=$MNIST_DIR
  has_mnist "$DATA" || { echo "MNIST_DIR='$DATA' does not hold the four MNIST IDX files" >&2; exit 1; }
else
  DATA=""
  for d in data/mnist ../shared/data/mnist; do
    if has_mnist "$d"; then DATA=$d; break; fi
    [ -d "$d" ] && echo "note: skipping '$d': it lacks some of the four MNIST IDX files" >&2
  done
  if [ -z "$DATA" ]; then
    echo "MNIST not found: tried data/mnist and ../shared/data/mnist (each needs the four IDX files);" \
      "run scripts/download_mnist.sh data/mnist or set MNIST_DIR" >&2
    exit 1
  fi
fi
echo "MNIST from $DATA"
bash scripts/install_deps.sh
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
ninja -C build fm_train fm_sample
OUT=runs/fm
[ "$MODE" = quick ] && OUT=runs/fm_quick
if [ "$MODE" = quick ]; then
  ARGS=(--batch-size 32 --max-steps 300 --checkpoint-every 100 --sample-every 0)
else
  ARGS=()
fi
# OpenMP waiting: the apps' default (a ~10 us bounded spin, then sleep; docs/apps.md "Threads") unless
# OMP_WAIT_POLICY or GOMP_SPINCOUNT is set in the environment.
time build/bin/fm_train --data "$DATA" --out "$OUT" "${ARGS[@]}" "$@"
time build/bin/fm_sample --checkpoint "$OUT/checkpoint.safetensors" --out "$OUT/grid.png"
echo "grid written to $OUT/grid.png; loss curve $OUT/loss.png, loss per noise level $OUT/loss_sigma.png"
