#!/usr/bin/env python3
"""compare_table.py: the ratio table of bench/compare_torch.sh, from one or more rounds.

Usage: bench/compare_table.py ROUND_DIR [ROUND_DIR ...]

Each ROUND_DIR holds fm_bench.json (the engine; required) and torch_baseline.json (PyTorch; optional: its
columns are then empty). All rounds must come from the same setup (fm_bench's meta: device, batch,
threads, iteration counts, precision). With one round the table shows its values; with several, every
cell is the median over the rounds that have the value, each ratio is the ratio of the two columns'
medians over the rounds that have both (paired rounds), and a second block lists each round's ratios for
train ms/step and sample80 (sample10 with fm_bench --quick). The host's run-to-run noise is as large as
the margins we quote, so a single run can land on either side of a target: quote the medians.
Ratios are ours / torch. Bad input (a missing or malformed file, a metric that is not a finite number or
null, rounds of different setups): one line on stderr, exit status 2.
"""
import json
import math
import os
import statistics
import sys

# fm_bench meta keys that must agree between rounds, and must be present.
SETUP_KEYS = ("device", "device_name", "batch", "threads", "iters", "warmup", "sample_batch")
METRICS = ("train_img_per_s", "train_ms_per_step", "peak_mem_bytes", "sample_large_img_per_s")


def die(msg):
    print(f"compare_table.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path, required):
    if not os.path.exists(path):
        if required:
            die(f"{path} not found")
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, parse_constant=lambda c: die(f"{path}: {c} is not a number"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        die(f"{path}: {str(e).splitlines()[0]}")
    if not isinstance(data, dict):
        die(f"{path}: expected a JSON object")
    return data


def check_metrics(path, name, r, small):
    """r's metrics are null or finite numbers ("error" entries carry a message instead)."""
    if not isinstance(r, dict):
        die(f"{path}: '{name}' is not an object")
    if "error" in r:
        return
    for key in METRICS + (f"sample{small}_img_per_s", "compile_s"):
        v = r.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            die(f"{path}: '{name}'.{key} = {json.dumps(v)} is not a finite number or null")


def load_round(d):
    """(ours, torch) of one round, validated."""
    path = os.path.join(d, "fm_bench.json")
    ours = load(path, True)
    meta = ours.get("meta")
    if not isinstance(meta, dict) or not isinstance(ours.get("engine"), dict):
        die(f"{path}: no 'meta' / 'engine' objects (not written by fm_bench --json)")
    missing = [k for k in SETUP_KEYS if k not in meta]
    if missing:
        die(f"{path}: meta lacks {', '.join(missing)}")
    small = meta.get("sample_small_images", 80)
    if not isinstance(small, int) or isinstance(small, bool):
        die(f"{path}: meta.sample_small_images is not a whole number")
    check_metrics(path, "engine", ours["engine"], small)
    tpath = os.path.join(d, "torch_baseline.json")
    torch = load(tpath, False)
    if "meta" in torch and not isinstance(torch["meta"], dict):
        die(f"{tpath}: 'meta' is not an object")
    for mode, r in torch.items():
        if mode != "meta":
            check_metrics(tpath, mode, r, small)
    return ours, torch


def columns(ours, torch):
    """[(name, metrics)] for one round: the engine, then each PyTorch mode."""
    cols = [("engine", ours["engine"])]
    for mode, r in torch.items():
        if mode != "meta":
            cols.append(("torch " + mode, r))
    return cols


def value(r, key):
    v = r.get(key)
    return None if v is None or "error" in r else float(v)


def median_or_none(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main(argv):
    if len(argv) < 2:
        die("usage: compare_table.py ROUND_DIR [ROUND_DIR ...]")
    dirs = argv[1:]
    rounds = [load_round(d) for d in dirs]
    m = rounds[0][0]["meta"]
    setup = {k: m.get(k) for k in SETUP_KEYS + ("precision", "sample_iters", "sample_small_images")}
    for d, (ours, _) in zip(dirs[1:], rounds[1:]):
        for k, v in setup.items():
            if ours["meta"].get(k) != v:
                die(f"{d} ran with {k} = {ours['meta'].get(k)!r}, {dirs[0]} with {v!r}: "
                    "rounds of different setups cannot be combined")
    names = []  # column names in first-seen order
    for ours, torch in rounds:
        for name, _ in columns(ours, torch):
            if name not in names:
                names.append(name)
    tm = next((t["meta"] for _, t in rounds if "meta" in t), {})
    n = len(rounds)
    small = m.get("sample_small_images", 80)  # fm_bench --quick samples 10 images (PyTorch: 80, then "-")
    print(f"\ndevice {m['device']} ({m['device_name']}), batch {m['batch']}, threads {m['threads']}, "
          f"iters {m['iters']} (warmup {m['warmup']}), sample_batch {m['sample_batch']}"
          + (f"; torch {tm.get('torch')} diffusers {tm.get('diffusers')} attn {tm.get('attn')}" if tm else "")
          + (f"; median of {n} rounds" if n > 1 else ""))
    rows = [("train img/s", "train_img_per_s", 1, "{:.1f}"),
            ("train ms/step", "train_ms_per_step", 1, "{:.1f}"),
            ("peak memory MiB", "peak_mem_bytes", 2**-20, "{:.0f}"),
            (f"sample{small} img/s", f"sample{small}_img_per_s", 1, "{:.2f}"),
            (f"sample{m['sample_batch']} img/s", "sample_large_img_per_s", 1, "{:.2f}")]

    def per_round(name, key):  # the column's value in each round (None where absent)
        def one(o, t):
            # PyTorch's large sampling run counts only at our size (its --quick picks its own).
            if (key == "sample_large_img_per_s" and name != "engine"
                    and t.get("meta", {}).get("sample_batch") != m["sample_batch"]):
                return None
            return value(dict(columns(o, t)).get(name, {}), key)
        return [one(o, t) for o, t in rounds]

    def paired_ratio(ours_vals, theirs):  # median(ours) / median(theirs) over the rounds that have both
        pairs = [(o, t) for o, t in zip(ours_vals, theirs) if o is not None and t]
        if not pairs:
            return None
        return statistics.median(o for o, _ in pairs) / statistics.median(t for _, t in pairs)

    head = f"{'metric':18s}" + "".join(f"{c:>20s}" for c in names)
    head += "".join(f"{'ours/' + c.split()[1]:>20s}" for c in names[1:])
    print(head)
    for label, key, scale, fmt in rows:
        line = f"{label:18s}"
        for name in names:
            v = median_or_none(per_round(name, key))
            line += f"{(fmt.format(v * scale) if v is not None else '-'):>20s}"
        ours_vals = per_round("engine", key)
        for name in names[1:]:
            r = paired_ratio(ours_vals, per_round(name, key))
            line += f"{(f'{r:.2f}x' if r is not None else '-'):>20s}"
        print(line)
    if n > 1 and len(names) > 1:
        print("per round, ours / torch:")
        for label, key in (("train ms/step", "train_ms_per_step"),
                           (f"sample{small} img/s", f"sample{small}_img_per_s")):
            ours_vals = per_round("engine", key)
            for name in names[1:]:
                cells = [f"{o / t:.2f}x" if o is not None and t else "-"
                         for o, t in zip(ours_vals, per_round(name, key))]
                print(f"  {label:16s} vs {name:14s} " + " ".join(cells))
    for d, (ours, torch) in zip(dirs, rounds):
        where = f" ({d})" if n > 1 else ""
        for name, r in columns(ours, torch):
            if "error" in r:
                print(f"{name}{where}: {r['error']}")
            if r.get("compile_s") is not None:
                print(f"{name}{where}: first step (compilation) took {r['compile_s']:.1f} s")
    print("ratios are ours / torch: > 1 means ours is higher (better for img/s, worse for ms/step and memory).")
    print("CPU peak memory is the process's peak RSS (torch's includes the Python + torch runtime).")


if __name__ == "__main__":
    main(sys.argv)
