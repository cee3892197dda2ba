//! `fused-qkv bench`: the kernel over models x token counts, timed the way bench/peers.py times
//! the peers, written as JSON of the schema `cargo xtask report` reads.
//!
//! Per case: weights rotated through enough device copies to exceed twice the L2 size (so W
//! streams from HBM); a correctness spot check against the float64 reference on sampled rows
//! first (a wrong result records an error and no time); then, in the default `graph` mode (how
//! engines run decode), one `forward_into` per weight copy captured in a CUDA graph, replays
//! timed with CUDA events (median per replay, divided by the layers in it) and the host time of
//! a replay + synchronize per layer; in `launches` mode, device time of batches of back-to-back
//! launches (median per launch) and host time per call (`forward_into` + synchronize, median).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use cust::device::DeviceAttribute;
use cust::event::{Event, EventFlags};
use cust::memory::{AsyncCopyDestination, DeviceBuffer};
use cust::stream::{Stream, StreamFlags};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use fused_qkv::dtype::{bf16, f16};
use fused_qkv::gpu::{GpuLayer, Graph, KernelPolicy, SplitK, WgmmaGrid, Workspace};
use fused_qkv::reference::{compare, join_qkv, reference_f64};
use fused_qkv::{Dtype, DtypeKind, Error, QkvConfig, QkvWeights, Result};

use super::{cuda, median_duration, random_input, time_gpu, Gpu, GpuTiming};

/// How the layer's calls are issued while timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One `forward_into` per weight copy captured in a CUDA graph, the graph replayed (as
    /// engines run decode); recorded as impl `fused-qkv-graph`.
    Graph,
    /// `forward_into` launched from the host, back to back; recorded as impl `fused-qkv`.
    Launches,
}

impl Mode {
    fn impl_name(self) -> &'static str {
        match self {
            Mode::Graph => "fused-qkv-graph",
            Mode::Launches => "fused-qkv",
        }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// Model presets (repeatable).
    #[arg(long = "model", value_name = "NAME", default_values = ["qwen3-0.6b", "qwen2.5-0.5b", "qwen3-8b", "qwen3-32b"])]
    models: Vec<String>,
    /// Hugging Face model directories (repeatable), benchmarked with their config.json's layer
    /// shapes (random weights, as for presets) instead of --model's presets.
    #[arg(long = "model-dir", value_name = "DIR")]
    model_dirs: Vec<std::path::PathBuf>,
    /// Token counts M, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128,512,2048,8192")]
    tokens: Vec<usize>,
    /// Storage dtype: bf16, f16 or f32.
    #[arg(long, value_name = "DTYPE", default_value = "bf16")]
    dtype: DtypeKind,
    /// Write the results here as JSON.
    #[arg(long, value_name = "FILE")]
    json: PathBuf,
    /// Measured tensor-core rate for the compute floor (e.g. bench/peers.py's tensor_tflops);
    /// without it the floor is the memory floor only.
    #[arg(long, value_name = "TFLOPS")]
    tensor_tflops: Option<f64>,
    /// Kernels the layer may use: auto (the dispatch table), simt, tensor-core (the mma.sync
    /// kernel), wgmma (the Hopper prefill kernel), or one entry point of the kernel list by its
    /// name or the end of it (e.g. `mma_r32_t16_w4_d3`, `wgmma_tma_m128_n192_s4`), for measuring
    /// tiles; measurement-only tiles need a build with `--features tile-sweep`. Tensor cores
    /// apply to bf16 and f16, wgmma to compute capability 9.0 only.
    #[arg(long, value_name = "POLICY", default_value = "auto")]
    kernel: String,
    /// Blocks per tile of the wgmma kernels (split-K, 1 to 8; 1: no split), instead of the
    /// measured rule; other kernels never split, and a count whose partials a tile's shared
    /// memory cannot hold is lowered (7 on 128 x 256; the JSON's `splits` says what ran). For
    /// measuring the rule.
    #[arg(long, value_name = "N", conflicts_with = "stream_k")]
    split_k: Option<u32>,
    /// A stream-K grid of this many blocks for the wgmma kernels (0: one per resident slot;
    /// at most that many), instead of the measured rule. For measuring the rule.
    #[arg(long, value_name = "BLOCKS")]
    stream_k: Option<u32>,
    /// Timed launches per case (events every 10), also the host-timed calls; in graph mode the
    /// timed replays.
    #[arg(long, value_name = "N", default_value_t = 200)]
    iters: usize,
    /// graph: a chain of one call per weight copy captured in a CUDA graph and replayed;
    /// launches: calls launched from the host.
    #[arg(long, value_enum, default_value_t = Mode::Graph)]
    mode: Mode,
    /// Launch each call as a programmatic dependent of the kernel before it on the stream (the
    /// default on compute capability 9.0: its weights stream into L2 during that kernel's
    /// tail); `false`: plain stream order, for measuring what that saves.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    dependent_launch: bool,
    /// Calls per captured graph in graph mode (a model's layers, e.g. 28 for qwen3-0.6b), cycling
    /// through the weight copies; default: one per copy.
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Also write, per case, the per-tile clock stamps of one layer's `wgmma` stream-K launch
    /// (in graph mode: the last replay's) to this JSON file, and print and record their summary
    /// (lead, mainloop and epilogue per tile, tail steps). Needs a build with `--features
    /// timeline`; split-K grids and other kernels write no stamps.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
}

/// Rows of each case checked against the float64 reference.
const CHECKED_ROWS: usize = 4;

pub fn bench(args: &BenchArgs) -> Result<bool> {
    let configs: Vec<(String, QkvConfig)> = if args.model_dirs.is_empty() {
        args.models.iter().map(|m| QkvConfig::preset(m).map(|c| (m.clone(), c))).collect::<Result<_>>()?
    } else {
        let name =
            |dir: &std::path::Path| dir.file_name().map_or(dir.display().to_string(), |n| n.to_string_lossy().into());
        args.model_dirs.iter().map(|d| QkvConfig::from_hf_config(d).map(|c| (name(d), c))).collect::<Result<_>>()?
    };
    let gpu = Gpu::init()?;
    let stream = cuda(Stream::new(StreamFlags::NON_BLOCKING, None), "creating a stream")?;
    let device = cuda(cust::context::CurrentContext::get_device(), "querying the device")?;
    let l2_bytes = cuda(device.get_attribute(DeviceAttribute::L2CacheSize), "querying the L2 size")? as usize;
    let copy_gbs = copy_bandwidth_gbs(&stream)?;
    // What a launch costs with nothing in it, timed the same way: the part of every small
    // case's device time that no kernel can remove.
    let empty = time_gpu(&gpu.kernels, &stream, 200, || gpu.kernels.enqueue_delay(&stream, 0))?;
    let empty_launch_us = empty.device_per_launch.as_secs_f64() * 1e6;
    eprintln!(
        "{}; L2 {} MB; device-to-device copy {copy_gbs:.0} GB/s; empty kernel back to back {empty_launch_us:.2} us",
        gpu.description,
        l2_bytes >> 20
    );
    // The occupancy the wgmma grids are chosen from (clusters fill GPCs in whole clusters).
    for kernel in fused_qkv::kernel_abi::KERNELS.iter().filter(|k| k.dtype == args.dtype.abi()) {
        if let (fused_qkv::kernel_abi::Tile::Wgmma(_), Some(residency)) =
            (kernel.tile, gpu.kernels.residency_of(kernel))
        {
            eprintln!(
                "{}: {} blocks at once, in clusters of 1-8: {:?}",
                kernel.name,
                residency.slots,
                &residency.clustered[1..]
            );
        }
    }
    let progress = ProgressBar::new((configs.len() * args.tokens.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let mut max_copies = 0;
    let mut all_ok = true;
    let mut stamps = Vec::new();
    for (name, config) in &configs {
        let env =
            Env { gpu: &gpu, stream: &stream, l2_bytes, copy_gbs, tensor_tflops: args.tensor_tflops, mode: args.mode };
        let (model_rows, copies, ok) = match args.dtype {
            DtypeKind::Bf16 => bench_model::<bf16>(&env, name, config, args, &progress, &mut stamps)?,
            DtypeKind::F16 => bench_model::<f16>(&env, name, config, args, &progress, &mut stamps)?,
            DtypeKind::F32 => bench_model::<f32>(&env, name, config, args, &progress, &mut stamps)?,
        };
        rows.extend(model_rows);
        max_copies = max_copies.max(copies);
        all_ok &= ok;
    }
    progress.finish_and_clear();
    let date = today();
    let doc = json!({
        "schema": 1, "tool": "fused-qkv bench", "mode": format!("{:?}", args.mode).to_lowercase(),
        "device": gpu.name(), "date": date, "dtype": args.dtype.name(),
        "copy_gbs": copy_gbs, "tensor_tflops": args.tensor_tflops, "l2_bytes": l2_bytes,
        "empty_launch_us": empty_launch_us,
        "rotation_copies": max_copies, "rows": rows,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Overflow(format!("serialising JSON: {e}")))?;
    std::fs::write(&args.json, text + "\n").map_err(|source| Error::Io { path: args.json.clone(), source })?;
    print_table(&doc);
    eprintln!("wrote {}", args.json.display());
    if let Some(path) = &args.timeline {
        let doc = json!({"device": gpu.name(), "date": date, "dtype": args.dtype.name(), "cases": stamps});
        let text = serde_json::to_string(&doc).map_err(|e| Error::Overflow(format!("serialising JSON: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|source| Error::Io { path: path.clone(), source })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(all_ok)
}

struct Env<'a> {
    gpu: &'a Gpu,
    stream: &'a Stream,
    l2_bytes: usize,
    copy_gbs: f64,
    tensor_tflops: Option<f64>,
    mode: Mode,
}

/// All token counts of one model; returns the rows, the rotation depth and whether all checks passed.
fn bench_model<T: Dtype>(
    env: &Env,
    name: &str,
    config: &QkvConfig,
    args: &BenchArgs,
    progress: &ProgressBar,
    stamps: &mut Vec<Value>,
) -> Result<(Vec<Value>, usize, bool)> {
    let weight_bytes = (config.weight_len() + config.hidden + config.qkv_cols()) * T::KIND.size_bytes();
    let copies = (2 * env.l2_bytes / weight_bytes + 1).max(2);
    let weights: Vec<QkvWeights<T>> =
        (0..copies as u64).map(|seed| QkvWeights::random(*config, seed)).collect::<Result<_>>()?;
    let policy = parse_policy(&args.kernel, T::KIND)?;
    let split_k = match (args.split_k, args.stream_k) {
        (_, Some(blocks)) => SplitK::Stream(blocks),
        (Some(splits), None) => SplitK::fixed(splits)?,
        (None, None) => SplitK::Auto,
    };
    // The copies run one after another on one stream, as a model's layers do: one workspace.
    let workspace = Workspace::new(&env.gpu.kernels, T::KIND)?;
    let mut layers: Vec<GpuLayer<T>> = weights
        .iter()
        .map(|w| {
            let kernels = env.gpu.kernels.clone();
            let mut layer = match &workspace {
                Some(shared) => GpuLayer::sharing_workspace(kernels, w, shared.clone())?,
                None => GpuLayer::new(kernels, w)?,
            };
            layer.set_kernel_policy(policy);
            layer.set_split_k(split_k);
            layer.set_dependent_launch(args.dependent_launch);
            Ok(layer)
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    let mut all_ok = true;
    let chain = args.layers.unwrap_or(layers.len()).max(1);
    for &m in &args.tokens {
        progress.set_message(format!("{name} M={m}"));
        // The stamped layer: the middle one of the chain, so that kernels run before and after it.
        let stamped = (chain / 2) % layers.len();
        let timeline = match args.timeline {
            Some(_) => {
                let words = layers[stamped].timeline_words();
                let buffer = Arc::new(cuda(DeviceBuffer::zeroed(words), "allocating a timeline")?);
                layers[stamped].set_timeline(Some(buffer.clone()))?;
                Some(buffer)
            }
            None => None,
        };
        let row = bench_case(env, name, config, &weights[0], (&layers, chain), m, args.iters);
        let mut row = match row {
            Ok(row) => row,
            Err(e) => {
                all_ok = false;
                case_row::<T>(name, config, m, env, None, None, Some(format!("{e}")))
            }
        };
        // Which kernel ran, and split-K's blocks per tile or the stream-K grid.
        if let Ok((kernel, grid)) = layers[0].kernel_for(m) {
            row["kernel"] = json!(kernel.name);
            match grid {
                WgmmaGrid::Split(splits) => row["splits"] = json!(splits),
                WgmmaGrid::Stream(blocks) => {
                    row["splits"] = json!(1);
                    row["stream_blocks"] = json!(blocks);
                }
            }
        }
        row["dependent_launch"] = json!(layers[0].launches_as_dependent(m).unwrap_or(false));
        if let Some(buffer) = timeline {
            layers[stamped].set_timeline(None)?;
            let words = cuda(buffer.as_host_vec(), "copying the timeline back")?;
            let k_blocks = config.hidden.div_ceil(fused_qkv::kernel_abi::wgmma::K_BLOCK as usize) as u32;
            if let Some(summary) = super::timeline::summary(&words, k_blocks) {
                eprintln!("{}", super::timeline::line(name, m, &summary));
                row["timeline"] = summary;
            }
            stamps.push(json!({"model": name, "M": m, "kernel": row["kernel"], "k_blocks": k_blocks,
                "words_per_block": fused_qkv::gpu::TIMELINE_WORDS_PER_BLOCK,
                "words": super::timeline::written_words(&words)}));
        }
        if args.mode == Mode::Graph {
            row["graph_layers"] = json!(chain);
        }
        all_ok &= row["error"].is_null();
        rows.push(row);
        progress.inc(1);
    }
    Ok((rows, copies, all_ok))
}

fn bench_case<T: Dtype>(
    env: &Env,
    name: &str,
    config: &QkvConfig,
    checked_weights: &QkvWeights<T>,
    (layers, chain): (&[GpuLayer<T>], usize),
    m: usize,
    iters: usize,
) -> Result<Value> {
    let stream = env.stream;
    let x = random_input::<T>(config.hidden, m, m as u64)?;
    let x_dev = cuda(DeviceBuffer::from_slice(&x), "copying x to the device")?;
    let nan = |len: usize| cuda(DeviceBuffer::from_slice(&vec![T::from_f32(f32::NAN); len]), "allocating an output");
    let (mut q, mut k, mut v) = (nan(m * config.q_cols())?, nan(m * config.kv_cols())?, nan(m * config.kv_cols())?);

    // Spot check before any timing: a wrong kernel reports an error, not a time.
    let started = std::time::Instant::now();
    layers[0].forward_into(stream, &x_dev, m, &mut q, &mut k, &mut v)?;
    cuda(stream.synchronize(), "running the checked launch")?;
    // Slow cases get fewer timed launches (about half a second's worth, at least 20).
    let iters = iters.min((0.5 / started.elapsed().as_secs_f64().max(1e-9)) as usize).max(20);
    let rel_err = spot_check(checked_weights, &x, m, [&q, &k, &v])?;
    let within_bound = rel_err <= T::KIND.error_bound(); // false for NaN too
    if !within_bound {
        let msg = format!("wrong result: rel err {rel_err:e} on checked rows exceeds {:e}", T::KIND.error_bound());
        return Ok(case_row::<T>(name, config, m, env, None, Some(rel_err), Some(msg)));
    }
    let timing = match env.mode {
        Mode::Launches => {
            let mut next = 0usize;
            time_gpu(&env.gpu.kernels, stream, iters, || {
                next = (next + 1) % layers.len();
                layers[next].forward_into(stream, &x_dev, m, &mut q, &mut k, &mut v)
            })?
        }
        Mode::Graph => {
            let graph = Graph::capture(stream, || {
                (0..chain)
                    .try_for_each(|i| layers[i % layers.len()].forward_into(stream, &x_dev, m, &mut q, &mut k, &mut v))
            })?;
            time_graph(env, &graph, chain, (iters / chain).max(30))?
        }
    };
    Ok(case_row::<T>(name, config, m, env, Some(&timing), Some(rel_err), None))
}

/// Times `replays` replays of `graph` (`layers` calls each), each between two CUDA events, all
/// enqueued behind a delay kernel so they run back to back; then `replays` replays with the host
/// clock (launch + synchronize). Times are per layer.
fn time_graph(env: &Env, graph: &Graph, layers: usize, replays: usize) -> Result<GpuTiming> {
    let stream = env.stream;
    for _ in 0..3 {
        graph.launch(stream)?;
    }
    cuda(stream.synchronize(), "running the warm-up replays")?;
    let new_event = || cuda(Event::new(EventFlags::DEFAULT), "creating an event");
    let events = (0..replays).map(|_| Ok((new_event()?, new_event()?))).collect::<Result<Vec<_>>>()?;
    env.gpu.kernels.enqueue_delay(stream, 100_000)?;
    let mut enqueue = Vec::with_capacity(replays);
    for (start, end) in &events {
        cuda(start.record(stream), "recording an event")?;
        let t = std::time::Instant::now();
        graph.launch(stream)?;
        enqueue.push(t.elapsed() / layers as u32);
        cuda(end.record(stream), "recording an event")?;
    }
    cuda(stream.synchronize(), "running the timed replays")?;
    let mut per_layer = Vec::with_capacity(replays);
    for (start, end) in &events {
        let ms = cuda(end.elapsed_time_f32(start), "reading an event time")?;
        per_layer.push(Duration::from_secs_f64(f64::from(ms.max(0.0)) * 1e-3 / layers as f64));
    }
    let mut host = Vec::with_capacity(replays);
    for _ in 0..replays {
        let t = std::time::Instant::now();
        graph.launch(stream)?;
        cuda(stream.synchronize(), "running a timed replay")?;
        host.push(t.elapsed() / layers as u32);
    }
    Ok(GpuTiming {
        device_per_launch: median_duration(&mut per_layer),
        batches: replays,
        host_per_call: median_duration(&mut host),
        enqueue_per_call: median_duration(&mut enqueue),
        calls: replays * layers,
    })
}

/// The largest relative Frobenius error (whole, per row, per q/k/v block of a row) of up to
/// [`CHECKED_ROWS`] rows (first, last, evenly between) against the float64 reference; NaN if any checked output is not finite where the reference is.
fn spot_check<T: Dtype>(w: &QkvWeights<T>, x: &[T], m: usize, [q, k, v]: [&DeviceBuffer<T>; 3]) -> Result<f64> {
    if m == 0 {
        return Ok(0.0);
    }
    let c = &w.config;
    let (q, k, v) = (GpuLayer::download(q)?, GpuLayer::download(k)?, GpuLayer::download(v)?);
    let picks: Vec<usize> = {
        let mut p: Vec<usize> = (0..CHECKED_ROWS).map(|i| i * (m - 1) / (CHECKED_ROWS - 1).max(1)).collect();
        p.dedup();
        p
    };
    let take = |buf: &[T], cols: usize| -> Vec<T> {
        picks.iter().flat_map(|&r| buf[r * cols..(r + 1) * cols].to_vec()).collect()
    };
    let xs = take(x, c.hidden);
    let (qs, ks, vs) = (take(&q, c.q_cols()), take(&k, c.kv_cols()), take(&v, c.kv_cols()));
    let report = compare(&join_qkv(w, picks.len(), &qs, &ks, &vs), &reference_f64(w, &xs, picks.len()), c);
    Ok(if report.non_finite > 0 {
        f64::NAN
    } else {
        report.rel_frobenius.max(report.worst_row.1).max(report.worst_block.2)
    })
}

#[allow(clippy::too_many_arguments)]
fn case_row<T: Dtype>(
    name: &str,
    c: &QkvConfig,
    m: usize,
    env: &Env,
    timing: Option<&GpuTiming>,
    rel_err: Option<f64>,
    error: Option<String>,
) -> Value {
    let (h, n) = (c.hidden, c.qkv_cols());
    let bias = if c.bias { n } else { 0 };
    let bytes = T::KIND.size_bytes() * (n * h + m * h + h + m * n + bias);
    let flops = 2 * m * n * h;
    let memory_us = bytes as f64 / (env.copy_gbs * 1e3);
    let compute_us = env.tensor_tflops.map_or(0.0, |t| flops as f64 / (t * 1e6));
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    json!({
        "impl": env.mode.impl_name(), "model": name, "M": m, "H": h, "N": n, "bias": c.bias,
        "bytes": bytes, "flops": flops, "floor_us": memory_us.max(compute_us),
        "device_us": us(timing.map(|t| t.device_per_launch)), "host_us": us(timing.map(|t| t.host_per_call)),
        "enqueue_us": us(timing.map(|t| t.enqueue_per_call)),
        "rel_err": rel_err.filter(|e| e.is_finite()), "error": error,
    })
}

/// Device-to-device copy bandwidth in GB/s, counting bytes read plus written (median of 10
/// copies of 1 GiB after a warm-up, CUDA events).
fn copy_bandwidth_gbs(stream: &Stream) -> Result<f64> {
    const BYTES: usize = 1 << 30;
    let src = cuda(DeviceBuffer::from_slice(&vec![1u8; BYTES]), "allocating the copy source")?;
    // SAFETY: fully overwritten by the copies before anything reads it.
    let mut dst = cuda(unsafe { DeviceBuffer::<u8>::uninitialized(BYTES) }, "allocating the copy target")?;
    let mut times = Vec::new();
    for i in 0..11 {
        let (start, end) = (
            cuda(Event::new(EventFlags::DEFAULT), "creating an event")?,
            cuda(Event::new(EventFlags::DEFAULT), "creating an event")?,
        );
        cuda(start.record(stream), "recording an event")?;
        // SAFETY: both buffers live until the stream is synchronised below.
        cuda(unsafe { dst.async_copy_from(&src, stream) }, "copying device to device")?;
        cuda(end.record(stream), "recording an event")?;
        cuda(stream.synchronize(), "running the copy")?;
        if i > 0 {
            times.push(cuda(end.elapsed_time_f32(&start), "reading an event time")? as f64 * 1e-3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * BYTES as f64 / times[times.len() / 2] / 1e9)
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn print_table(doc: &Value) {
    println!(
        "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "model", "M", "floor us", "device us", "host us", "enqueue us", "x floor", "rel err"
    );
    for row in doc["rows"].as_array().into_iter().flatten() {
        let f = |k: &str| row[k].as_f64();
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = f("device_us").zip(f("floor_us")).map(|(d, fl)| d / fl);
        println!(
            "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}{}",
            row["model"].as_str().unwrap_or("?"),
            row["M"],
            cell(f("floor_us")),
            cell(f("device_us")),
            cell(f("host_us")),
            cell(f("enqueue_us")),
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            f("rel_err").map_or("-".into(), |e| format!("{e:.2e}")),
            row["error"].as_str().map(|e| format!("  error: {e}")).unwrap_or_default(),
        );
    }
}

/// `--kernel`: auto, simt, tensor-core, wgmma, or a kernel of the list by name (or its end).
fn parse_policy(text: &str, dtype: DtypeKind) -> Result<KernelPolicy> {
    Ok(match text {
        "auto" => KernelPolicy::Auto,
        "simt" => KernelPolicy::Simt,
        "tensor-core" => KernelPolicy::TensorCore,
        "wgmma" => KernelPolicy::Wgmma,
        name => KernelPolicy::kernel(dtype.abi(), name)?,
    })
}
