//! GPU against the float64 oracle (and the CPU implementation) over random shapes, eps, dtypes
//! and bias. Needs a CUDA GPU: run with `--include-ignored` (see README). `FUSED_QKV_CASES` sets
//! the proptest case count per dtype (default 256).
//!
//! Every launch writes into outputs filled with NaN, with NaN guard elements past the end, so an
//! unwritten element or a write out of bounds fails the case.

use std::sync::Arc;

use cust::context::Context;
use cust::memory::{CopyDestination, DeviceBuffer, DevicePointer, DeviceSlice};
use cust::stream::{Stream, StreamFlags};
use fused_qkv::cpu::CpuLayer;
use fused_qkv::gpu::{GpuLayer, KernelPolicy, Kernels};
use fused_qkv::reference::{compare, join_qkv, reference_f64};
use fused_qkv::{Dtype, Error, QkvConfig};
use half::{bf16, f16};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tests::{case, case_count, hidden_states, weights, Case};

/// Elements past each output's end that must stay NaN.
const GUARD: usize = 67;

/// Fields drop in order: the stream and module go before the context that owns them.
struct Gpu {
    kernels: Arc<Kernels>,
    stream: Stream,
    _context: Context,
}

fn gpu() -> Gpu {
    let context = cust::quick_init().expect("a CUDA GPU (these tests are #[ignore]d without one)");
    let kernels = Arc::new(Kernels::load().expect("loading the PTX"));
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None).expect("a stream");
    Gpu { kernels, stream, _context: context }
}

fn nan_buffer<T: Dtype>(len: usize) -> DeviceBuffer<T> {
    DeviceBuffer::from_slice(&vec![T::from_f32(f32::NAN); len]).expect("allocating an output")
}

fn download<T: Dtype>(buffer: &DeviceSlice<T>) -> Vec<T> {
    GpuLayer::<T>::download(buffer).expect("copying back")
}

/// The kernel policy for a case: the dispatch table, or one path forced (the tensor-core kernels
/// only where they apply: bf16/f16, hidden % 8 == 0, aligned x; wgmma also needs compute
/// capability 9.0 and even q and kv widths), so every kernel meets every shape.
fn policy_for<T: Dtype>(pick: u8, config: &QkvConfig, x_offset: usize, has_wgmma: bool) -> KernelPolicy {
    let tensor_core_ok = T::KIND != fused_qkv::DtypeKind::F32 && config.hidden.is_multiple_of(8) && x_offset == 0;
    let wgmma_ok =
        tensor_core_ok && has_wgmma && config.q_cols().is_multiple_of(2) && config.kv_cols().is_multiple_of(2);
    match pick % 6 {
        4 if wgmma_ok => KernelPolicy::Wgmma,
        5 if wgmma_ok => {
            let tiles = [(128, 256, 4), (128, 128, 4), (128, 128, 3), (64, 256, 4), (64, 128, 4)];
            let (rows, cols, stages) = tiles[pick as usize / 6 % tiles.len()];
            KernelPolicy::WgmmaTile { rows, cols, stages }
        }
        1 => KernelPolicy::Simt,
        2 if tensor_core_ok => KernelPolicy::TensorCore,
        3 if tensor_core_ok => {
            let tile = pick / 4;
            KernelPolicy::TensorCoreTile {
                rows: [16, 32][tile as usize % 2],
                warps: [4, 8][tile as usize / 2 % 2],
                depth: [2, 3][tile as usize / 4 % 2],
            }
        }
        _ => KernelPolicy::Auto,
    }
}

/// Runs one case on the GPU (x placed `x_offset` elements into its buffer, which moves it off
/// 16-byte alignment and onto the scalar kernel) and checks it.
fn check_case<T: Dtype>(gpu: &Gpu, c: Case, x_offset: usize, pick: u8) -> Result<(), TestCaseError> {
    let w = weights::<T>(c.config, c.seed);
    let x = hidden_states::<T>(&c.config, c.m, c.seed.wrapping_add(1));
    let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).expect("uploading weights");
    let policy = policy_for::<T>(pick, &c.config, x_offset, gpu.kernels.has_wgmma());
    layer.set_kernel_policy(policy);
    let mut x_host = vec![T::from_f32(1.0); x_offset];
    x_host.extend_from_slice(&x);
    let x_buffer = DeviceBuffer::from_slice(&x_host).expect("uploading x");
    // SAFETY: a sub-range of a live allocation.
    let x_dev = unsafe { DeviceSlice::from_raw_parts(x_buffer.as_device_ptr().wrapping_add(x_offset), x.len()) };
    let lens = [c.m * c.config.q_cols(), c.m * c.config.kv_cols(), c.m * c.config.kv_cols()];
    let (mut q, mut k, mut v) =
        (nan_buffer::<T>(lens[0] + GUARD), nan_buffer(lens[1] + GUARD), nan_buffer(lens[2] + GUARD));
    // Outputs get exactly their length plus the guard; forward_into may only touch the first part.
    layer.forward_into(&gpu.stream, &x_dev, c.m, &mut q, &mut k, &mut v).expect("launch");
    gpu.stream.synchronize().expect("kernel ran to completion");
    let (q, k, v) = (download(&q), download(&k), download(&v));
    for (name, out, len) in [("q", &q, lens[0]), ("k", &k, lens[1]), ("v", &v, lens[2])] {
        prop_assert!(out[len..].iter().all(|e| e.to_f32().is_nan()), "{name}: write past the end");
    }
    let y_ref = reference_f64(&w, &x, c.m);
    let y_gpu = join_qkv(&w, c.m, &q[..lens[0]], &k[..lens[1]], &v[..lens[2]]);
    let bound = T::KIND.error_bound();
    let report = compare(&y_gpu, &y_ref);
    prop_assert!(
        report.passes(bound),
        "{} {:?} x_offset {} {:?}: GPU {:?} (bound {})",
        T::KIND,
        c,
        x_offset,
        policy,
        report,
        bound
    );
    let (cq, ck, cv) = CpuLayer::new(w.clone()).forward(&x, c.m).expect("cpu");
    let cpu_report = compare(&join_qkv(&w, c.m, &cq, &ck, &cv), &y_ref);
    prop_assert!(cpu_report.passes(bound), "{} {:?}: CPU {:?}", T::KIND, c, cpu_report);
    Ok(())
}

fn fuzz<T: Dtype>() {
    let gpu = gpu();
    let config = ProptestConfig { cases: case_count(256), ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    runner
        .run(&(case(600, 5120, 150_000_000), 0usize..2, any::<u8>()), |(c, x_offset, pick)| {
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

/// The named presets at decode sizes around the dispatch crossovers, every kernel policy, through
/// the allocating `forward`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_presets_through_forward() {
    let gpu = gpu();
    for (name, config) in fused_qkv::config::PRESETS {
        let w = weights::<bf16>(*config, 11);
        let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).unwrap();
        for m in [1, 2, 3, 4, 5, 7, 9, 16, 17, 33, 64] {
            let x = hidden_states::<bf16>(config, m, 12 + m as u64);
            let x_dev = DeviceBuffer::from_slice(&x).unwrap();
            let reference = reference_f64(&w, &x, m);
            for policy in [
                KernelPolicy::Auto,
                KernelPolicy::Simt,
                KernelPolicy::TensorCore,
                KernelPolicy::TensorCoreTile { rows: 16, warps: 8, depth: 3 },
            ] {
                layer.set_kernel_policy(policy);
                let (q, k, v) = layer.forward(&gpu.stream, &x_dev, m).unwrap();
                gpu.stream.synchronize().unwrap();
                let report = compare(&join_qkv(&w, m, &download(&q), &download(&k), &download(&v)), &reference);
                assert!(report.passes(bf16::KIND.error_bound()), "{name} m={m} {policy:?}: {report:?}");
            }
        }
    }
}

/// Prefill sizes: every wgmma tile and the dispatch table on the small presets and on shapes
/// that are no multiple of any tile (M, N and H tails), against the float64 oracle.
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
    let mut configs: Vec<(String, QkvConfig)> = ["qwen3-0.6b", "qwen2.5-0.5b"]
        .iter()
        .map(|name| (name.to_string(), QkvConfig::preset(name).unwrap()))
        .collect();
    // H = 8 (mod 64) and N = 3 * 66 = 198: partial k-block and partial column tiles.
    let odd = QkvConfig { hidden: 200, num_heads: 1, num_kv_heads: 1, head_dim: 66, ..configs[1].1 };
    configs.push(("odd".into(), odd));
    for (name, config) in configs {
        for bias in [false, true] {
            let config = QkvConfig { bias, ..config };
            let w = weights::<bf16>(config, 21);
            let mut layer = GpuLayer::new(gpu.kernels.clone(), &w).unwrap();
            // Fewer sizes when few cases are asked for (the sanitizer runs).
            let sizes: &[usize] = if case_count(256) < 16 { &[65, 129] } else { &[63, 64, 129, 700] };
            for &m in sizes {
                let x = hidden_states::<bf16>(&config, m, 22 + m as u64);
                let x_dev = DeviceBuffer::from_slice(&x).unwrap();
                let reference = reference_f64(&w, &x, m);
                let mut policies = vec![KernelPolicy::Auto];
                if gpu.kernels.has_wgmma() {
                    policies.push(KernelPolicy::Wgmma);
                    for (rows, cols, stages) in
                        [(128, 256, 4), (128, 128, 4), (128, 128, 3), (64, 256, 4), (64, 128, 4)]
                    {
                        policies.push(KernelPolicy::WgmmaTile { rows, cols, stages });
                    }
                }
                for policy in policies {
                    layer.set_kernel_policy(policy);
                    let lens = [m * config.q_cols(), m * config.kv_cols(), m * config.kv_cols()];
                    let (mut q, mut k, mut v) =
                        (nan_buffer::<bf16>(lens[0] + GUARD), nan_buffer(lens[1] + GUARD), nan_buffer(lens[2] + GUARD));
                    layer.forward_into(&gpu.stream, &x_dev, m, &mut q, &mut k, &mut v).unwrap();
                    gpu.stream.synchronize().unwrap();
                    let (q, k, v) = (download(&q), download(&k), download(&v));
                    for (out, len) in [(&q, lens[0]), (&k, lens[1]), (&v, lens[2])] {
                        assert!(out[len..].iter().all(|e| e.is_nan()), "{name} m={m} {policy:?}: write past the end");
                    }
                    let y = join_qkv(&w, m, &q[..lens[0]], &k[..lens[1]], &v[..lens[2]]);
                    let report = compare(&y, &reference);
                    assert!(report.passes(bf16::KIND.error_bound()), "{name} bias={bias} m={m} {policy:?}: {report:?}");
                }
            }
        }
    }
}

/// M = 0 launches nothing and leaves the outputs alone.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_zero_tokens_is_a_no_op() {
    let gpu = gpu();
    let config = QkvConfig::preset("qwen3-0.6b").unwrap();
    let layer = GpuLayer::new(gpu.kernels.clone(), &weights::<bf16>(config, 1)).unwrap();
    let x = DeviceBuffer::from_slice(&hidden_states::<bf16>(&config, 1, 2)).unwrap();
    let (mut q, mut k, mut v) = (nan_buffer::<bf16>(8), nan_buffer(8), nan_buffer(8));
    layer.forward_into(&gpu.stream, &x, 0, &mut q, &mut k, &mut v).unwrap();
    gpu.stream.synchronize().unwrap();
    assert!(download(&q).iter().all(|e| e.is_nan()));
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
    let mut host = vec![bf16::ZERO; q.len()];
    q.copy_to(&mut host[..]).unwrap();
    assert!(host.iter().all(|e| e.is_nan()), "a rejected call wrote output");
}
