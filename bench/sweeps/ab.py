#!/usr/bin/env python3
"""A/B table: per (model, M) the best of the rounds of each variant (files VARIANT-*-[12].json in
DIR), the graph peers of the same call (peers*.json) and the ratios; flags must-1 / must-2
failures. Usage: ab.py DIR [BASE NEW]"""
import json, glob, sys, collections
d = sys.argv[1]
best = collections.defaultdict(dict)
kern = {}
for f in glob.glob(f"{d}/*-[12].json"):
    v = f.split("/")[-1].split("-")[0]
    for r in json.load(open(f))["rows"]:
        k = (r["model"], r["M"])
        best[k][v] = min(best[k].get(v, 1e9), r["device_us"])
        kern[(k, v)] = r["kernel"].split("_", 4)[-1] + (f" x{r['splits']}" if r["splits"] > 1 else "")
peers = collections.defaultdict(dict)
for f in glob.glob(f"{d}/peers*.json"):
    for r in json.load(open(f))["rows"]:
        peers[(r["model"], r["M"])][r["impl"]] = r["device_us"]
vs = sys.argv[2:] if len(sys.argv) > 2 else ["base", "new"]
print(f"{'model':13s} {'M':>5s} " + " ".join(f"{v:>8s}" for v in vs) + f" {'new/base':>8s} {'eager_g':>8s} {'lin_g':>8s} {'new/eg':>7s} {'new/lg':>7s}  kernel")
for k in sorted(best, key=lambda k: (k[0], k[1])):
    b = best[k]; p = peers.get(k, {})
    new, base = b.get(vs[-1]), b.get(vs[0])
    eg, lg = p.get("eager_graph"), p.get("linear_graph")
    flag = ""
    if eg and new / eg >= 1.0: flag += " MUST1"
    if lg and k[1] >= 2048 and new / lg > 1.0: flag += " MUST2"
    print(f"{k[0]:13s} {k[1]:5d} " + " ".join(f"{b.get(v, float('nan')):8.2f}" for v in vs) +
          f" {new/base:8.3f} {eg or float('nan'):8.2f} {lg or float('nan'):8.2f} {new/eg if eg else float('nan'):7.3f} {new/lg if lg else float('nan'):7.3f}  {kern.get((k, vs[-1]))}{flag}")
