//! The GPU path: the embedded PTX ([`Kernels`]) and one layer's device weights ([`GpuLayer`]).
//!
//! Calls are stream-ordered: [`GpuLayer::forward_into`] enqueues one launch (several only past
//! 65,535 blocks of tokens along the grid's y) and never synchronises or allocates, so it can be
//! captured in a CUDA graph. Launch errors are returned; errors inside the kernel surface at the
//! caller's next synchronisation, as with any CUDA work.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cust::device::DeviceAttribute;
use cust::function::Function;
use cust::memory::{CopyDestination, DeviceBuffer, DevicePointer, DeviceSlice};
use cust::module::Module;
use cust::prelude::Stream;

use crate::error::CudaContext;
use crate::tma::{TensorMap, TmaEncoder};
use crate::weights::{check_input, check_outputs, FoldedWeights};
use crate::{Dtype, DtypeKind, Error, QkvConfig, QkvWeights, Result};

/// PTX built from `kernel-gpu` by `build.rs` (see `ptx-builder`), one file per architecture.
pub const PTX_SM80: &str = include_str!(env!("FUSED_QKV_PTX_SM_80"));
/// PTX for Hopper (sm_90a: also holds the `wgmma` prefill kernels; runs on compute capability
/// 9.0 only).
pub const PTX_SM90A: &str = include_str!(env!("FUSED_QKV_PTX_SM_90A"));

// Launch contracts mirrored from kernel-gpu (two crates, no shared ABI crate): src/gemv.rs,
// src/fused_qkv_mma.rs, src/fused_qkv_gemm.rs and src/fused_qkv.rs.
const GEMV_THREADS: u32 = 128;
const GEMV_ROWS_PER_BLOCK: usize = 8;
/// The tensor-core tile `Auto` uses: (rows of W per block, warps per block, pipeline depth), the
/// fastest measured on the H100 (bench/NOTES.md).
const MMA_TILE: (usize, usize, usize) = (16, 8, 2);
const TILE_THREADS: u32 = 128;
const WGMMA_THREADS: u32 = 256;
/// The `wgmma` kernels' tiles (rows x columns of y per block, shared-memory stages), largest
/// first. 128-row tiles load through TMA, 64-row tiles through cp.async (kernel-gpu's
/// fused_qkv_gemm.rs says why).
const WGMMA_TILES: [(usize, usize, usize); 5] =
    [(128, 256, 4), (128, 128, 4), (128, 128, 3), (64, 256, 4), (64, 128, 4)];
/// kernel-gpu's `fused_qkv_gemm::shared_bytes`: the stages of (rows + cols) x 128 B, a row scale
/// per row, 1 KB for alignment.
fn wgmma_shared_bytes(rows: usize, cols: usize, stages: usize) -> u32 {
    (stages * (rows + cols) * 128 + rows * 4 + 1024) as u32
}
/// From this many tokens on, bf16 and f16 on Hopper use the `wgmma` prefill kernel (measured
/// crossover, bench/NOTES.md v5: beyond 32 tokens the mma.sync kernel streams W once more per
/// 32 tokens)...
pub const WGMMA_MIN_TOKENS: usize = 33;
/// ...unless W' is smaller than this: then its repeated reads hit L2 and the mma.sync kernel
/// stays ahead up to [`WGMMA_MIN_TOKENS_SMALL_W`] tokens (Qwen2.5-0.5B, 2 MB: 9.5 vs 11.3 us at
/// M = 128, 13.8 vs 11.2 at M = 192).
pub const SMALL_W_BYTES: usize = 4 << 20;
/// The crossover for small W'.
pub const WGMMA_MIN_TOKENS_SMALL_W: usize = 160;
const TILE_M: usize = 8;
const TILE_N: usize = 8;
/// Dynamic shared memory for the tile kernel's staged `x` rows: under the 48 KB a block gets
/// without opting in, less the kernel's static shared memory (256 B) and a margin.
const MAX_STAGE_BYTES: usize = 47 * 1024;
/// From this many tokens on, bf16 and f16 use the tensor-core kernel (measured crossover,
/// bench/NOTES.md); below it the SIMT decode kernel.
pub const TENSOR_CORE_MIN_TOKENS: usize = 3;

/// Which kernels a layer may use. `Auto` is the measured dispatch table (bench/NOTES.md):
///
/// | dtype | GPU | `x` aligned, `hidden % (16 B / dtype) == 0` | tokens | kernel |
/// |---|---|---|---|---|
/// | bf16, f16 | any | yes | 1, 2 | SIMT decode (`gemv`), 1 or 2 tokens per block |
/// | bf16, f16 | any | yes | 3 to 32 (to 159 if W' < 4 MB; any off Hopper) | tensor cores (mma.sync), 16 rows of W x up to 32 tokens per block, 8 warps |
/// | bf16, f16 | compute capability 9.0 | yes, and even q/kv widths, 4-byte aligned outputs | 33 and more (160 if W' < 4 MB) | prefill on `wgmma` (tile: see below) |
/// | f32 | any | yes | 1 to 4 | SIMT decode (`gemv`) |
/// | f32 | any | yes | more | SIMT tile kernel, 8 tokens per block |
/// | any | any | no | any | SIMT tile kernel, scalar loads |
///
/// The `wgmma` tile: 64 x 128 while 128 x 128 tiles would not give every multiprocessor a block;
/// 128 x 256 where N % 256 == 0 and it fills two thirds of them; else 128 x 128 (3 stages, two
/// blocks per multiprocessor, past one wave). The tensor cores multiply bf16/f16 exactly with
/// fp32 accumulation; f32 never uses them (no tf32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelPolicy {
    #[default]
    Auto,
    /// Always the SIMT kernels.
    Simt,
    /// Tensor cores whenever they apply (bf16/f16, aligned), any token count; an error elsewhere.
    TensorCore,
    /// As `TensorCore` with a fixed tile, to measure the table: `rows` of W per block (16 or 32),
    /// `warps` per block (4 or 8) and pipeline `depth` in k-steps (2 or 3).
    TensorCoreTile { rows: usize, warps: usize, depth: usize },
    /// The Hopper prefill kernel (`wgmma`, sm_90a; bf16/f16, aligned, even `q_cols` and
    /// `kv_cols`, 4-byte aligned outputs), any token count, its tile chosen as `Auto` does; an
    /// error elsewhere.
    Wgmma,
    /// As `Wgmma` with a fixed tile: `rows` x `cols` of y per block and `stages` shared-memory
    /// stages, one of 128 x 256 x 4, 128 x 128 x 4, 128 x 128 x 3 (loaded by TMA), 64 x 256 x 4,
    /// 64 x 128 x 4 (loaded by cp.async).
    WgmmaTile { rows: usize, cols: usize, stages: usize },
}

/// A kernel entry point of the embedded PTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum KernelKind {
    /// kernel-gpu/src/gemv.rs, `tokens` per block.
    Gemv { tokens: usize },
    /// kernel-gpu/src/fused_qkv_mma.rs, `rows` of W and `tokens` per block, `warps`, `depth`.
    Mma { rows: usize, tokens: usize, warps: usize, depth: usize },
    /// kernel-gpu/src/fused_qkv.rs, 16-byte (`vector`) or scalar loads, `tokens` per block.
    Tile { vector: bool, tokens: usize },
    /// kernel-gpu/src/fused_qkv_gemm.rs (sm_90a only): `rows` x `cols` tiles of y, `stages`,
    /// TMA or `cp.async` loads.
    Wgmma { rows: usize, cols: usize, stages: usize, tma: bool },
}

impl KernelKind {
    /// Every kernel the PTX holds for `dtype` (`hopper`: the sm_90a PTX).
    fn all(dtype: DtypeKind, hopper: bool) -> Vec<KernelKind> {
        let mut kinds: Vec<KernelKind> = [1, 2, 4].map(|tokens| KernelKind::Gemv { tokens }).to_vec();
        for vector in [true, false] {
            kinds.extend([1, 2, 4, 8].map(|tokens| KernelKind::Tile { vector, tokens }));
        }
        if dtype != DtypeKind::F32 {
            for rows in [16, 32] {
                for tokens in [8, 16, 32] {
                    for (warps, depth) in [(4, 2), (4, 3), (8, 2), (8, 3)] {
                        kinds.push(KernelKind::Mma { rows, tokens, warps, depth });
                    }
                }
            }
            if hopper {
                kinds.extend(WGMMA_TILES.map(|(rows, cols, stages)| KernelKind::Wgmma {
                    rows,
                    cols,
                    stages,
                    tma: rows == 128,
                }));
            }
        }
        kinds
    }

    fn name(self, dtype: DtypeKind) -> String {
        let dtype = dtype.name();
        match self {
            KernelKind::Gemv { tokens } => format!("fused_rmsnorm_qkv_{dtype}_gemv_m{tokens}"),
            KernelKind::Mma { rows, tokens, warps, depth } => {
                format!("fused_rmsnorm_qkv_{dtype}_mma_r{rows}_t{tokens}_w{warps}_d{depth}")
            }
            KernelKind::Tile { vector, tokens } => {
                format!("fused_rmsnorm_qkv_{dtype}_{}_m{tokens}", if vector { "vec" } else { "scalar" })
            }
            KernelKind::Wgmma { rows, cols, stages, tma } => {
                format!("fused_rmsnorm_qkv_{dtype}_wgmma{}_m{rows}_n{cols}_s{stages}", if tma { "_tma" } else { "" })
            }
        }
    }
}

/// One launch configuration.
struct Plan {
    kind: KernelKind,
    threads: u32,
    tokens_per_block: usize,
    grid_x: u32,
    shared_bytes: u32,
    /// The tile kernels' staging chunk (an extra argument).
    chunk: Option<u32>,
    /// Row tiles go along grid x with the column tiles (`grid_x` per row tile), not along y.
    rows_in_grid_x: bool,
}

/// The loaded kernels for the current context's device. Load once and share (e.g. in an `Arc`)
/// between layers: loading JIT-compiles the PTX and looks every kernel up once, so a launch
/// costs no lookup.
pub struct Kernels {
    // Declared before `module`, so dropped before it: the handles borrow the module.
    functions: HashMap<(DtypeKind, KernelKind), Function<'static>>,
    delay: Option<Function<'static>>,
    #[allow(dead_code)] // owns the loaded code the handles point into
    module: Module,
    compute_capability: (i32, i32),
    multiprocessors: usize,
    /// The tensor-map encoder, on Hopper.
    tma: Option<TmaEncoder>,
}

impl Kernels {
    /// Loads the PTX matching the current context's device (sm_90a PTX, with the `wgmma` prefill
    /// kernels, on compute capability 9.0; sm_80 PTX on Ampere, Ada and later). A CUDA context must
    /// be current (e.g. from `cust::quick_init()`).
    pub fn load() -> Result<Self> {
        let device = cust::context::CurrentContext::get_device().context(|| "querying the current device".into())?;
        let major = device
            .get_attribute(DeviceAttribute::ComputeCapabilityMajor)
            .context(|| "querying the compute capability".into())?;
        let minor = device
            .get_attribute(DeviceAttribute::ComputeCapabilityMinor)
            .context(|| "querying the compute capability".into())?;
        if major < 8 {
            return Err(Error::InvalidConfig(format!(
                "the GPU has compute capability {major}.{minor}; these kernels need 8.0 (Ampere) or later"
            )));
        }
        let multiprocessors = device
            .get_attribute(DeviceAttribute::MultiprocessorCount)
            .context(|| "querying the multiprocessor count".into())? as usize;
        let hopper = (major, minor) == (9, 0);
        let ptx = if hopper { PTX_SM90A } else { PTX_SM80 };
        let module = Module::from_ptx(ptx, &[]).context(|| "loading the embedded PTX".into())?;
        let mut functions = HashMap::new();
        for dtype in DtypeKind::ALL {
            for kind in KernelKind::all(dtype, hopper) {
                let name = kind.name(dtype);
                let function = module.get_function(&name).context(|| format!("looking up kernel {name}"))?;
                if let KernelKind::Wgmma { rows, cols, stages, .. } = kind {
                    let bytes = wgmma_shared_bytes(rows, cols, stages) as i32;
                    // SAFETY: a valid function handle of the loaded module; the attribute takes an int.
                    let status = unsafe {
                        cust::sys::cuFuncSetAttribute(
                            function.to_raw(),
                            cust::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                            bytes,
                        )
                    };
                    if status != cust::sys::cudaError_enum::CUDA_SUCCESS {
                        return Err(Error::InvalidConfig(format!(
                            "raising {name}'s dynamic shared memory limit to {bytes} B failed: {status:?}"
                        )));
                    }
                }
                // SAFETY: a `Function` is a handle plus a lifetime marker for the module it came
                // from; `functions` is dropped before `module` (field order) and never handed out
                // beyond `&self`, so no handle outlives the module.
                let function = unsafe { std::mem::transmute::<Function<'_>, Function<'static>>(function) };
                functions.insert((dtype, kind), function);
            }
        }
        let delay = module.get_function("bench_delay").context(|| "looking up kernel bench_delay".into())?;
        // SAFETY: as above.
        let delay = Some(unsafe { std::mem::transmute::<Function<'_>, Function<'static>>(delay) });
        let tma = if hopper { Some(TmaEncoder::load()?) } else { None };
        Ok(Kernels { functions, delay, module, compute_capability: (major, minor), multiprocessors, tma })
    }

    /// The device's compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Whether the `wgmma` prefill kernels are loaded (compute capability 9.0).
    pub fn has_wgmma(&self) -> bool {
        self.compute_capability == (9, 0)
    }

    /// For benchmarks: enqueues a one-thread kernel that waits `nanos` ns on `stream`, so work
    /// the host enqueues meanwhile runs back to back on the GPU, not at the host's launch rate.
    pub fn enqueue_delay(&self, stream: &Stream, nanos: u64) -> Result<()> {
        let function = self.delay.as_ref().ok_or_else(|| Error::InvalidConfig("no bench_delay kernel".into()))?;
        let args = [arg(&nanos)];
        // SAFETY: bench_delay takes one u64 and runs as one thread.
        unsafe { stream.launch(function, (1, 1, 1), (1, 1, 1), 0, &args) }
            .context(|| format!("launching bench_delay ({nanos} ns)"))
    }

    fn function(&self, dtype: DtypeKind, kind: KernelKind) -> Result<&Function<'static>> {
        self.functions
            .get(&(dtype, kind))
            .ok_or_else(|| Error::InvalidConfig(format!("no kernel {} in the embedded PTX", kind.name(dtype))))
    }
}

/// One layer's weights on the device, ready to run: gamma folded into W ([`FoldedWeights`]).
pub struct GpuLayer<T: Dtype> {
    config: QkvConfig,
    kernels: Arc<Kernels>,
    qkv_weight: DeviceBuffer<T>,
    bias: Option<DeviceBuffer<T>>,
    out_scale: f32,
    policy: KernelPolicy,
}

fn upload<T: Dtype>(what: &str, data: &[T]) -> Result<DeviceBuffer<T>> {
    DeviceBuffer::from_slice(data).context(|| format!("copying {what} ({} elements) to the device", data.len()))
}

fn check_aligned<T: Dtype>(what: &'static str, ptr: DevicePointer<T>) -> Result<()> {
    let align = std::mem::align_of::<T>();
    let address = ptr.as_raw();
    if !address.is_multiple_of(align as u64) {
        return Err(Error::Misaligned { what, address, align });
    }
    Ok(())
}

fn vec_width(kind: DtypeKind) -> usize {
    16 / kind.size_bytes()
}

/// Address `count` elements past `ptr` (a kernel argument; never dereferenced on the host).
fn advance<T: Dtype>(ptr: DevicePointer<T>, count: usize) -> DevicePointer<T> {
    ptr.wrapping_add(count)
}

impl<T: Dtype> GpuLayer<T> {
    /// Folds gamma into W ([`QkvWeights::fold_gamma`]) and copies the result to the device
    /// (synchronously).
    pub fn new(kernels: Arc<Kernels>, weights: &QkvWeights<T>) -> Result<Self> {
        weights.config.validate()?;
        Self::from_folded(kernels, &weights.fold_gamma())
    }

    /// Copies weights already folded (e.g. cached by the caller) to the device (synchronously).
    pub fn from_folded(kernels: Arc<Kernels>, weights: &FoldedWeights<T>) -> Result<Self> {
        let c = weights.config;
        c.validate()?;
        if weights.qkv_weight.len() != c.weight_len() {
            return Err(Error::Length {
                what: "qkv_weight",
                expected: c.weight_len(),
                actual: weights.qkv_weight.len(),
            });
        }
        if weights.bias.as_ref().map(Vec::len).unwrap_or(c.qkv_cols()) != c.qkv_cols()
            || weights.bias.is_some() != c.bias
        {
            return Err(Error::InvalidConfig(format!(
                "folded weights: bias of {:?} elements does not match config.bias = {} (N = {})",
                weights.bias.as_ref().map(Vec::len),
                c.bias,
                c.qkv_cols()
            )));
        }
        Ok(GpuLayer {
            config: c,
            kernels,
            qkv_weight: upload("qkv_weight", &weights.qkv_weight)?,
            bias: weights.bias.as_deref().map(|b| upload("bias", b)).transpose()?,
            out_scale: weights.out_scale(),
            policy: KernelPolicy::Auto,
        })
    }

    /// The layer's config.
    pub fn config(&self) -> &QkvConfig {
        &self.config
    }

    /// Allocates q `[m, Hq]`, k and v `[m, Hkv]` and runs [`GpuLayer::forward_into`] on `stream`.
    /// The outputs are ready once the stream has been synchronised.
    pub fn forward(
        &self,
        stream: &Stream,
        x: &DeviceSlice<T>,
        m: usize,
    ) -> Result<(DeviceBuffer<T>, DeviceBuffer<T>, DeviceBuffer<T>)> {
        check_input(&self.config, m, x.len())?;
        let alloc = |what: &str, len: usize| {
            // SAFETY: the kernel writes every element before anything reads them.
            unsafe { DeviceBuffer::uninitialized(len) }.context(|| format!("allocating {what} ({len} elements)"))
        };
        let mut q = alloc("q", m * self.config.q_cols())?;
        let mut k = alloc("k", m * self.config.kv_cols())?;
        let mut v = alloc("v", m * self.config.kv_cols())?;
        self.forward_into(stream, x, m, &mut q, &mut k, &mut v)?;
        Ok((q, k, v))
    }

    /// Enqueues the fused RMSNorm + QKV for the first `m` rows of `x` (row-major `[m, H]`) on
    /// `stream`, writing the first `m` rows of q, k and v. Buffers may be longer than needed
    /// (preallocated for a larger batch). No allocation, no synchronisation; `m = 0` enqueues nothing.
    pub fn forward_into(
        &self,
        stream: &Stream,
        x: &DeviceSlice<T>,
        m: usize,
        q: &mut DeviceSlice<T>,
        k: &mut DeviceSlice<T>,
        v: &mut DeviceSlice<T>,
    ) -> Result<()> {
        let c = self.config;
        check_input(&c, m, x.len())?;
        check_outputs(&c, m, [q.len(), k.len(), v.len()])?;
        for (what, ptr) in
            [("x", x.as_device_ptr()), ("q", q.as_device_ptr()), ("k", k.as_device_ptr()), ("v", v.as_device_ptr())]
        {
            check_aligned(what, ptr)?;
        }
        if m == 0 {
            return Ok(());
        }
        let outputs_aligned_4 =
            [q.as_device_ptr(), k.as_device_ptr(), v.as_device_ptr()].iter().all(|p| p.as_raw().is_multiple_of(4));
        let plan = self.plan(m, x.as_device_ptr(), outputs_aligned_4)?;
        let function = self.kernels.function(T::KIND, plan.kind)?;
        // Kernel arguments are passed by address: every one must be a local that outlives the
        // launch call (a temporary inside the argument array would dangle).
        let qkv_weight = self.qkv_weight.as_device_ptr();
        let bias = self.bias.as_ref().map_or(DevicePointer::null(), |b| b.as_device_ptr());
        let to_u32 =
            |what: &str, v: usize| u32::try_from(v).map_err(|_| Error::Overflow(format!("{what} = {v} exceeds u32")));
        let (hidden, q_cols, kv_cols) =
            (to_u32("hidden", c.hidden)?, to_u32("q_cols", c.q_cols())?, to_u32("kv_cols", c.kv_cols())?);
        // Grid y is at most 65535; grid x (row tiles x column tiles for `wgmma`) at most 2^31 - 1.
        let max_rows = if plan.rows_in_grid_x {
            (i32::MAX as usize / plan.grid_x as usize) * plan.tokens_per_block
        } else {
            65535 * plan.tokens_per_block
        };
        let mut row0 = 0;
        while row0 < m {
            let rows = (m - row0).min(max_rows);
            let x_ptr = advance(x.as_device_ptr(), row0 * c.hidden);
            let q_ptr = advance(q.as_device_ptr(), row0 * c.q_cols());
            let k_ptr = advance(k.as_device_ptr(), row0 * c.kv_cols());
            let v_ptr = advance(v.as_device_ptr(), row0 * c.kv_cols());
            let rows_u32 = rows as u32;
            // The TMA kernels take the tensor maps of this launch's x rows and of W' (by value).
            let maps: Option<[TensorMap; 2]> = match plan.kind {
                KernelKind::Wgmma { rows: box_rows, cols: box_cols, tma: true, .. } => {
                    let encoder = self
                        .kernels
                        .tma
                        .as_ref()
                        .ok_or_else(|| Error::InvalidConfig("TMA kernels need compute capability 9.0".into()))?;
                    Some([
                        encoder.encode_2d(T::KIND, x_ptr.as_raw(), rows, c.hidden, box_rows as u32, 64)?,
                        encoder.encode_2d(T::KIND, qkv_weight.as_raw(), c.qkv_cols(), c.hidden, box_cols as u32, 64)?,
                    ])
                }
                _ => None,
            };
            // A fixed array, no heap allocation per call; the tile kernels take one more argument,
            // the TMA kernels two.
            let mut args: [*mut c_void; 14] = [
                arg(&x_ptr),
                arg(&qkv_weight),
                arg(&bias),
                arg(&q_ptr),
                arg(&k_ptr),
                arg(&v_ptr),
                arg(&rows_u32),
                arg(&hidden),
                arg(&q_cols),
                arg(&kv_cols),
                arg(&c.eps),
                arg(&self.out_scale),
                plan.chunk.as_ref().map_or(std::ptr::null_mut(), arg),
                std::ptr::null_mut(),
            ];
            let count = if let Some(maps) = &maps {
                args[12] = arg(&maps[0]);
                args[13] = arg(&maps[1]);
                14
            } else if plan.chunk.is_some() {
                13
            } else {
                12
            };
            let args = &args[..count];
            let row_tiles = rows.div_ceil(plan.tokens_per_block) as u32;
            let grid = if plan.rows_in_grid_x { (plan.grid_x * row_tiles, 1, 1) } else { (plan.grid_x, row_tiles, 1) };
            // SAFETY: the arguments match the kernel's signature in order and type (pointers as
            // 64-bit device addresses, then u32 x4, f32 x2 and the tile kernels' u32 chunk or the
            // TMA kernels' two 128-byte tensor maps); the
            // lengths and alignment checked above and the plan are its launch contract.
            unsafe { stream.launch(function, grid, (plan.threads, 1, 1), plan.shared_bytes, args) }.context(|| {
                format!("launching {} (grid {grid:?}, {} B shared)", plan.kind.name(T::KIND), plan.shared_bytes)
            })?;
            row0 += rows;
        }
        Ok(())
    }

    /// Chooses the kernel for `m` tokens (the dispatch table, see [`KernelPolicy`]).
    fn plan(&self, m: usize, x: DevicePointer<T>, outputs_aligned_4: bool) -> Result<Plan> {
        let c = &self.config;
        // W is a whole device allocation (256-byte aligned); x may be a view.
        let vector = c.hidden.is_multiple_of(vec_width(T::KIND)) && x.as_raw().is_multiple_of(16);
        let tensor_core_ok = T::KIND != DtypeKind::F32 && vector;
        let wgmma_ok = tensor_core_ok
            && self.kernels.has_wgmma()
            && c.q_cols().is_multiple_of(2)
            && c.kv_cols().is_multiple_of(2)
            && outputs_aligned_4;
        let wgmma_tile = match self.policy {
            KernelPolicy::Auto if wgmma_ok && m >= self.wgmma_min_tokens() => Some(self.wgmma_tile(m)),
            KernelPolicy::Wgmma if wgmma_ok => Some(self.wgmma_tile(m)),
            KernelPolicy::WgmmaTile { rows, cols, stages } if !WGMMA_TILES.contains(&(rows, cols, stages)) => {
                return Err(Error::InvalidConfig(format!(
                    "no wgmma tile of {rows} x {cols} with {stages} stages (have {WGMMA_TILES:?})"
                )))
            }
            KernelPolicy::WgmmaTile { rows, cols, stages } if wgmma_ok => Some((rows, cols, stages)),
            KernelPolicy::Wgmma | KernelPolicy::WgmmaTile { .. } => {
                return Err(Error::InvalidConfig(format!(
                    "the wgmma kernel needs compute capability 9.0 (this GPU: {:?}), bf16 or f16, hidden % 8 == 0, \
                     a 16-byte aligned x, even q and kv widths and 4-byte aligned outputs",
                    self.kernels.compute_capability()
                )))
            }
            _ => None,
        };
        if let Some((rows, cols, stages)) = wgmma_tile {
            return Ok(Plan {
                kind: KernelKind::Wgmma { rows, cols, stages, tma: rows == 128 },
                threads: WGMMA_THREADS,
                tokens_per_block: rows,
                grid_x: c.qkv_cols().div_ceil(cols) as u32,
                shared_bytes: wgmma_shared_bytes(rows, cols, stages),
                chunk: None,
                rows_in_grid_x: true,
            });
        }
        let mma_tile = match self.policy {
            KernelPolicy::Auto if tensor_core_ok && m >= TENSOR_CORE_MIN_TOKENS => Some(MMA_TILE),
            KernelPolicy::Auto | KernelPolicy::Simt | KernelPolicy::Wgmma | KernelPolicy::WgmmaTile { .. } => None,
            KernelPolicy::TensorCore if tensor_core_ok => Some(MMA_TILE),
            KernelPolicy::TensorCoreTile { rows, warps, depth }
                if !([16, 32].contains(&rows) && [4, 8].contains(&warps) && [2, 3].contains(&depth)) =>
            {
                return Err(Error::InvalidConfig(format!(
                    "no tensor-core tile with {rows} rows, {warps} warps, depth {depth} (16|32, 4|8, 2|3)"
                )))
            }
            KernelPolicy::TensorCoreTile { rows, warps, depth } if tensor_core_ok => Some((rows, warps, depth)),
            KernelPolicy::TensorCore | KernelPolicy::TensorCoreTile { .. } => {
                return Err(Error::InvalidConfig(
                    "the tensor-core kernel needs bf16 or f16, hidden % 8 == 0 and a 16-byte aligned x".into(),
                ))
            }
        };
        if let Some((rows, warps, depth)) = mma_tile {
            let tokens = match m {
                0..=8 => 8,
                9..=16 => 16,
                _ => 32,
            };
            return Ok(Plan {
                kind: KernelKind::Mma { rows, tokens, warps, depth },
                threads: 32 * warps as u32,
                tokens_per_block: tokens,
                grid_x: c.qkv_cols().div_ceil(rows) as u32,
                // The partial accumulators: warps x (rows / 16) x (tokens / 8) x 4 per lane.
                shared_bytes: (warps * (rows / 16) * (tokens / 8) * 4 * 32 * 4) as u32,
                chunk: None,
                rows_in_grid_x: false,
            });
        }
        let gemv_tokens = match m {
            1 => Some(1),
            2 => Some(2),
            3 | 4 => Some(4),
            _ => None,
        };
        if let (true, Some(tokens)) = (vector, gemv_tokens) {
            return Ok(Plan {
                kind: KernelKind::Gemv { tokens },
                threads: GEMV_THREADS,
                tokens_per_block: tokens,
                grid_x: c.qkv_cols().div_ceil(GEMV_ROWS_PER_BLOCK) as u32,
                shared_bytes: 0,
                chunk: None,
                rows_in_grid_x: false,
            });
        }
        // Tokens per block: the smallest specialised tile that covers M, else TILE_M.
        let tile_m = gemv_tokens.unwrap_or(TILE_M);
        // The whole hidden row in one chunk where it fits (one staging pass, two barriers).
        let lane_step = 32 * vec_width(T::KIND);
        let tile_rows = m.min(tile_m);
        let max_chunk = MAX_STAGE_BYTES / (tile_rows * 4) / lane_step * lane_step;
        let chunk = (c.hidden.div_ceil(lane_step) * lane_step).min(max_chunk);
        Ok(Plan {
            kind: KernelKind::Tile { vector, tokens: tile_m },
            threads: TILE_THREADS,
            tokens_per_block: tile_m,
            grid_x: c.qkv_cols().div_ceil(TILE_N) as u32,
            shared_bytes: (tile_rows * chunk * 4) as u32,
            chunk: Some(chunk as u32),
            rows_in_grid_x: false,
        })
    }

    /// Where `Auto` moves from the mma.sync kernel to `wgmma`.
    fn wgmma_min_tokens(&self) -> usize {
        let w_bytes = self.config.qkv_cols() * self.config.hidden * T::KIND.size_bytes();
        if w_bytes < SMALL_W_BYTES {
            WGMMA_MIN_TOKENS_SMALL_W
        } else {
            WGMMA_MIN_TOKENS
        }
    }

    /// The `wgmma` tile for `m` tokens (measured on the H100, bench/NOTES.md v5): 64-row tiles
    /// while 128 x 128 tiles would leave multiprocessors idle (small M is W-bound: more, smaller
    /// blocks stream it faster); 128 x 256 where N is a multiple of 256 and it still fills two
    /// thirds of the machine; else 128 x 128, with 3 stages (two blocks per multiprocessor) once
    /// there is more than one wave.
    fn wgmma_tile(&self, m: usize) -> (usize, usize, usize) {
        let (n, sms) = (self.config.qkv_cols(), self.kernels.multiprocessors);
        let blocks = |rows: usize, cols: usize| m.div_ceil(rows) * n.div_ceil(cols);
        if blocks(128, 128) < sms {
            (64, 128, 4)
        } else if n.is_multiple_of(256) && 3 * blocks(128, 256) >= 2 * sms {
            (128, 256, 4)
        } else if blocks(128, 128) <= sms {
            (128, 128, 4)
        } else {
            (128, 128, 3)
        }
    }

    /// Which kernels [`GpuLayer::forward_into`] may use (default [`KernelPolicy::Auto`]).
    pub fn set_kernel_policy(&mut self, policy: KernelPolicy) {
        self.policy = policy;
    }

    /// Copies a device result back (synchronously): a convenience for tests and tools.
    pub fn download(buffer: &DeviceSlice<T>) -> Result<Vec<T>> {
        let mut host = vec![T::default(); buffer.len()];
        buffer.copy_to(&mut host[..]).context(|| format!("copying {} elements to the host", buffer.len()))?;
        Ok(host)
    }
}

fn arg<A>(value: &A) -> *mut c_void {
    value as *const A as *mut c_void
}
