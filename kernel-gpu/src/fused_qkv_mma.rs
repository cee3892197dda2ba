//! The fused RMSNorm + QKV projection on tensor cores (bf16), for a few to a few dozen tokens.
//!
//! Same semantics as [`crate::fused_qkv`]: `y[m, n] = rms_inv[m] * sum_h (x * gamma)[m, h] * W[n, h] + b[n]`.
//! `x * gamma` is formed in fp32 and split into bf16 `hi + lo` (16 significant bits), so the
//! product runs as two bf16 MMAs with fp32 accumulation and the normalised row is never rounded to
//! bf16; `W` is exact in bf16. The relative error this adds is below 2^-16 per element of
//! `x * gamma`, far under the output's own bf16 rounding.
//!
//! Block: `MMA_WARPS` warps share `M_TILES * 16` rows of `W` and split the hidden dimension between
//! them in 32-element k-blocks; each warp keeps partial accumulators for all `NT * 8` tokens of the
//! block. Steps:
//! 1. stream: per k-block, each lane loads 16 bytes of two `W` rows per m-tile straight into the
//!    MMA's A fragment and 16 bytes of each token's `x` into its B fragment. The two operands use the
//!    same permutation of the 32 k-positions (lane `t % 4` owns `h = 8 (t % 4) .. + 8`), which a dot
//!    product does not see; sums of squares of `x` accumulate on the way;
//! 2. reduce: partial accumulators and sums of squares meet in shared memory;
//! 3. normalize: `rms_inv` per token;
//! 4. store: warp 0 scales, adds the bias, rounds and stores into q, k or v.
//!
//! Launch contract: `block = (MMA_WARPS * 32, 1, 1)`, `grid = (ceil(N / (16 * M_TILES)), ceil(M / (8 * NT)), 1)`,
//! dynamic shared memory `MMA_WARPS * (M_TILES * NT * 4) * 32 * 4` bytes; `hidden % 8 == 0`; `x`,
//! `gamma`, `W` 16-byte aligned; shapes as in [`crate::fused_qkv`].

use crate::element::{Bf16, Element};
use crate::mem::load_nc_v16;
use crate::mma::{mma_m16n8k16_bf16_f32, split_bf16x2};
use crate::qkv::store_column;
use crate::shared::{dynamic_shared_base, SharedPtr};
use crate::thread::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::warp::{lane_id, shuffle_xor_f32, warp_id};
use crate::{float, static_shared};

/// Warps per block, splitting the hidden dimension.
pub const MMA_WARPS: u32 = 8;
/// 16-row tiles of `W` per block.
pub const M_TILES: usize = 2;
/// Hidden elements per k-block (two m16n8k16 steps).
const K_BLOCK: u32 = 32;
/// Most 8-token groups per block.
pub const MAX_NT: usize = 4;

#[derive(Clone, Copy)]
struct Shape {
    m: u32,
    hidden: u32,
    q_cols: u32,
    kv_cols: u32,
}

impl Shape {
    fn n(&self) -> u32 {
        self.q_cols + 2 * self.kv_cols
    }
}

/// Step 1: this warp's k-blocks; returns nothing, accumulates into `acc[m_tile][token_group]` and
/// `sum_sq[token_group]` (this lane's token `8 * group + lane / 4`).
#[inline(always)]
unsafe fn stream_k_blocks<const NT: usize>(
    x: *const Bf16,
    gamma: *const Bf16,
    w: *const Bf16,
    shape: Shape,
    n0: u32,
    row0: u32,
    tokens: u32,
    acc: &mut [[[f32; 4]; MAX_NT]; M_TILES],
    sum_sq: &mut [f32; MAX_NT],
) {
    let (g, quad) = (lane_id() / 4, lane_id() % 4);
    let k_blocks = shape.hidden.div_ceil(K_BLOCK);
    let n_total = shape.n();
    // Software pipelining: the next k-block's W fragments are in flight while this one multiplies.
    let load_w = |kb: u32| {
        let h = kb * K_BLOCK + quad * 8;
        let mut frag = [[[0u32; 4]; 2]; M_TILES];
        unroll!(mt in [0, 1] {
            unroll!(half in [0, 1] {
                let n = n0 + (mt * 16 + half * 8) as u32 + g;
                if kb < k_blocks && h < shape.hidden && n < n_total {
                    frag[mt][half] = load_nc_v16(w.add(n as usize * shape.hidden as usize + h as usize).cast());
                }
            });
        });
        frag
    };
    let mut kb = warp_id();
    let mut next_w = load_w(kb);
    while kb < k_blocks {
        let h = kb * K_BLOCK + quad * 8;
        let in_range = h < shape.hidden; // hidden % 8 == 0: all 8 or none
        let w_frag = next_w;
        next_w = load_w(kb + MMA_WARPS);
        let gv = if in_range { Bf16::load_vec(gamma.add(h as usize)) } else { [0.0; 8] };
        unroll!(t in [0, 1, 2, 3] {
            if t < NT {
                let token = (t * 8) as u32 + g;
                let (mut b_hi, mut b_lo) = ([0u32; 4], [0u32; 4]);
                if in_range && token < tokens {
                    let xv = Bf16::load_vec(x.add((row0 + token) as usize * shape.hidden as usize + h as usize));
                    let mut s = sum_sq[t];
                    unroll!(p in [0, 1, 2, 3] {
                        s += xv[2 * p] * xv[2 * p] + xv[2 * p + 1] * xv[2 * p + 1];
                        (b_hi[p], b_lo[p]) = split_bf16x2(xv[2 * p] * gv[2 * p], xv[2 * p + 1] * gv[2 * p + 1]);
                    });
                    sum_sq[t] = s;
                }
                unroll!(mt in [0, 1] {
                    let [row_g, row_g8] = w_frag[mt];
                    // k-step 0 takes this lane's h + 0..4, k-step 1 its h + 4..8 (see module docs).
                    let a0 = [row_g[0], row_g8[0], row_g[1], row_g8[1]];
                    let a1 = [row_g[2], row_g8[2], row_g[3], row_g8[3]];
                    mma_m16n8k16_bf16_f32(&mut acc[mt][t], a0, [b_hi[0], b_hi[1]]);
                    mma_m16n8k16_bf16_f32(&mut acc[mt][t], a0, [b_lo[0], b_lo[1]]);
                    mma_m16n8k16_bf16_f32(&mut acc[mt][t], a1, [b_hi[2], b_hi[3]]);
                    mma_m16n8k16_bf16_f32(&mut acc[mt][t], a1, [b_lo[2], b_lo[3]]);
                });
            }
        });
        kb += MMA_WARPS;
    }
}

/// Index of accumulator `i` of `lane` in `warp`'s slice of the reduction buffer (lane-minor: no
/// bank conflicts).
#[inline(always)]
fn partial_index<const NT: usize>(warp: u32, i: u32, lane: u32) -> u32 {
    (warp * (M_TILES * NT * 4) as u32 + i) * 32 + lane
}

/// Steps 2-4.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn reduce_and_store<const NT: usize>(
    acc: &[[[f32; 4]; MAX_NT]; M_TILES],
    sum_sq: &[f32; MAX_NT],
    bias: *const Bf16,
    out: [*mut Bf16; 3],
    shape: Shape,
    eps: f32,
    n0: u32,
    row0: u32,
    tokens: u32,
    partials: SharedPtr,
    sum_sq_smem: SharedPtr,
    rms_inv: SharedPtr,
) {
    let (lane, warp) = (lane_id(), warp_id());
    let (g, quad) = (lane / 4, lane % 4);
    unroll!(mt in [0, 1] {
        unroll!(t in [0, 1, 2, 3] {
            if t < NT {
                unroll!(e in [0, 1, 2, 3] {
                    let i = ((mt * NT + t) * 4 + e) as u32;
                    partials.offset_f32(partial_index::<NT>(warp, i, lane)).store_f32(acc[mt][t][e]);
                });
            }
        });
    });
    unroll!(t in [0, 1, 2, 3] {
        if t < NT {
            // The four lanes of a quad hold the same token's sums over different h.
            let mut s = sum_sq[t];
            s += shuffle_xor_f32(s, 1);
            s += shuffle_xor_f32(s, 2);
            if quad == 0 {
                sum_sq_smem.offset_f32(warp * (MAX_NT * 8) as u32 + (t * 8) as u32 + g).store_f32(s);
            }
        }
    });
    sync_threads();
    let tid = thread_idx_x();
    if tid < (NT * 8) as u32 {
        let mut total = 0.0f32;
        for w in 0..MMA_WARPS {
            total += sum_sq_smem.offset_f32(w * (MAX_NT * 8) as u32 + tid).load_f32();
        }
        let mean = float::div_rn(total, shape.hidden as f32);
        rms_inv.offset_f32(tid).store_f32(float::div_rn(1.0, float::sqrt_rn(mean + eps)));
    }
    sync_threads();
    if warp != 0 {
        return;
    }
    unroll!(mt in [0, 1] {
        unroll!(t in [0, 1, 2, 3] {
            if t < NT {
                unroll!(e in [0, 1, 2, 3] {
                    let i = ((mt * NT + t) * 4 + e) as u32;
                    let mut y = 0.0f32;
                    for w in 0..MMA_WARPS {
                        y += partials.offset_f32(partial_index::<NT>(w, i, lane)).load_f32();
                    }
                    // Fragment layout of D: e 0,1 -> row g, e 2,3 -> row g + 8; column 2 * quad + e % 2.
                    let n = n0 + (mt * 16 + (e / 2) * 8) as u32 + g;
                    let token = (t * 8) as u32 + 2 * quad + (e % 2) as u32;
                    if n < shape.n() && token < tokens {
                        let y = y * rms_inv.offset_f32(token).load_f32();
                        let y = if bias.is_null() { y } else { y + Bf16::load(bias.add(n as usize)) };
                        store_column(out, shape.q_cols, shape.kv_cols, row0 + token, n, y);
                    }
                });
            }
        });
    });
}

macro_rules! fused_qkv_mma_kernel {
    ($name:ident, $nt:literal) => {
        #[doc = concat!("Tensor-core fused RMSNorm + QKV for bf16, ", stringify!($nt), " x 8 tokens per block.")]
        ///
        /// # Safety
        /// The launch contract of this module.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const Bf16,
            gamma: *const Bf16,
            qkv_weight: *const Bf16,
            bias: *const Bf16,
            q: *mut Bf16,
            k: *mut Bf16,
            v: *mut Bf16,
            m: u32,
            hidden: u32,
            q_cols: u32,
            kv_cols: u32,
            eps: f32,
        ) {
            let sum_sq_smem = static_shared!(mma_sum_sq, MMA_WARPS as usize * MAX_NT * 8 * 4);
            let rms_inv = static_shared!(mma_rms_inv, MAX_NT * 8 * 4);
            let shape = Shape { m, hidden, q_cols, kv_cols };
            let n0 = block_idx_x() * (16 * M_TILES) as u32;
            let row0 = block_idx_y() * ($nt * 8);
            let tokens = (shape.m - row0).min($nt * 8);
            let mut acc = [[[0.0f32; 4]; MAX_NT]; M_TILES];
            let mut sum_sq = [0.0f32; MAX_NT];
            stream_k_blocks::<$nt>(x, gamma, qkv_weight, shape, n0, row0, tokens, &mut acc, &mut sum_sq);
            reduce_and_store::<$nt>(
                &acc,
                &sum_sq,
                bias,
                [q, k, v],
                shape,
                eps,
                n0,
                row0,
                tokens,
                dynamic_shared_base(),
                sum_sq_smem,
                rms_inv,
            );
        }
    };
}

fused_qkv_mma_kernel!(fused_rmsnorm_qkv_bf16_mma_t1, 1);
fused_qkv_mma_kernel!(fused_rmsnorm_qkv_bf16_mma_t2, 2);
fused_qkv_mma_kernel!(fused_rmsnorm_qkv_bf16_mma_t4, 4);
