import json, os, glob, sys
R = sys.argv[1]
t = {}
kern = {}
for f in glob.glob(R + "/*-[12].json"):
    ver = os.path.basename(f).split("-")[0]
    for r in json.load(open(f))["rows"]:
        t.setdefault((r["model"], r["M"]), {}).setdefault(ver, []).append(r["device_us"])
        if ver == "new":
            kern[(r["model"], r["M"])] = r["kernel"].replace("fused_rmsnorm_qkv_bf16_wgmma_", "").replace("tma_", "") + f"/{r['splits']}/{r.get('stream_blocks')}"
peers = {}
if os.path.exists(R + "/peers.json"):
    for r in json.load(open(R + "/peers.json"))["rows"]:
        peers[(r["model"], r["M"], r["impl"])] = r["device_us"]
print("model M base new new/base eager lin new/eager kernel")
for k in sorted(t):
    o = t[k].get("base", []); n = t[k].get("new", [])
    if o and n:
        e = peers.get((k[0], k[1], "eager_graph"), float("nan")); l = peers.get((k[0], k[1], "linear_graph"), float("nan"))
        flag = " FAIL1" if min(n) >= e else ""
        print(f"{k[0]:13s} {k[1]:5d} {min(o):8.2f} {min(n):8.2f} {min(n)/min(o):.3f} {e:8.2f} {l:8.2f} {min(n)/e:.3f} {kern.get(k,'')}{flag}")
