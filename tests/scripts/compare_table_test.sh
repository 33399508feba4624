#!/usr/bin/env bash
# Tests bench/compare_table.py (the ratio table of bench/compare_torch.sh) on hand-written round files, and
# bench/compare_torch.sh --rounds with the build's fm_bench and PyTorch hidden (so it runs in seconds and
# never depends on a torch install): medians and ratios of medians, each round's ratios, empty PyTorch
# columns, one-line errors with exit 2 for bad input. Exit 77 (skipped) without python3.
# Usage: tests/scripts/compare_table_test.sh BIN_DIR  (the folder holding fm_bench)
set -uo pipefail
BIN=${1:?usage: compare_table_test.sh BIN_DIR}
REAL_PY=$(command -v python3) || { echo "python3 not found: skipped"; exit 77; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$(dirname "$0")/check_lib.sh"  # $T, check, fail

# round DIR OURS_MS OURS_SAMPLE TORCH_MS TORCH_SAMPLE: one round's two JSON files (TORCH_MS "-": none;
# BATCH=N in the environment: another batch in the engine's meta).
round() {
  mkdir -p "$1"
  cat > "$1/fm_bench.json" <<EOF
{"meta": {"device": "cpu", "device_name": "test cpu", "batch": ${BATCH:-16}, "threads": 2, "iters": 3,
          "warmup": 1, "sample_batch": 0, "precision": "fp32", "sample_small_images": 80},
 "engine": {"train_ms_per_step": $2, "train_img_per_s": $(( 16000 / $2 )), "peak_mem_bytes": 104857600,
            "sample80_img_per_s": $3, "sample_large_img_per_s": null}}
EOF
  [ "$4" = - ] && return
  cat > "$1/torch_baseline.json" <<EOF
{"meta": {"torch": "2.x", "diffusers": "0.x", "attn": "sdpa"},
 "eager": {"train_ms_per_step": $4, "train_img_per_s": 1.0, "peak_mem_bytes": 209715200,
           "sample80_img_per_s": $5, "sample_large_img_per_s": null}}
EOF
}

# 1. Three rounds: the medians (ours 200 of 100/300/200, torch 500 of 400/600/500) and their ratio, and
#    each round's own ratios.
round "$T/r1" 100 8 400 4
round "$T/r2" 300 6 600 3
round "$T/r3" 200 7 500 5
"$REAL_PY" "$ROOT/bench/compare_table.py" "$T/r1" "$T/r2" "$T/r3" > "$T/out1.txt" 2>&1
rc=$?
cat "$T/out1.txt"
check "three rounds exit 0 (got $rc)" test "$rc" -eq 0
check "says median of 3 rounds" grep -q "median of 3 rounds" "$T/out1.txt"
check "ms/step medians and their ratio" grep -Eq "^train ms/step +200\.0 +500\.0 +0\.40x$" "$T/out1.txt"
check "sample80 medians and their ratio" grep -Eq "^sample80 img/s +7\.00 +4\.00 +1\.75x$" "$T/out1.txt"
check "peak memory in MiB" grep -Eq "^peak memory MiB +100 +200 +0\.50x$" "$T/out1.txt"
check "each round's ms/step ratio" grep -Eq "train ms/step +vs torch eager +0\.25x 0\.50x 0\.40x$" "$T/out1.txt"
check "each round's sample80 ratio" grep -Eq "sample80 img/s +vs torch eager +2\.00x 2\.00x 1\.40x$" "$T/out1.txt"

# 2. One round without PyTorch: the engine column alone, no per-round block.
round "$T/solo" 250 9 -
"$REAL_PY" "$ROOT/bench/compare_table.py" "$T/solo" > "$T/out2.txt" 2>&1
rc=$?
check "one round without torch exits 0 (got $rc)" test "$rc" -eq 0
check "engine value shown" grep -Eq "^train ms/step +250\.0$" "$T/out2.txt"
check "no per-round block for one round" bash -c "! grep -q 'per round' '$T/out2.txt'"

# 2b. A round without PyTorch among rounds with it: the engine's median over all rounds, each ratio over
#     the paired rounds only (ours 100 and 200 against 400 and 500: 150 / 450).
round "$T/p1" 100 8 400 4
round "$T/p2" 300 6 -
round "$T/p3" 200 7 500 5
"$REAL_PY" "$ROOT/bench/compare_table.py" "$T/p1" "$T/p2" "$T/p3" > "$T/outp.txt" 2>&1
check "paired rounds: engine median of all, ratio over the paired" \
  grep -Eq "^train ms/step +200\.0 +450\.0 +0\.33x$" "$T/outp.txt"
check "paired rounds: the unpaired round's ratio is -" grep -Eq "vs torch eager +0\.25x - 0\.40x$" "$T/outp.txt"

# 2c. PyTorch's large sampling run is shown only when it sampled our number of images (sample_batch).
for sb in 0 128; do
  round "$T/l$sb" 100 8 400 4
  sed -i "s/\"attn\": \"sdpa\"/\"attn\": \"sdpa\", \"sample_batch\": $sb/; s/\"sample_large_img_per_s\": null}}/\"sample_large_img_per_s\": 2.5}}/" \
    "$T/l$sb/torch_baseline.json"
  "$REAL_PY" "$ROOT/bench/compare_table.py" "$T/l$sb" > "$T/outl$sb.txt" 2>&1
done
check "large sampling run at our size shown" grep -Eq "^sample0 img/s +- +2\.50 +-$" "$T/outl0.txt"
check "large sampling run at another size hidden" grep -Eq "^sample0 img/s +- +- +-$" "$T/outl128.txt"

# 3. Bad input: one line on stderr, exit 2.
bad() {  # bad DESCRIPTION EXPECTED_MESSAGE ROUND_DIR...: compare_table.py must exit 2 with one line
  local what=$1 msg=$2
  shift 2
  "$REAL_PY" "$ROOT/bench/compare_table.py" "$@" > "$T/bad.txt" 2>&1
  local rc=$?
  check "$what exits 2 (got $rc)" test "$rc" -eq 2
  check "$what: one line" test "$(wc -l < "$T/bad.txt")" -eq 1
  check "$what: says '$msg'" grep -q "$msg" "$T/bad.txt"
}
round "$T/b1" 100 8 400 4
sed -i 's/"train_ms_per_step": 100/"train_ms_per_step": "abc"/' "$T/b1/fm_bench.json"
bad "a string metric" "is not a finite number or null" "$T/b1"
round "$T/b2" 100 8 400 4
sed -i 's/"train_ms_per_step": 400/"train_ms_per_step": NaN/' "$T/b2/torch_baseline.json"
bad "a NaN metric" "NaN is not a number" "$T/b2"
round "$T/b3" 100 8 400 4
sed -i 's/"train_ms_per_step": 100/"train_ms_per_step": [1]/' "$T/b3/fm_bench.json"
bad "a list metric" "is not a finite number or null" "$T/b3"
mkdir -p "$T/b4" && echo '{"meta": {}, "engine": {}}' > "$T/b4/fm_bench.json"
bad "meta without its keys" "meta lacks device" "$T/b4"
mkdir -p "$T/b5" && echo '{"meta": {"device": "cpu"}, "engine": null}' > "$T/b5/fm_bench.json"
bad "a null engine" "no 'meta' / 'engine' objects" "$T/b5"
mkdir -p "$T/b6" && printf '\377{' > "$T/b6/fm_bench.json"
bad "a file that is not UTF-8" "b6/fm_bench.json" "$T/b6"
BATCH=128 round "$T/b7" 100 8 400 4
bad "rounds of different batches" "different setups" "$T/r1" "$T/b7"
mkdir -p "$T/empty"
"$REAL_PY" "$ROOT/bench/compare_table.py" "$T/empty" > "$T/out3.txt" 2>&1
rc=$?
check "missing fm_bench.json exits 2 (got $rc)" test "$rc" -eq 2
check "missing file named" grep -q "empty/fm_bench.json not found" "$T/out3.txt"
check "missing file: one line" test "$(wc -l < "$T/out3.txt")" -eq 1
echo '{"meta": ' > "$T/empty/fm_bench.json"
"$REAL_PY" "$ROOT/bench/compare_table.py" "$T/empty" > "$T/out4.txt" 2>&1
rc=$?
check "malformed JSON exits 2 (got $rc)" test "$rc" -eq 2
for bad in 0 101 abc -1 010 99999999999999999999; do
  bash "$ROOT/bench/compare_torch.sh" --rounds "$bad" --bin "$BIN" --out "$T/never" > "$T/out5.txt" 2>&1
  rc=$?
  check "--rounds $bad exits 2 (got $rc)" test "$rc" -eq 2
  check "--rounds $bad says why" grep -q "rounds must be a whole number from 1 to 100" "$T/out5.txt"
done
check "nothing written for a bad --rounds" test ! -e "$T/never"
bash "$ROOT/bench/compare_torch.sh" --bin "$BIN" --rounds > "$T/out7.txt" 2>&1
rc=$?
check "an option without its value exits 2 (got $rc)" test "$rc" -eq 2
check "an option without its value says so" grep -q "rounds needs a value" "$T/out7.txt"

# 4. compare_torch.sh --rounds 2 with the real fm_bench (--quick) and PyTorch hidden by a python3 that
#    cannot import torch: two round folders, the engine's medians, no stale PyTorch file.
if [ -x "$BIN/fm_bench" ]; then
  mkdir -p "$T/shim" "$T/cmp/round1"
  cat > "$T/shim/python3" <<EOF
#!/usr/bin/env bash
if [ "\${1:-}" = -c ] && [ "\${2:-}" = "import torch" ]; then exit 1; fi
exec "$REAL_PY" "\$@"
EOF
  chmod +x "$T/shim/python3"
  echo '{"stale": {}}' > "$T/cmp/round1/torch_baseline.json"
  PATH="$T/shim:$PATH" OMP_NUM_THREADS=2 bash "$ROOT/bench/compare_torch.sh" --quick --batch 8 --rounds 2 \
    --threads 2 --bin "$BIN" --out "$T/cmp" > "$T/out6.txt" 2>&1
  rc=$?
  tail -12 "$T/out6.txt"
  check "compare_torch.sh --rounds 2 exits 0 (got $rc)" test "$rc" -eq 0
  check "round folders written" test -s "$T/cmp/round1/fm_bench.json" -a -s "$T/cmp/round2/fm_bench.json"
  check "stale PyTorch result removed" test ! -e "$T/cmp/round1/torch_baseline.json"
  check "table of 2 rounds" grep -q "median of 2 rounds" "$T/out6.txt"
  check "engine ms/step shown" grep -Eq "^train ms/step +[0-9]+\.[0-9]$" "$T/out6.txt"
  check "the quick run's sample10 shown" grep -Eq "^sample10 img/s +[0-9]+\.[0-9]{2}$" "$T/out6.txt"
  check "no per-round block without torch" bash -c "! grep -q 'per round' '$T/out6.txt'"
else
  echo "FAIL $BIN/fm_bench not found"
  fail=1
fi
exit $fail
