//! `fused-qkv run`: runs one layer's fused RMSNorm + QKV projection on seeded random input, checks
//! the CPU implementation and (when a CUDA GPU is present) the kernel against the float64
//! reference, and times both.
//!
//! Exit status: 0 when every path is within its dtype's error bound, 1 when one is not, 2 on an
//! error (bad arguments, unreadable weights, a failed CUDA call).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use cust::context::{Context, CurrentContext};
use cust::error::CudaResult;
use cust::event::{Event, EventFlags};
use cust::memory::DeviceBuffer;
use cust::stream::{Stream, StreamFlags};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use fused_qkv::config::PRESETS;
use fused_qkv::cpu::CpuLayer;
use fused_qkv::dtype::{bf16, f16};
use fused_qkv::gpu::{GpuLayer, Kernels};
use fused_qkv::reference::{self, ErrorReport};
use fused_qkv::{checkpoint, CudaResultExt, Dtype, DtypeKind, Error, QkvConfig, QkvWeights, Result};

mod bench;
mod timeline;

/// Untimed launches before the GPU timing.
const WARMUP_LAUNCHES: usize = 20;
/// Launches between two CUDA events.
const LAUNCHES_PER_BATCH: usize = 10;
/// How long the delay kernel holds the stream per launch of a batch: well above the host's cost
/// of one `forward_into` (a few microseconds), so the whole batch is queued before it starts.
const DELAY_NS_PER_LAUNCH: u64 = 25_000;
/// Most CPU calls timed, and the wall-clock budget after which the CPU timing stops early.
const MAX_CPU_CALLS: usize = 5;
const CPU_TIME_BUDGET: Duration = Duration::from_secs(2);
/// Exit status when a path exceeds its error bound (errors exit with 2).
const EXIT_CHECK_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "fused-qkv",
    version,
    about = "Fused RMSNorm + QKV projection: run and check the kernel against the CPU implementation and a float64 reference."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one layer on seeded random input, check the GPU and CPU outputs against a float64
    /// reference, and time them.
    #[command(after_help = "Exit status: 0 if every path is within its error bound, 1 if one is not, 2 on an error.")]
    Run(RunArgs),
    /// Benchmark the kernel over models and token counts with weights streamed from HBM, and
    /// write the results as JSON (merge with bench/peers.py's by `cargo xtask report`).
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Model preset (its layer shapes).
    #[arg(long, value_name = "NAME", default_value = "qwen3-0.6b", help = preset_help())]
    model: String,
    /// Tokens M (rows of x); 0 runs nothing.
    #[arg(long, value_name = "M", default_value_t = 32)]
    tokens: usize,
    /// Storage dtype: bf16, f16 or f32.
    #[arg(long, value_name = "DTYPE", default_value = "bf16")]
    dtype: DtypeKind,
    /// Load the layer's weights from this safetensors checkpoint instead of random ones (shapes
    /// from --model).
    #[arg(long, value_name = "FILE", conflicts_with = "model_dir")]
    weights: Option<PathBuf>,
    /// A Hugging Face model directory (config.json, and model.safetensors or an index with its
    /// shards): the layer's shapes from its config.json and its weights from its checkpoint,
    /// instead of --model and random weights.
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Layer to load from --weights or --model-dir.
    #[arg(long, value_name = "I", default_value_t = 0)]
    layer: usize,
    /// Take x from this safetensors file (tensor "x" [M, H], stored in --dtype) instead of random
    /// rows; M is its row count.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Also compare every path (and the float64 reference) with the outputs in this safetensors
    /// file: tensors "q" [M, Hq], "k" and "v" [M, Hkv], f32 (e.g. from another implementation,
    /// bench/hf_check.py); each must be within the dtype's bound of them. Needs --input.
    #[arg(long, value_name = "FILE", requires = "input")]
    expect: Option<PathBuf>,
    /// Run the attention prologue instead (residual add + RMSNorm + QKV + q/k norm + RoPE, see
    /// the library's `prologue` module) on a --model-dir layer, with a random residual and random
    /// positions, checked against its float64 oracle. CPU only so far (issue 13).
    #[arg(long, requires = "model_dir", conflicts_with_all = ["input", "expect"])]
    prologue: bool,
    /// Seed of the random input x (and of the random weights).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Timed GPU launches (0: check only, no timing).
    #[arg(long, value_name = "N", default_value_t = 200)]
    iters: usize,
}

fn preset_help() -> String {
    let names: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
    format!("Model preset: {}", names.join(", "))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => match args.dtype {
            DtypeKind::Bf16 => run::<bf16>(&args),
            DtypeKind::F16 => run::<f16>(&args),
            DtypeKind::F32 => run::<f32>(&args),
        },
        Command::Bench(args) => bench::bench(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_CHECK_FAILED),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs and checks every available path; `Ok(true)` when all are within the bound.
fn run<T: Dtype>(args: &RunArgs) -> Result<bool> {
    if args.layer != 0 && args.weights.is_none() && args.model_dir.is_none() {
        return Err(Error::InvalidConfig("--layer needs --weights or --model-dir".into()));
    }
    if let (true, Some(dir)) = (args.prologue, &args.model_dir) {
        return run_prologue::<T>(args, dir);
    }
    let (config, weights) = match &args.model_dir {
        Some(dir) => {
            let model = checkpoint::ModelDir::open(dir)?;
            (model.config().qkv, model.load_layer::<T>(args.layer)?)
        }
        None => {
            let config = QkvConfig::preset(&args.model)?;
            (config, build_weights::<T>(args, &config)?)
        }
    };
    let (m, x) = match &args.input {
        Some(path) => {
            let (shape, x) = checkpoint::load_tensor::<T>(path, "x")?;
            match shape[..] {
                [m, h] if h == config.hidden => (m, x),
                _ => {
                    return Err(Error::InvalidConfig(format!(
                        "{}: x has shape {shape:?}, wanted [M, {}]",
                        path.display(),
                        config.hidden
                    )))
                }
            }
        }
        None => (args.tokens, random_input::<T>(config.hidden, args.tokens, args.seed)?),
    };
    let expected = args.expect.as_ref().map(|path| expected_outputs(path, &config, m)).transpose()?;
    print_header(args, &config, m);
    if m == 0 {
        println!("\nM = 0: nothing to compare.");
        return Ok(true);
    }
    // Initialise CUDA first so that its one-line notice comes before the (slower) CPU work.
    let gpu = match Gpu::init() {
        Ok(gpu) => {
            println!("gpu:      {}", gpu.description);
            Some(gpu)
        }
        Err(e) => {
            eprintln!("no CUDA GPU available ({e}); running the CPU implementation only");
            None
        }
    };
    let reference = reference::reference_f64(&weights, &x, m);
    let bound = T::KIND.error_bound();
    let cpu = run_cpu(&weights, &x, m)?;
    let cpu_report = reference::compare(&cpu.y, &reference, &weights.config);
    let gpu_result = gpu.as_ref().map(|gpu| run_gpu(gpu, &weights, &x, m, args.iters)).transpose()?;

    let mut rows = vec![Row { path: "cpu", report: cpu_report, time: Some(cpu.median) }];
    if let Some(g) = &gpu_result {
        let report = reference::compare(&g.y, &reference, &weights.config);
        rows.push(Row { path: "gpu", report, time: g.timing.as_ref().map(|t| t.device_per_launch) });
    }
    if let Some(expected) = &expected {
        rows.push(Row {
            path: "reference vs expect",
            report: reference::compare(&reference, expected, &config),
            time: None,
        });
        rows.push(Row { path: "cpu vs expect", report: reference::compare(&cpu.y, expected, &config), time: None });
        if let Some(g) = &gpu_result {
            rows.push(Row { path: "gpu vs expect", report: reference::compare(&g.y, expected, &config), time: None });
        }
    }
    print_table(&rows, bound);
    print_timing_notes(&cpu, gpu_result.as_ref(), &weights, m);
    Ok(rows.iter().all(|row| row.report.passes(bound)))
}

/// `run --prologue`: the CPU prologue on a model directory's layer against the float64 oracle.
fn run_prologue<T: Dtype>(args: &RunArgs, dir: &std::path::Path) -> Result<bool> {
    use fused_qkv::prologue::{prologue_f64, CpuPrologue, PrologueCall, RopeStyle};
    let model = checkpoint::ModelDir::open(dir)?;
    let weights = model.load_prologue_layer::<T>(args.layer)?;
    let table = fused_qkv::rope::RopeTable::for_model(model.config())?;
    let (config, m) = (model.config().qkv, args.tokens);
    let x = random_input::<T>(config.hidden, m, args.seed)?;
    let residual = random_input::<T>(config.hidden, m, args.seed.wrapping_add(1))?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5151);
    let positions: Vec<i64> = (0..m).map(|_| rng.gen_range(0..table.max_positions as i64)).collect();
    print_header(args, &config, m);
    println!(
        "prologue: residual add, q/k norm {}, RoPE theta {} ({}), positions random below {}",
        if weights.q_norm.is_some() { "yes" } else { "no" },
        model.config().rope_theta,
        model.config().rope_scaling.as_ref().map_or("no scaling".to_string(), |s| format!("scaling {s}")),
        table.max_positions
    );
    if m == 0 {
        println!("\nM = 0: nothing to compare.");
        return Ok(true);
    }
    let call = PrologueCall { positions: &positions, table: &table, style: RopeStyle::Neox };
    let reference = prologue_f64(&weights, &x, Some(&residual), &call, m)?;
    let twin = CpuPrologue::new(weights.clone());
    let mut r = residual.clone();
    let started = Instant::now();
    let (q, k, v) = twin.forward(&x, Some(&mut r), &call, None, m)?;
    let time = started.elapsed();
    let y = reference::join_qkv(&weights.qkv, m, &q, &k, &v);
    let rows = [Row { path: "cpu", report: reference::compare(&y, &reference, &config), time: Some(time) }];
    let bound = T::KIND.error_bound();
    print_table(&rows, bound);
    println!("\nThe GPU prologue kernel is not there yet (issue 13): CPU only.");
    Ok(rows.iter().all(|row| row.report.passes(bound)))
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// `y [m, N]` (q | k | v columns) from the f32 tensors q, k and v of the safetensors file at `path`.
fn expected_outputs(path: &std::path::Path, c: &QkvConfig, m: usize) -> Result<Vec<f64>> {
    let mut parts = Vec::new();
    for (name, cols) in [("q", c.q_cols()), ("k", c.kv_cols()), ("v", c.kv_cols())] {
        let (shape, values) = checkpoint::load_tensor::<f32>(path, name)?;
        if shape != [m, cols] {
            return Err(Error::InvalidConfig(format!(
                "{}: {name} has shape {shape:?}, wanted [{m}, {cols}]",
                path.display()
            )));
        }
        parts.push((values, cols));
    }
    let mut y = Vec::with_capacity(m * c.qkv_cols());
    for row in 0..m {
        for (values, cols) in &parts {
            y.extend(values[row * cols..(row + 1) * cols].iter().map(|&v| v as f64));
        }
    }
    Ok(y)
}

fn build_weights<T: Dtype>(args: &RunArgs, config: &QkvConfig) -> Result<QkvWeights<T>> {
    match &args.weights {
        Some(path) => checkpoint::load_layer::<T>(path, config, args.layer),
        None => QkvWeights::random(*config, args.seed),
    }
}

/// Seeded random `x [m, hidden]`: roughly standard-normal values, each row scaled by `10^u` with
/// `u` uniform in [-3, 3], so row magnitudes span 1e-3 .. 1e3. No element rounds to zero.
fn random_input<T: Dtype>(hidden: usize, m: usize, seed: u64) -> Result<Vec<T>> {
    let len = m.checked_mul(hidden).ok_or_else(|| Error::Overflow(format!("M = {m} tokens times hidden {hidden}")))?;
    let mut x = Vec::new();
    x.try_reserve_exact(len).map_err(|e| Error::Overflow(format!("cannot allocate x [{m}, {hidden}]: {e}")))?;
    // A different stream from the weights', which use `seed` itself.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    for _ in 0..m {
        let scale = 10f64.powf(rng.gen_range(-3.0..=3.0));
        for _ in 0..hidden {
            x.push(loop {
                let value = T::from_f32((standard_normal(&mut rng) * scale) as f32);
                if value.to_f32() != 0.0 {
                    break value;
                }
            });
        }
    }
    Ok(x)
}

/// One standard-normal sample (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

// ---------------------------------------------------------------------------------------------
// CPU

struct CpuRun {
    /// Output as `y [m, N]`.
    y: Vec<f64>,
    /// Median wall-clock time of one `forward`.
    median: Duration,
    calls: usize,
    threads: usize,
}

/// Runs the CPU layer once for the check, then again (up to [`MAX_CPU_CALLS`] calls in all, within
/// [`CPU_TIME_BUDGET`]) for the timing.
fn run_cpu<T: Dtype>(weights: &QkvWeights<T>, x: &[T], m: usize) -> Result<CpuRun> {
    let layer = CpuLayer::new(weights.clone());
    let started = Instant::now();
    let (q, k, v) = layer.forward(x, m)?;
    let mut times = vec![started.elapsed()];
    while times.len() < MAX_CPU_CALLS && started.elapsed() < CPU_TIME_BUDGET {
        let t = Instant::now();
        layer.forward(x, m)?;
        times.push(t.elapsed());
    }
    Ok(CpuRun {
        y: reference::join_qkv(weights, m, &q, &k, &v),
        median: median_duration(&mut times),
        calls: times.len(),
        threads: rayon::current_num_threads(),
    })
}

// ---------------------------------------------------------------------------------------------
// GPU

/// The CUDA context and the loaded kernels. Field order is drop order: the module goes before
/// the context that owns it.
struct Gpu {
    kernels: Arc<Kernels>,
    _context: Context,
    description: String,
}

impl Gpu {
    fn init() -> Result<Self> {
        let context = cuda(cust::quick_init(), "initialising CUDA")?;
        let kernels = Arc::new(Kernels::load()?);
        let device = cuda(CurrentContext::get_device(), "querying the current device")?;
        let name = cuda(device.name(), "querying the device name")?;
        let (major, minor) = kernels.compute_capability();
        Ok(Gpu { kernels, _context: context, description: format!("{name} (compute capability {major}.{minor})") })
    }

    /// The device name (the part of the description before the compute capability).
    fn name(&self) -> &str {
        self.description.split(" (compute capability").next().unwrap_or(&self.description)
    }
}

/// Attaches context to a `cust` result.
fn cuda<R>(result: CudaResult<R>, context: &str) -> Result<R> {
    result.context(|| context.to_string())
}

/// The device buffers of one call.
struct DeviceIo<T: cust::memory::DeviceCopy> {
    x: DeviceBuffer<T>,
    q: DeviceBuffer<T>,
    k: DeviceBuffer<T>,
    v: DeviceBuffer<T>,
}

struct GpuRun {
    /// Output as `y [m, N]`.
    y: Vec<f64>,
    /// `None` with `--iters 0`.
    timing: Option<GpuTiming>,
}

struct GpuTiming {
    /// Median over batches of the event-timed batch time divided by its launches.
    device_per_launch: Duration,
    batches: usize,
    /// Median host time of `forward_into` + `stream.synchronize()`.
    host_per_call: Duration,
    /// Median host time of `forward_into` alone (enqueueing), over the timed batches.
    enqueue_per_call: Duration,
    calls: usize,
}

/// Uploads the layer and x, runs one checked launch into NaN-filled outputs, downloads the
/// result, then times `iters` launches.
fn run_gpu<T: Dtype>(gpu: &Gpu, weights: &QkvWeights<T>, x: &[T], m: usize, iters: usize) -> Result<GpuRun> {
    let layer = GpuLayer::new(gpu.kernels.clone(), weights)?;
    let stream = cuda(Stream::new(StreamFlags::NON_BLOCKING, None), "creating a stream")?;
    let c = weights.config;
    let nan_buffer = |what: &str, len: usize| {
        cuda(
            DeviceBuffer::from_slice(&vec![T::from_f32(f32::NAN); len]),
            &format!("allocating {what} ({len} elements)"),
        )
    };
    let mut io = DeviceIo {
        x: cuda(DeviceBuffer::from_slice(x), "copying x to the device")?,
        q: nan_buffer("q", m * c.q_cols())?,
        k: nan_buffer("k", m * c.kv_cols())?,
        v: nan_buffer("v", m * c.kv_cols())?,
    };
    layer.forward_into(&stream, &io.x, m, &mut io.q, &mut io.k, &mut io.v)?;
    cuda(stream.synchronize(), "running the checked launch")?;
    let (q, k, v) = (GpuLayer::download(&io.q)?, GpuLayer::download(&io.k)?, GpuLayer::download(&io.v)?);
    let y = reference::join_qkv(weights, m, &q, &k, &v);
    let timing = if iters == 0 {
        None
    } else {
        Some(time_gpu(&gpu.kernels, &stream, iters, || {
            layer.forward_into(&stream, &io.x, m, &mut io.q, &mut io.k, &mut io.v)
        })?)
    };
    Ok(GpuRun { y, timing })
}

/// Warms up, then times `iters` launches in batches of [`LAUNCHES_PER_BATCH`], each between two
/// CUDA events. Before each batch a delay kernel holds the stream while the host enqueues the
/// batch, so the launches run back to back on the GPU and the events measure the GPU's time, not
/// the host's launch rate. Then `iters` synchronised calls with the host clock.
fn time_gpu(
    kernels: &Kernels,
    stream: &Stream,
    iters: usize,
    mut launch: impl FnMut() -> Result<()>,
) -> Result<GpuTiming> {
    for _ in 0..WARMUP_LAUNCHES {
        launch()?;
    }
    cuda(stream.synchronize(), "running the warm-up launches")?;

    let batches: Vec<usize> =
        (0..iters).step_by(LAUNCHES_PER_BATCH).map(|start| LAUNCHES_PER_BATCH.min(iters - start)).collect();
    let new_event = || cuda(Event::new(EventFlags::DEFAULT), "creating an event");
    let events = batches.iter().map(|_| Ok((new_event()?, new_event()?))).collect::<Result<Vec<_>>>()?;
    let mut enqueue = Vec::with_capacity(batches.len());
    for ((start, end), &launches) in events.iter().zip(&batches) {
        kernels.enqueue_delay(stream, DELAY_NS_PER_LAUNCH * launches as u64)?;
        cuda(start.record(stream), "recording an event")?;
        let t = Instant::now();
        for _ in 0..launches {
            launch()?;
        }
        enqueue.push(t.elapsed() / launches as u32);
        cuda(end.record(stream), "recording an event")?;
    }
    cuda(stream.synchronize(), "running the timed launches")?;
    let mut per_launch = Vec::with_capacity(batches.len());
    for ((start, end), &launches) in events.iter().zip(&batches) {
        let ms = cuda(end.elapsed_time_f32(start), "reading an event time")?;
        per_launch.push(Duration::from_secs_f64(f64::from(ms.max(0.0)) * 1e-3 / launches as f64));
    }

    let mut host = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        launch()?;
        cuda(stream.synchronize(), "running a timed call")?;
        host.push(t.elapsed());
    }
    Ok(GpuTiming {
        device_per_launch: median_duration(&mut per_launch),
        batches: batches.len(),
        host_per_call: median_duration(&mut host),
        enqueue_per_call: median_duration(&mut enqueue),
        calls: iters,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

struct Row {
    path: &'static str,
    report: ErrorReport,
    time: Option<Duration>,
}

fn print_header(args: &RunArgs, c: &QkvConfig, m: usize) {
    let weights = match (&args.weights, &args.model_dir) {
        (Some(path), _) | (None, Some(path)) => format!("{}, layer {}", path.display(), args.layer),
        (None, None) => format!("random (seed {})", args.seed),
    };
    let model = args.model_dir.as_ref().map_or(args.model.clone(), |dir| dir.display().to_string());
    println!("model:    {model} (eps = {:e})", c.eps);
    println!(
        "shapes:   M = {}, H = {}, N = {} (q {} + k {} + v {}), bias: {}",
        m,
        c.hidden,
        c.qkv_cols(),
        c.q_cols(),
        c.kv_cols(),
        c.kv_cols(),
        if c.bias { "yes" } else { "no" }
    );
    println!("dtype:    {}", args.dtype);
    println!("weights:  {weights}");
    match &args.input {
        Some(path) => println!("input:    {}", path.display()),
        None => println!("input:    random (seed {}), row magnitudes 1e-3 .. 1e3", args.seed),
    }
    if let Some(path) = &args.expect {
        println!("expect:   {}", path.display());
    }
}

fn print_table(rows: &[Row], bound: f64) {
    println!();
    let width = rows.iter().map(|row| row.path.len()).max().unwrap_or(0).max(5);
    println!(
        "{:<width$} {:>12} {:>14} {:>16} {:>12} {:>11} {:>8}  {:<5} {:>10}",
        "path", "rel err (F)", "worst row", "worst q/k/v", "max abs err", "non-finite", "bound", "check", "time"
    );
    for row in rows {
        let r = &row.report;
        let block = ["q", "k", "v"][r.worst_block.1];
        println!(
            "{:<width$} {:>12.3e} {:>14} {:>16} {:>12.3e} {:>11} {:>8.1e}  {:<5} {:>10}",
            row.path,
            r.rel_frobenius,
            format!("{:.3e} @{}", r.worst_row.1, r.worst_row.0),
            format!("{:.3e} @{} {block}", r.worst_block.2, r.worst_block.0),
            r.max_abs,
            r.non_finite,
            bound,
            if r.passes(bound) { "PASS" } else { "FAIL" },
            row.time.map_or_else(|| "-".to_string(), format_duration),
        );
    }
}

fn print_timing_notes<T: Dtype>(cpu: &CpuRun, gpu: Option<&GpuRun>, weights: &QkvWeights<T>, m: usize) {
    println!();
    println!(
        "rel err (F): ||out - ref||_F / ||ref||_F against the float64 reference; worst row / q,k,v block of a \
         row: the same per row and per block (@ row); each must be within the bound (the dtype's)."
    );
    println!("cpu time: median wall clock of {} forward call(s), {} rayon threads.", cpu.calls, cpu.threads);
    let Some(gpu) = gpu else { return };
    let vs_cpu = reference::compare(&gpu.y, &cpu.y, &weights.config);
    println!(
        "gpu vs cpu: rel Frobenius difference {:.3e}, max abs difference {:.3e}.",
        vs_cpu.rel_frobenius, vs_cpu.max_abs
    );
    match &gpu.timing {
        None => println!("gpu time: not measured (--iters 0)."),
        Some(t) => {
            let gb_per_s = bytes_moved(weights, m) as f64 / t.device_per_launch.as_secs_f64() / 1e9;
            println!(
                "gpu time: median device time per launch over {} event-timed batch(es) of up to {} \
                 back-to-back launches ({gb_per_s:.0} GB/s of compulsory traffic); host time of \
                 forward_into + synchronize: {} (median of {}).",
                t.batches,
                LAUNCHES_PER_BATCH,
                format_duration(t.host_per_call),
                t.calls
            );
        }
    }
}

/// Bytes one launch must read and write at least: weights, gamma, bias, x, q, k and v.
fn bytes_moved<T: Dtype>(weights: &QkvWeights<T>, m: usize) -> usize {
    let c = &weights.config;
    let elements = c.weight_len() + c.hidden + if c.bias { c.qkv_cols() } else { 0 } + m * (c.hidden + c.qkv_cols());
    elements * T::KIND.size_bytes()
}

fn format_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Median of a non-empty list (zero for an empty one).
fn median_duration(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}
