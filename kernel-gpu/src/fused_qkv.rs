//! The fused RMSNorm + QKV projection:
//! `y[m, n] = rms_inv[m] * sum_h (x[m, h] * gamma[h]) * W[n, h] (+ bias[n])`, with
//! `rms_inv[m] = 1 / sqrt(mean_h x[m, h]^2 + eps)`, fp32 accumulation, and `y` split into the
//! column ranges q | k | v.
//!
//! One block computes a `TILE_M x TILE_N` tile of `y`. Each warp owns `ROWS_PER_WARP` rows of `W`
//! and streams them once over the hidden dimension with 16-byte loads; the block's `TILE_M` rows of
//! `x * gamma` are staged in shared memory as fp32, a chunk of the hidden dimension at a time, so
//! every weight element loaded is used for all rows of the tile. `rms_inv` is applied once per
//! output in the epilogue (the same value as applying it to `x` first, up to fp32 rounding).
//!
//! Launch contract (checked by the host, which is the only caller):
//! - `block = (THREADS, 1, 1)`, `grid = (ceil(N / TILE_N), ceil(M / TILE_M), 1)`;
//! - dynamic shared memory `TILE_M * chunk * 4` bytes, `chunk` a multiple of `32 * T::VEC`;
//! - `x [M, hidden]`, `gamma [hidden]`, `qkv_weight [N, hidden]`, `bias [N]` or null,
//!   `q [M, q_cols]`, `k` and `v [M, kv_cols]`, `N = q_cols + 2 * kv_cols`, no overlap between
//!   outputs and inputs;
//! - the `_vec` kernels additionally need `hidden % T::VEC == 0` and 16-byte aligned `x` and `W`.

use crate::element::{Bf16, Element, F16};
use crate::shared::{dynamic_shared_base, SharedPtr};
use crate::thread::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::warp::{lane_id, reduce_sum_f32, warp_id, WARP_SIZE};
use crate::{float, static_shared};

/// Threads per block.
pub const THREADS: u32 = 256;
/// Warps per block.
pub const WARPS: u32 = THREADS / WARP_SIZE;
/// Rows of `x` (tokens) per block.
pub const TILE_M: usize = 8;
// The `unroll!` index lists below are written out for TILE_M == 8.
const _: () = assert!(TILE_M == 8 && ROWS_PER_WARP == 2);
/// Rows of `W` per warp.
pub const ROWS_PER_WARP: usize = 2;
/// Rows of `W` (output columns) per block.
pub const TILE_N: u32 = WARPS * ROWS_PER_WARP as u32;

/// The problem as the kernel sees it.
#[derive(Clone, Copy)]
struct Shape {
    m: u32,
    hidden: u32,
    q_cols: u32,
    kv_cols: u32,
    chunk: u32,
}

impl Shape {
    fn n(&self) -> u32 {
        self.q_cols + 2 * self.kv_cols
    }
}

/// Step 1: `rms_inv` of the tile's rows into shared memory, one warp a row.
#[inline(always)]
unsafe fn row_rms_inv<T: Element, const VECTOR: bool>(
    x: *const T,
    shape: Shape,
    eps: f32,
    row0: u32,
    rows: u32,
    rms_inv: SharedPtr,
) {
    let warp = warp_id();
    // TILE_M == WARPS, so one pass covers the tile; the assert documents the coupling.
    const { assert!(TILE_M == WARPS as usize) };
    if warp >= rows {
        return;
    }
    let row = x.add(((row0 + warp) as usize) * shape.hidden as usize);
    let mut sum_sq = 0.0f32;
    let lane_step = WARP_SIZE as usize * T::VEC;
    let mut h = lane_id() as usize * T::VEC;
    while h < shape.hidden as usize {
        let vals = load_masked::<T, VECTOR>(row, h, shape.hidden as usize);
        for v in vals.iter().take(T::VEC) {
            sum_sq += v * v;
        }
        h += lane_step;
    }
    let sum_sq = reduce_sum_f32(sum_sq);
    if lane_id() == 0 {
        let mean = float::div_rn(sum_sq, shape.hidden as f32);
        rms_inv.offset_f32(warp).store_f32(float::div_rn(1.0, float::sqrt_rn(mean + eps)));
    }
}

/// Loads `row[h .. h + VEC]` as f32, zero past `len`.
#[inline(always)]
unsafe fn load_masked<T: Element, const VECTOR: bool>(row: *const T, h: usize, len: usize) -> [f32; 8] {
    if VECTOR {
        // hidden % VEC == 0 and h % VEC == 0: the vector is either wholly inside or wholly outside.
        if h < len {
            T::load_vec(row.add(h))
        } else {
            [0.0; 8]
        }
    } else {
        // Arrays are built by value with from_fn: an indexed loop writing through `&mut` left them
        // in local memory (a stack frame in ptxas's report).
        core::array::from_fn(|i| if i < T::VEC && h + i < len { T::load(row.add(h + i)) } else { 0.0 })
    }
}

/// Step 2a: `x * gamma` for the tile's rows and hidden range `[h0, h0 + len)` into shared memory as
/// fp32, zero-filled up to `padded_len` so masked lanes multiply zeros, never stale values.
#[inline(always)]
unsafe fn stage_x_gamma<T: Element>(
    x: *const T,
    gamma: *const T,
    shape: Shape,
    row0: u32,
    rows: u32,
    h0: u32,
    len: u32,
    padded_len: u32,
    x_gamma: SharedPtr,
) {
    for r in 0..rows {
        let x_row = x.add((row0 + r) as usize * shape.hidden as usize + h0 as usize);
        let mut c = thread_idx_x();
        while c < padded_len {
            let value = if c < len { T::load(x_row.add(c as usize)) * T::load(gamma.add((h0 + c) as usize)) } else { 0.0 };
            x_gamma.offset_f32(r * shape.chunk + c).store_f32(value);
            c += THREADS;
        }
    }
}

/// Step 2b: this warp's `W` rows times the staged chunk, accumulated into `acc[w_row][x_row]`.
#[inline(always)]
unsafe fn accumulate_chunk<T: Element, const VECTOR: bool>(
    qkv_weight: *const T,
    shape: Shape,
    n_base: u32,
    rows: u32,
    h0: u32,
    len: u32,
    x_gamma: SharedPtr,
    acc: &mut [[f32; TILE_M]; ROWS_PER_WARP],
) {
    let n_total = shape.n();
    let lane_step = WARP_SIZE * T::VEC as u32;
    let mut s = 0;
    while s < len {
        let c = s + lane_id() * T::VEC as u32;
        let w: [[f32; 8]; ROWS_PER_WARP] = core::array::from_fn(|r| {
            let n = n_base + r as u32;
            if n < n_total {
                let w_row = qkv_weight.add(n as usize * shape.hidden as usize + h0 as usize);
                load_masked::<T, VECTOR>(w_row, c as usize, len as usize)
            } else {
                [0.0; 8]
            }
        });
        // Constant trip counts with the row test inside keep `acc` in registers: a loop that
        // breaks at `rows` is not unrolled and puts `acc` in local memory.
        unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
            if (mm as u32) < rows {
                let x_row = x_gamma.offset_f32(mm as u32 * shape.chunk + c);
                let lo = x_row.load_f32x4();
                let hi = if T::VEC == 8 { x_row.offset_f32(4).load_f32x4() } else { [0.0; 4] };
                let xv = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]];
                for r in 0..ROWS_PER_WARP {
                    let mut sum = acc[r][mm];
                    for i in 0..T::VEC {
                        sum += w[r][i] * xv[i];
                    }
                    acc[r][mm] = sum;
                }
            }
        });
        s += lane_step;
    }
}

/// Step 3: reduce over the warp, scale by `rms_inv`, add the bias, round and store into q, k or v.
#[inline(always)]
unsafe fn store_outputs<T: Element>(
    acc: &[[f32; TILE_M]; ROWS_PER_WARP],
    bias: *const T,
    out: [*mut T; 3],
    shape: Shape,
    n_base: u32,
    row0: u32,
    rows: u32,
    rms_inv: SharedPtr,
) {
    unroll!(r in [0, 1] {
        let n = n_base + r as u32;
        let acc_r = &acc[r];
        unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
            if (mm as u32) < rows {
                let dot = reduce_sum_f32(acc_r[mm]);
                if lane_id() == 0 && n < shape.n() {
                    let y = dot * rms_inv.offset_f32(mm as u32).load_f32();
                    let y = if bias.is_null() { y } else { y + T::load(bias.add(n as usize)) };
                    store_column(out, shape, row0 + mm as u32, n, y);
                }
            }
        });
    });
}

/// Stores `y[row, n]` into q, k or v: they are consecutive column ranges of `y`.
#[inline(always)]
unsafe fn store_column<T: Element>(out: [*mut T; 3], shape: Shape, row: u32, n: u32, y: f32) {
    let (dst, cols, col) = if n < shape.q_cols {
        (out[0], shape.q_cols, n)
    } else if n < shape.q_cols + shape.kv_cols {
        (out[1], shape.kv_cols, n - shape.q_cols)
    } else {
        (out[2], shape.kv_cols, n - shape.q_cols - shape.kv_cols)
    };
    T::store(dst.add(row as usize * cols as usize + col as usize), y);
}

/// The kernel body shared by every dtype; see the module docs for the launch contract.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fused_rmsnorm_qkv<T: Element, const VECTOR: bool>(
    x: *const T,
    gamma: *const T,
    qkv_weight: *const T,
    bias: *const T,
    out: [*mut T; 3],
    shape: Shape,
    eps: f32,
    rms_inv: SharedPtr,
) {
    let row0 = block_idx_y() * TILE_M as u32;
    let rows = (shape.m - row0).min(TILE_M as u32);
    let n_base = block_idx_x() * TILE_N + warp_id() * ROWS_PER_WARP as u32;
    let x_gamma = dynamic_shared_base();
    let lane_step = WARP_SIZE * T::VEC as u32;

    row_rms_inv::<T, VECTOR>(x, shape, eps, row0, rows, rms_inv);
    let mut acc = [[0.0f32; TILE_M]; ROWS_PER_WARP];
    let mut h0 = 0;
    while h0 < shape.hidden {
        let len = (shape.hidden - h0).min(shape.chunk);
        let padded_len = len.div_ceil(lane_step) * lane_step;
        // The previous chunk's readers are done before it is overwritten.
        sync_threads();
        stage_x_gamma(x, gamma, shape, row0, rows, h0, len, padded_len, x_gamma);
        sync_threads();
        accumulate_chunk::<T, VECTOR>(qkv_weight, shape, n_base, rows, h0, len, x_gamma, &mut acc);
        h0 += shape.chunk;
    }
    // rms_inv was written before the first barrier of the chunk loop (hidden >= 1).
    store_outputs(&acc, bias, out, shape, n_base, row0, rows, rms_inv);
}

/// Declares one kernel entry point per (dtype, access width).
macro_rules! fused_qkv_kernel {
    ($name:ident, $t:ty, $vector:literal) => {
        #[doc = concat!("Fused RMSNorm + QKV for `", stringify!($t), "`; vector loads: ", stringify!($vector), ".")]
        ///
        /// # Safety
        /// The launch contract of this module.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const $t,
            gamma: *const $t,
            qkv_weight: *const $t,
            bias: *const $t,
            q: *mut $t,
            k: *mut $t,
            v: *mut $t,
            m: u32,
            hidden: u32,
            q_cols: u32,
            kv_cols: u32,
            chunk: u32,
            eps: f32,
        ) {
            let rms_inv = static_shared!(rms_inv_tile, TILE_M * 4);
            let shape = Shape { m, hidden, q_cols, kv_cols, chunk };
            fused_rmsnorm_qkv::<$t, $vector>(x, gamma, qkv_weight, bias, [q, k, v], shape, eps, rms_inv);
        }
    };
}

fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_vec, Bf16, true);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_scalar, Bf16, false);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_vec, F16, true);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_scalar, F16, false);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_vec, f32, true);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_scalar, f32, false);
