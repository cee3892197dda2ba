import json, glob, os, sys
import sys; R = sys.argv[1] if len(sys.argv) > 1 else "."
peers = {}
for r in json.load(open(R + "/peers.json"))["rows"]:
    peers[(r["model"], r["M"], r["impl"])] = r["device_us"]
t = {}; ks = []; kk = {}
for f in sorted(glob.glob(R + "/*.json")):
    k = os.path.basename(f)[:-5]
    if k == "peers": continue
    ks.append(k)
    for r in json.load(open(f))["rows"]:
        if r.get("device_us") is not None:
            t[(r["model"], r["M"], k)] = r["device_us"]
            if k == "auto": kk[(r["model"], r["M"])] = r["kernel"].replace("fused_rmsnorm_qkv_bf16_wgmma_", "").replace("tma_", "") + "/%s/%s" % (r["splits"], r.get("stream_blocks"))
json.dump({"%s|%d|%s" % k: v for k, v in t.items()}, open("/dev/null", "w"))
ks.remove("auto"); ks = ["auto"] + ks
for (m, M) in sorted({(a, b) for a, b, _ in t}, key=lambda x: (x[0], x[1])):
    e = peers.get((m, M, "eager_graph"), float("nan"))
    row = {k: t.get((m, M, k)) for k in ks}
    best = sorted((v, k) for k, v in row.items() if v)[:3]
    a = row["auto"]
    flag = "FAIL" if a >= e else ""
    bflag = "FAIL" if best[0][0] >= e else ""
    print(f"{m:13s} {M:4d} eager {e:6.2f} auto {a:6.2f} {a/e:.3f} {kk[(m,M)]:16s} {flag:4s} best " + " ".join(f"{k}={v:.2f}" for v, k in best) + f" {best[0][0]/e:.3f} {bflag}")
