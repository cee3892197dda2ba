//! The GPU path: the embedded PTX ([`Kernels`]) and one layer's device weights ([`GpuLayer`]).
//!
//! Calls are stream-ordered: [`GpuLayer::forward_into`] enqueues one launch (several only past
//! the grid's limits, billions of tokens) and never synchronises or allocates, so it can be
//! captured in a CUDA graph. Launch errors are returned; errors inside the kernel surface at the
//! caller's next synchronisation, as with any CUDA work.
//!
//! Everything the launch and the kernels must agree on (parameter structs, tiles, shared memory,
//! grids, kernel names) comes from the `kernel-abi` crate, which the device crate compiles too;
//! `dispatch` chooses the kernel ([`KernelPolicy`] documents its table), `launch` is the only
//! module that calls the driver below `cust`'s safe API.

mod dispatch;
mod launch;

pub use kernel_abi::WgmmaGrid;
pub use launch::Graph;

use std::sync::Arc;

use cust::device::DeviceAttribute;
use cust::function::Function;
use cust::memory::{CopyDestination, DeviceBuffer, DevicePointer, DeviceSlice};
use cust::module::Module;
use cust::prelude::Stream;
use kernel_abi::wgmma::K_BLOCK;
use kernel_abi::{FallbackParams, Kernel, QkvParams, Shape, TensorMap, Tile, TmaParams, KERNELS};

pub use dispatch::{
    dependent_launch, mma_tile, wgmma_grid, wgmma_splits, wgmma_tile, wide_tile, KernelPolicy, Residency, SplitK,
    MID_K_BLOCKS, SHARE_SM_K_BLOCKS, SPLIT_K_FILL_TENTHS, TENSOR_CORE_MIN_TOKENS, WGMMA_MIN_TOKENS,
    WGMMA_MIN_TOKENS_MMA_OVER_A_WAVE, WIDE_TILES,
};

use crate::error::CudaResultExt;
use crate::weights::{check_input, check_outputs, FoldedWeights};
use crate::{Dtype, DtypeKind, Error, QkvConfig, QkvWeights, Result};
use dispatch::Call;
use launch::{address, LaunchEx, TmaEncoder};

/// PTX built from `kernel-gpu` by `build.rs` (see `ptx-builder`), one file per architecture.
pub const PTX_SM80: &str = include_str!(env!("FUSED_QKV_PTX_SM_80"));
/// PTX for Hopper (sm_90a: also holds the `wgmma` prefill kernels; runs on compute capability
/// 9.0 only).
pub const PTX_SM90A: &str = include_str!(env!("FUSED_QKV_PTX_SM_90A"));

/// Whether this build embeds (and loads) the measurement-only tiles (feature `tile-sweep`).
pub const TILE_SWEEP: bool = cfg!(feature = "tile-sweep");
/// Whether this build's kernels write per-tile clock stamps (feature `timeline`,
/// [`GpuLayer::set_timeline`]).
pub const TIMELINE: bool = cfg!(feature = "timeline");
/// Words of a timeline per block ([`kernel_abi::timeline::WORDS_PER_BLOCK`]).
pub const TIMELINE_WORDS_PER_BLOCK: usize = kernel_abi::timeline::WORDS_PER_BLOCK;
/// Blocks per multiprocessor a timeline holds: a stream-K grid has at most one per resident
/// slot, and no `wgmma` tile fits more than two per multiprocessor.
pub const TIMELINE_BLOCKS_PER_MULTIPROCESSOR: usize = 2;

/// Whether the PTX for an sm_90a (`hopper`) or sm_80 device holds `kernel` in this build.
pub fn is_built(kernel: &Kernel, hopper: bool) -> bool {
    (kernel.shipped || TILE_SWEEP) && (hopper || kernel.on_sm80())
}

/// The loaded kernels for the current context's device. Load once and share (e.g. in an `Arc`)
/// between layers: loading JIT-compiles the PTX and looks every kernel up once, so a launch
/// costs no lookup.
pub struct Kernels {
    // Declared before `module`, so dropped before it: the handles borrow the module.
    /// One slot per entry of [`KERNELS`]; `None` where this build or device has no such kernel.
    functions: Vec<Option<Function<'static>>>,
    /// Per entry of [`KERNELS`]: blocks of its launch shape that fit on one multiprocessor at
    /// once (the occupancy calculator's answer for the mma.sync and wgmma kernels; 0 elsewhere).
    resident: Vec<u32>,
    /// Per entry of [`KERNELS`]: for the split-K `wgmma` kernels, blocks resident at once in
    /// clusters of 2 to [`kernel_abi::wgmma::MAX_SPLITS`] (see [`Residency::clustered`]).
    clustered: Vec<[usize; kernel_abi::wgmma::MAX_SPLITS as usize + 1]>,
    delay: Function<'static>,
    #[allow(dead_code)] // owns the loaded code the handles point into
    module: Module,
    compute_capability: (i32, i32),
    multiprocessors: usize,
    l2_bytes: usize,
    /// The tensor-map encoder, on Hopper.
    tma: Option<TmaEncoder>,
    /// Launches with attributes (split-K's clusters), on Hopper.
    launch_ex: Option<LaunchEx>,
}

impl Kernels {
    /// Loads the PTX matching the current context's device (sm_90a PTX, with the `wgmma` prefill
    /// kernels, on compute capability 9.0; sm_80 PTX on Ampere, Ada and later). A CUDA context must
    /// be current (e.g. from `cust::quick_init()`).
    pub fn load() -> Result<Self> {
        let device = cust::context::CurrentContext::get_device().context(|| "querying the current device".into())?;
        let attribute = |attribute, what: &str| device.get_attribute(attribute).context(|| format!("querying {what}"));
        let major = attribute(DeviceAttribute::ComputeCapabilityMajor, "the compute capability")?;
        let minor = attribute(DeviceAttribute::ComputeCapabilityMinor, "the compute capability")?;
        if major < 8 {
            return Err(Error::InvalidConfig(format!(
                "the GPU has compute capability {major}.{minor}; these kernels need 8.0 (Ampere) or later"
            )));
        }
        let multiprocessors = attribute(DeviceAttribute::MultiprocessorCount, "the multiprocessor count")? as usize;
        let l2_bytes = attribute(DeviceAttribute::L2CacheSize, "the L2 size")?.max(0) as usize;
        let hopper = (major, minor) == (9, 0);
        let module = Module::from_ptx(if hopper { PTX_SM90A } else { PTX_SM80 }, &[])
            .context(|| "loading the embedded PTX".into())?;
        let lookup = |name: &str| -> Result<Function<'static>> {
            let function = module.get_function(name).context(|| format!("looking up kernel {name}"))?;
            // SAFETY: a `Function` is a handle plus a lifetime marker for the module it came
            // from; the handles are dropped before `module` (field order) and never handed out
            // beyond `&self`, so no handle outlives the module.
            Ok(unsafe { std::mem::transmute::<Function<'_>, Function<'static>>(function) })
        };
        let launch_ex = if hopper { Some(LaunchEx::load()?) } else { None };
        let mut functions = Vec::with_capacity(KERNELS.len());
        let mut resident = vec![0; KERNELS.len()];
        let mut clustered = vec![[0; kernel_abi::wgmma::MAX_SPLITS as usize + 1]; KERNELS.len()];
        for ((kernel, resident), clustered) in KERNELS.iter().zip(&mut resident).zip(&mut clustered) {
            if !is_built(kernel, hopper) {
                functions.push(None);
                continue;
            }
            let function = lookup(kernel.name)?;
            let shape = match kernel.tile {
                Tile::Wgmma(tile) => {
                    launch::set_max_dynamic_shared(&function, kernel.name, tile.shared_bytes())?;
                    Some(tile.launch(1, 1, 1, 1))
                }
                Tile::Mma(tile) => Some(tile.launch(1, 1)),
                _ => None,
            };
            if let Some(shape) = shape {
                let block = cust::function::BlockSize::x(shape.block_threads);
                *resident = function
                    .max_active_blocks_per_multiprocessor(block, shape.shared_bytes as usize)
                    .context(|| format!("querying the occupancy of {}", kernel.name))?;
            }
            if let (Tile::Wgmma(tile), Some(ex), Some(shape)) = (kernel.tile, &launch_ex, shape) {
                for (size, blocks) in clustered.iter_mut().enumerate().skip(2) {
                    // The persistent kernel runs in clusters of its own size only.
                    if tile.is_persistent() && size != kernel_abi::wgmma::PERSISTENT_CLUSTER as usize {
                        continue;
                    }
                    let launch = kernel_abi::Launch { cluster: size as u32, ..shape };
                    // A shape the driver rejects cannot be launched: none of it fits.
                    *blocks = ex.resident_in_clusters(&function, kernel.name, launch).unwrap_or(0) as usize;
                }
            }
            functions.push(Some(function));
        }
        let delay = lookup(kernel_abi::DELAY_KERNEL)?;
        let tma = if hopper { Some(TmaEncoder::load()?) } else { None };
        Ok(Kernels {
            functions,
            resident,
            clustered,
            delay,
            module,
            compute_capability: (major, minor),
            multiprocessors,
            l2_bytes,
            tma,
            launch_ex,
        })
    }

    /// The device's compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Whether the `wgmma` prefill kernels are loaded (compute capability 9.0).
    pub fn has_wgmma(&self) -> bool {
        self.compute_capability == (9, 0)
    }

    /// The loaded kernels of `dtype` (entries of [`KERNELS`]).
    pub fn loaded(&self, dtype: DtypeKind) -> impl Iterator<Item = &'static Kernel> + '_ {
        KERNELS.iter().zip(&self.functions).filter(move |(k, f)| f.is_some() && k.dtype == dtype.abi()).map(|(k, _)| k)
    }

    /// How many blocks of `kernel` (an entry of [`KERNELS`]) fit on this GPU at once, alone and
    /// (for the split-K `wgmma` kernels) in clusters; `None` where it is not loaded.
    pub fn residency_of(&self, kernel: &Kernel) -> Option<Residency> {
        let index = KERNELS.iter().position(|k| k.name == kernel.name)?;
        self.functions[index].as_ref().map(|_| self.residency(index))
    }

    /// How many blocks of kernel `index` of [`KERNELS`] fit at once, alone and in clusters.
    pub(crate) fn residency(&self, index: usize) -> Residency {
        let sms = self.multiprocessors;
        let slots = sms * self.resident[index].max(1) as usize;
        let mut clustered = self.clustered[index];
        clustered[1] = slots;
        Residency { multiprocessors: sms, slots, clustered }
    }

    /// The residencies of the `wgmma` tiles of `dtype` the tile rule compares
    /// ([`dispatch::Residencies`]), as if one per multiprocessor where a tile is not loaded.
    pub(crate) fn dispatch_residencies(&self, dtype: kernel_abi::Dtype) -> dispatch::Residencies {
        let of = |tile: kernel_abi::WgmmaTile| {
            KERNELS
                .iter()
                .position(|k| k.dtype == dtype && k.tile == Tile::Wgmma(tile) && k.shipped)
                .filter(|&i| self.functions[i].is_some())
                .map_or(Residency::uniform(self.multiprocessors, 1), |i| self.residency(i))
        };
        dispatch::Residencies {
            wide: dispatch::WIDE_TILES.map(of),
            narrow: dispatch::NARROW_TILES.map(of),
            square: of(dispatch::SQUARE_TILE),
            cp_async: of(dispatch::CP_ASYNC_TILE),
        }
    }

    /// Bytes of the stream-K workspace a layer of `dtype` needs: the largest of the loaded
    /// `wgmma` tiles' grids of one block per resident slot (0 where none is loaded).
    pub(crate) fn stream_workspace_bytes(&self, dtype: kernel_abi::Dtype) -> u64 {
        KERNELS
            .iter()
            .zip(self.functions.iter().zip(&self.resident))
            .filter_map(|(kernel, (function, &resident))| match kernel.tile {
                Tile::Wgmma(t) if kernel.dtype == dtype && function.is_some() && t.streams() => {
                    Some(t.stream_workspace_bytes(self.multiprocessors as u32 * resident.max(1)))
                }
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// For benchmarks: enqueues a one-thread kernel that waits `nanos` ns on `stream`, so work
    /// the host enqueues meanwhile runs back to back on the GPU, not at the host's launch rate.
    pub fn enqueue_delay(&self, stream: &Stream, nanos: u64) -> Result<()> {
        let one = kernel_abi::Launch { grid: (1, 1, 1), block_threads: 1, shared_bytes: 0, cluster: 1 };
        // SAFETY: the delay kernel takes one u64 and runs as one thread.
        unsafe { launch::launch(stream, &self.delay, kernel_abi::DELAY_KERNEL, one, &nanos) }
    }
}

/// The `wgmma` kernels' stream-K workspace on the device: a flag per block (zero between
/// launches: each launch leaves them so) and an fp32 partial tile per block, sized for the
/// largest grid of the loaded kernels (~20 MB on an H200). A layer makes its own; layers whose
/// calls never overlap on the GPU may share one ([`GpuLayer::sharing_workspace`]).
pub struct Workspace {
    buffer: DeviceBuffer<u8>,
}

impl Workspace {
    /// A zeroed workspace for layers of `dtype` on the loaded kernels, or `None` where no
    /// stream-K kernel is loaded (off Hopper).
    pub fn new(kernels: &Kernels, dtype: DtypeKind) -> Result<Option<Arc<Self>>> {
        match kernels.stream_workspace_bytes(dtype.abi()) {
            0 => Ok(None),
            bytes => {
                let buffer = DeviceBuffer::zeroed(bytes as usize)
                    .context(|| format!("allocating the stream-K workspace ({bytes} bytes)"))?;
                Ok(Some(Arc::new(Workspace { buffer })))
            }
        }
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        self.buffer.len()
    }
}

/// A launch's geometry, and whether it is a programmatic dependent of the kernel before it.
#[derive(Clone, Copy)]
struct Launched {
    launch: kernel_abi::Launch,
    dependent: bool,
}

/// One layer's weights on the device, ready to run: gamma folded into W ([`FoldedWeights`]).
pub struct GpuLayer<T: Dtype> {
    config: QkvConfig,
    kernels: Arc<Kernels>,
    #[allow(dead_code)] // owns the memory `params.qkv_weight` points to
    qkv_weight: DeviceBuffer<T>,
    #[allow(dead_code)] // owns the memory `params.bias` points to
    bias: Option<DeviceBuffer<T>>,
    /// The kernels' parameters with the layer's part filled in (weights, shape, eps, scale);
    /// each call adds x, q, k, v and M.
    params: QkvParams,
    /// W's tensor maps for the TMA kernels, by box rows (the tile's `out_cols`); built once.
    w_maps: Vec<(u32, TensorMap)>,
    /// The stream-K grids' workspace; `None` off Hopper.
    workspace: Option<Arc<Workspace>>,
    /// How many blocks of the `wgmma` tiles the tile rule compares fit at once (the
    /// dispatch chooses between them by it); looked up once, not per call.
    residencies: dispatch::Residencies,
    policy: KernelPolicy,
    split_k: SplitK,
    /// Launch as a programmatic dependent of the previous kernel on the stream (where
    /// [`dispatch::dependent_launch`] says so).
    dependent_launch: bool,
    /// Bytes of W.
    weight_bytes: usize,
    /// Where the kernels of a `timeline` build stamp their tiles ([`GpuLayer::set_timeline`]).
    timeline: Option<Arc<DeviceBuffer<u64>>>,
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

fn to_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Overflow(format!("{what} = {value} exceeds u32")))
}

impl<T: Dtype> GpuLayer<T> {
    /// Folds gamma into W ([`QkvWeights::fold_gamma`]) and copies the result to the device
    /// (synchronously).
    pub fn new(kernels: Arc<Kernels>, weights: &QkvWeights<T>) -> Result<Self> {
        Self::from_folded(kernels, &weights.fold_gamma())
    }

    /// As [`GpuLayer::new`], using `workspace` (another layer's, [`GpuLayer::workspace`]) instead
    /// of a stream-K workspace of its own: for layers whose calls never run on the GPU at the
    /// same time, as a model's layers on one stream (saves ~20 MB per layer on an H200).
    pub fn sharing_workspace(
        kernels: Arc<Kernels>,
        weights: &QkvWeights<T>,
        workspace: Arc<Workspace>,
    ) -> Result<Self> {
        Self::build(kernels, &weights.fold_gamma(), Some(workspace))
    }

    /// Copies weights already folded (e.g. cached by the caller) to the device (synchronously).
    pub fn from_folded(kernels: Arc<Kernels>, weights: &FoldedWeights<T>) -> Result<Self> {
        Self::build(kernels, weights, None)
    }

    fn build(kernels: Arc<Kernels>, weights: &FoldedWeights<T>, workspace: Option<Arc<Workspace>>) -> Result<Self> {
        let c = weights.config;
        weights.check()?;
        let qkv_weight = upload("qkv_weight", &weights.qkv_weight)?;
        let bias = weights.bias.as_deref().map(|b| upload("bias", b)).transpose()?;
        let params = QkvParams {
            qkv_weight: qkv_weight.as_device_ptr().as_raw(),
            bias: bias.as_ref().map_or(0, |b| b.as_device_ptr().as_raw()),
            shape: Shape {
                m: 0,
                hidden: to_u32("hidden", c.hidden)?,
                q_cols: to_u32("q_cols", c.q_cols())?,
                kv_cols: to_u32("kv_cols", c.kv_cols())?,
            },
            eps: c.eps,
            out_scale: weights.out_scale(),
            ..QkvParams::default()
        };
        let mut w_maps = Vec::new();
        // TMA needs 16-byte row pitches; the wgmma kernels need `hidden % 8 == 0` anyway.
        let tma_rows = T::KIND.size_bytes() == 2 && c.hidden.is_multiple_of(8);
        if let (Some(encoder), true) = (&kernels.tma, tma_rows) {
            for kernel in KERNELS.iter().filter(|k| k.dtype == T::KIND.abi() && is_built(k, true)) {
                if let Tile::Wgmma(tile) = kernel.tile {
                    if tile.load.uses_tma() && !w_maps.iter().any(|(rows, _)| *rows == tile.w_box_rows()) {
                        let map = encoder.encode_2d(
                            T::KIND,
                            params.qkv_weight,
                            c.qkv_cols(),
                            c.hidden,
                            tile.w_box_rows(),
                            kernel_abi::wgmma::K_BLOCK,
                        )?;
                        w_maps.push((tile.w_box_rows(), map));
                    }
                }
            }
        }
        let workspace = match workspace {
            Some(shared) => {
                let needed = kernels.stream_workspace_bytes(T::KIND.abi());
                if (shared.buffer.len() as u64) < needed {
                    return Err(Error::InvalidConfig(format!(
                        "the shared stream-K workspace has {} bytes, a {} layer needs {needed}",
                        shared.buffer.len(),
                        T::KIND
                    )));
                }
                Some(shared)
            }
            None => Workspace::new(&kernels, T::KIND)?,
        };
        let params =
            QkvParams { workspace: workspace.as_ref().map_or(0, |w| w.buffer.as_device_ptr().as_raw()), ..params };
        let residencies = kernels.dispatch_residencies(T::KIND.abi());
        let dependent_launch = kernels.launch_ex.is_some();
        Ok(GpuLayer {
            config: c,
            kernels,
            qkv_weight,
            bias,
            params,
            w_maps,
            workspace,
            residencies,
            policy: KernelPolicy::Auto,
            split_k: SplitK::Auto,
            dependent_launch,
            weight_bytes: c.weight_len() * T::KIND.size_bytes(),
            timeline: None,
        })
    }

    /// The layer's config.
    pub fn config(&self) -> &QkvConfig {
        &self.config
    }

    /// Allocates q `[m, Hq]`, k and v `[m, Hkv]`, fills them with NaN (so an element no kernel
    /// wrote can never pass for a result) and runs [`GpuLayer::forward_into`] on `stream`. The
    /// outputs are ready once the stream has been synchronised.
    pub fn forward(
        &self,
        stream: &Stream,
        x: &DeviceSlice<T>,
        m: usize,
    ) -> Result<(DeviceBuffer<T>, DeviceBuffer<T>, DeviceBuffer<T>)> {
        check_input(&self.config, m, x.len())?;
        let alloc = |what: &str, len: usize| -> Result<DeviceBuffer<T>> {
            // SAFETY: filled with NaN below, before anything can read it.
            let mut buffer = unsafe { DeviceBuffer::uninitialized(len) }
                .context(|| format!("allocating {what} ({len} elements)"))?;
            launch::fill_nan(stream, &mut buffer)?;
            Ok(buffer)
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
    ///
    /// A layer's calls must not run on the GPU at the same time (enqueue them on one stream, or
    /// order the streams), nor those of layers sharing its workspace: a stream-K launch uses the
    /// workspace ([`Workspace`]).
    pub fn forward_into(
        &self,
        stream: &Stream,
        x: &DeviceSlice<T>,
        m: usize,
        q: &mut DeviceSlice<T>,
        k: &mut DeviceSlice<T>,
        v: &mut DeviceSlice<T>,
    ) -> Result<()> {
        let c = &self.config;
        check_input(c, m, x.len())?;
        check_outputs(c, m, [q.len(), k.len(), v.len()])?;
        let pointers = [x.as_device_ptr(), q.as_device_ptr(), k.as_device_ptr(), v.as_device_ptr()];
        for (what, ptr) in ["x", "q", "k", "v"].into_iter().zip(pointers) {
            check_aligned(what, ptr)?;
        }
        if m == 0 {
            return Ok(());
        }
        let aligned = |p: &DevicePointer<T>, to: u64| p.as_raw().is_multiple_of(to);
        let (index, grid) = self.choose(m, aligned(&pointers[0], 16), pointers[1..].iter().all(|p| aligned(p, 4)))?;
        let (kernel, function) =
            (&KERNELS[index], self.kernels.functions[index].as_ref().expect("chosen kernels are loaded"));
        let n = self.params.shape.n();
        let max_rows = match kernel.tile {
            Tile::Gemv(t) => t.max_tokens_per_launch(),
            Tile::Mma(t) => t.max_tokens_per_launch(),
            Tile::Fallback(t) => t.max_tokens_per_launch(),
            Tile::Wgmma(t) => match grid {
                WgmmaGrid::Split(splits) => t.max_tokens_per_launch(n, splits),
                WgmmaGrid::Stream(_) => u32::MAX,
            },
        } as usize;
        let dependent = self.launches_dependent(kernel);
        let mut row0 = 0;
        while row0 < m {
            let rows = (m - row0).min(max_rows);
            let params = QkvParams {
                dependent_launch: dependent as u32,
                x: address(pointers[0], row0 * c.hidden),
                q: address(pointers[1], row0 * c.q_cols()),
                k: address(pointers[2], row0 * c.kv_cols()),
                v: address(pointers[3], row0 * c.kv_cols()),
                shape: Shape { m: rows as u32, ..self.params.shape },
                ..self.params
            };
            let m = rows as u32;
            // SAFETY: each arm passes the parameter type of the family's entry points and the
            // launch its tile prescribes (kernel ABI); lengths and alignment are checked above,
            // the family's other conditions by the dispatch.
            unsafe {
                let launch_as = |launch| Launched { launch, dependent };
                match kernel.tile {
                    Tile::Gemv(t) => self.launch(stream, function, kernel.name, launch_as(t.launch(m, n)), &params)?,
                    Tile::Mma(t) => self.launch(stream, function, kernel.name, launch_as(t.launch(m, n)), &params)?,
                    Tile::Fallback(t) => {
                        let chunk = t.chunk(m, params.shape.hidden, T::KIND.abi().vector_elems());
                        let fallback = FallbackParams { qkv: params, chunk, reserved: 0 };
                        self.launch(stream, function, kernel.name, launch_as(t.launch(m, n, chunk)), &fallback)?
                    }
                    Tile::Wgmma(t) => {
                        let launch = match grid {
                            // A persistent tile takes as many clusters as fit at once (the
                            // others take one block or cluster per tile and ignore it).
                            WgmmaGrid::Split(splits) => {
                                let resident = self.kernels.residency(index).clustered
                                    [kernel_abi::wgmma::PERSISTENT_CLUSTER as usize];
                                t.launch(m, n, splits, resident as u32)
                            }
                            WgmmaGrid::Stream(blocks) => t.launch_stream(blocks),
                        };
                        // (The first launch has the most rows: nothing is launched before this fails.)
                        let blocks = launch.grid.0 as usize;
                        if self.timeline.as_ref().is_some_and(|t| blocks * TIMELINE_WORDS_PER_BLOCK > t.len()) {
                            return Err(Error::InvalidConfig(format!(
                                "the timeline holds fewer than the grid's {blocks} blocks"
                            )));
                        }
                        if t.load.uses_tma() {
                            let tma = self.tma_params(params, t)?;
                            self.launch(stream, function, kernel.name, launch_as(launch), &tma)?
                        } else {
                            self.launch(stream, function, kernel.name, launch_as(launch), &params)?
                        }
                    }
                }
            }
            row0 += rows;
        }
        Ok(())
    }

    /// The kernel (its index in [`KERNELS`]) and its `wgmma` grid for `m` tokens, with `x`
    /// 16-byte aligned or not and q, k, v 4-byte aligned or not.
    fn choose(&self, m: usize, x_aligned: bool, outputs_aligned: bool) -> Result<(usize, WgmmaGrid)> {
        let c = &self.config;
        let resident = |index: usize| self.kernels.resident[index];
        let call = Call {
            m,
            dtype: T::KIND.abi(),
            n: c.qkv_cols(),
            hidden: c.hidden,
            // W is a whole device allocation (256-byte aligned); x may be a view.
            vector: c.hidden.is_multiple_of(T::KIND.abi().vector_elems() as usize) && x_aligned,
            paired_outputs: c.q_cols().is_multiple_of(2) && c.kv_cols().is_multiple_of(2) && outputs_aligned,
            hopper: self.kernels.has_wgmma(),
            multiprocessors: self.kernels.multiprocessors,
            mma_fits_one_wave: dispatch::mma_fits_one_wave(
                m,
                T::KIND.abi(),
                c.qkv_cols(),
                self.kernels.multiprocessors,
                resident,
            ),
            residencies: self.residencies,
        };
        let index = dispatch::choose(self.policy, &call, |i| self.kernels.functions[i].is_some())?;
        let residency = self.kernels.residency(index);
        let slots = residency.slots;
        let grid = match (KERNELS[index].tile, self.split_k) {
            // One block per multiprocessor walks the tiles: nothing to split.
            (Tile::Wgmma(t), _) if t.is_persistent() => WgmmaGrid::Split(1),
            (Tile::Wgmma(t), SplitK::Auto) => wgmma_grid(t, m, call.n, call.hidden, residency),
            // A count whose partials the tile's stages cannot hold is lowered to the largest that
            // fits ([`kernel_abi::WgmmaTile::split_fits`]; 1 always does).
            (Tile::Wgmma(t), SplitK::Fixed(splits)) => {
                WgmmaGrid::Split((1..=splits).rev().find(|&s| t.split_fits(s)).unwrap_or(1))
            }
            (Tile::Wgmma(t), SplitK::Stream(blocks)) => {
                let units = t.tiles(m as u32, call.n as u32) as u64 * call.hidden.div_ceil(K_BLOCK as usize) as u64;
                let wanted = if blocks == 0 { slots } else { blocks as usize };
                let blocks = wanted.min(slots).min(units as usize).max(1) as u32;
                if self.workspace.is_none() || t.stream_workspace_bytes(blocks) > self.workspace_bytes() {
                    return Err(Error::InvalidConfig(format!(
                        "{}: no stream-K workspace for {blocks} blocks",
                        KERNELS[index].name
                    )));
                }
                WgmmaGrid::Stream(blocks)
            }
            _ => WgmmaGrid::Split(1),
        };
        Ok((index, grid))
    }

    fn workspace_bytes(&self) -> u64 {
        self.workspace.as_ref().map_or(0, |w| w.buffer.len() as u64)
    }

    /// The layer's stream-K workspace (`None` off Hopper), to share with other layers
    /// ([`GpuLayer::sharing_workspace`]).
    pub fn workspace(&self) -> Option<&Arc<Workspace>> {
        self.workspace.as_ref()
    }

    /// Which kernel [`GpuLayer::forward_into`] launches for `m` tokens with aligned buffers (as
    /// [`GpuLayer::forward`] allocates them), and how a `wgmma` kernel's blocks share the tiles
    /// (`Split(1)` for the other kernels).
    pub fn kernel_for(&self, m: usize) -> Result<(&'static Kernel, WgmmaGrid)> {
        self.choose(m, true, true).map(|(index, grid)| (&KERNELS[index], grid))
    }

    /// One launch of the layer: through `cuLaunchKernelEx` where split-K puts the blocks in
    /// clusters or the launch is a programmatic dependent ([`GpuLayer::set_dependent_launch`]),
    /// else through `cust`.
    ///
    /// # Safety
    /// As [`launch::launch`].
    unsafe fn launch<P: kernel_abi::params::KernelParams>(
        &self,
        stream: &Stream,
        function: &Function<'_>,
        name: &str,
        Launched { launch, dependent }: Launched,
        params: &P,
    ) -> Result<()> {
        match &self.kernels.launch_ex {
            // Every kernel waits for its prerequisites before it reads x or writes anything.
            Some(ex) if dependent || launch.cluster != 1 => {
                ex.launch(stream, function, name, launch, params, dependent)
            }
            None if launch.cluster != 1 => {
                Err(Error::InvalidConfig("split-K launches need compute capability 9.0".into()))
            }
            _ => launch::launch(stream, function, name, launch, params),
        }
    }

    /// The TMA kernels' parameters: the tensor map of this launch's `x` rows and W's (built once).
    fn tma_params(&self, qkv: QkvParams, tile: kernel_abi::WgmmaTile) -> Result<TmaParams> {
        let encoder = self
            .kernels
            .tma
            .as_ref()
            .ok_or_else(|| Error::InvalidConfig("TMA kernels need compute capability 9.0".into()))?;
        let (k_block, rows, hidden) = (kernel_abi::wgmma::K_BLOCK, qkv.shape.m as usize, self.config.hidden);
        let x_map = encoder.encode_2d(T::KIND, qkv.x, rows, hidden, tile.x_box_rows(qkv.shape.m), k_block)?;
        let w_map =
            self.w_maps.iter().find(|(rows, _)| *rows == tile.w_box_rows()).map(|(_, map)| *map).ok_or_else(|| {
                Error::InvalidConfig(format!("no tensor map of W for {}-row boxes", tile.w_box_rows()))
            })?;
        Ok(TmaParams { x_map, w_map, qkv })
    }

    /// Which kernels [`GpuLayer::forward_into`] may use (default [`KernelPolicy::Auto`]).
    pub fn set_kernel_policy(&mut self, policy: KernelPolicy) {
        self.policy = policy;
    }

    /// How many blocks split each `wgmma` tile's `H` (default [`SplitK::Auto`]; other kernels
    /// never split).
    pub fn set_split_k(&mut self, split_k: SplitK) {
        self.split_k = split_k;
    }

    /// Whether [`GpuLayer::forward_into`]'s launches are programmatic dependents of the kernel
    /// before them on the stream (default: yes, on compute capability 9.0, for the kernels
    /// [`dispatch::dependent_launch`] names; no effect elsewhere).
    /// Such a launch may start while that kernel finishes: its blocks are scheduled and bring
    /// their share of W into L2, then wait for that kernel's completion (`griddepcontrol.wait`)
    /// before they read x or write anything, so the results and the stream order are as without
    /// it. In a CUDA graph captured from the stream the dependency becomes a programmatic edge.
    pub fn set_dependent_launch(&mut self, dependent: bool) {
        self.dependent_launch = dependent && self.kernels.launch_ex.is_some();
    }

    /// Measurement builds (feature `timeline`): the `wgmma` stream-K kernels of the layer's
    /// calls write their blocks' per-tile clock stamps to `timeline` (layout:
    /// [`kernel_abi::timeline`]), which must hold [`TIMELINE_WORDS_PER_BLOCK`] words for each of
    /// the multiprocessors' [`TIMELINE_BLOCKS_PER_MULTIPROCESSOR`] blocks; `None`: no stamps.
    /// Other builds ignore it; an error there, so that a measurement cannot read stamps no
    /// kernel wrote.
    pub fn set_timeline(&mut self, timeline: Option<Arc<DeviceBuffer<u64>>>) -> Result<()> {
        if timeline.is_some() && !TIMELINE {
            return Err(Error::InvalidConfig("this build has no timeline (build with --features timeline)".into()));
        }
        let needed = self.timeline_words();
        if let Some(buffer) = &timeline {
            if buffer.len() < needed {
                return Err(Error::InvalidConfig(format!(
                    "a timeline needs {needed} words on this GPU, the buffer has {}",
                    buffer.len()
                )));
            }
        }
        self.params.timeline = timeline.as_ref().map_or(0, |b| b.as_device_ptr().as_raw());
        self.timeline = timeline;
        Ok(())
    }

    /// Words a timeline needs on this GPU ([`GpuLayer::set_timeline`]).
    pub fn timeline_words(&self) -> usize {
        self.kernels.multiprocessors * TIMELINE_BLOCKS_PER_MULTIPROCESSOR * TIMELINE_WORDS_PER_BLOCK
    }

    /// Whether the launches are programmatic dependents ([`GpuLayer::set_dependent_launch`]).
    pub fn dependent_launch(&self) -> bool {
        self.dependent_launch
    }

    /// Whether [`GpuLayer::forward_into`] launches the kernel of [`GpuLayer::kernel_for`] `m` as
    /// a programmatic dependent (the setting and [`dispatch::dependent_launch`]).
    pub fn launches_as_dependent(&self, m: usize) -> Result<bool> {
        let (kernel, _) = self.kernel_for(m)?;
        Ok(self.launches_dependent(kernel))
    }

    /// Whether this layer launches `kernel` as a programmatic dependent: the setting and the
    /// rule for its family.
    fn launches_dependent(&self, kernel: &Kernel) -> bool {
        self.dependent_launch && dispatch::dependent_launch(&kernel.tile, self.weight_bytes, self.kernels.l2_bytes)
    }

    /// Copies a device result back (synchronously): a convenience for tests and tools.
    pub fn download(buffer: &DeviceSlice<T>) -> Result<Vec<T>> {
        let mut host = vec![T::default(); buffer.len()];
        buffer.copy_to(&mut host[..]).context(|| format!("copying {} elements to the host", buffer.len()))?;
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.entry` of `ptx` with its one parameter's alignment and size.
    fn entries(ptx: &str) -> Vec<(String, u32, usize)> {
        let mut out = Vec::new();
        let mut lines = ptx.lines();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix(".visible .entry ") {
                let name = rest.trim_end_matches('(').to_string();
                let param = lines.next().unwrap_or_default().trim();
                let (align, size) = if param.starts_with(".param .u64 ") {
                    (8, 8)
                } else {
                    let align = param.split_whitespace().nth(2).and_then(|a| a.parse().ok()).unwrap_or(0);
                    (align, param.rsplit('[').next().and_then(|s| s.trim_end_matches(']').parse().ok()).unwrap_or(0))
                };
                assert!(lines.next().is_some_and(|l| l.starts_with(')')), "{name}: one parameter expected");
                out.push((name, align, size));
            }
        }
        out
    }

    /// The embedded PTX holds exactly the kernels of the ABI's list that this build ships (and
    /// the delay kernel), each taking its family's parameter struct: names and parameter layouts
    /// cannot drift between the device crate and the host.
    #[test]
    fn embedded_ptx_matches_the_kernel_abi() {
        for (ptx, hopper) in [(PTX_SM80, false), (PTX_SM90A, true)] {
            let mut found = entries(ptx);
            found.sort();
            let mut expected: Vec<(String, u32, usize)> = KERNELS
                .iter()
                .filter(|k| is_built(k, hopper))
                .map(|k| {
                    let (align, size) = match k.tile {
                        Tile::Fallback(_) => {
                            (std::mem::align_of::<FallbackParams>() as u32, std::mem::size_of::<FallbackParams>())
                        }
                        Tile::Wgmma(tile) if tile.load.uses_tma() => (TmaParams::PARAM_ALIGN as u32, TmaParams::BYTES),
                        _ => (std::mem::align_of::<QkvParams>() as u32, std::mem::size_of::<QkvParams>()),
                    };
                    (k.name.to_string(), align, size)
                })
                .collect();
            expected.push((kernel_abi::DELAY_KERNEL.to_string(), 8, 8));
            expected.sort();
            assert_eq!(found, expected, "hopper = {hopper}");
        }
    }
}
