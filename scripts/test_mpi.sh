#!/usr/bin/env bash
# Data-parallel fm_train under OpenMPI against the one-process run (docs/distributed.md), run by ctest as
# Mpi.fm_train_data_parallel when the build has MPI. Usage: scripts/test_mpi.sh BIN_DIR MNIST_DIR
# Checks, on a tiny UNet, 20 steps of global batch 10 over 95 images (so epochs end with a batch of 5):
#  - deterministic mode (--grad-chunk 4): 2 and 3 ranks give bitwise the same metrics.csv losses and
#    checkpoint tensors (weights, EMA, AdamW moments) as one process;
#  - default mode (allreduce): 2 and 3 ranks (uneven shards) match one process to float tolerance;
#  - a checkpoint written by 2 ranks after 10 steps, resumed by 1 process to step 20 (and one written by 1
#    process, resumed by 3 ranks), is bitwise the 20-step one-process run;
#  - a killed rank and a hung rank make the job exit non-zero within the timeout, with a clear message for
#    the hang; the last checkpoint is kept.
# Exit 0 pass, 1 fail, 77 skipped (no mpirun or no MNIST; ctest reports it as skipped).
set -uo pipefail
source "$(dirname "$0")/lib/dist_test_common.sh"
dist_test_setup "$@"
export OMP_NUM_THREADS=1
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
TRAIN=("$BIN/fm_train" --quiet --no-samples --threads 1 --data "$MNIST" --model-config "$T/tiny.json"
       --batch-size 10 --limit 95 --checkpoint-every 5 --seed 7)
S20=(--max-steps 20)
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
run() {  # run NAME CMD...: runs, logs to $T/NAME.log, fails the test on a non-zero exit
  local name=$1; shift
  if ! "$@" >"$T/$name.log" 2>&1; then fail "$name exited non-zero:"; cat "$T/$name.log"; return 1; fi
}
losses() { cut -d, -f1-4,6- "$1/metrics.csv"; }  # all columns but img_per_s (timing)
same_metrics() {  # same_metrics A B WHAT
  if cmp -s <(losses "$1") <(losses "$2"); then pass "$3: metrics.csv losses bitwise equal";
  else fail "$3: metrics.csv differs"; diff <(losses "$1") <(losses "$2") | head -5; fi
}
same_ckpt() {  # same_ckpt A B TOL WHAT
  local out; out=$("$BIN/ckpt_diff" "$1/checkpoint.safetensors" "$2/checkpoint.safetensors" "$3")
  if [ $? -eq 0 ]; then pass "$4: $out"; else fail "$4: $out"; fi
}
close_losses() {  # close_losses A B RELTOL WHAT
  if awk -F, -v tol="$3" 'NR == FNR { if (FNR > 1) a[FNR] = $3; next }
      FNR > 1 { d = $3 - a[FNR]; if (d < 0) d = -d; r = d / (a[FNR] < 0 ? -a[FNR] : a[FNR]);
                if (r > m) m = r; n++ }
      END { printf "max relative loss difference %.3g over %d steps\n", m, n; exit !(n == 20 && m <= tol) }' \
      "$1/metrics.csv" "$2/metrics.csv" >"$T/cl.txt"; then pass "$4: $(cat "$T/cl.txt")";
  else fail "$4: $(cat "$T/cl.txt")"; fi
}

start=$(date +%s)
run c1 "${TRAIN[@]}" "${S20[@]}" --grad-chunk 4 --out "$T/c1"
run p1 "${TRAIN[@]}" "${S20[@]}" --out "$T/p1"
run c2 "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" "${S20[@]}" --grad-chunk 4 --out "$T/c2" && {
  same_metrics "$T/c1" "$T/c2" "deterministic, 2 ranks vs 1"; same_ckpt "$T/c1" "$T/c2" 0 "deterministic, 2 ranks vs 1"; }
run c3 "${MPIRUN[@]}" -np 3 "${TRAIN[@]}" "${S20[@]}" --grad-chunk 4 --out "$T/c3" && {
  same_metrics "$T/c1" "$T/c3" "deterministic, 3 ranks vs 1"; same_ckpt "$T/c1" "$T/c3" 0 "deterministic, 3 ranks vs 1"; }
run p2 "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" "${S20[@]}" --out "$T/p2" && {
# Default mode: the MPI summation order differs from one process, so the weights are equal to float tolerance
# only. AdamW normalises each element's update, so an element whose true gradient is ~0 (the attention key
# biases: softmax ignores them) moves by up to lr = 1e-3 per step on rounding noise alone; 1e-3 after 20 steps
# is 5% of that bound. The losses (which a wrong shard or weight would change at the 1e-2 level) agree to 1e-4.
  close_losses "$T/p1" "$T/p2" 1e-4 "allreduce, 2 ranks vs 1"; same_ckpt "$T/p1" "$T/p2" 1e-3 "allreduce, 2 ranks vs 1"; }
run p3 "${MPIRUN[@]}" -np 3 "${TRAIN[@]}" "${S20[@]}" --out "$T/p3" && {
  close_losses "$T/p1" "$T/p3" 1e-4 "allreduce, 3 uneven ranks vs 1"; same_ckpt "$T/p1" "$T/p3" 1e-3 "allreduce, 3 uneven ranks vs 1"; }
# Rank 0 alone writes: one metrics row per step, no stray files from other ranks.
rows=$(($(wc -l <"$T/c3/metrics.csv") - 1))
[ "$rows" -eq 20 ] && pass "3 ranks: metrics.csv has 20 rows" || fail "3 ranks: metrics.csv has $rows rows, not 20"
# Resume with another rank count: 2 ranks to step 10, then 1 process to step 20.
run r2 "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --grad-chunk 4 --max-steps 10 --out "$T/r" &&
  run r1 "$BIN/fm_train" --quiet --threads 1 --resume "$T/r/checkpoint.safetensors" --max-steps 20 && {
    same_metrics "$T/c1" "$T/r" "resume 2 ranks -> 1"; same_ckpt "$T/c1" "$T/r" 0 "resume 2 ranks -> 1"; }
# ... and the other way: 1 process to step 10, then 3 ranks to step 20.
run q1 "${TRAIN[@]}" --grad-chunk 4 --max-steps 10 --out "$T/q" &&
  run q3 "${MPIRUN[@]}" -np 3 "$BIN/fm_train" --quiet --threads 1 --resume "$T/q/checkpoint.safetensors" \
    --max-steps 20 && {
    same_metrics "$T/c1" "$T/q" "resume 1 -> 3 ranks"; same_ckpt "$T/c1" "$T/q" 0 "resume 1 -> 3 ranks"; }
# Ranks that do not start from the same point (here: another --lr on rank 1, an MPMD launch) are refused.
if "${MPIRUN[@]}" -np 1 "${TRAIN[@]}" "${S20[@]}" --out "$T/mm" : -np 1 "${TRAIN[@]}" "${S20[@]}" --out "$T/mm" \
     --lr 0.002 >"$T/mm.log" 2>&1; then fail "ranks with different --lr were accepted";
elif grep -q "rank 1: fm_train: this rank's starting point .* differs from rank 0's" "$T/mm.log"; then
  pass "ranks with different --lr: refused with a message";
else fail "ranks with different --lr: no clear message"; tail -5 "$T/mm.log"; fi
# Faults: rank 1 killed (SIGKILL) before step 8, or hung before step 8; timeout 5 s.
for fault in kill hang; do
  t0=$(date +%s)
  timeout 60 "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" "${S20[@]}" --grad-chunk 4 --out "$T/$fault" --dist-timeout 5 \
    --debug-fault "$fault" --debug-fault-rank 1 --debug-fault-step 8 >"$T/$fault.log" 2>&1
  rc=$? dt=$(($(date +%s) - t0))
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$dt" -le 40 ]; then pass "$fault rank 1: job exited $rc after ${dt}s";
  else fail "$fault rank 1: exit $rc after ${dt}s"; tail -5 "$T/$fault.log"; fi
  if [ "$fault" = hang ]; then
    grep -q "rank 0 of 2: .*did not complete within 5 s" "$T/hang.log" && pass "hang: rank 0 names the timeout" ||
      { fail "hang: no timeout message"; tail -5 "$T/hang.log"; }
  fi
  # The checkpoint of step 5 is kept and is a complete training checkpoint that resumes.
  "$BIN/fm_train" --quiet --threads 1 --resume "$T/$fault/checkpoint.safetensors" --max-steps 6 >"$T/$fault.resume.log" 2>&1 &&
    pass "$fault: the step-5 checkpoint was kept and resumes" || { fail "$fault: checkpoint not resumable"; cat "$T/$fault.resume.log"; }
done
echo "test_mpi.sh: $fails failure(s) in $(($(date +%s) - start)) s"
[ "$fails" -eq 0 ]
