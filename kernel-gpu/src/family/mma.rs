//! The fused RMSNorm + QKV projection on tensor cores (bf16, f16): up to 32 tokens per block.
//!
//! `A = W'` (gamma folded in by the host, see [`crate::qkv`]) and `B = x` exactly as stored, so
//! the MMAs (m16n8k16, fp32 accumulators) see no rounding that the SIMT kernels do not, and no
//! per-element conversion runs before them. `rms_inv` is applied in the epilogue.
//!
//! Block: `WARPS` warps share `MT * 16` rows of `W'` and `G * 8` tokens, and split the hidden
//! dimension in 32-element k-steps (warp `w` takes steps `w, w + WARPS, ...`). Steps:
//! 1. stream: per k-step, each lane loads 16 bytes of two `W'` rows per m-tile straight into the
//!    A fragments and 16 bytes of one token's `x` per 8-token group into the B fragments; the
//!    loads of the next `DEPTH - 1` k-steps are in flight during this one's MMAs. Both operands use the same permutation of
//!    the 32 k-positions (lane `t % 4` owns `h = 8 (t % 4) .. + 8`), which a dot product does not
//!    see. Sums of squares of `x` accumulate from the same registers;
//! 2. reduce: partial accumulators and sums of squares meet in shared memory;
//! 3. normalize: `rms_inv * out_scale` per token;
//! 4. store: every warp scales, adds the bias, rounds and stores a share of the tile.
//!
//! Before step 1 the block has the copy engine bring the start of its `W'` rows into L2, then
//! waits for the previous kernel ([`crate::dependency`]).
//!
//! Launch contract: [`kernel_abi::MmaTile::launch`] for the kernel's tile (dynamic shared memory
//! [`kernel_abi::MmaTile::shared_bytes`]); `hidden % 8 == 0`; `x` and `W'` 16-byte aligned;
//! buffers as in [`kernel_abi::QkvParams`].

use kernel_abi::mma::{K_STEP, MAX_M_TILES, MAX_TOKEN_GROUPS, ROW_SCALE_BYTES, SUM_SQ_BYTES};
use kernel_abi::QkvParams;

use crate::dependency;
use crate::mem::{prefetch_l2, Vec16};
use crate::mma::MmaElement;
use crate::qkv::{add_squares, row_scale, store_output, MaskedColumn, Shape};
use crate::shared::{dynamic_shared_base, SharedPtr};
use crate::static_shared;
use crate::thread::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::warp::{lane_id, shuffle_xor_f32, warp_id, WARP_SIZE};

const MAX_MT: usize = MAX_M_TILES as usize;
const MAX_G: usize = MAX_TOKEN_GROUPS as usize;
// The `unroll!` index lists below are written out for these values.
const _: () = assert!(MAX_MT == 2 && MAX_G == 4);

/// One k-step's operands, raw: `w[m_tile][half]` (rows `g` and `g + 8` of the tile) and `x[group]`.
type Fragments = ([[Vec16; 2]; MAX_MT], [Vec16; MAX_G]);

/// The k-step `step`'s fragments for this lane (zeros past the hidden dimension).
#[inline(always)]
unsafe fn load_step<T: MmaElement, const MT: usize, const G: usize>(
    w_rows: &[[*const T; 2]; MAX_MT],
    x_rows: &[*const T; MAX_G],
    step: u32,
    hidden: u32,
) -> Fragments {
    let mut frag: Fragments = ([[[0; 4]; 2]; MAX_MT], [[0; 4]; MAX_G]);
    let column = MaskedColumn::new::<T>(step * K_STEP + lane_id() % 4 * 8, hidden);
    unroll!(mt in [0, 1] {
        if mt < MT {
            unroll!(half in [0, 1] {
                frag.0[mt][half] = column.load(w_rows[mt][half]);
            });
        }
    });
    unroll!(grp in [0, 1, 2, 3] {
        if grp < G {
            frag.1[grp] = column.load_x(x_rows[grp]);
        }
    });
    frag
}

/// Step 1: this warp's k-steps into `acc[m_tile][group]` and `sum_sq[group]` (this lane's token
/// `8 * group + lane / 4`).
#[inline(always)]
unsafe fn stream_k_steps<T: MmaElement, const MT: usize, const G: usize, const WARPS: u32, const DEPTH: u32>(
    w_rows: &[[*const T; 2]; MAX_MT],
    x_rows: &[*const T; MAX_G],
    hidden: u32,
    acc: &mut [[[f32; 4]; MAX_G]; MAX_MT],
    sum_sq: &mut [f32; MAX_G],
) {
    let steps = hidden.div_ceil(K_STEP);
    let mut step = warp_id();
    // Software pipelining, DEPTH - 1 k-steps ahead (DEPTH is 2 or 3), in registers.
    let mut current = load_step::<T, MT, G>(w_rows, x_rows, step, hidden);
    let mut second = if DEPTH == 3 {
        load_step::<T, MT, G>(w_rows, x_rows, step + WARPS, hidden)
    } else {
        ([[[0; 4]; 2]; MAX_MT], [[0; 4]; MAX_G])
    };
    while step < steps {
        let ahead = load_step::<T, MT, G>(w_rows, x_rows, step + (DEPTH - 1) * WARPS, hidden);
        let (w, x) = current;
        unroll!(grp in [0, 1, 2, 3] {
            if grp < G {
                let b = x[grp];
                let xv = T::unpack(b);
                sum_sq[grp] = add_squares::<T>(&xv, sum_sq[grp]);
                unroll!(mt in [0, 1] {
                    if mt < MT {
                        let [row_g, row_g8] = w[mt];
                        // k-step half 0 takes this lane's h + 0..4, half 1 its h + 4..8.
                        T::mma_m16n8k16(&mut acc[mt][grp], [row_g[0], row_g8[0], row_g[1], row_g8[1]], [b[0], b[1]]);
                        T::mma_m16n8k16(&mut acc[mt][grp], [row_g[2], row_g8[2], row_g[3], row_g8[3]], [b[2], b[3]]);
                    }
                });
            }
        });
        if DEPTH == 3 {
            current = second;
            second = ahead;
        } else {
            current = ahead;
        }
        step += WARPS;
    }
}

/// Index of accumulator `i` of `lane` in `warp`'s slice of the reduction buffer (lane-minor: no
/// bank conflicts).
#[inline(always)]
fn partial_index<const MT: usize, const G: usize>(warp: u32, i: u32, lane: u32) -> u32 {
    (warp * (MT * G * 4) as u32 + i) * WARP_SIZE + lane
}

/// Steps 2-4.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn reduce_and_store<T: MmaElement, const MT: usize, const G: usize, const WARPS: u32>(
    acc: &[[[f32; 4]; MAX_G]; MAX_MT],
    sum_sq: &[f32; MAX_G],
    (bias, out, shape): (*const T, [*mut T; 3], Shape),
    (eps, out_scale): (f32, f32),
    (n0, row0, tokens): (u32, u32, u32),
    (partials, sum_sq_smem, scale_smem): (SharedPtr, SharedPtr, SharedPtr),
) {
    let (lane, warp) = (lane_id(), warp_id());
    let (g, quad) = (lane / 4, lane % 4);
    unroll!(mt in [0, 1] {
        unroll!(grp in [0, 1, 2, 3] {
            if mt < MT && grp < G {
                unroll!(e in [0, 1, 2, 3] {
                    let i = ((mt * G + grp) * 4 + e) as u32;
                    partials.offset_f32(partial_index::<MT, G>(warp, i, lane)).store_f32(acc[mt][grp][e]);
                });
            }
        });
    });
    unroll!(grp in [0, 1, 2, 3] {
        if grp < G {
            // The four lanes of a quad hold the same token's sums over different h.
            let mut s = sum_sq[grp];
            s += shuffle_xor_f32(s, 1);
            s += shuffle_xor_f32(s, 2);
            if quad == 0 {
                sum_sq_smem.offset_f32(warp * (MAX_G * 8) as u32 + (grp * 8) as u32 + g).store_f32(s);
            }
        }
    });
    sync_threads();
    let tid = thread_idx_x();
    if tid < (G * 8) as u32 {
        let mut total = 0.0f32;
        for w in 0..WARPS {
            total += sum_sq_smem.offset_f32(w * (MAX_G * 8) as u32 + tid).load_f32();
        }
        scale_smem.offset_f32(tid).store_f32(row_scale(total, shape.hidden, eps, out_scale));
    }
    sync_threads();
    // Accumulator slot i of every lane goes to warp i % WARPS.
    let mut i = warp;
    while i < (MT * G * 4) as u32 {
        let mut dot = 0.0f32;
        for w in 0..WARPS {
            dot += partials.offset_f32(partial_index::<MT, G>(w, i, lane)).load_f32();
        }
        let (mt, grp, e) = (i / (G as u32 * 4), i / 4 % G as u32, i % 4);
        // Fragment layout of D: e 0,1 -> row g, e 2,3 -> row g + 8; column 2 * quad + e % 2.
        let n = n0 + mt * 16 + e / 2 * 8 + g;
        let token = grp * 8 + 2 * quad + e % 2;
        if n < shape.n() && token < tokens {
            store_output(out, bias, shape, row0 + token, n, dot, scale_smem.offset_f32(token).load_f32());
        }
        i += WARPS;
    }
}

/// The kernel body; see the module docs for the launch contract.
///
/// # Safety
/// The launch contract of this module.
#[inline(always)]
pub unsafe fn run<T: MmaElement, const MT: usize, const G: usize, const WARPS: u32, const DEPTH: u32>(
    params: &QkvParams,
) {
    let sum_sq_smem = static_shared!(mma_sum_sq, SUM_SQ_BYTES);
    let scale_smem = static_shared!(mma_row_scale, ROW_SCALE_BYTES);
    let shape = params.shape;
    let n_total = shape.n();
    let n0 = block_idx_x() * (16 * MT) as u32;
    let row0 = block_idx_y() * (8 * G) as u32;
    let tokens = (shape.m - row0).min((8 * G) as u32);
    let (g, hidden) = (lane_id() / 4, shape.hidden as usize);
    let (x, qkv_weight) = (params.x::<T>(), params.qkv_weight::<T>());
    // Rows and tokens past the end repeat the last one: loads stay in bounds, those results are
    // never stored.
    let w_rows: [[*const T; 2]; MAX_MT] = core::array::from_fn(|mt| {
        core::array::from_fn(|half| {
            let n = (n0 + (mt * 16 + half * 8) as u32 + g).min(n_total - 1);
            qkv_weight.add(n as usize * hidden)
        })
    });
    let x_rows: [*const T; MAX_G] =
        core::array::from_fn(|grp| x.add((row0 + ((grp * 8) as u32 + g).min(tokens - 1)) as usize * hidden));
    let row = n0 + thread_idx_x();
    if params.dependent_launch != 0 && block_idx_y() == 0 && thread_idx_x() < (16 * MT) as u32 && row < n_total {
        // The first part of each of the block's `W'` rows into L2 while the previous kernel
        // finishes (the first row block's job), bounded as gemv's.
        let row_bytes = hidden * core::mem::size_of::<T>();
        let bytes = row_bytes.min(crate::family::gemv::PREFETCH_ROW_BYTES) as u32;
        prefetch_l2(qkv_weight.add(row as usize * hidden).cast(), bytes);
    }
    dependency::wait_then_launch_dependents();
    let mut acc = [[[0.0f32; 4]; MAX_G]; MAX_MT];
    let mut sum_sq = [0.0f32; MAX_G];
    stream_k_steps::<T, MT, G, WARPS, DEPTH>(&w_rows, &x_rows, shape.hidden, &mut acc, &mut sum_sq);
    let smem = (dynamic_shared_base(), sum_sq_smem, scale_smem);
    let out = (params.bias::<T>(), params.outputs::<T>(), shape);
    reduce_and_store::<T, MT, G, WARPS>(&acc, &sum_sq, out, (params.eps, params.out_scale), (n0, row0, tokens), smem);
}
