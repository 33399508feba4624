#!/usr/bin/env bash
# compare_torch.sh: the engine (build/bin/fm_bench) against PyTorch + diffusers (bench/torch_baseline.py, any of
# its modes) on the same machine, same device, batch and threads; prints a ratio table.
# Usage: bench/compare_torch.sh [--device cpu|cuda] [--batch 128] [--threads N] [--quick] [--precision fp32|bf16]
#                               [--iters N] [--warmup N] [--sample-iters N] [--sample-batch N]
#                               [--modes eager,eager-tf32,compile,compile-tf32,compile-ro | --mode both]
#                               [--out DIR] [--bin DIR]
# Writes DIR/fm_bench.json, DIR/torch_baseline.json (default DIR: out/compare_<device>) and prints
# ours vs eager vs compile: train img/s, ms/step, peak memory, sample img/s, with ratios ours / torch
# (> 1 = ours faster for throughput; < 1 = ours smaller/faster for ms and memory). --precision goes to our
# side only (fm_bench; PyTorch runs its own modes, e.g. eager-tf32).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=cpu BATCH=128 THREADS="" QUICK="" MODES=eager,compile OUT="" BIN="$ROOT/build/bin"
EXTRA=() OURS=()
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --quick) QUICK=--quick; shift ;;
    --mode) MODES=${2/both/eager,compile}; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --precision) OURS+=(--precision "$2"); shift 2 ;;
    --iters | --warmup | --sample-iters | --sample-batch) EXTRA+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "compare_torch.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/out/compare_$DEVICE}
mkdir -p "$OUT"
COMMON=(--device "$DEVICE" --batch "$BATCH" ${QUICK:+$QUICK} "${EXTRA[@]}")
if [ -n "$THREADS" ]; then
  COMMON+=(--threads "$THREADS")
  export OMP_NUM_THREADS=$THREADS
fi

if [ ! -x "$BIN/fm_bench" ]; then
  echo "compare_torch.sh: $BIN/fm_bench not found (build it, or pass --bin DIR)" >&2
  exit 2
fi
echo "== engine: $BIN/fm_bench ${COMMON[*]} ${OURS[*]}"
"$BIN/fm_bench" "${COMMON[@]}" "${OURS[@]}" --json "$OUT/fm_bench.json"

# A private inductor cache: a shared /tmp/torchinductor_* written by another process can be half-written
# ("file too short" on import).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor_cache}
echo "== pytorch: bench/torch_baseline.py ${COMMON[*]} --modes $MODES"
if python3 -c "import torch" 2>/dev/null; then
  python3 "$ROOT/bench/torch_baseline.py" "${COMMON[@]}" --modes "$MODES" --json "$OUT/torch_baseline.json" ||
    echo "compare_torch.sh: torch_baseline.py failed" >&2
else
  echo "compare_torch.sh: torch is not importable; PyTorch columns will be empty" >&2
fi

python3 - "$OUT/fm_bench.json" "$OUT/torch_baseline.json" <<'EOF'
import json, os, sys

ours = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {}
cols = [("engine", ours.get("engine", {}))]
for mode, r in torch.items():
    if mode != "meta" and isinstance(r, dict):
        cols.append(("torch " + mode, r))
m = ours["meta"]
tm = torch.get("meta", {})
print(f"\ndevice {m['device']} ({m['device_name']}), batch {m['batch']}, threads {m['threads']}, "
      f"iters {m['iters']} (warmup {m['warmup']}), sample_batch {m['sample_batch']}"
      + (f"; torch {tm.get('torch')} diffusers {tm.get('diffusers')} attn {tm.get('attn')}" if tm else ""))
rows = [("train img/s", "train_img_per_s", 1, "{:.1f}", True),
        ("train ms/step", "train_ms_per_step", 1, "{:.1f}", False),
        ("peak memory MiB", "peak_mem_bytes", 2**-20, "{:.0f}", False),
        ("sample80 img/s", "sample80_img_per_s", 1, "{:.2f}", True),
        (f"sample{m['sample_batch']} img/s", "sample_large_img_per_s", 1, "{:.2f}", True)]

def val(r, key):
    v = r.get(key)
    return None if v is None or "error" in r else float(v)

head = f"{'metric':18s}" + "".join(f"{c[0]:>20s}" for c in cols)
head += "".join(f"{'ours/' + c[0].split()[1]:>20s}" for c in cols[1:])
print(head)
for label, key, scale, fmt, _ in rows:
    line = f"{label:18s}"
    vals = [val(r, key) for _, r in cols]
    for v in vals:
        line += f"{(fmt.format(v * scale) if v is not None else '-'):>20s}"
    for v in vals[1:]:
        line += f"{(f'{vals[0] / v:.2f}x' if v and vals[0] is not None else '-'):>20s}"
    print(line)
for name, r in cols:
    if "error" in r:
        print(f"{name}: {r['error']}")
    if "compile_s" in r:
        print(f"{name}: first step (compilation) took {r['compile_s']:.1f} s")
print("ratios are ours / torch: > 1 means ours is higher (better for img/s, worse for ms/step and memory).")
print("CPU peak memory is the process's peak RSS (torch's includes the Python + torch runtime).")
EOF
