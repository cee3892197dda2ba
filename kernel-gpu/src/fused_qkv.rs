//! The general fused RMSNorm + QKV kernel (SIMT, any shape and alignment, every dtype):
//! `y[m, n] = sum_h x[m, h] * W'[n, h] * (rms_inv[m] * out_scale) (+ bias[n])`, with
//! `rms_inv[m] = 1 / sqrt(mean_h x[m, h]^2 + eps)`, `W'` = gamma folded into W (see
//! [`crate::qkv`]), fp32 accumulation, and `y` split into the column ranges q | k | v. The decode
//! kernels ([`crate::gemv`], [`crate::fused_qkv_mma`]) are faster where they apply; this one is
//! the fallback for unaligned `x`, `hidden % VEC != 0` (the `_scalar` kernels) and f32 batches.
//!
//! One block computes a `TM x TILE_N` tile of `y` (`TM` tokens, `TILE_N` outputs):
//! 1. stage: the tile's rows of `x` go to shared memory as fp32, a chunk of the hidden
//!    dimension at a time (16-byte loads, several in flight per thread); the sums of squares of
//!    `x` are accumulated on the way, so `x` is read once per block;
//! 2. accumulate: each warp streams its `ROWS_PER_WARP` rows of `W'` once, `UNROLL` 16-byte loads per
//!    row in flight per lane, and multiplies every loaded element with all staged rows;
//! 3. normalize: the sums of squares are reduced over the block into `rms_inv * out_scale`;
//! 4. store: partial dots are reduced over the warp, scaled, biased, rounded, stored.
//!
//! Launch contract (checked by the host, which is the only caller):
//! - `block = (THREADS, 1, 1)`, `grid = (ceil(N / TILE_N), ceil(M / TM), 1)` for the `_m{TM}` kernel;
//! - dynamic shared memory `min(M, TM) * chunk * 4` bytes, `chunk` a multiple of `32 * T::VEC`;
//! - `x [M, hidden]`, `qkv_weight [N, hidden]`, `bias [N]` or null,
//!   `q [M, q_cols]`, `k` and `v [M, kv_cols]`, `N = q_cols + 2 * kv_cols`, no overlap between
//!   outputs and inputs;
//! - the `_vec` kernels additionally need `hidden % T::VEC == 0` and 16-byte aligned `x` and `W'`.

use crate::element::{Bf16, Element, F16};
use crate::mem::load_nc_v16;
use crate::qkv::{row_scale, store_output, Shape};
use crate::shared::{dynamic_shared_base, SharedPtr};
use crate::static_shared;
use crate::thread::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::warp::{lane_id, reduce_sum_f32, warp_id, WARP_SIZE};

/// Threads per block.
pub const THREADS: u32 = 128;
/// Warps per block.
pub const WARPS: u32 = THREADS / WARP_SIZE;
/// Most rows of `x` (tokens) per block. Each kernel is specialised for a tile of `TM` in
/// {1, 2, 4, 8} tokens (the `_m{TM}` suffix): at decode, every instruction spent on rows that do
/// not exist is issue time taken from the weight stream.
pub const TILE_M: usize = 8;
/// Rows of `W` per warp.
pub const ROWS_PER_WARP: usize = 2;
/// Rows of `W` (output columns) per block.
pub const TILE_N: u32 = WARPS * ROWS_PER_WARP as u32;
/// 16-byte loads of each `W` row a lane issues before using the first.
const UNROLL: usize = 4;
/// 16-byte vectors of `x` a thread loads before using the first, when staging.
const STAGE_BATCH: usize = 4;
// The `unroll!` index lists below are written out for these values.
const _: () = assert!(TILE_M == 8 && ROWS_PER_WARP == 2 && UNROLL == 4 && STAGE_BATCH == 4);

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

/// Step 1 for one row: `x` over `[h0, h0 + len)` into `dst` as fp32, zero-filled up to
/// `padded_len` (so masked lanes later multiply zeros, never stale values); returns this thread's
/// part of the row's sum of squares.
#[inline(always)]
unsafe fn stage_row<T: Element, const VECTOR: bool>(x_row: *const T, len: u32, padded_len: u32, dst: SharedPtr) -> f32 {
    let per_pass = THREADS * T::VEC as u32;
    let mut sum_sq = 0.0f32;
    let mut base = thread_idx_x() * T::VEC as u32;
    while base < padded_len {
        let offset = |b: usize| base + b as u32 * per_pass;
        // All loads of the batch first, so their latencies overlap.
        let mut xs = [[0.0f32; 8]; STAGE_BATCH];
        unroll!(b in [0, 1, 2, 3] {
            xs[b] = load_masked::<T, VECTOR>(x_row, offset(b) as usize, len as usize);
        });
        unroll!(b in [0, 1, 2, 3] {
            let c = offset(b);
            if c < padded_len {
                let p = xs[b];
                for v in p.iter().take(T::VEC) {
                    sum_sq += v * v;
                }
                let at = dst.offset_f32(c);
                at.store_f32x4([p[0], p[1], p[2], p[3]]);
                if T::VEC == 8 {
                    at.offset_f32(4).store_f32x4([p[4], p[5], p[6], p[7]]);
                }
            }
        });
        base += STAGE_BATCH as u32 * per_pass;
    }
    sum_sq
}

/// Step 2: this warp's `W` rows times the staged chunk, accumulated into `acc[w_row][x_row]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_chunk<T: Element, const VECTOR: bool, const TM: usize>(
    qkv_weight: *const T,
    shape: Shape,
    n_base: u32,
    rows: u32,
    h0: u32,
    len: u32,
    chunk: u32,
    x_staged: SharedPtr,
    acc: &mut [[f32; TILE_M]; ROWS_PER_WARP],
) {
    let n_total = shape.n();
    let lane_step = WARP_SIZE * T::VEC as u32;
    let w_rows: [*const T; ROWS_PER_WARP] = core::array::from_fn(|r| {
        let n = (n_base + r as u32).min(n_total - 1);
        qkv_weight.add(n as usize * shape.hidden as usize + h0 as usize)
    });
    let mut s = 0;
    while s < len {
        let col = |u: usize| s + u as u32 * lane_step + lane_id() * T::VEC as u32;
        // UNROLL x ROWS_PER_WARP independent 16-byte loads in flight before the first use.
        // Filled with constant indices (nested from_fn was not unrolled on the scalar path and
        // left `w` in local memory). The vector path keeps loads raw until use: half the registers.
        let mut w = [[[0.0f32; 8]; ROWS_PER_WARP]; UNROLL];
        let mut w_raw = [[[0u32; 4]; ROWS_PER_WARP]; UNROLL];
        unroll!(u in [0, 1, 2, 3] {
            unroll!(r in [0, 1] {
                let c = col(u);
                if n_base + (r as u32) < n_total && c < len {
                    if VECTOR {
                        w_raw[u][r] = load_nc_v16(w_rows[r].add(c as usize).cast());
                    } else {
                        w[u][r] = load_masked::<T, VECTOR>(w_rows[r], c as usize, len as usize);
                    }
                }
            });
        });
        unroll!(u in [0, 1, 2, 3] {
            let c = col(u);
            if c < len {
                let w_u: [[f32; 8]; ROWS_PER_WARP] =
                    if VECTOR { [T::unpack(w_raw[u][0]), T::unpack(w_raw[u][1])] } else { w[u] };
                // Constant trip counts with the row test inside keep `acc` in registers.
                unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if mm < TM && (mm as u32) < rows {
                        let x_row = x_staged.offset_f32(mm as u32 * chunk + c);
                        let lo = x_row.load_f32x4();
                        let hi = if T::VEC == 8 { x_row.offset_f32(4).load_f32x4() } else { [0.0; 4] };
                        let xv = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]];
                        for r in 0..ROWS_PER_WARP {
                            let mut sum = acc[r][mm];
                            for i in 0..T::VEC {
                                sum += w_u[r][i] * xv[i];
                            }
                            acc[r][mm] = sum;
                        }
                    }
                });
            }
        });
        s += UNROLL as u32 * lane_step;
    }
}

/// Step 3: the block's partial sums of squares per row into `scale[row] = rms_inv * out_scale` (shared).
#[inline(always)]
unsafe fn block_row_scale<const TM: usize>(
    sum_sq: &[f32; TILE_M],
    shape: Shape,
    (eps, out_scale): (f32, f32),
    rows: u32,
    scratch: SharedPtr,
    scale: SharedPtr,
) {
    unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
        if mm < TM && (mm as u32) < rows {
            let warp_sum = reduce_sum_f32(sum_sq[mm]);
            if lane_id() == 0 {
                scratch.offset_f32(warp_id() * TILE_M as u32 + mm as u32).store_f32(warp_sum);
            }
        }
    });
    sync_threads();
    let row = thread_idx_x();
    if row < rows {
        let mut total = 0.0f32;
        for w in 0..WARPS {
            total += scratch.offset_f32(w * TILE_M as u32 + row).load_f32();
        }
        scale.offset_f32(row).store_f32(row_scale(total, shape.hidden, eps, out_scale));
    }
    sync_threads();
}

/// Step 4: reduce over the warp, scale, add the bias, round and store into q, k or v.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_outputs<T: Element, const TM: usize>(
    acc: &[[f32; TILE_M]; ROWS_PER_WARP],
    bias: *const T,
    out: [*mut T; 3],
    shape: Shape,
    n_base: u32,
    row0: u32,
    rows: u32,
    scale: SharedPtr,
) {
    unroll!(r in [0, 1] {
        let n = n_base + r as u32;
        let acc_r = &acc[r];
        unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
            if mm < TM && (mm as u32) < rows {
                let dot = reduce_sum_f32(acc_r[mm]);
                if lane_id() == 0 && n < shape.n() {
                    let row_scale = scale.offset_f32(mm as u32).load_f32();
                    store_output(out, bias, shape, row0 + mm as u32, n, dot, row_scale);
                }
            }
        });
    });
}

/// The kernel body shared by every dtype; see the module docs for the launch contract.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fused_rmsnorm_qkv<T: Element, const VECTOR: bool, const TM: usize>(
    x: *const T,
    qkv_weight: *const T,
    bias: *const T,
    out: [*mut T; 3],
    shape: Shape,
    chunk: u32,
    eps_and_scale: (f32, f32),
    scratch: SharedPtr,
    scale: SharedPtr,
) {
    let row0 = block_idx_y() * TM as u32;
    let rows = (shape.m - row0).min(TM as u32);
    let n_base = block_idx_x() * TILE_N + warp_id() * ROWS_PER_WARP as u32;
    let x_staged = dynamic_shared_base();
    let lane_step = WARP_SIZE * T::VEC as u32;

    let mut sum_sq = [0.0f32; TILE_M];
    let mut acc = [[0.0f32; TILE_M]; ROWS_PER_WARP];
    let mut h0 = 0;
    while h0 < shape.hidden {
        let len = (shape.hidden - h0).min(chunk);
        let padded_len = len.div_ceil(lane_step) * lane_step;
        // The previous chunk's readers are done before it is overwritten.
        sync_threads();
        unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
            if mm < TM && (mm as u32) < rows {
                let x_row = x.add((row0 as usize + mm) * shape.hidden as usize + h0 as usize);
                let dst = x_staged.offset_f32(mm as u32 * chunk);
                sum_sq[mm] += stage_row::<T, VECTOR>(x_row, len, padded_len, dst);
            }
        });
        sync_threads();
        accumulate_chunk::<T, VECTOR, TM>(qkv_weight, shape, n_base, rows, h0, len, chunk, x_staged, &mut acc);
        h0 += chunk;
    }
    block_row_scale::<TM>(&sum_sq, shape, eps_and_scale, rows, scratch, scale);
    store_outputs::<T, TM>(&acc, bias, out, shape, n_base, row0, rows, scale);
}

/// Declares one kernel entry point per (dtype, access width).
macro_rules! fused_qkv_kernel {
    ($name:ident, $t:ty, $vector:literal, $tm:literal) => {
        #[doc = concat!("Fused RMSNorm + QKV for `", stringify!($t), "`, ", stringify!($tm), " tokens per block; vector loads: ", stringify!($vector), ".")]
        ///
        /// # Safety
        /// The launch contract of this module.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const $t,
            qkv_weight: *const $t,
            bias: *const $t,
            q: *mut $t,
            k: *mut $t,
            v: *mut $t,
            m: u32,
            hidden: u32,
            q_cols: u32,
            kv_cols: u32,
            eps: f32,
            out_scale: f32,
            chunk: u32,
        ) {
            let scratch = static_shared!(sum_sq_scratch, WARPS as usize * TILE_M * 4);
            let scale = static_shared!(row_scale_tile, TILE_M * 4);
            let shape = Shape { m, hidden, q_cols, kv_cols };
            let (out, eps_and_scale) = ([q, k, v], (eps, out_scale));
            fused_rmsnorm_qkv::<$t, $vector, $tm>(x, qkv_weight, bias, out, shape, chunk, eps_and_scale, scratch, scale);
        }
    };
}

fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_vec_m1, Bf16, true, 1);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_scalar_m1, Bf16, false, 1);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_vec_m1, F16, true, 1);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_scalar_m1, F16, false, 1);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_vec_m1, f32, true, 1);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_scalar_m1, f32, false, 1);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_vec_m2, Bf16, true, 2);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_scalar_m2, Bf16, false, 2);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_vec_m2, F16, true, 2);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_scalar_m2, F16, false, 2);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_vec_m2, f32, true, 2);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_scalar_m2, f32, false, 2);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_vec_m4, Bf16, true, 4);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_scalar_m4, Bf16, false, 4);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_vec_m4, F16, true, 4);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_scalar_m4, F16, false, 4);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_vec_m4, f32, true, 4);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_scalar_m4, f32, false, 4);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_vec_m8, Bf16, true, 8);
fused_qkv_kernel!(fused_rmsnorm_qkv_bf16_scalar_m8, Bf16, false, 8);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_vec_m8, F16, true, 8);
fused_qkv_kernel!(fused_rmsnorm_qkv_f16_scalar_m8, F16, false, 8);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_vec_m8, f32, true, 8);
fused_qkv_kernel!(fused_rmsnorm_qkv_f32_scalar_m8, f32, false, 8);
