//! The launch layer: the one module that speaks to the CUDA driver below `cust`'s safe types
//! (kernel launches with a parameter struct, function attributes, async fills, and the tensor
//! maps of the Hopper copy engine, which `cust` does not bind).

use std::ffi::{c_int, c_void};

use cust::function::Function;
use cust::memory::{DevicePointer, DeviceSlice};
use cust::stream::Stream;
use kernel_abi::params::KernelParams;
use kernel_abi::{Launch, TensorMap};

use crate::error::CudaResultExt;
use crate::{Dtype, DtypeKind, Error, Result};

/// Enqueues `function` on `stream` with `params` as its only (by-value) parameter.
///
/// # Safety
/// `P` must be the parameter type of `function`'s entry point, and `params` and `launch` must
/// meet its launch contract (see the kernel ABI).
pub(crate) unsafe fn launch<P: KernelParams>(
    stream: &Stream,
    function: &Function<'_>,
    name: &str,
    launch: Launch,
    params: &P,
) -> Result<()> {
    if launch.cluster != 1 {
        return Err(Error::InvalidConfig(format!("{name}: a cluster launch needs cuLaunchKernelEx")));
    }
    // The driver copies the parameter from this address while enqueueing: `params` outlives it.
    let args = [params as *const P as *mut c_void];
    stream
        .launch(function, launch.grid, (launch.block_threads, 1, 1), launch.shared_bytes, &args)
        .context(|| format!("launching {name} (grid {:?}, {} B shared)", launch.grid, launch.shared_bytes))
}

/// The driver's entry point `name` of the CUDA 12.0 ABI (one `cust` does not bind), or an error
/// saying that `needed_for` needs it.
fn driver_function(name: &std::ffi::CStr, needed_for: &str) -> Result<*mut c_void> {
    let mut function: *mut c_void = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name and a place for the pointer; 12000 = the CUDA 12.0 ABI.
    let status = unsafe { cust::sys::cuGetProcAddress(name.as_ptr(), &mut function, 12000, 0) };
    if status != cust::sys::cudaError_enum::CUDA_SUCCESS || function.is_null() {
        return Err(Error::InvalidConfig(format!(
            "the CUDA driver has no {} ({status:?}); {needed_for} need CUDA 12.0 or later",
            name.to_string_lossy()
        )));
    }
    Ok(function)
}

/// `cuLaunchKernelEx` (CUDA 12.0), which `cust` does not bind: launches with attributes, here
/// the thread-block cluster shape of split-K `wgmma` launches and programmatic dependent launch.
#[derive(Clone, Copy)]
pub(crate) struct LaunchEx {
    launch: LaunchKernelEx,
    max_active_clusters: MaxActiveClusters,
}

/// `cuOccupancyMaxActiveClusters` (CUDA 12.0): how many clusters of a launch shape fit at once.
type MaxActiveClusters = unsafe extern "C" fn(
    clusters: *mut i32,
    function: cust::sys::CUfunction,
    config: *const LaunchConfig,
) -> cust::sys::CUresult;

type LaunchKernelEx = unsafe extern "C" fn(
    config: *const LaunchConfig,
    function: cust::sys::CUfunction,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> cust::sys::CUresult;

/// `CUlaunchConfig` (cuda.h).
#[repr(C)]
struct LaunchConfig {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    stream: cust::sys::CUstream,
    attributes: *mut LaunchAttribute,
    attribute_count: u32,
}

/// `CUlaunchAttribute` (cuda.h): an id, then a 64-byte, 8-byte aligned union of values.
#[repr(C)]
struct LaunchAttribute {
    id: u32,
    _pad: u32,
    value: [u64; 8],
}

/// `CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION`: the value holds the cluster's x, y, z as u32.
const ATTRIBUTE_CLUSTER_DIMENSION: u32 = 4;
/// `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`: the value holds an int, 1 to allow it.
const ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: u32 = 6;

impl LaunchAttribute {
    /// Clusters of `blocks` blocks along x (y and z 1).
    fn cluster(blocks: u32) -> Self {
        let mut value = [0; 8];
        value[0] = blocks as u64 | (1u64 << 32);
        value[1] = 1;
        LaunchAttribute { id: ATTRIBUTE_CLUSTER_DIMENSION, _pad: 0, value }
    }

    /// The launch may start before the previous kernel on the stream has completed: once every
    /// block of that kernel has signalled (`griddepcontrol.launch_dependents`) or exited. The
    /// kernel waits for it (`griddepcontrol.wait`) before touching what it may have written
    /// (kernel-gpu's `dependency` module).
    fn programmatic_serialization() -> Self {
        let mut value = [0; 8];
        value[0] = 1;
        LaunchAttribute { id: ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, _pad: 0, value }
    }
}

impl LaunchEx {
    /// Looks `cuLaunchKernelEx` up in the driver. A context must be current.
    pub(crate) fn load() -> Result<Self> {
        let launch = driver_function(c"cuLaunchKernelEx", "cluster and programmatic dependent launches")?;
        let occupancy = driver_function(c"cuOccupancyMaxActiveClusters", "cluster launches")?;
        // SAFETY: the driver's functions of those names have these signatures (cuda.h, CUDA 12.0).
        unsafe {
            Ok(LaunchEx {
                launch: std::mem::transmute::<*mut c_void, LaunchKernelEx>(launch),
                max_active_clusters: std::mem::transmute::<*mut c_void, MaxActiveClusters>(occupancy),
            })
        }
    }

    /// Blocks of `function`'s launch shape (`launch`: threads, shared memory, cluster size)
    /// resident on the GPU at once in clusters: the most clusters that fit at once (whole
    /// clusters per GPC) times the cluster size.
    pub(crate) fn resident_in_clusters(&self, function: &Function<'_>, name: &str, launch: Launch) -> Result<u32> {
        let mut cluster = LaunchAttribute::cluster(launch.cluster);
        let config = LaunchConfig {
            grid: [launch.cluster, 1, 1],
            block: [launch.block_threads, 1, 1],
            shared_bytes: launch.shared_bytes,
            stream: std::ptr::null_mut(),
            attributes: &mut cluster,
            attribute_count: 1,
        };
        let mut clusters = 0i32;
        // SAFETY: a valid function handle and config; the driver writes one int.
        let status = unsafe { (self.max_active_clusters)(&mut clusters, function.to_raw(), &config) };
        driver(status, &format!("querying how many clusters of {} blocks of {name} fit", launch.cluster))?;
        Ok(clusters.max(0) as u32 * launch.cluster)
    }

    /// As [`launch`], in clusters of `launch.cluster` blocks along x (none where 1), and as a
    /// programmatic dependent of the previous kernel on the stream where `dependent`.
    ///
    /// # Safety
    /// As [`launch`]; the kernel must be written for the cluster shape, and where `dependent`,
    /// wait for its prerequisites before it reads or writes memory another kernel may access.
    pub(crate) unsafe fn launch<P: KernelParams>(
        &self,
        stream: &Stream,
        function: &Function<'_>,
        name: &str,
        launch: Launch,
        params: &P,
        dependent: bool,
    ) -> Result<()> {
        let mut attributes = [LaunchAttribute::cluster(launch.cluster), LaunchAttribute::programmatic_serialization()];
        let (first, count) = match (launch.cluster > 1, dependent) {
            (true, true) => (0, 2),
            (true, false) => (0, 1),
            (false, true) => (1, 1),
            (false, false) => (0, 0),
        };
        let config = LaunchConfig {
            grid: [launch.grid.0, launch.grid.1, launch.grid.2],
            block: [launch.block_threads, 1, 1],
            shared_bytes: launch.shared_bytes,
            stream: stream.as_inner(),
            attributes: attributes[first..].as_mut_ptr(),
            attribute_count: count,
        };
        let mut args = [params as *const P as *mut c_void];
        // The driver copies the parameter and the config while enqueueing: both outlive it.
        let status = (self.launch)(&config, function.to_raw(), args.as_mut_ptr(), std::ptr::null_mut());
        driver(
            status,
            &format!(
                "launching {name} (grid {:?}, clusters of {}, {} B shared{})",
                launch.grid,
                launch.cluster,
                launch.shared_bytes,
                if dependent { ", programmatic dependent" } else { "" }
            ),
        )
    }
}

/// Lets `function` use `bytes` of dynamic shared memory (needed above 48 KB).
pub(crate) fn set_max_dynamic_shared(function: &Function<'_>, name: &str, bytes: u32) -> Result<()> {
    // SAFETY: a valid function handle of a loaded module; the attribute takes an int.
    let status = unsafe {
        cust::sys::cuFuncSetAttribute(
            function.to_raw(),
            cust::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    };
    if status != cust::sys::cudaError_enum::CUDA_SUCCESS {
        return Err(Error::InvalidConfig(format!(
            "raising {name}'s dynamic shared memory limit to {bytes} B failed: {status:?}"
        )));
    }
    Ok(())
}

/// Enqueues a fill of `buffer` with NaN on `stream` (so that an element no kernel writes reads
/// as NaN, not as a plausible number).
pub(crate) fn fill_nan<T: Dtype>(stream: &Stream, buffer: &mut DeviceSlice<T>) -> Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    let (ptr, len, raw_stream) = (buffer.as_device_ptr().as_raw(), buffer.len(), stream.as_inner());
    let nan = T::from_f32(f32::NAN);
    // SAFETY: `ptr` addresses `len` elements of a live allocation; the fill is stream-ordered.
    let status = unsafe {
        match T::KIND.size_bytes() {
            2 => cust::sys::cuMemsetD16Async(ptr, *(&nan as *const T as *const u16), len, raw_stream),
            _ => cust::sys::cuMemsetD32Async(ptr, *(&nan as *const T as *const u32), len, raw_stream),
        }
    };
    driver(status, &format!("filling {len} {} elements with NaN", T::KIND))
}

/// Address `count` elements past `ptr` (a kernel argument; never dereferenced on the host).
pub(crate) fn address<T: Dtype>(ptr: DevicePointer<T>, count: usize) -> u64 {
    ptr.as_raw() + (count * std::mem::size_of::<T>()) as u64
}

/// What `cuTensorMapEncodeTiled` writes into: a `CUtensorMap`, 64-byte aligned on the host.
#[repr(C, align(64))]
struct AlignedMap([u64; 16]);

type EncodeTiled = unsafe extern "C" fn(
    map: *mut AlignedMap,
    data_type: c_int,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    box_dims: *const u32,
    element_strides: *const u32,
    interleave: c_int,
    swizzle: c_int,
    l2_promotion: c_int,
    oob_fill: c_int,
) -> c_int;

// CUtensorMapDataType, CUtensorMapSwizzle, CUtensorMapL2promotion values (cuda.h).
const DATA_TYPE_FLOAT16: c_int = 6;
const DATA_TYPE_BFLOAT16: c_int = 9;
const SWIZZLE_128B: c_int = 3;
const L2_PROMOTION_128B: c_int = 2;

/// The driver's tensor-map encoder.
#[derive(Clone, Copy)]
pub(crate) struct TmaEncoder {
    encode: EncodeTiled,
}

impl TmaEncoder {
    /// Looks `cuTensorMapEncodeTiled` up in the driver. A context must be current.
    pub(crate) fn load() -> Result<Self> {
        let function = driver_function(c"cuTensorMapEncodeTiled", "TMA")?;
        // SAFETY: the driver's function of that name has this signature (cuda.h, CUDA 12.0).
        Ok(TmaEncoder { encode: unsafe { std::mem::transmute::<*mut c_void, EncodeTiled>(function) } })
    }

    /// The map of a row-major `[rows, cols]` matrix of 16-bit `dtype` at device address
    /// `address`, copied in boxes of `box_cols` x `box_rows` with 128-byte swizzle (the layout
    /// `wgmma` reads; `box_cols * 2` must be 128) and zeros past the matrix.
    pub(crate) fn encode_2d(
        &self,
        dtype: DtypeKind,
        address: u64,
        rows: usize,
        cols: usize,
        box_rows: u32,
        box_cols: u32,
    ) -> Result<TensorMap> {
        let data_type = match dtype {
            DtypeKind::Bf16 => DATA_TYPE_BFLOAT16,
            DtypeKind::F16 => DATA_TYPE_FLOAT16,
            DtypeKind::F32 => return Err(Error::InvalidConfig("no TMA path for f32".into())),
        };
        let dims = [cols as u64, rows as u64];
        let strides = [(cols * dtype.size_bytes()) as u64];
        let box_dims = [box_cols, box_rows];
        let element_strides = [1u32, 1];
        let mut map = AlignedMap([0; 16]);
        // SAFETY: every pointer refers to a live local of the documented length (rank 2: two dims,
        // one stride); the driver only writes `map`.
        let status = unsafe {
            (self.encode)(
                &mut map,
                data_type,
                2,
                address as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                box_dims.as_ptr(),
                element_strides.as_ptr(),
                0,
                SWIZZLE_128B,
                L2_PROMOTION_128B,
                0,
            )
        };
        if status != 0 {
            return Err(Error::InvalidConfig(format!(
                "cuTensorMapEncodeTiled failed ({status}) for a [{rows}, {cols}] {dtype} matrix at {address:#x}, box {box_rows} x {box_cols}"
            )));
        }
        Ok(TensorMap(map.0))
    }
}

/// A CUDA graph captured from a stream and instantiated: replaying it enqueues all the captured
/// work with one launch, as engines run decode (vLLM, nano-vllm).
pub struct Graph {
    graph: cust::sys::CUgraph,
    exec: cust::sys::CUgraphExec,
}

/// A driver call's status as a `Result` with context.
fn driver(status: cust::sys::CUresult, what: &str) -> Result<()> {
    if status == cust::sys::cudaError_enum::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Driver { context: what.to_string(), status: format!("{status:?}") })
    }
}

impl Graph {
    /// Captures what `enqueue` puts on `stream` (not the legacy default stream) into a graph and
    /// instantiates it. Nothing runs during the capture; `enqueue` must only enqueue
    /// (e.g. [`super::GpuLayer::forward_into`], which neither allocates nor synchronises).
    pub fn capture(stream: &Stream, enqueue: impl FnOnce() -> Result<()>) -> Result<Graph> {
        let raw = stream.as_inner();
        let mode = cust::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        // SAFETY: a live stream; capture ends below on every path.
        driver(unsafe { cust::sys::cuStreamBeginCapture_v2(raw, mode) }, "beginning a stream capture")?;
        let enqueued = enqueue();
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the capture begun above; `graph` receives the captured graph (or null).
        let ended = driver(unsafe { cust::sys::cuStreamEndCapture(raw, &mut graph) }, "ending a stream capture");
        let destroy_graph = |graph: cust::sys::CUgraph| {
            if !graph.is_null() {
                // SAFETY: a graph this function created and nobody else holds.
                unsafe { cust::sys::cuGraphDestroy(graph) };
            }
        };
        if let Err(e) = enqueued.and(ended) {
            destroy_graph(graph);
            return Err(e);
        }
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` is a valid captured graph; `exec` receives the executable graph.
        let status = unsafe { cust::sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) };
        if let Err(e) = driver(status, "instantiating a captured graph") {
            destroy_graph(graph);
            return Err(e);
        }
        Ok(Graph { graph, exec })
    }

    /// Enqueues one replay of the graph on `stream`.
    pub fn launch(&self, stream: &Stream) -> Result<()> {
        // SAFETY: an instantiated graph and a live stream.
        driver(unsafe { cust::sys::cuGraphLaunch(self.exec, stream.as_inner()) }, "launching a graph")
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both handles were created by `capture` and are destroyed once, here.
        unsafe {
            cust::sys::cuGraphExecDestroy(self.exec);
            cust::sys::cuGraphDestroy(self.graph);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structs handed to `cuLaunchKernelEx` have cuda.h's layout (64-bit).
    #[test]
    fn launch_structs_match_cuda_h() {
        assert_eq!(std::mem::size_of::<LaunchAttribute>(), 72);
        assert_eq!(std::mem::align_of::<LaunchAttribute>(), 8);
        assert_eq!(std::mem::size_of::<LaunchConfig>(), 56);
        assert_eq!(std::mem::offset_of!(LaunchConfig, stream), 32);
        assert_eq!(std::mem::offset_of!(LaunchConfig, attribute_count), 48);
    }
}
