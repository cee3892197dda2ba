#!/usr/bin/env python3
"""Per (model, M): each forced variant's device us (files KERNEL.xSPLITS-d.json / -x.json in DIR,
from `fused-qkv bench --kernel K --split-k S`), the dispatch's (auto*), the best and the graph
peer eager_graph (peers*.json). Usage: forced.py DIR [GLOB]"""
import json, glob, sys, collections
d = sys.argv[1]; pat = sys.argv[2] if len(sys.argv) > 2 else "*"
t = collections.defaultdict(dict); peers = collections.defaultdict(dict)
for f in sorted(glob.glob(f"{d}/{pat}.json")):
    name = f.split("/")[-1][:-5]
    if name.startswith("peers"):
        for r in json.load(open(f))["rows"]:
            peers[(r["model"], r["M"])][r["impl"]] = r["device_us"]
        continue
    v = name.rsplit("-", 1)[0]
    for r in json.load(open(f))["rows"]:
        lab = r["kernel"].split("_", 4)[-1].replace("wgmma_", "") + (f"x{r['splits']}" if r["splits"] > 1 else "")
        t[(r["model"], r["M"])][v] = (r["device_us"], lab)
for k in sorted(t):
    row = t[k]; p = peers.get(k, {})
    eg = p.get("eager_graph")
    best = min(row.items(), key=lambda kv: kv[1][0])
    a = row.get("auto") or row.get("auto2")
    s = f"{k[0]:13s} {k[1]:4d} eg={eg or 0:6.2f} auto={a[0] if a else 0:6.2f}({a[1] if a else ''}) best={best[1][0]:6.2f}({best[1][1]}) "
    s += " ".join(f"{v}={x[0]:.2f}" for v, x in sorted(row.items()) if not v.startswith("auto"))
    print(s)
