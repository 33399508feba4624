# Sourced by the tests/scripts/*_test.sh scripts: a scratch folder $T removed at exit, and
# `check DESCRIPTION CONDITION...`, which prints "ok" or "FAIL" per condition and sets fail=1 on a failure
# (the script ends with `exit $fail`).
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() {
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
