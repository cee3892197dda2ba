#!/usr/bin/env python3
"""Prints device us per (model, M) for each bench JSON given (columns: the files' stems),
with the kernel and split-K blocks the first file's rows record. Usage: table.py A.json B.json ..."""
import json
import pathlib
import sys

files = [pathlib.Path(p) for p in sys.argv[1:]]
runs = []
for f in files:
    rows = json.loads(f.read_text())["rows"]
    runs.append({(r["model"], r["M"]): r for r in rows})
keys = sorted(runs[0], key=lambda k: (k[0], k[1]))
print("model M " + " ".join(f.stem for f in files) + " | first file's kernel")
for key in keys:
    cells = []
    for run in runs:
        r = run.get(key)
        cells.append("-" if r is None or r.get("device_us") is None else f"{r['device_us']:.1f}")
    first = runs[0][key]
    kernel = (first.get("kernel") or "?").replace("fused_rmsnorm_qkv_", "")
    print(f"{key[0]} {key[1]} " + " ".join(cells) + f" | {kernel} x{first.get('splits', '?')}")
