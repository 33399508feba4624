#!/usr/bin/env python3
"""compare_table.py: the ratio table of bench/compare_torch.sh, from one or more rounds.

Usage: bench/compare_table.py ROUND_DIR [ROUND_DIR ...]

Each ROUND_DIR holds fm_bench.json (the engine; required) and torch_baseline.json (PyTorch; optional: its
columns are then empty). With one round the table shows its values; with several, every cell is the
median over the rounds that have the value, the ratios are ratios of those medians, and a second block
lists each round's ratios for train ms/step and sample80 (sample10 with fm_bench --quick) (the host's run-to-run noise is as large as
the margins we quote, so a single run can land on either side of a target: quote the medians).
Ratios are ours / torch. Exit status 2 with a one-line message when a file is missing or malformed.
"""
import json
import os
import statistics
import sys


def die(msg):
    print(f"compare_table.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path, required):
    if not os.path.exists(path):
        if required:
            die(f"{path} not found")
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        die(f"{path}: {e}")
    if not isinstance(data, dict):
        die(f"{path}: expected a JSON object")
    return data


def columns(ours, torch):
    """[(name, metrics)] for one round: the engine, then each PyTorch mode."""
    cols = [("engine", ours.get("engine", {}))]
    for mode, r in torch.items():
        if mode != "meta" and isinstance(r, dict):
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
    rounds = []
    for d in argv[1:]:
        ours = load(os.path.join(d, "fm_bench.json"), True)
        if "meta" not in ours or "engine" not in ours:
            die(f"{d}/fm_bench.json: no 'meta' / 'engine' (not written by fm_bench --json)")
        rounds.append((ours, load(os.path.join(d, "torch_baseline.json"), False)))
    names = []  # column names in first-seen order
    for ours, torch in rounds:
        for name, _ in columns(ours, torch):
            if name not in names:
                names.append(name)
    m = rounds[0][0]["meta"]
    tm = next((t["meta"] for _, t in rounds if "meta" in t), {})
    n = len(rounds)
    print(f"\ndevice {m['device']} ({m['device_name']}), batch {m['batch']}, threads {m['threads']}, "
          f"iters {m['iters']} (warmup {m['warmup']}), sample_batch {m['sample_batch']}"
          + (f"; torch {tm.get('torch')} diffusers {tm.get('diffusers')} attn {tm.get('attn')}" if tm else "")
          + (f"; median of {n} rounds" if n > 1 else ""))
    small = m.get("sample_small_images", 80)  # fm_bench --quick samples 10 images (PyTorch: 80, then "-")
    rows = [("train img/s", "train_img_per_s", 1, "{:.1f}"),
            ("train ms/step", "train_ms_per_step", 1, "{:.1f}"),
            ("peak memory MiB", "peak_mem_bytes", 2**-20, "{:.0f}"),
            (f"sample{small} img/s", f"sample{small}_img_per_s", 1, "{:.2f}"),
            (f"sample{m['sample_batch']} img/s", "sample_large_img_per_s", 1, "{:.2f}")]

    def per_round(name, key):  # the column's value in each round (None where absent)
        return [value(dict(columns(o, t)).get(name, {}), key) for o, t in rounds]

    head = f"{'metric':18s}" + "".join(f"{c:>20s}" for c in names)
    head += "".join(f"{'ours/' + c.split()[1]:>20s}" for c in names[1:])
    print(head)
    for label, key, scale, fmt in rows:
        vals = [median_or_none(per_round(name, key)) for name in names]
        line = f"{label:18s}"
        for v in vals:
            line += f"{(fmt.format(v * scale) if v is not None else '-'):>20s}"
        for v in vals[1:]:
            line += f"{(f'{vals[0] / v:.2f}x' if v and vals[0] is not None else '-'):>20s}"
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
    for ours, torch in rounds:
        for name, r in columns(ours, torch):
            if "error" in r:
                print(f"{name}: {r['error']}")
            if "compile_s" in r:
                print(f"{name}: first step (compilation) took {r['compile_s']:.1f} s")
    print("ratios are ours / torch: > 1 means ours is higher (better for img/s, worse for ms/step and memory).")
    print("CPU peak memory is the process's peak RSS (torch's includes the Python + torch runtime).")


if __name__ == "__main__":
    main(sys.argv)
