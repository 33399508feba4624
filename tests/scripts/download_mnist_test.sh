#!/usr/bin/env bash
# Tests scripts/download_mnist.sh without a network: mirrors are file:// folders (MNIST_MIRRORS). A failed
# download must leave no folder or file behind; a pre-existing folder is kept; a good mirror verifies.
# Usage: tests/scripts/download_mnist_test.sh [MNIST_DIR]  (the success case needs the real .gz files)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCRIPT="$ROOT/scripts/download_mnist.sh"
MNIST=${1:-}
source "$(dirname "$0")/check_lib.sh"  # $T, check, fail

# 1. No mirror reachable: exit 1, and neither data/mnist nor data/ is left behind.
(cd "$T" && MNIST_MIRRORS="file://$T/no_such_mirror" bash "$SCRIPT" data/mnist > out1.txt 2>&1)
rc=$?
check "unreachable mirror exits 1 (got $rc)" test "$rc" -eq 1
check "no data/ folder left behind" test ! -e "$T/data"
check "message says what was removed" grep -q "removed the partial download" "$T/out1.txt"

# 2. A folder that existed before is kept (and stays empty).
mkdir -p "$T/pre/mnist"
(cd "$T" && MNIST_MIRRORS="file://$T/no_such_mirror" bash "$SCRIPT" pre/mnist > out2.txt 2>&1)
check "pre-existing folder kept" test -d "$T/pre/mnist"
check "pre-existing folder left empty" test -z "$(ls -A "$T/pre/mnist")"

if [[ -n "$MNIST" && -f "$MNIST/train-images-idx3-ubyte.gz" ]]; then
  # 3. A mirror with only the two train files: those two are fetched, then the run fails and removes them.
  mkdir -p "$T/half"
  cp "$MNIST"/train-*-ubyte.gz "$T/half/"
  (cd "$T" && MNIST_MIRRORS="file://$T/half" bash "$SCRIPT" d3/mnist > out3.txt 2>&1)
  rc=$?
  check "partial mirror exits 1 (got $rc)" test "$rc" -eq 1
  check "fetched files removed after the failure" test ! -e "$T/d3"
  # 4. A complete mirror: all four verify.
  (cd "$T" && MNIST_MIRRORS="file://$MNIST" bash "$SCRIPT" d4/mnist > out4.txt 2>&1)
  rc=$?
  check "complete mirror exits 0 (got $rc)" test "$rc" -eq 0
  check "four files present" test "$(ls "$T/d4/mnist" | wc -l)" -eq 4
else
  echo "FAIL MNIST .gz files not found in '$MNIST' (pass the MNIST directory)"
  fail=1
fi
exit $fail
