//! The parameter structs the kernels take by value: one per kernel family, built by the host
//! once per layer (weights, shape, `eps`, output scale) and completed per call (x, q, k, v, M).
//!
//! Device addresses are `u64`: the host's pointers and the device's generic addresses alike.

/// The problem as a kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Tokens: rows of `x`, q, k and v.
    pub m: u32,
    /// `H`: elements of a row of `x` and of `W'`.
    pub hidden: u32,
    /// Columns of q: `num_heads * head_dim`.
    pub q_cols: u32,
    /// Columns of k and of v: `num_kv_heads * head_dim`.
    pub kv_cols: u32,
}

impl Shape {
    /// Output columns `N = q_cols + 2 * kv_cols`.
    #[inline(always)]
    pub const fn n(&self) -> u32 {
        self.q_cols + 2 * self.kv_cols
    }
}

/// What every kernel takes: the buffers, the shape and the norm's constants.
///
/// `x [m, hidden]`, `qkv_weight` = `W' [N, hidden]` (gamma folded in), `bias [N]` or 0,
/// `q [m, q_cols]`, `k` and `v [m, kv_cols]`, row-major, no output overlapping an input.
/// `y[m, n] = sum_h x[m, h] * W'[n, h] * (rms_inv[m] * out_scale) + bias[n]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QkvParams {
    pub x: u64,
    pub qkv_weight: u64,
    /// 0 when the layer has no bias.
    pub bias: u64,
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub shape: Shape,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// `2^-s`, undoing the power of two folded into `W'` with gamma.
    pub out_scale: f32,
    /// The `wgmma` kernels' stream-K workspace ([`crate::WgmmaTile::stream_workspace_bytes`]
    /// for the launch's grid); 0 where no tile is shared between blocks. Other kernels ignore it.
    pub workspace: u64,
    /// 1 when the launch is a programmatic dependent of the kernel before it: the kernel then
    /// has the start of its share of `W'` brought into L2 before it waits for that kernel (a
    /// prefetch that only pays while the kernel waits); 0 otherwise.
    pub dependent_launch: u32,
    pub reserved: u32,
    /// Measurement builds only (the device crate's `timeline` feature): where the `wgmma`
    /// stream-K kernels write their per-tile clock stamps ([`crate::timeline`]); 0: none. The
    /// kernels of a plain build never read it.
    pub timeline: u64,
}

impl QkvParams {
    /// `x` as a typed pointer.
    #[inline(always)]
    pub fn x<T>(&self) -> *const T {
        self.x as usize as *const T
    }

    /// `W'` as a typed pointer.
    #[inline(always)]
    pub fn qkv_weight<T>(&self) -> *const T {
        self.qkv_weight as usize as *const T
    }

    /// The bias as a typed pointer (null without one).
    #[inline(always)]
    pub fn bias<T>(&self) -> *const T {
        self.bias as usize as *const T
    }

    /// q, k and v as typed pointers.
    #[inline(always)]
    pub fn outputs<T>(&self) -> [*mut T; 3] {
        [self.q as usize as *mut T, self.k as usize as *mut T, self.v as usize as *mut T]
    }
}

/// The fallback kernel's parameters: [`QkvParams`] and the staging chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FallbackParams {
    pub qkv: QkvParams,
    /// Elements of each `x` row staged in shared memory per pass
    /// ([`crate::FallbackTile::chunk`]).
    pub chunk: u32,
    pub reserved: u32,
}

/// A `CUtensorMap`: 128 opaque bytes the host encodes (`cuTensorMapEncodeTiled`) and the copy
/// engine reads in place from the kernel's parameter space.
///
/// The hardware needs 64-byte alignment, but rustc's PTX kernel ABI rejects parameters aligned
/// above 16 bytes: the type says 16, the maps sit at multiples of 64 bytes inside
/// [`TmaParams`], and `ptx-builder` declares that parameter 64-byte aligned in the PTX
/// ([`TmaParams::BYTES`]).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorMap(pub [u64; 16]);

/// The TMA `wgmma` kernels' parameters: the tensor maps of `x` (box `K_BLOCK x tokens`) and
/// of `W'` (box `K_BLOCK x out_cols`), 128-byte swizzle, then [`QkvParams`].
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TmaParams {
    pub x_map: TensorMap,
    pub w_map: TensorMap,
    pub qkv: QkvParams,
}

impl TmaParams {
    /// Size of the parameter, by which `ptx-builder` recognises it in the PTX.
    pub const BYTES: usize = core::mem::size_of::<TmaParams>();
    /// The alignment the PTX must declare for the parameter (the tensor maps' 64 bytes).
    pub const PARAM_ALIGN: usize = 64;
    /// Byte offset of `x_map` inside the parameter.
    pub const X_MAP_OFFSET: usize = core::mem::offset_of!(TmaParams, x_map);
    /// Byte offset of `w_map` inside the parameter.
    pub const W_MAP_OFFSET: usize = core::mem::offset_of!(TmaParams, w_map);
}

// The maps stay 64-byte aligned once the parameter is.
const _: () = assert!(
    TmaParams::X_MAP_OFFSET.is_multiple_of(TmaParams::PARAM_ALIGN)
        && TmaParams::W_MAP_OFFSET.is_multiple_of(TmaParams::PARAM_ALIGN)
);
// Sizes both sides must agree on (a change here changes the kernels' signatures).
const _: () = assert!(core::mem::size_of::<QkvParams>() == 96 && core::mem::align_of::<QkvParams>() == 8);
const _: () = assert!(core::mem::size_of::<FallbackParams>() == 104);

/// A parameter struct a kernel takes by value, as its only parameter.
///
/// # Safety
/// Implementors are `#[repr(C)]`, hold no references and have the same layout on the host and
/// the device (plain integers, floats and arrays of them).
pub unsafe trait KernelParams: Copy {}

// SAFETY: repr(C) structs of u64, u32, f32 and arrays of u64.
unsafe impl KernelParams for QkvParams {}
// SAFETY: as above.
unsafe impl KernelParams for FallbackParams {}
// SAFETY: as above.
unsafe impl KernelParams for TmaParams {}
// SAFETY: a plain integer (the delay kernel's nanoseconds).
unsafe impl KernelParams for u64 {}
