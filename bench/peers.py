"""Benchmark of the peer implementations of fused RMSNorm + QKV projection.

For x [M, H], gamma [H], W [N, H] (row n = output n) and optional bias [N] it measures
y = (x * rsqrt(mean(x^2) + eps) * gamma) @ W^T + bias with three peers:

  eager     torch.nn.functional.rms_norm then torch.nn.functional.linear
  compiled  torch.compile of the same function (default mode, dynamic=False, once per shape)
  seed      a Triton kernel with one program per (token m, output n), fp32 arithmetic

and, the way engines run decode, captured in a CUDA graph (one call per weight copy in one
graph, replays timed with events, median per replay divided by the copies):

  eager_graph     rms_norm + linear in a graph
  linear_graph    linear alone (cuBLAS without the norm: the bar a fused kernel must pass at
                  large M); checked against x @ W^T + bias
  compiled_graph  torch.compile of rms_norm + linear, in a graph

Method (the same as the Rust side): device-to-device copy bandwidth (1 GiB, read + write
counted) and the bf16 8192^3 matmul rate are measured once; weights (gamma, W, bias) are
rotated over enough copies to exceed 2 x L2 so that every call streams W from HBM; device time
is the median over event-timed batches of back-to-back calls (the stream held by torch.cuda._sleep
while Python enqueues each batch, so the batch runs back to back on the GPU); host time is the median wall clock
of one call followed by torch.cuda.synchronize(); every case is checked against a float64
reference (relative Frobenius error). PyTorch defaults are kept (no TF32 for f32).

Run on a GPU machine:

    python3 bench/peers.py --json bench/results/peers-h100.json
    python3 bench/peers.py --json /tmp/smoke.json --quick --model qwen3-0.6b --tokens 1,32
"""

import argparse
import datetime
import gc
import itertools
import json
import math
import os
import statistics
import time

import torch
import torch._dynamo
import torch.nn.functional as F
import triton
import triton.language as tl

# name: (hidden, num_heads, num_kv_heads, head_dim, eps, bias)
MODELS = {
    "qwen3-0.6b": (1024, 16, 8, 128, 1e-6, False),
    "qwen3-1.7b": (2048, 16, 8, 128, 1e-6, False),
    "qwen3-8b": (4096, 32, 8, 128, 1e-6, False),
    "qwen3-32b": (5120, 64, 8, 128, 1e-6, False),
    "qwen2.5-0.5b": (896, 14, 2, 64, 1e-6, True),
    "llama-3-8b": (4096, 32, 8, 128, 1e-5, False),
    "qwen3-4b": (2560, 32, 8, 128, 1e-6, False),
    "qwen3-14b": (5120, 40, 8, 128, 1e-6, False),
    "llama-3.1-8b": (4096, 32, 8, 128, 1e-5, False),
    "llama-3.1-70b": (8192, 64, 8, 128, 1e-5, False),
}
DEFAULT_MODELS = ["qwen3-0.6b", "qwen2.5-0.5b", "qwen3-8b", "qwen3-32b"]
DEFAULT_TOKENS = "1,2,4,8,16,32,64,128,512,2048,8192"
IMPLS = ["eager", "compiled", "seed", "eager_graph", "linear_graph", "compiled_graph"]
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
DEFAULT_L2_BYTES = 50 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Seed design: one program per (m, n), grid (M, N).
# ---------------------------------------------------------------------------------------------


@triton.jit
def _seed_kernel(x_ptr, gamma_ptr, w_ptr, bias_ptr, y_ptr, H, N, eps,
                 HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1).to(tl.int64)
    x_row = x_ptr + m * H
    w_row = w_ptr + n * H

    # Sum of squares of x[m, :] in fp32.
    sq = tl.zeros([BLOCK_H], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs = h0 + tl.arange(0, BLOCK_H)
        mask = offs < H
        xv = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        sq += xv * xv
    rms_inv = 1.0 / tl.sqrt(tl.sum(sq, axis=0) / H + eps)

    # Dot product of the normalized row with W[n, :] in fp32.
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs = h0 + tl.arange(0, BLOCK_H)
        mask = offs < H
        xv = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        gv = tl.load(gamma_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        wv = tl.load(w_row + offs, mask=mask, other=0.0).to(tl.float32)
        acc += xv * rms_inv * gv * wv
    out = tl.sum(acc, axis=0)
    if HAS_BIAS:
        out += tl.load(bias_ptr + n).to(tl.float32)
    tl.store(y_ptr + m * N + n, out.to(y_ptr.dtype.element_ty))


def make_seed(eps):
    """The seed design as a function of (x, gamma, w, bias) -> y [M, N]."""

    def qkv_seed(x, gamma, w, bias):
        m, h = x.shape
        n = w.shape[0]
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        block_h = triton.next_power_of_2(min(h, 1024))
        has_bias = bias is not None
        _seed_kernel[(m, n)](
            x, gamma, w, bias if has_bias else w, y, h, n, eps,
            HAS_BIAS=has_bias, BLOCK_H=block_h,
        )
        return y

    return qkv_seed


def make_eager(eps):
    """rms_norm then linear, as two PyTorch ops."""

    def qkv_eager(x, gamma, w, bias):
        xn = F.rms_norm(x, (x.shape[-1],), gamma, eps)
        return F.linear(xn, w, bias)

    return qkv_eager


def make_impl(impl, eps):
    """A fresh callable for one (impl, model, M) case (for `*_graph`: the captured call)."""
    if impl == "linear_graph":
        return lambda x, gamma, w, bias: F.linear(x, w, bias)
    if impl.endswith("_graph"):
        return make_impl(impl[: -len("_graph")], eps)
    if impl == "eager":
        return make_eager(eps)
    if impl == "compiled":
        # Dynamo caches per code object: reset so every shape gets its own compile and the
        # recompile limit never silently sends us back to eager.
        torch._dynamo.reset()
        return torch.compile(make_eager(eps), dynamic=False)
    if impl == "seed":
        return make_seed(eps)
    raise ValueError(f"unknown impl {impl!r}")


# ---------------------------------------------------------------------------------------------
# Inputs, weights, reference
# ---------------------------------------------------------------------------------------------


def model_dims(name):
    """(H, N, eps, bias) of a model."""
    hidden, heads, kv_heads, head_dim, eps, bias = MODELS[name]
    return hidden, (heads + 2 * kv_heads) * head_dim, eps, bias


def elem_size(dtype):
    return torch.empty((), dtype=dtype).element_size()


def rotation_copies(h, n, bias, dtype, l2_bytes):
    """Copies of (gamma, W, bias) that together exceed 2 x L2 (at least 2)."""
    per_copy = elem_size(dtype) * (n * h + h + (n if bias else 0))
    return max(2, (2 * l2_bytes) // per_copy + 1)


def make_weights(h, n, bias, dtype, copies):
    """List of (gamma, W, bias-or-None): gamma ~ U(0.5, 1.5), W ~ N(0, 1/H), bias ~ N(0, 0.25)."""
    out = []
    for _ in range(copies):
        gamma = (torch.rand(h, device="cuda") + 0.5).to(dtype)
        w = (torch.randn(n, h, device="cuda") / math.sqrt(h)).to(dtype)
        b = (torch.randn(n, device="cuda") * 0.5).to(dtype) if bias else None
        out.append((gamma, w, b))
    return out


def make_input(m, h, dtype):
    """x ~ N(0, 1) with row m scaled by 10**u, u ~ U(-3, 3)."""
    scale = torch.pow(10.0, torch.rand(m, 1, device="cuda") * 6.0 - 3.0)
    return (torch.randn(m, h, device="cuda") * scale).to(dtype)


def reference(x, gamma, w, bias, eps):
    """float64 reference on the GPU from the same (upcast) inputs."""
    xd = x.double()
    rms_inv = torch.rsqrt(xd.pow(2).mean(dim=-1, keepdim=True) + eps)
    ref = (xd * rms_inv * gamma.double()) @ w.double().t()
    if bias is not None:
        ref = ref + bias.double()
    return ref


def rel_err(y, ref):
    """||y - ref||_F / ||ref||_F, or None when not finite."""
    err = (torch.linalg.vector_norm(y.double() - ref) / torch.linalg.vector_norm(ref)).item()
    return err if math.isfinite(err) else None


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


# GPU clock cycles the stream is held per call of a batch: ~100 us at the H100's ~2 GHz, well
# above Python's cost of enqueueing one call.
HOLD_CYCLES_PER_CALL = 200_000


def time_device(call, warmup, batches, calls):
    """Median over batches of (event-timed batch of `calls` back-to-back calls) / calls, in us."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    events = []
    for _ in range(batches):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        # Hold the stream while Python enqueues the batch, so the calls then run back to back on
        # the GPU and the events time the GPU, not Python's launch rate (same as fused-qkv bench).
        torch.cuda._sleep(int(calls * HOLD_CYCLES_PER_CALL))
        start.record()
        for _ in range(calls):
            call()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median([s.elapsed_time(e) * 1e3 / calls for s, e in events])


def time_host(call, reps):
    """Median wall clock of one call + torch.cuda.synchronize(), in us."""
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def measure_copy_gbs(warmup, reps):
    """Device-to-device copy of 1 GiB; GB/s counting read + write."""
    nbytes = 1 << 30
    src = torch.ones(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = time_device(lambda: dst.copy_(src), warmup, reps, 1)
    return 2 * nbytes / (us * 1e-6) / 1e9


def measure_tensor_tflops(warmup, reps):
    """bf16 8192^3 torch.mm rate in TFLOP/s."""
    size = 8192
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(size, size, device="cuda", dtype=torch.bfloat16)
    us = time_device(lambda: torch.mm(a, b, out=c), warmup, reps, 1)
    return 2 * size**3 / (us * 1e-6) / 1e12


def l2_size():
    props = torch.cuda.get_device_properties(0)
    return int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def case_row(impl, model, m, h, n, bias, dtype, copy_gbs, tensor_tflops):
    """A result row with the shape, traffic and floor filled in and no measurements."""
    nbytes = elem_size(dtype) * (n * h + m * h + h + m * n + (n if bias else 0))
    flops = 2 * m * n * h
    floor_us = nbytes / (copy_gbs * 1e3)
    if tensor_tflops:
        floor_us = max(floor_us, flops / (tensor_tflops * 1e6))
    return {
        "impl": impl, "model": model, "M": m, "H": h, "N": n, "bias": bias,
        "bytes": nbytes, "flops": flops, "floor_us": floor_us,
        "device_us": None, "host_us": None, "rel_err": None, "error": None,
    }


def run_graph_case(row, impl, eps, x, weights, ref, reps):
    """Check one `*_graph` case, capture one call per weight copy in a CUDA graph, time replays."""
    fn = make_impl(impl, eps)
    y = fn(x, *weights[0])
    torch.cuda.synchronize()
    if impl == "linear_graph":
        _, w, b = weights[0]
        ref = x.double() @ w.double().t() + (b.double() if b is not None else 0.0)
    row["rel_err"] = rel_err(y, ref)
    if row["rel_err"] is None:
        row["error"] = "non-finite rel_err (NaN or Inf in the output)"
    del y
    # Warm up (and compile) on a side stream before capturing, as torch.cuda.graphs asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            outs = [fn(x, *wc) for wc in weights]
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [fn(x, *wc) for wc in weights]
    layers = len(weights)
    replays = max(30, reps["batches"] * reps["calls"] // layers)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    events = []
    torch.cuda._sleep(int(HOLD_CYCLES_PER_CALL))
    for _ in range(replays):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    row["device_us"] = statistics.median([s.elapsed_time(e) * 1e3 / layers for s, e in events])
    row["host_us"] = time_host(graph.replay, reps["host"]) / layers
    del graph, outs


def run_case(row, impl, eps, x, weights, ref, reps):
    """Check and time one (impl, model, M) case, filling `row` in place."""
    if impl.endswith("_graph"):
        return run_graph_case(row, impl, eps, x, weights, ref, reps)
    fn = make_impl(impl, eps)
    # First call: compiles (torch.compile, Triton) and gives the correctness check.
    y = fn(x, *weights[0])
    torch.cuda.synchronize()
    row["rel_err"] = rel_err(y, ref)
    if row["rel_err"] is None:
        row["error"] = "non-finite rel_err (NaN or Inf in the output)"
    del y
    cycle = itertools.cycle(weights)

    def call():
        return fn(x, *next(cycle))

    row["device_us"] = time_device(call, reps["warmup"], reps["batches"], reps["calls"])
    row["host_us"] = time_host(call, reps["host"])


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def print_row(row):
    status = f"  ERROR {row['error']}" if row["error"] else ""
    print(
        f"{row['impl']:14s} {row['model']:13s} M={row['M']:<5d} H={row['H']:<5d} N={row['N']:<6d}"
        f" floor {fmt(row['floor_us']):>8s} us  device {fmt(row['device_us']):>9s} us"
        f"  host {fmt(row['host_us']):>9s} us  rel_err {fmt(row['rel_err'], '.3e')}{status}",
        flush=True,
    )


def print_table(rows, impls):
    """model | M | floor | device us (x floor) per impl | max rel err."""
    cases = {}
    for row in rows:
        cases.setdefault((row["model"], row["M"]), {})[row["impl"]] = row
    head = f"{'model':13s} {'M':>5s} {'floor_us':>9s}"
    head += "".join(f" {impl + '_us':>18s}" for impl in impls) + f" {'max_rel_err':>11s}"
    print("\n" + head)
    for (model, m), by_impl in cases.items():
        any_row = next(iter(by_impl.values()))
        line = f"{model:13s} {m:>5d} {any_row['floor_us']:>9.2f}"
        errs = []
        for impl in impls:
            r = by_impl.get(impl)
            if r is None:
                cell = "-"
            elif r["device_us"] is None:
                cell = "skipped" if (r["error"] or "").startswith("skipped") else "ERROR"
            else:
                cell = f"{r['device_us']:.2f} ({r['device_us'] / r['floor_us']:.1f}x)"
            if r is not None and r["rel_err"] is not None:
                errs.append(r["rel_err"])
            line += f" {cell:>18s}"
        line += f" {fmt(max(errs) if errs else None, '.2e'):>11s}"
        print(line)
    print(flush=True)


def write_json(path, header, rows):
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump({**header, "rows": rows}, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", choices=sorted(MODELS),
                   help=f"repeatable (default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--tokens", default=DEFAULT_TOKENS, help="comma list of M (default: %(default)s)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--impl", default=",".join(IMPLS), help=f"comma list of {','.join(IMPLS)}")
    p.add_argument("--json", required=True, metavar="FILE", help="where to write the results")
    p.add_argument("--seed-max-tokens", type=int, default=128,
                   help="skip the seed design above this M (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    args = p.parse_args()
    args.model = args.model or DEFAULT_MODELS
    args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    if not args.tokens or min(args.tokens) < 1:
        p.error("--tokens needs positive integers")
    args.impl = [i.strip() for i in args.impl.split(",") if i.strip()]
    bad = [i for i in args.impl if i not in IMPLS]
    if bad or not args.impl:
        p.error(f"--impl: unknown {bad}; choose from {','.join(IMPLS)}")
    return args


def main():
    args = parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("peers.py needs a CUDA GPU")
    dtype = DTYPES[args.dtype]
    if args.quick:
        reps = {"warmup": 3, "batches": 5, "calls": 3, "host": 10}
        copy_reps = (2, 5)
    else:
        reps = {"warmup": 20, "batches": 20, "calls": 10, "host": 50}
        copy_reps = (3, 20)
    torch.manual_seed(0)

    device = torch.cuda.get_device_name(0)
    copy_gbs = measure_copy_gbs(*copy_reps)
    tensor_tflops = None if args.quick else measure_tensor_tflops(3, 10)
    torch.cuda.empty_cache()
    l2_bytes = l2_size()
    print(f"device {device}: copy {copy_gbs:.0f} GB/s, bf16 mm {fmt(tensor_tflops, '.0f')} TFLOP/s,"
          f" L2 {l2_bytes / 2**20:.1f} MiB, dtype {args.dtype}", flush=True)

    header = {
        "schema": 1, "tool": "peers.py", "device": device,
        "date": datetime.date.today().isoformat(), "dtype": args.dtype,
        "copy_gbs": copy_gbs, "tensor_tflops": tensor_tflops, "l2_bytes": l2_bytes,
        # Copies depend on the model's weight size; the header holds the largest used.
        "rotation_copies": 0,
    }
    rows = []
    for model in args.model:
        h, n, eps, bias = model_dims(model)
        copies = rotation_copies(h, n, bias, dtype, l2_bytes)
        header["rotation_copies"] = max(header["rotation_copies"], copies)
        print(f"{model}: H {h}, N {n}, eps {eps:g}, bias {bias}, {copies} weight copies", flush=True)
        weights = make_weights(h, n, bias, dtype, copies)
        for m in args.tokens:
            case_rows = [case_row(i, model, m, h, n, bias, dtype, copy_gbs, tensor_tflops)
                         for i in args.impl]
            x = ref = None
            try:
                x = make_input(m, h, dtype)
                ref = reference(x, *weights[0], eps)
                setup_error = None
            except Exception as e:  # noqa: BLE001 - record and go on
                setup_error = (str(e) or type(e).__name__)[:300]
            for impl, row in zip(args.impl, case_rows):
                if setup_error is not None:
                    row["error"] = setup_error
                elif impl == "seed" and m > args.seed_max_tokens:
                    row["error"] = "skipped: M > seed-max-tokens"
                else:
                    try:
                        run_case(row, impl, eps, x, weights, ref, reps)
                    except Exception as e:  # noqa: BLE001 - record and go on
                        row.update(device_us=None, host_us=None, rel_err=None,
                                   error=(str(e) or type(e).__name__)[:300])
                rows.append(row)
                print_row(row)
                write_json(args.json, header, rows)
            del x, ref
        del weights
        gc.collect()
        torch.cuda.empty_cache()

    write_json(args.json, header, rows)
    print_table(rows, args.impl)
    print(f"wrote {args.json}", flush=True)


if __name__ == "__main__":
    main()
