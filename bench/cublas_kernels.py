"""Which cuBLAS kernels F.linear runs at the shapes where issue 11's must targets fail (the nvjet
names carry tile, ring depth and cluster), with their device times from torch.profiler.
Usage (GPU machine): python3 bench/cublas_kernels.py [--once: each GEMM once, for ncu]."""
import sys, torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
SHAPES = [("qwen3-0.6b", m, 1024, 4096, False) for m in (192, 256, 2048, 4096, 8192)] + \
         [("qwen2.5-0.5b", m, 896, 1152, True) for m in (512, 2048, 8192)] + \
         [("qwen3-4b", m, 2560, 6144, False) for m in (128, 192, 256, 1024, 4096)] + \
         [("qwen3-14b", 192, 5120, 7168, False), ("qwen3-32b", 512, 5120, 10240, False), ("qwen3-1.7b", 2048, 2048, 4096, False)]
once = "--once" in sys.argv
torch.manual_seed(0)
for name, m, h, n, bias in SHAPES:
    x = torch.randn(m, h, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, h, device="cuda", dtype=torch.bfloat16) * 0.05
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16) if bias else None
    if once:
        torch.cuda.nvtx.range_push(f"{name} M={m}")
        F.linear(x, w, b); torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        continue
    for _ in range(5):
        F.linear(x, w, b)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            F.linear(x, w, b)
        torch.cuda.synchronize()
    evs = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            evs.setdefault(e.name, []).append(e.device_time)
    for k, v in evs.items():
        v.sort()
        print(f"{name:13s} M={m:5d} H={h:5d} N={n:6d} {v[len(v)//2]:8.2f} us x{len(v)}  {k}")
