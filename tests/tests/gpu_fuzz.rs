//! GPU against the float64 oracle (and the CPU implementation) over random shapes, eps, dtypes,
//! bias and kernels. Needs a CUDA GPU: run with `--include-ignored` (see README).
//! `FUSED_QKV_CASES` sets the proptest case count per dtype (default 256).
//!
//! Every launch writes into outputs filled with NaN, with NaN guard elements past the end, so an
//! unwritten element or a write out of bounds fails the case; every check bounds the error over
//! the whole output, per row and per q/k/v block of a row, so one wrong row fails too.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cust::context::{Context, CurrentContext};
use cust::memory::{DeviceBuffer, DevicePointer, DeviceSlice};
use cust::stream::{Stream, StreamFlags};
use fused_qkv::cpu::CpuLayer;
use fused_qkv::gpu::{GpuLayer, KernelPolicy, Kernels, SplitK, Workspace};
use fused_qkv::kernel_abi::{Kernel, Tile};
use fused_qkv::reference::{compare, join_qkv, reference_f64};
use fused_qkv::{Dtype, DtypeKind, Error, QkvConfig, QkvWeights};
use half::{bf16, f16};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tests::{case, case_count, hidden_states, weights, Case};

/// Elements past each output's end that must stay NaN.
const GUARD: usize = 67;

/// What every test shares: the primary context and the loaded kernels, made once per test
/// process (never dropped), so the PTX is JIT-compiled once, not once per test.
///
/// The tests take turns on the GPU ([`TURN`]): run in parallel threads of one process they have
/// crashed inside libcuda (a segfault at address 0x298, H200, driver 580.159.04; 2 of ~10 runs
/// before programmatic dependent launch, 3 of 5 with it, once invalidating another thread's
/// stream capture first), one at a time never (bench/NOTES.md "programmatic dependent launch").
struct Shared {
    context: Context,
    kernels: Arc<Kernels>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// Held by the test using the GPU (see [`Shared`]).
static TURN: Mutex<()> = Mutex::new(());

/// A test's view of the GPU: the shared kernels, a stream of its own, and the turn.
struct Gpu {
    kernels: Arc<Kernels>,
    stream: Stream,
    _turn: MutexGuard<'static, ()>,
}

fn gpu() -> Gpu {
    // A test that failed while holding the turn leaves it poisoned: the next one goes on.
    let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let shared = SHARED.get_or_init(|| {
        let context = cust::quick_init().expect("a CUDA GPU (these tests are #[ignore]d without one)");
        let kernels = Arc::new(Kernels::load().expect("loading the PTX"));
        Shared { context, kernels }
    });
    // The context is current on the thread that made it; every test thread needs it too.
    CurrentContext::set_current(&shared.context).expect("making the context current");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None).expect("a stream");
    Gpu { kernels: shared.kernels.clone(), stream, _turn: turn }
}

fn nan_buffer<T: Dtype>(len: usize) -> DeviceBuffer<T> {
    DeviceBuffer::from_slice(&vec![T::from_f32(f32::NAN); len]).expect("allocating an output")
}

fn download<T: Dtype>(buffer: &DeviceSlice<T>) -> Vec<T> {
    GpuLayer::<T>::download(buffer).expect("copying back")
}

/// Fails unless every element of q, k and v is still NaN (nothing was written).
fn assert_untouched<T: Dtype>([q, k, v]: [&DeviceSlice<T>; 3], what: &str) {
    for (name, out) in [("q", q), ("k", k), ("v", v)] {
        assert!(download(out).iter().all(|e| e.to_f32().is_nan()), "{what} wrote {name}");
    }
}

/// Whether `kernel` may run a call on `config` with `x` placed `x_offset` elements into its
/// buffer: the conditions its family documents (kernel-abi), stated here independently of the
/// dispatch's code.
fn applies(kernel: &Kernel, config: &QkvConfig, x_offset: usize) -> bool {
    let vector = config.hidden.is_multiple_of(16 / kernel.dtype.size_bytes() as usize) && x_offset == 0;
    match kernel.tile {
        Tile::Gemv(_) | Tile::Mma(_) => vector,
        Tile::Fallback(t) => vector || !t.vector,
        Tile::Wgmma(_) => vector && config.q_cols().is_multiple_of(2) && config.kv_cols().is_multiple_of(2),
    }
}

/// The kernel policy for a case: the dispatch table, a policy that forces one path, or one
/// kernel of the loaded list (the kernel ABI's table) that applies to the case, so every kernel
/// meets every shape.
fn policy_for<T: Dtype>(gpu: &Gpu, pick: u16, config: &QkvConfig, x_offset: usize) -> KernelPolicy {
    let candidates: Vec<&'static Kernel> =
        gpu.kernels.loaded(T::KIND).filter(|k| applies(k, config, x_offset)).collect();
    let tensor_cores = candidates.iter().any(|k| matches!(k.tile, Tile::Mma(_)));
    let wgmma = candidates.iter().any(|k| matches!(k.tile, Tile::Wgmma(_)));
    match pick % 8 {
        1 => KernelPolicy::Simt,
        2 if tensor_cores => KernelPolicy::TensorCore,
        3 if wgmma => KernelPolicy::Wgmma,
        4..=6 => KernelPolicy::Kernel(candidates[pick as usize / 8 % candidates.len()].name),
        _ => KernelPolicy::Auto,
    }
}

/// Split-K for a case: the measured rule, 1 to 8 blocks per `wgmma` tile (more than the
/// k-blocks of a small H leaves blocks with nothing to add; the result must not change), or a
/// stream-K grid of one block per resident slot or of 1 to 300 blocks (few blocks walk many
/// tiles; uneven ranges start and end mid-tile).
fn split_for(pick: u16) -> SplitK {
    match pick / 64 % 4 {
        0 => SplitK::Auto,
        1 => SplitK::fixed(1 + u32::from(pick / 256 % 8)).unwrap(),
        2 => SplitK::Stream(0),
        _ => SplitK::Stream(1 + u32::from(pick / 256 % 300)),
    }
}

/// Runs one case on the GPU (x placed `x_offset` elements into its buffer, which moves it off
/// 16-byte alignment and onto the scalar kernel) and checks it.
fn check_case<T: Dtype>(gpu: &Gpu, c: Case, x_offset: usize, pick: u16) -> Result<(), TestCaseError> {
    let w = weights::<T>(c.config, c.seed);
    let x = hidden_states::<T>(&c.config, c.m, c.seed.wrapping_add(1));
    let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).expect("uploading weights");
    let (policy, split_k) = (policy_for::<T>(gpu, pick, &c.config, x_offset), split_for(pick));
    layer.set_kernel_policy(policy);
    layer.set_split_k(split_k);
    let mut x_host = vec![T::from_f32(1.0); x_offset];
    x_host.extend_from_slice(&x);
    let x_buffer = DeviceBuffer::from_slice(&x_host).expect("uploading x");
    // SAFETY: a sub-range of a live allocation.
    let x_dev = unsafe { DeviceSlice::from_raw_parts(x_buffer.as_device_ptr().wrapping_add(x_offset), x.len()) };
    let what = format!("{} {c:?} x_offset {x_offset} {policy:?} {split_k:?}", T::KIND);
    let y_gpu = run_into(gpu, &layer, &x_dev, &w, c.m).map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
    let y_ref = reference_f64(&w, &x, c.m);
    let bound = T::KIND.error_bound();
    let report = compare(&y_gpu, &y_ref, &c.config);
    prop_assert!(report.passes(bound), "{what}: GPU {report:?} (bound {bound})");
    let (cq, ck, cv) = CpuLayer::new(w.clone()).forward(&x, c.m).expect("cpu");
    let cpu_report = compare(&join_qkv(&w, c.m, &cq, &ck, &cv), &y_ref, &c.config);
    prop_assert!(cpu_report.passes(bound), "{what}: CPU {cpu_report:?}");
    Ok(())
}

/// `forward_into` into NaN-filled outputs of exactly the needed length plus a NaN guard; checks
/// the guards and returns `y [m, N]`.
fn run_into<T: Dtype>(
    gpu: &Gpu,
    layer: &GpuLayer<T>,
    x: &DeviceSlice<T>,
    w: &QkvWeights<T>,
    m: usize,
) -> Result<Vec<f64>, String> {
    let c = &w.config;
    let lens = [m * c.q_cols(), m * c.kv_cols(), m * c.kv_cols()];
    let (mut q, mut k, mut v) =
        (nan_buffer::<T>(lens[0] + GUARD), nan_buffer(lens[1] + GUARD), nan_buffer(lens[2] + GUARD));
    layer.forward_into(&gpu.stream, x, m, &mut q, &mut k, &mut v).map_err(|e| format!("launch: {e}"))?;
    gpu.stream.synchronize().map_err(|e| format!("kernel did not complete: {e:?}"))?;
    let (q, k, v) = (download(&q), download(&k), download(&v));
    for (name, out, len) in [("q", &q, lens[0]), ("k", &k, lens[1]), ("v", &v, lens[2])] {
        if !out[len..].iter().all(|e| e.to_f32().is_nan()) {
            return Err(format!("{name}: write past the end"));
        }
    }
    Ok(join_qkv(w, m, &q[..lens[0]], &k[..lens[1]], &v[..lens[2]]))
}

fn fuzz<T: Dtype>() {
    let gpu = gpu();
    let config = ProptestConfig { cases: case_count(256), ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    runner
        .run(&(case(600, 5120, 150_000_000), 0usize..2, any::<u16>()), |(c, x_offset, pick)| {
            check_case::<T>(&gpu, c, x_offset, pick)
        })
        .unwrap();
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_bf16_matches_oracle() {
    fuzz::<bf16>();
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_f16_matches_oracle() {
    fuzz::<f16>();
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_f32_matches_oracle() {
    fuzz::<f32>();
}

/// The named presets at decode sizes around the dispatch crossovers, the forcing policies and
/// every loaded tensor-core kernel, through the allocating `forward` (which hands out NaN-filled
/// buffers, so an element no kernel wrote fails).
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_presets_through_forward() {
    let gpu = gpu();
    let mut policies = vec![KernelPolicy::Auto, KernelPolicy::Simt, KernelPolicy::TensorCore];
    policies.extend(
        gpu.kernels
            .loaded(DtypeKind::Bf16)
            .filter(|k| matches!(k.tile, Tile::Mma(_)))
            .map(|k| KernelPolicy::Kernel(k.name)),
    );
    for (name, config) in fused_qkv::config::PRESETS {
        let w = weights::<bf16>(*config, 11);
        let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).unwrap();
        for m in [1, 2, 3, 4, 5, 7, 9, 16, 17, 33, 64] {
            let x = hidden_states::<bf16>(config, m, 12 + m as u64);
            let x_dev = DeviceBuffer::from_slice(&x).unwrap();
            let reference = reference_f64(&w, &x, m);
            for &policy in &policies {
                layer.set_kernel_policy(policy);
                let (q, k, v) = layer.forward(&gpu.stream, &x_dev, m).unwrap();
                gpu.stream.synchronize().unwrap();
                let y = join_qkv(&w, m, &download(&q), &download(&k), &download(&v));
                let report = compare(&y, &reference, config);
                assert!(report.passes(bf16::KIND.error_bound()), "{name} m={m} {policy:?}: {report:?}");
            }
        }
    }
}

/// Prefill sizes: every loaded wgmma kernel and the dispatch table on the small presets and on
/// shapes that are no multiple of any tile (M, N and H tails), bf16 and f16.
fn prefill_tiles_and_tails<T: Dtype>(gpu: &Gpu) {
    let mut configs: Vec<(String, QkvConfig)> = ["qwen3-0.6b", "qwen2.5-0.5b"]
        .iter()
        .map(|name| (name.to_string(), QkvConfig::preset(name).unwrap()))
        .collect();
    // H = 8 (mod 64) and N = 3 * 66 = 198: partial k-block and partial column tiles.
    let odd = QkvConfig { hidden: 200, num_heads: 1, num_kv_heads: 1, head_dim: 66, ..configs[1].1 };
    configs.push(("odd".into(), odd));
    let mut policies = vec![KernelPolicy::Auto];
    if gpu.kernels.has_wgmma() {
        policies.push(KernelPolicy::Wgmma);
        policies.extend(
            gpu.kernels
                .loaded(T::KIND)
                .filter(|k| matches!(k.tile, Tile::Wgmma(_)))
                .map(|k| KernelPolicy::Kernel(k.name)),
        );
    }
    for (name, config) in configs {
        for bias in [false, true] {
            let config = QkvConfig { bias, ..config };
            let w = weights::<T>(config, 21);
            let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).unwrap();
            // Fewer sizes when few cases are asked for (the sanitizer runs).
            // 5, 63, 65, 100, 129 and 160 tokens: one row tile of the 64-, 128- or 192-row
            // tiles holds them all, so the `x` box is clipped to M
            // (kernel_abi::wgmma::WgmmaTile::x_box_rows). 2500 tokens: more tiles than
            // multiprocessors, so a persistent block takes several.
            let sizes: &[usize] =
                if case_count(256) < 16 { &[5, 65, 129] } else { &[5, 63, 64, 100, 129, 160, 700, 2500] };
            for &m in sizes {
                let x = hidden_states::<T>(&config, m, 22 + m as u64);
                let x_dev = DeviceBuffer::from_slice(&x).unwrap();
                let reference = reference_f64(&w, &x, m);
                for &policy in &policies {
                    layer.set_kernel_policy(policy);
                    // Split-K: none, the rule, 2 and 3 (uneven k ranges), 8 (more blocks than
                    // the odd shape's 4 k-blocks); stream-K: one block per slot, 7 blocks
                    // (each walks many tiles), 1000 (capped at the slots).
                    let splits = [
                        SplitK::Fixed(1),
                        SplitK::Auto,
                        SplitK::Fixed(2),
                        SplitK::Fixed(3),
                        SplitK::Fixed(8),
                        SplitK::Stream(0),
                        SplitK::Stream(7),
                        SplitK::Stream(1000),
                    ];
                    let splits = if policy == KernelPolicy::Auto { &splits[1..2] } else { &splits[..] };
                    for &split_k in splits {
                        layer.set_split_k(split_k);
                        let what = format!("{} {name} bias={bias} m={m} {policy:?} {split_k:?}", T::KIND);
                        let y = run_into(gpu, &layer, &x_dev, &w, m).unwrap_or_else(|e| panic!("{what}: {e}"));
                        let report = compare(&y, &reference, &config);
                        assert!(report.passes(T::KIND.error_bound()), "{what}: {report:?}");
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_prefill_tiles_and_tails() {
    let gpu = gpu();
    if !gpu.kernels.has_wgmma() {
        eprintln!(
            "no wgmma kernels on compute capability {:?}; checking the dispatch table only",
            gpu.kernels.compute_capability()
        );
    }
    prefill_tiles_and_tails::<bf16>(&gpu);
    prefill_tiles_and_tails::<f16>(&gpu);
}

/// M = 0 launches nothing and leaves q, k and v alone.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_zero_tokens_is_a_no_op() {
    let gpu = gpu();
    let config = QkvConfig::preset("qwen3-0.6b").unwrap();
    let layer = GpuLayer::new(gpu.kernels.clone(), &weights::<bf16>(config, 1)).unwrap();
    let x = DeviceBuffer::from_slice(&hidden_states::<bf16>(&config, 1, 2)).unwrap();
    let (mut q, mut k, mut v) = (nan_buffer::<bf16>(8), nan_buffer(9), nan_buffer(10));
    layer.forward_into(&gpu.stream, &x, 0, &mut q, &mut k, &mut v).unwrap();
    gpu.stream.synchronize().unwrap();
    assert_untouched([&q, &k, &v], "M = 0");
    let (q, k, v) = layer.forward(&gpu.stream, &x, 0).unwrap();
    assert_eq!((q.len(), k.len(), v.len()), (0, 0, 0));
}

/// Bad buffers are errors, never launches: too-short input and outputs, misaligned views.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_rejects_bad_buffers() {
    let gpu = gpu();
    let config = QkvConfig::preset("qwen2.5-0.5b").unwrap();
    let layer = GpuLayer::new(gpu.kernels.clone(), &weights::<bf16>(config, 1)).unwrap();
    let m = 2;
    let x = DeviceBuffer::from_slice(&hidden_states::<bf16>(&config, m, 2)).unwrap();
    let (mut q, mut k, mut v) =
        (nan_buffer::<bf16>(m * config.q_cols()), nan_buffer(m * config.kv_cols()), nan_buffer(m * config.kv_cols()));
    let err = layer.forward_into(&gpu.stream, &x, m + 1, &mut q, &mut k, &mut v).unwrap_err();
    assert!(matches!(err, Error::TooShort { what: "x", .. }), "{err}");
    let mut short_k = nan_buffer::<bf16>(m * config.kv_cols() - 1);
    let err = layer.forward_into(&gpu.stream, &x, m, &mut q, &mut short_k, &mut v).unwrap_err();
    assert!(matches!(err, Error::TooShort { what: "k", .. }), "{err}");
    // SAFETY: only the address is used; the call must reject it before any launch.
    let odd = unsafe {
        DeviceSlice::from_raw_parts(DevicePointer::<bf16>::from_raw(x.as_device_ptr().as_raw() + 1), x.len() - 1)
    };
    let err = layer.forward_into(&gpu.stream, &odd, 1, &mut q, &mut k, &mut v).unwrap_err();
    assert!(matches!(err, Error::Misaligned { what: "x", .. }), "{err}");
    assert_untouched([&q, &k, &v], "a rejected call");
}

/// A layer's calls captured in a CUDA graph and replayed give the same bits as the same calls
/// launched directly (every kernel family the table picks for these M), and a replay writes every
/// output element (the outputs are NaN before it).
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_graph_replay_matches_direct_launches() {
    let gpu = gpu();
    for (name, dtype_is_f32) in [("qwen3-0.6b", false), ("qwen2.5-0.5b", true)] {
        let config = QkvConfig::preset(name).unwrap();
        // 64 and 200 tokens split qwen3-0.6b's wgmma tiles (4 and 2 blocks per tile).
        for m in [1, 3, 32, 64, 200] {
            if dtype_is_f32 {
                graph_matches_direct::<f32>(&gpu, &config, m);
            } else {
                graph_matches_direct::<bf16>(&gpu, &config, m);
            }
        }
    }
}

fn graph_matches_direct<T: Dtype>(gpu: &Gpu, config: &QkvConfig, m: usize) {
    let w = weights::<T>(*config, 31);
    let layer = GpuLayer::new(gpu.kernels.clone(), &w).unwrap();
    let x = DeviceBuffer::from_slice(&hidden_states::<T>(config, m, 32)).unwrap();
    let lens = [m * config.q_cols(), m * config.kv_cols(), m * config.kv_cols()];
    let (mut q, mut k, mut v) = (nan_buffer::<T>(lens[0]), nan_buffer(lens[1]), nan_buffer(lens[2]));
    layer.forward_into(&gpu.stream, &x, m, &mut q, &mut k, &mut v).unwrap();
    gpu.stream.synchronize().unwrap();
    let direct = [download(&q), download(&k), download(&v)];
    let (mut gq, mut gk, mut gv) = (nan_buffer::<T>(lens[0]), nan_buffer(lens[1]), nan_buffer(lens[2]));
    let graph = fused_qkv::gpu::Graph::capture(&gpu.stream, || {
        layer.forward_into(&gpu.stream, &x, m, &mut gq, &mut gk, &mut gv)
    })
    .expect("capturing forward_into");
    gpu.stream.synchronize().unwrap();
    assert_untouched([&gq, &gk, &gv], "capturing (nothing may run during a capture)");
    graph.launch(&gpu.stream).unwrap();
    gpu.stream.synchronize().unwrap();
    let replayed = [download(&gq), download(&gk), download(&gv)];
    for (part, (a, b)) in ["q", "k", "v"].iter().zip(direct.iter().zip(&replayed)) {
        let same = a.iter().zip(b).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(same, "{} {config:?} m={m}: {part} differs between the graph replay and the direct launch", T::KIND);
    }
}

/// The same input gives the same bits twice, for every loaded kernel of the list that applies
/// (bf16, f16, f32) and for the `wgmma` kernels at 1, 2, 3 and 8 blocks per tile: split-K adds
/// its partial tiles in a fixed order, so no result depends on which block finished first.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_every_kernel_is_deterministic() {
    let gpu = gpu();
    deterministic::<bf16>(&gpu);
    deterministic::<f16>(&gpu);
    deterministic::<f32>(&gpu);
}

fn deterministic<T: Dtype>(gpu: &Gpu) {
    let config = QkvConfig { bias: true, ..QkvConfig::preset("qwen3-0.6b").unwrap() };
    let w = weights::<T>(config, 41);
    let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).unwrap();
    let m = 150;
    let x_host = hidden_states::<T>(&config, m, 42);
    let x = DeviceBuffer::from_slice(&x_host).unwrap();
    let reference = reference_f64(&w, &x_host, m);
    let kernels: Vec<&'static Kernel> = gpu.kernels.loaded(T::KIND).filter(|k| applies(k, &config, 0)).collect();
    assert!(!kernels.is_empty());
    for kernel in kernels {
        layer.set_kernel_policy(KernelPolicy::Kernel(kernel.name));
        let wgmma = [SplitK::Fixed(1), SplitK::Fixed(2), SplitK::Fixed(3), SplitK::Fixed(8)];
        let wgmma = [&wgmma[..], &[SplitK::Stream(0), SplitK::Stream(5), SplitK::Stream(37)]].concat();
        let splits = if matches!(kernel.tile, Tile::Wgmma(_)) { &wgmma[..] } else { &[SplitK::Fixed(1)] };
        for &split_k in splits {
            layer.set_split_k(split_k);
            let what = format!("{} {split_k:?}", kernel.name);
            let first = run_into(gpu, &layer, &x, &w, m).unwrap_or_else(|e| panic!("{what}: {e}"));
            let second = run_into(gpu, &layer, &x, &w, m).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(first.iter().zip(&second).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: two runs differ");
            let report = compare(&first, &reference, &config);
            assert!(report.passes(T::KIND.error_bound()), "{what}: {report:?}");
        }
    }
}

/// Layers sharing one stream-K workspace ([`GpuLayer::sharing_workspace`]), run one after another
/// on one stream on stream-K grids, give the same bits as with workspaces of their own.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_layers_sharing_a_workspace() {
    let gpu = gpu();
    if !gpu.kernels.has_wgmma() {
        return;
    }
    let config = QkvConfig::preset("qwen3-0.6b").unwrap();
    let m = 2500;
    let x_host = hidden_states::<bf16>(&config, m, 51);
    let x = DeviceBuffer::from_slice(&x_host).unwrap();
    let weights: Vec<QkvWeights<bf16>> = (0..3).map(|seed| weights::<bf16>(config, 60 + seed)).collect();
    let mut own: Vec<GpuLayer<bf16>> = weights.iter().map(|w| GpuLayer::new(gpu.kernels.clone(), w).unwrap()).collect();
    let shared = Workspace::new(&gpu.kernels, DtypeKind::Bf16).unwrap().expect("a workspace on Hopper");
    let mut sharing: Vec<GpuLayer<bf16>> =
        weights.iter().map(|w| GpuLayer::sharing_workspace(gpu.kernels.clone(), w, shared.clone()).unwrap()).collect();
    for split_k in [SplitK::Auto, SplitK::Stream(0), SplitK::Stream(7)] {
        for layer in own.iter_mut().chain(sharing.iter_mut()) {
            layer.set_split_k(split_k);
        }
        let expected: Vec<Vec<f64>> =
            own.iter().zip(&weights).map(|(layer, w)| run_into(&gpu, layer, &x, w, m).unwrap()).collect();
        for round in 0..2 {
            for (i, (layer, w)) in sharing.iter().zip(&weights).enumerate() {
                let y = run_into(&gpu, layer, &x, w, m).unwrap();
                let same = y.iter().zip(&expected[i]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "layer {i} round {round} {split_k:?}: differs from its own workspace's bits");
            }
        }
    }
}

/// Programmatic dependent launch ([`GpuLayer::set_dependent_launch`]) keeps the stream's order:
/// a chain of layers where each layer's x is the previous layer's q (q as wide as H), run with
/// and without it and replayed from a CUDA graph, gives the same bits every way, and each
/// layer's output matches the float64 reference computed from the previous layer's final q. A
/// layer that read its x before the previous kernel had written it would read NaN (every output
/// starts as NaN) or a partial q (as the mma.sync kernel did once `ptxas` moved its first
/// non-coherent `x` loads above the wait). Token counts cover every kernel family the table
/// picks; W (4 MB) is small enough that the decode kernels launch as dependents too.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_dependent_launches_keep_the_stream_order() {
    let gpu = gpu();
    let config = QkvConfig { hidden: 1024, num_heads: 8, num_kv_heads: 4, head_dim: 128, eps: 1e-6, bias: false };
    assert_eq!(config.q_cols(), config.hidden);
    let weights: Vec<QkvWeights<bf16>> = (0..4).map(|seed| weights::<bf16>(config, 70 + seed)).collect();
    let mut layers: Vec<GpuLayer<bf16>> =
        weights.iter().map(|w| GpuLayer::new(gpu.kernels.clone(), w).unwrap()).collect();
    for m in [1, 3, 12, 40, 300, 2000] {
        assert!(
            layers[0].launches_as_dependent(m).unwrap() == gpu.kernels.has_wgmma(),
            "m={m}: not a dependent launch"
        );
        let x_host = hidden_states::<bf16>(&config, m, 80 + m as u64);
        let x = DeviceBuffer::from_slice(&x_host).unwrap();
        let lens = [m * config.q_cols(), m * config.kv_cols(), m * config.kv_cols()];
        let count = layers.len();
        let outputs = || -> Vec<[DeviceBuffer<bf16>; 3]> {
            (0..count).map(|_| [nan_buffer(lens[0]), nan_buffer(lens[1]), nan_buffer(lens[2])]).collect()
        };
        // Every layer on the stream back to back: layer i reads layer i - 1's q.
        let chain = |layers: &[GpuLayer<bf16>], outs: &mut [[DeviceBuffer<bf16>; 3]]| -> Result<(), Error> {
            for i in 0..layers.len() {
                let (before, rest) = outs.split_at_mut(i);
                let input: &DeviceSlice<bf16> = if i == 0 { &x } else { &before[i - 1][0] };
                let [q, k, v] = &mut rest[0];
                layers[i].forward_into(&gpu.stream, input, m, q, k, v)?;
            }
            Ok(())
        };
        let host = |outs: &[[DeviceBuffer<bf16>; 3]]| -> Vec<[Vec<bf16>; 3]> {
            outs.iter().map(|[q, k, v]| [download(q), download(k), download(v)]).collect()
        };
        let mut runs = Vec::new();
        for dependent in [true, false] {
            for layer in layers.iter_mut() {
                layer.set_dependent_launch(dependent);
            }
            let mut outs = outputs();
            chain(&layers, &mut outs).unwrap();
            gpu.stream.synchronize().unwrap();
            runs.push((format!("direct, dependent launch {dependent}"), host(&outs)));
        }
        for layer in layers.iter_mut() {
            layer.set_dependent_launch(true);
        }
        let mut outs = outputs();
        let graph = fused_qkv::gpu::Graph::capture(&gpu.stream, || chain(&layers, &mut outs)).unwrap();
        graph.launch(&gpu.stream).unwrap();
        gpu.stream.synchronize().unwrap();
        runs.push(("graph, dependent launch true".into(), host(&outs)));
        let first = &runs[0].1;
        for (what, run) in &runs[1..] {
            for (i, (a, b)) in first.iter().zip(run).enumerate() {
                let pairs = || a.iter().zip(b).flat_map(|(a, b)| a.iter().zip(b));
                let differ = pairs().filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                let nan = [pairs().filter(|(a, _)| a.is_nan()).count(), pairs().filter(|(_, b)| b.is_nan()).count()];
                assert!(
                    differ == 0,
                    "m={m} layer {i}: {what} differs from {} in {differ} elements (NaN: {} / {})",
                    runs[0].0,
                    nan[1],
                    nan[0]
                );
            }
        }
        for (i, [q, k, v]) in first.iter().enumerate() {
            let input = if i == 0 { &x_host } else { &first[i - 1][0] };
            let reference = reference_f64(&weights[i], input, m);
            let report = compare(&join_qkv(&weights[i], m, q, k, v), &reference, &config);
            assert!(report.passes(DtypeKind::Bf16.error_bound()), "m={m} layer {i}: {report:?}");
        }
    }
}
