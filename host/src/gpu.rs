//! The GPU path: the embedded PTX ([`Kernels`]) and one layer's device weights ([`GpuLayer`]).
//!
//! Calls are stream-ordered: [`GpuLayer::forward_into`] enqueues one launch per 524,280 tokens
//! and never synchronises or allocates, so it can be captured in a CUDA graph. Launch errors are
//! returned; errors inside the kernel surface at the caller's next synchronisation, as with any
//! CUDA work.

use std::ffi::c_void;
use std::sync::Arc;

use cust::device::DeviceAttribute;
use cust::memory::{CopyDestination, DeviceBuffer, DevicePointer, DeviceSlice};
use cust::module::Module;
use cust::prelude::Stream;

use crate::error::CudaContext;
use crate::weights::{check_input, check_outputs};
use crate::{Dtype, DtypeKind, Error, QkvConfig, QkvWeights, Result};

/// PTX built from `kernel-gpu` by `build.rs` (see `ptx-builder`), one file per architecture.
pub const PTX_SM80: &str = include_str!(env!("FUSED_QKV_PTX_SM_80"));
/// PTX for Hopper (sm_90).
pub const PTX_SM90: &str = include_str!(env!("FUSED_QKV_PTX_SM_90"));

// The kernel's tiling, mirrored from kernel-gpu/src/fused_qkv.rs (its launch contract).
const THREADS: u32 = 128;
const TILE_M: usize = 8;
const TILE_N: usize = 8;
/// Dynamic shared memory for the staged `x * gamma` rows: under the 48 KB a block gets without
/// opting in, less the kernel's static shared memory (256 B) and a margin.
const MAX_STAGE_BYTES: usize = 47 * 1024;
// The tensor-core kernel's tiling, mirrored from kernel-gpu/src/fused_qkv_mma.rs.
const MMA_THREADS: u32 = 256;
const MMA_M_TILES: usize = 2;
const MMA_ROWS_PER_BLOCK: usize = 16 * MMA_M_TILES;
const MMA_MAX_GROUPS: usize = 4;
/// From this many tokens on, bf16 uses the tensor-core kernel (measured crossover, bench/NOTES.md).
pub const TENSOR_CORE_MIN_TOKENS: usize = 3;

/// Which kernels a layer may use. `Auto` is the measured dispatch: bf16 with `hidden % 8 == 0`
/// and an aligned `x` uses tensor cores from [`TENSOR_CORE_MIN_TOKENS`] tokens on; everything
/// else (f16, f32, odd shapes, fewer tokens) the SIMT kernels, which keep exact fp32 FMA semantics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelPolicy {
    #[default]
    Auto,
    /// Always the SIMT kernels.
    Simt,
    /// Always the tensor-core kernel; an error where it does not apply.
    TensorCore,
}

/// One launch configuration.
struct Plan {
    name: String,
    threads: u32,
    tokens_per_block: usize,
    grid_x: u32,
    shared_bytes: u32,
    /// The SIMT kernels' staging chunk (an extra argument).
    chunk: Option<u32>,
}

/// The loaded kernels for the current context's device. Load once and share (e.g. in an `Arc`)
/// between layers: loading JIT-compiles the PTX.
pub struct Kernels {
    module: Module,
    compute_capability: (i32, i32),
}

impl Kernels {
    /// Loads the PTX matching the current context's device (sm_90 PTX on Hopper and later, sm_80
    /// PTX on Ampere and Ada). A CUDA context must be current (e.g. from `cust::quick_init()`).
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
        let ptx = if major >= 9 { PTX_SM90 } else { PTX_SM80 };
        let module = Module::from_ptx(ptx, &[]).context(|| "loading the embedded PTX".into())?;
        Ok(Kernels { module, compute_capability: (major, minor) })
    }

    /// The device's compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
}

/// One layer's weights on the device, ready to run.
pub struct GpuLayer<T: Dtype> {
    config: QkvConfig,
    kernels: Arc<Kernels>,
    gamma: DeviceBuffer<T>,
    qkv_weight: DeviceBuffer<T>,
    bias: Option<DeviceBuffer<T>>,
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
    /// Copies the weights to the device (synchronously).
    pub fn new(kernels: Arc<Kernels>, weights: &QkvWeights<T>) -> Result<Self> {
        weights.config.validate()?;
        Ok(GpuLayer {
            config: weights.config,
            kernels,
            gamma: upload("gamma", &weights.gamma)?,
            qkv_weight: upload("qkv_weight", &weights.qkv_weight)?,
            bias: weights.bias.as_deref().map(|b| upload("bias", b)).transpose()?,
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
        let plan = self.plan(m, x.as_device_ptr())?;
        let function =
            self.kernels.module.get_function(&plan.name).context(|| format!("looking up kernel {}", plan.name))?;
        // Kernel arguments are passed by address: every one must be a local that outlives the
        // launch call (a temporary inside the argument array would dangle).
        let gamma = self.gamma.as_device_ptr();
        let qkv_weight = self.qkv_weight.as_device_ptr();
        let bias = self.bias.as_ref().map_or(DevicePointer::null(), |b| b.as_device_ptr());
        let to_u32 =
            |what: &str, v: usize| u32::try_from(v).map_err(|_| Error::Overflow(format!("{what} = {v} exceeds u32")));
        let (hidden, q_cols, kv_cols) =
            (to_u32("hidden", c.hidden)?, to_u32("q_cols", c.q_cols())?, to_u32("kv_cols", c.kv_cols())?);
        let max_rows = 65535 * plan.tokens_per_block;
        let mut row0 = 0;
        while row0 < m {
            let rows = (m - row0).min(max_rows);
            let x_ptr = advance(x.as_device_ptr(), row0 * c.hidden);
            let q_ptr = advance(q.as_device_ptr(), row0 * c.q_cols());
            let k_ptr = advance(k.as_device_ptr(), row0 * c.kv_cols());
            let v_ptr = advance(v.as_device_ptr(), row0 * c.kv_cols());
            let rows_u32 = rows as u32;
            // A fixed array, no heap allocation per call; the SIMT kernels take one more argument.
            let mut args: [*mut c_void; 13] = [
                arg(&x_ptr),
                arg(&gamma),
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
                std::ptr::null_mut(),
            ];
            let count = match &plan.chunk {
                Some(chunk) => {
                    args[11] = arg(chunk);
                    args[12] = arg(&c.eps);
                    13
                }
                None => 12,
            };
            let args = &args[..count];
            let grid = (plan.grid_x, rows.div_ceil(plan.tokens_per_block) as u32, 1);
            // SAFETY: the arguments match the kernel's signature in order and type (pointers as
            // 64-bit device addresses, then u32 x4 (x5 with the SIMT kernels' chunk) and f32); the
            // lengths and alignment checked above and the plan are its launch contract.
            unsafe { stream.launch(&function, grid, (plan.threads, 1, 1), plan.shared_bytes, args) }
                .context(|| format!("launching {} (grid {grid:?}, {} B shared)", plan.name, plan.shared_bytes))?;
            row0 += rows;
        }
        Ok(())
    }

    /// Chooses the kernel for `m` tokens (the dispatch table, see [`KernelPolicy`]).
    fn plan(&self, m: usize, x: DevicePointer<T>) -> Result<Plan> {
        let c = &self.config;
        let vec = vec_width(T::KIND);
        // gamma and W are whole device allocations (256-byte aligned); x may be a view.
        let vector = c.hidden.is_multiple_of(vec) && x.as_raw().is_multiple_of(16);
        let tensor_core_ok = T::KIND == DtypeKind::Bf16 && vector;
        let use_tensor_cores = match self.policy {
            KernelPolicy::Auto => tensor_core_ok && m >= TENSOR_CORE_MIN_TOKENS,
            KernelPolicy::Simt => false,
            KernelPolicy::TensorCore if tensor_core_ok => true,
            KernelPolicy::TensorCore => {
                return Err(Error::InvalidConfig(
                    "the tensor-core kernel needs bf16, hidden % 8 == 0 and a 16-byte aligned x".into(),
                ))
            }
        };
        if use_tensor_cores {
            let groups = match m {
                0..=8 => 1,
                9..=16 => 2,
                _ => MMA_MAX_GROUPS,
            };
            return Ok(Plan {
                name: format!("fused_rmsnorm_qkv_bf16_mma_t{groups}"),
                threads: MMA_THREADS,
                tokens_per_block: 8 * groups,
                grid_x: c.qkv_cols().div_ceil(MMA_ROWS_PER_BLOCK) as u32,
                shared_bytes: (MMA_THREADS as usize * MMA_M_TILES * groups * 4 * 4) as u32,
                chunk: None,
            });
        }
        // Tokens per block: the smallest specialised tile that covers M (decode), else TILE_M.
        let tile_m = match m {
            1 => 1,
            2 => 2,
            3 | 4 => 4,
            _ => TILE_M,
        };
        // The whole hidden row in one chunk where it fits (one staging pass, two barriers).
        let lane_step = 32 * vec;
        let tile_rows = m.min(tile_m);
        let max_chunk = MAX_STAGE_BYTES / (tile_rows * 4) / lane_step * lane_step;
        let chunk = (c.hidden.div_ceil(lane_step) * lane_step).min(max_chunk);
        Ok(Plan {
            name: format!("fused_rmsnorm_qkv_{}_{}_m{tile_m}", T::KIND.name(), if vector { "vec" } else { "scalar" }),
            threads: THREADS,
            tokens_per_block: tile_m,
            grid_x: c.qkv_cols().div_ceil(TILE_N) as u32,
            shared_bytes: (tile_rows * chunk * 4) as u32,
            chunk: Some(chunk as u32),
        })
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
