//! Decode on the SIMT cores: 1, 2 or 4 tokens per block, a warp per pair of `W'` rows, no barriers.
//!
//! Each warp owns `GEMV_ROWS_PER_WARP` rows of `W'` (gamma folded in, see [`crate::qkv`]) and the
//! block's `TM` tokens, and lives for one pass over them:
//! 1. stream: batches of `UNROLL` 16-byte loads per `W'` row and per `x` row per lane, all issued
//!    before the first use; the `x` rows are read by every warp (they stay in L1/L2), and their
//!    sums of squares are taken on the way, so `rms_inv` needs no second pass and no other warp;
//! 2. reduce: butterflies over the warp, dot products and sums of squares alike;
//! 3. store: lane 0 scales by `rms_inv * out_scale`, adds the bias, rounds and stores.
//!
//! No shared memory and no block barrier: nothing waits between the loads of one batch and
//! those of the next but the warp's own arithmetic, and small layers finish in about one memory
//! round trip.
//!
//! Launch contract: `block = (GEMV_THREADS, 1, 1)`, `grid = (ceil(N / GEMV_ROWS_PER_BLOCK),
//! ceil(M / TM), 1)`, no shared memory; `hidden % T::VEC == 0`; `x` and `W'` 16-byte aligned;
//! buffers as in [`crate::fused_qkv`].

use crate::element::{Bf16, Element, F16};
use crate::float::fma_rn;
use crate::mem::{load_nc_v16, Vec16};
use crate::qkv::{row_scale, store_output, Shape};
use crate::thread::{block_idx_x, block_idx_y};
use crate::warp::{lane_id, reduce_sum_f32, warp_id, WARP_SIZE};

/// Threads per block.
pub const GEMV_THREADS: u32 = 128;
/// Rows of `W'` per warp.
pub const GEMV_ROWS_PER_WARP: usize = 2;
/// Rows of `W'` per block.
pub const GEMV_ROWS_PER_BLOCK: u32 = GEMV_THREADS / WARP_SIZE * GEMV_ROWS_PER_WARP as u32;
/// Most tokens per block.
const MAX_TM: usize = 4;
/// Most 16-byte loads per row and lane in one batch.
const MAX_UNROLL: usize = 4;
// The `unroll!` index lists below are written out for these values.
const _: () = assert!(GEMV_ROWS_PER_WARP == 2 && MAX_TM == 4 && MAX_UNROLL == 4);

/// Step 1: accumulates this lane's part of `acc[w_row][token]` and of `sum_sq[token]`.
#[inline(always)]
unsafe fn stream<T: Element, const TM: usize, const UNROLL: usize>(
    w_rows: [*const T; GEMV_ROWS_PER_WARP],
    x_rows: [*const T; MAX_TM],
    hidden: usize,
    acc: &mut [[f32; MAX_TM]; GEMV_ROWS_PER_WARP],
    sum_sq: &mut [f32; MAX_TM],
) {
    let lane_step = WARP_SIZE as usize * T::VEC;
    let mut h0 = lane_id() as usize * T::VEC;
    while h0 < hidden {
        // Raw until use: 4 registers per load, so a batch of UNROLL * (2 + TM) loads fits.
        let mut w_raw: [[Vec16; GEMV_ROWS_PER_WARP]; MAX_UNROLL] = [[[0; 4]; GEMV_ROWS_PER_WARP]; MAX_UNROLL];
        let mut x_raw: [[Vec16; MAX_TM]; MAX_UNROLL] = [[[0; 4]; MAX_TM]; MAX_UNROLL];
        unroll!(u in [0, 1, 2, 3] {
            if u < UNROLL {
                // hidden % VEC == 0: a vector is wholly inside or wholly past the row. Past it, the
                // lane re-reads the row's last vector and zeroes it: no branch around the loads, so
                // the whole batch issues back to back.
                let h = h0 + u * lane_step;
                let inside = h < hidden;
                let at = if inside { h } else { hidden - T::VEC };
                let keep = |raw: Vec16| if inside { raw } else { [0; 4] };
                unroll!(r in [0, 1] {
                    w_raw[u][r] = keep(load_nc_v16(w_rows[r].add(at).cast()));
                });
                unroll!(t in [0, 1, 2, 3] {
                    if t < TM {
                        x_raw[u][t] = keep(load_nc_v16(x_rows[t].add(at).cast()));
                    }
                });
            }
        });
        unroll!(u in [0, 1, 2, 3] {
            if u < UNROLL {
                let w = [T::unpack(w_raw[u][0]), T::unpack(w_raw[u][1])];
                unroll!(t in [0, 1, 2, 3] {
                    if t < TM {
                        let xv = T::unpack(x_raw[u][t]);
                        unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7] {
                            if i < T::VEC {
                                sum_sq[t] = fma_rn(xv[i], xv[i], sum_sq[t]);
                                acc[0][t] = fma_rn(w[0][i], xv[i], acc[0][t]);
                                acc[1][t] = fma_rn(w[1][i], xv[i], acc[1][t]);
                            }
                        });
                    }
                });
            }
        });
        h0 += UNROLL * lane_step;
    }
}

/// The kernel body; see the module docs for the launch contract.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv<T: Element, const TM: usize, const UNROLL: usize>(
    x: *const T,
    qkv_weight: *const T,
    bias: *const T,
    out: [*mut T; 3],
    shape: Shape,
    eps: f32,
    out_scale: f32,
) {
    let n_total = shape.n();
    let n0 = (block_idx_x() * (GEMV_THREADS / WARP_SIZE) + warp_id()) * GEMV_ROWS_PER_WARP as u32;
    if n0 >= n_total {
        return; // the whole warp: no barrier follows
    }
    let row0 = block_idx_y() * TM as u32;
    let tokens = (shape.m - row0).min(TM as u32);
    let hidden = shape.hidden as usize;
    // Rows past the end repeat the last one: loads stay in bounds, results are not stored.
    let w_rows = core::array::from_fn(|r| qkv_weight.add((n0 + r as u32).min(n_total - 1) as usize * hidden));
    let x_rows = core::array::from_fn(|t| x.add((row0 + (t as u32).min(tokens - 1)) as usize * hidden));
    let mut acc = [[0.0f32; MAX_TM]; GEMV_ROWS_PER_WARP];
    let mut sum_sq = [0.0f32; MAX_TM];
    stream::<T, TM, UNROLL>(w_rows, x_rows, hidden, &mut acc, &mut sum_sq);

    let mut scale = [0.0f32; MAX_TM];
    unroll!(t in [0, 1, 2, 3] {
        if t < TM {
            scale[t] = row_scale(reduce_sum_f32(sum_sq[t]), shape.hidden, eps, out_scale);
        }
    });
    unroll!(r in [0, 1] {
        unroll!(t in [0, 1, 2, 3] {
            if t < TM {
                let dot = reduce_sum_f32(acc[r][t]);
                let n = n0 + r as u32;
                if lane_id() == 0 && n < n_total && (t as u32) < tokens {
                    store_output(out, bias, shape, row0 + t as u32, n, dot, scale[t]);
                }
            }
        });
    });
}

macro_rules! gemv_kernel {
    ($name:ident, $t:ty, $tm:literal, $unroll:literal) => {
        #[doc = concat!("SIMT decode kernel for `", stringify!($t), "`, ", stringify!($tm), " token(s) per block.")]
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
        ) {
            let shape = Shape { m, hidden, q_cols, kv_cols };
            gemv::<$t, $tm, $unroll>(x, qkv_weight, bias, [q, k, v], shape, eps, out_scale);
        }
    };
}

gemv_kernel!(fused_rmsnorm_qkv_bf16_gemv_m1, Bf16, 1, 4);
gemv_kernel!(fused_rmsnorm_qkv_bf16_gemv_m2, Bf16, 2, 4);
gemv_kernel!(fused_rmsnorm_qkv_bf16_gemv_m4, Bf16, 4, 2);
gemv_kernel!(fused_rmsnorm_qkv_f16_gemv_m1, F16, 1, 4);
gemv_kernel!(fused_rmsnorm_qkv_f16_gemv_m2, F16, 2, 4);
gemv_kernel!(fused_rmsnorm_qkv_f16_gemv_m4, F16, 4, 2);
gemv_kernel!(fused_rmsnorm_qkv_f32_gemv_m1, f32, 1, 4);
gemv_kernel!(fused_rmsnorm_qkv_f32_gemv_m2, f32, 2, 4);
gemv_kernel!(fused_rmsnorm_qkv_f32_gemv_m4, f32, 4, 2);
