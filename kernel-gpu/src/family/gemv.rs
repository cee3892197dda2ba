//! Decode on the SIMT cores: 1, 2 or 4 tokens per block, a warp per pair of `W'` rows, no barriers.
//!
//! Each warp owns [`ROWS_PER_WARP`] rows of `W'` (gamma folded in, see [`crate::qkv`]) and the
//! block's `TM` tokens, and lives for one pass over them:
//! 1. stream: batches of `UNROLL` 16-byte loads per `W'` row and per `x` row per lane, all issued
//!    before the first use; the `x` rows are read by every warp (they stay in L1/L2), and their
//!    sums of squares are taken on the way, so `rms_inv` needs no second pass and no other warp;
//! 2. reduce: butterflies over the warp, dot products and sums of squares alike;
//! 3. store: lane 0 scales by `rms_inv * out_scale`, adds the bias, rounds and stores.
//!
//! Before step 1 each warp has the copy engine bring the start of its `W'` rows (the first
//! batch, [`PREFETCH_ROW_BYTES`]) into L2 and only then waits for the previous kernel
//! ([`crate::dependency`]): under programmatic dependent launch the first loads find their data
//! in L2.
//!
//! No shared memory and no block barrier: nothing waits between the loads of one batch and
//! those of the next but the warp's own arithmetic, and small layers finish in about one memory
//! round trip.
//!
//! Launch contract: [`kernel_abi::GemvTile::launch`]; `hidden % T::VEC == 0`; `x` and `W'`
//! 16-byte aligned; buffers as in [`kernel_abi::QkvParams`].

use kernel_abi::gemv::{MAX_TOKENS, MAX_UNROLL, ROWS_PER_WARP, THREADS};
use kernel_abi::QkvParams;

use crate::element::Element;
use crate::float::fma_rn;
use crate::dependency;
use crate::mem::{prefetch_l2, Vec16};
use crate::qkv::{add_squares, row_scale, store_output, MaskedColumn};
use crate::thread::{block_idx_x, block_idx_y};
use crate::warp::{lane_id, reduce_sum_f32, warp_id, WARP_SIZE};

const ROWS: usize = ROWS_PER_WARP as usize;
/// Bytes of a `W'` row prefetched into L2 before the wait for the previous kernel: a warp's
/// first batch of loads (4 loads of 16 bytes per lane, [`kernel_abi::gemv::MAX_UNROLL`]).
pub const PREFETCH_ROW_BYTES: usize = MAX_UNROLL as usize * WARP_SIZE as usize * 16;
const MAX_TM: usize = MAX_TOKENS as usize;
// The `unroll!` index lists below are written out for these values.
const _: () = assert!(ROWS == 2 && MAX_TM == 4 && MAX_UNROLL == 4);

/// Step 1: accumulates this lane's part of `acc[w_row][token]` and of `sum_sq[token]`.
#[inline(always)]
unsafe fn stream<T: Element, const TM: usize, const UNROLL: usize>(
    w_rows: [*const T; ROWS],
    x_rows: [*const T; MAX_TM],
    hidden: usize,
    acc: &mut [[f32; MAX_TM]; ROWS],
    sum_sq: &mut [f32; MAX_TM],
) {
    let lane_step = WARP_SIZE as usize * T::VEC;
    let mut h0 = lane_id() as usize * T::VEC;
    while h0 < hidden {
        // Raw until use: 4 registers per load, so a batch of UNROLL * (2 + TM) loads fits.
        let mut w_raw: [[Vec16; ROWS]; 4] = [[[0; 4]; ROWS]; 4];
        let mut x_raw: [[Vec16; MAX_TM]; 4] = [[[0; 4]; MAX_TM]; 4];
        unroll!(u in [0, 1, 2, 3] {
            if u < UNROLL {
                let column = MaskedColumn::new::<T>((h0 + u * lane_step) as u32, hidden as u32);
                unroll!(r in [0, 1] {
                    w_raw[u][r] = column.load(w_rows[r]);
                });
                unroll!(t in [0, 1, 2, 3] {
                    if t < TM {
                        x_raw[u][t] = column.load_x(x_rows[t]);
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
                        sum_sq[t] = add_squares::<T>(&xv, sum_sq[t]);
                        unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7] {
                            if i < T::VEC {
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
///
/// # Safety
/// The launch contract of this module.
#[inline(always)]
pub unsafe fn run<T: Element, const TM: usize, const UNROLL: usize>(params: &QkvParams) {
    let shape = params.shape;
    let n_total = shape.n();
    let n0 = (block_idx_x() * (THREADS / WARP_SIZE) + warp_id()) * ROWS_PER_WARP;
    if n0 >= n_total {
        return; // the whole warp: no barrier follows
    }
    let row0 = block_idx_y() * TM as u32;
    let tokens = (shape.m - row0).min(TM as u32);
    let hidden = shape.hidden as usize;
    let (x, qkv_weight) = (params.x::<T>(), params.qkv_weight::<T>());
    // Rows past the end repeat the last one: loads stay in bounds, results are not stored.
    let w_rows = core::array::from_fn(|r| qkv_weight.add((n0 + r as u32).min(n_total - 1) as usize * hidden));
    let x_rows = core::array::from_fn(|t| x.add((row0 + (t as u32).min(tokens - 1)) as usize * hidden));
    if params.dependent_launch != 0 && lane_id() < ROWS_PER_WARP && n0 + lane_id() < n_total {
        // The first batch of each of the warp's `W'` rows (all of a small model's row) into L2
        // while the previous kernel finishes; whole rows of a large model would not fit in L2
        // beside what that kernel streams (measured: qwen3-32b at M = 1 37.1 us against 27.9).
        let row_bytes = hidden * core::mem::size_of::<T>();
        // Selected, not indexed by the lane: a dynamic index puts `w_rows` in local memory.
        let row = if lane_id() == 0 { w_rows[0] } else { w_rows[1] };
        prefetch_l2(row.cast(), row_bytes.min(PREFETCH_ROW_BYTES) as u32);
    }
    dependency::wait_then_launch_dependents();
    let mut acc = [[0.0f32; MAX_TM]; ROWS];
    let mut sum_sq = [0.0f32; MAX_TM];
    stream::<T, TM, UNROLL>(w_rows, x_rows, hidden, &mut acc, &mut sum_sq);

    let mut scale = [0.0f32; MAX_TM];
    unroll!(t in [0, 1, 2, 3] {
        if t < TM {
            scale[t] = row_scale(reduce_sum_f32(sum_sq[t]), shape.hidden, params.eps, params.out_scale);
        }
    });
    let (bias, out) = (params.bias::<T>(), params.outputs::<T>());
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
