//! The general fused RMSNorm + QKV kernel (SIMT, any shape and alignment, every dtype):
//! `y[m, n] = sum_h x[m, h] * W'[n, h] * (rms_inv[m] * out_scale) (+ bias[n])`, with
//! `rms_inv[m] = 1 / sqrt(mean_h x[m, h]^2 + eps)`, `W'` = gamma folded into W (see
//! [`crate::qkv`]), fp32 accumulation, and `y` split into the column ranges q | k | v. The decode
//! kernels ([`crate::family::gemv`], [`crate::family::mma`]) are faster where they apply; this
//! one is the fallback for unaligned `x`, `hidden % VEC != 0` (the `_scalar` kernels) and f32
//! batches.
//!
//! One block computes a `TM x TILE_N` tile of `y` (`TM` tokens, `TILE_N` outputs):
//! 1. stage: the tile's rows of `x` go to shared memory as fp32, a chunk of the hidden
//!    dimension at a time (16-byte loads, several in flight per thread); the sums of squares of
//!    `x` are accumulated on the way, so `x` is read once per block;
//! 2. accumulate: each warp streams its `W_ROWS` rows of `W'` once, `UNROLL` 16-byte loads per
//!    row in flight per lane, and multiplies every loaded element with all staged rows;
//! 3. normalize: the sums of squares are reduced over the block into `rms_inv * out_scale`;
//! 4. store: partial dots are reduced over the warp, scaled, biased, rounded, stored.
//!
//! Launch contract: [`kernel_abi::FallbackTile::launch`] with the chunk of
//! [`kernel_abi::FallbackTile::chunk`]; buffers as in [`kernel_abi::QkvParams`]; the `_vec`
//! kernels also need `hidden % T::VEC == 0` and 16-byte aligned `x` and `W'`.

use kernel_abi::fallback::{MAX_TOKENS, ROWS_PER_BLOCK, ROWS_PER_WARP, ROW_SCALE_BYTES, SUM_SQ_BYTES, WARPS};
use kernel_abi::FallbackParams;

use crate::element::Element;
use crate::mem::load_nc_v16;
use crate::qkv::{add_squares, row_scale, store_output, MaskedColumn, Shape};
use crate::shared::{dynamic_shared_base, SharedPtr};
use crate::static_shared;
use crate::thread::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::warp::{lane_id, reduce_sum_f32, warp_id, WARP_SIZE};

const THREADS: u32 = kernel_abi::fallback::THREADS;
const TILE_M: usize = MAX_TOKENS as usize;
const TILE_N: u32 = ROWS_PER_BLOCK;
const W_ROWS: usize = ROWS_PER_WARP as usize;
/// 16-byte loads of each `W` row a lane issues before using the first.
const UNROLL: usize = 4;
/// 16-byte vectors of `x` a thread loads before using the first, when staging.
const STAGE_BATCH: usize = 4;
// The `unroll!` index lists below are written out for these values.
const _: () = assert!(TILE_M == 8 && W_ROWS == 2 && UNROLL == 4 && STAGE_BATCH == 4);

/// Loads `row[h .. h + VEC]` as f32, zero past `len`: of `x` through the coherent path (`X`;
/// the previous kernel may still be writing it when this one starts, [`crate::mem::load_v16`]),
/// of the weights through the read-only one.
#[inline(always)]
unsafe fn load_masked<T: Element, const VECTOR: bool, const X: bool>(row: *const T, h: usize, len: usize) -> [f32; 8] {
    if VECTOR {
        let column = MaskedColumn::new::<T>(h as u32, len as u32);
        T::unpack(if X { column.load_x(row) } else { column.load(row) })
    } else {
        // Arrays are built by value with from_fn: an indexed loop writing through `&mut` left them
        // in local memory (a stack frame in ptxas's report).
        let load = |p: *const T| if X { T::load_x(p) } else { T::load(p) };
        core::array::from_fn(|i| if i < T::VEC && h + i < len { load(row.add(h + i)) } else { 0.0 })
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
            xs[b] = load_masked::<T, VECTOR, true>(x_row, offset(b) as usize, len as usize);
        });
        unroll!(b in [0, 1, 2, 3] {
            let c = offset(b);
            if c < padded_len {
                let p = xs[b];
                sum_sq = add_squares::<T>(&p, sum_sq);
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
    acc: &mut [[f32; TILE_M]; W_ROWS],
) {
    let n_total = shape.n();
    let lane_step = WARP_SIZE * T::VEC as u32;
    let w_rows: [*const T; W_ROWS] = core::array::from_fn(|r| {
        let n = (n_base + r as u32).min(n_total - 1);
        qkv_weight.add(n as usize * shape.hidden as usize + h0 as usize)
    });
    let mut s = 0;
    while s < len {
        let col = |u: usize| s + u as u32 * lane_step + lane_id() * T::VEC as u32;
        // UNROLL x W_ROWS independent 16-byte loads in flight before the first use.
        // Filled with constant indices (nested from_fn was not unrolled on the scalar path and
        // left `w` in local memory). The vector path keeps loads raw until use: half the registers.
        let mut w = [[[0.0f32; 8]; W_ROWS]; UNROLL];
        let mut w_raw = [[[0u32; 4]; W_ROWS]; UNROLL];
        unroll!(u in [0, 1, 2, 3] {
            unroll!(r in [0, 1] {
                let c = col(u);
                if n_base + (r as u32) < n_total && c < len {
                    if VECTOR {
                        w_raw[u][r] = load_nc_v16(w_rows[r].add(c as usize).cast());
                    } else {
                        w[u][r] = load_masked::<T, VECTOR, false>(w_rows[r], c as usize, len as usize);
                    }
                }
            });
        });
        unroll!(u in [0, 1, 2, 3] {
            let c = col(u);
            if c < len {
                let w_u: [[f32; 8]; W_ROWS] =
                    if VECTOR { [T::unpack(w_raw[u][0]), T::unpack(w_raw[u][1])] } else { w[u] };
                // Constant trip counts with the row test inside keep `acc` in registers.
                unroll!(mm in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if mm < TM && (mm as u32) < rows {
                        let x_row = x_staged.offset_f32(mm as u32 * chunk + c);
                        let lo = x_row.load_f32x4();
                        let hi = if T::VEC == 8 { x_row.offset_f32(4).load_f32x4() } else { [0.0; 4] };
                        let xv = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]];
                        for r in 0..W_ROWS {
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
    acc: &[[f32; TILE_M]; W_ROWS],
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

/// The kernel body; see the module docs for the launch contract.
///
/// # Safety
/// The launch contract of this module.
#[inline(always)]
pub unsafe fn run<T: Element, const VECTOR: bool, const TM: usize>(params: &FallbackParams) {
    // No prefetch: this kernel serves odd shapes and alignments, not the timed paths.
    crate::dependency::wait_then_launch_dependents();
    let scratch = static_shared!(fallback_sum_sq, SUM_SQ_BYTES);
    let scale = static_shared!(fallback_row_scale, ROW_SCALE_BYTES);
    let (qkv, chunk) = (&params.qkv, params.chunk);
    let shape = qkv.shape;
    let (x, qkv_weight) = (qkv.x::<T>(), qkv.qkv_weight::<T>());
    let row0 = block_idx_y() * TM as u32;
    let rows = (shape.m - row0).min(TM as u32);
    let n_base = block_idx_x() * TILE_N + warp_id() * W_ROWS as u32;
    let x_staged = dynamic_shared_base();
    let lane_step = WARP_SIZE * T::VEC as u32;

    let mut sum_sq = [0.0f32; TILE_M];
    let mut acc = [[0.0f32; TILE_M]; W_ROWS];
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
    block_row_scale::<TM>(&sum_sq, shape, (qkv.eps, qkv.out_scale), rows, scratch, scale);
    store_outputs::<T, TM>(&acc, qkv.bias::<T>(), qkv.outputs::<T>(), shape, n_base, row0, rows, scale);
}
