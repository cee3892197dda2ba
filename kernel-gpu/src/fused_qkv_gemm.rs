//! Prefill: the fused RMSNorm + QKV projection as a tiled GEMM on Hopper's warpgroup tensor
//! cores (`wgmma`, sm_90a; bf16 and f16).
//!
//! `y = x * W'^T` with `W' = W * gamma * 2^s` folded by the host (see [`crate::qkv`]), so both
//! operands are used exactly as stored: A = `x [M, H]` and B = `W' [N, H]`, both K-major.
//! `rms_inv` is applied in the epilogue, from sums of squares taken from the same `x` tiles
//! while they sit in shared memory: `x` is read from memory once per tile, never in a second pass.
//!
//! Block: two warpgroups (256 threads) compute a `BM x BN` tile of `y`. With `BM = 128` each
//! warpgroup owns 64 rows and all `BN` columns; with `BM = 64` each owns half of the columns
//! (`WN` = columns per warpgroup). Steps:
//! 1. load: every thread copies 16-byte chunks of the k-block `S - 1` ahead (64 elements of `H`)
//!    of the `x` and `W'` tiles into a ring of `S` shared-memory stages with `cp.async`, in the
//!    128-byte swizzled layout `wgmma` reads ([`crate::wgmma::swizzled_offset`]); rows and
//!    columns past the matrix are zero-filled, so odd `M`, `N` and `H` need no other tail path;
//! 2. mma: per k-block, each warpgroup issues four m64n`WN`k16 MMAs from shared memory and keeps
//!    one group in flight across the barriers (one before the MMAs: the stage has landed; one
//!    after: the previous k-block's MMAs are done, so its slot can be refilled);
//! 3. reduce: meanwhile 2 or 4 threads per row add up the squares of the stage's `x` row;
//! 4. normalize: the row's `rms_inv * out_scale` goes to shared memory;
//! 5. store: each thread scales its accumulators, adds the bias and rounds pairs of columns
//!    into a staged copy of the tile in the (now free) stages; the block then copies it to q, k
//!    and v in coalesced 16-byte pieces. Where q_cols or kv_cols is no multiple of 8 or an output
//!    is not 16-byte aligned, the pairs go straight to global memory instead.
//!
//! Blocks walk the tiles in groups of [`GROUP_M`] row tiles, column tile after column tile, so
//! that the blocks running at one time share `x` and `W'` tiles in L2.
//!
//! Launch contract: `block = (256, 1, 1)`, `grid = (ceil(M / BM) * ceil(N / BN), 1, 1)` for the
//! `_wgmma_m{BM}_n{BN}_s{S}` kernel, dynamic shared memory [`shared_bytes`]`(BM, BN, S)` (above 48 KB:
//! the host raises the function's limit); `hidden % 8 == 0`, `q_cols` and `kv_cols` even; `x`
//! and `W'` 16-byte aligned, q, k, v 4-byte aligned; buffers as in [`crate::fused_qkv`].

use crate::async_copy;
use crate::element::{Bf16, Element, F16};
use crate::float::fma_rn;
use crate::mbarrier;
use crate::param_address;
use crate::qkv::{destination, row_scale, Shape};
use crate::shared::{dynamic_shared_base, SharedPtr};
use crate::thread::{block_idx_x, sync_threads, thread_idx_x};
use crate::tma::{self, TensorMap};
use crate::warp::{lane_id, shuffle_xor_f32};
use crate::wgmma::{self, descriptor_k_major_sw128, swizzled_offset, Acc, WgmmaElement};
use crate::wgmma::{SWIZZLE_ATOM_BYTES, SWIZZLE_ROW_BYTES};

/// Elements of `H` per k-block: one 128-byte swizzled row of a 16-bit dtype.
const BK: u32 = 64;
/// Two warpgroups.
pub const THREADS: u32 = 256;
/// Row tiles per raster group.
const GROUP_M: u32 = 16;

/// Dynamic shared memory for a `bm x bn` tile with `stages` stages: the stages, one f32 row
/// scale per row, and room to align the stages to a swizzle atom. The output tile is staged in
/// the stages' space once the main loop is done ([`out_pitch`] bytes per row).
pub const fn shared_bytes(bm: u32, bn: u32, stages: u32) -> u32 {
    stages * (bm + bn) * SWIZZLE_ROW_BYTES + bm * 4 + stages * 8 + SWIZZLE_ATOM_BYTES
}

/// Bytes per row of the staged output tile: 16 more than the row, so that the 8 rows a warp's
/// accumulator stores touch start 4 banks apart.
const fn out_pitch(bn: u32) -> u32 {
    bn * 2 + 16
}

/// The first row and column of this block's tile (see the module docs for the order).
#[inline(always)]
fn tile_origin<const BM: u32, const BN: u32>(m: u32, n: u32) -> (u32, u32) {
    let (tiles_m, tiles_n) = (m.div_ceil(BM), n.div_ceil(BN));
    let block = block_idx_x();
    let per_group = GROUP_M * tiles_n;
    let first_m = block / per_group * GROUP_M;
    let group_rows = (tiles_m - first_m).min(GROUP_M);
    let in_group = block % per_group;
    ((first_m + in_group % group_rows) * BM, in_group / group_rows * BN)
}

/// The shared-memory stages: `x` tile then `W'` tile, each `rows x 128` bytes.
#[derive(Clone, Copy)]
struct Ring {
    base: SharedPtr,
}

impl Ring {
    #[inline(always)]
    fn stage<const BM: u32, const BN: u32, const S: u32>(self, k_block: u32) -> (SharedPtr, SharedPtr) {
        let a = self.base.add(k_block % S * (BM + BN) * SWIZZLE_ROW_BYTES);
        (a, a.add(BM * SWIZZLE_ROW_BYTES))
    }

    /// Where the row scales go, after the stages.
    #[inline(always)]
    fn row_scales<const BM: u32, const BN: u32, const S: u32>(self) -> SharedPtr {
        self.base.add(S * (BM + BN) * SWIZZLE_ROW_BYTES)
    }

    /// The mbarrier that completes when the TMA copies into stage `k_block % S` have landed,
    /// after the row scales.
    #[inline(always)]
    fn full<const BM: u32, const BN: u32, const S: u32>(self, k_block: u32) -> SharedPtr {
        self.row_scales::<BM, BN, S>().add(BM * 4 + k_block % S * 8)
    }
}

/// Step 1 for one operand: `ROWS` rows of a K-major matrix (`rows_total` x `hidden`) starting
/// at `row0`, k-block `k_block`, into `tile`. Thread `t` copies chunk `t % 8` of rows
/// `t / 8 + 32 i`.
#[inline(always)]
unsafe fn load_operand<T: Element, const ROWS: u32>(
    src: *const T,
    rows_total: u32,
    hidden: u32,
    row0: u32,
    k_block: u32,
    tile: SharedPtr,
) {
    let tid = thread_idx_x();
    let chunk = tid % 8;
    let k = k_block * BK + chunk * 8;
    // hidden % 8 == 0: a chunk is wholly inside or wholly past the row.
    let k_inside = k < hidden;
    let k_at = if k_inside { k } else { 0 } as usize;
    let mut pass = 0;
    while pass < ROWS / 32 {
        let r = tid / 8 + pass * 32;
        let row = row0 + r;
        let inside = row < rows_total;
        let at = if inside { row } else { 0 } as usize * hidden as usize + k_at;
        async_copy::copy_16(tile.add(swizzled_offset(r, chunk)), src.add(at).cast(), inside && k_inside);
        pass += 1;
    }
}

/// Step 3: adds the squares of this thread's share of its row of the stage's `x` tile.
#[inline(always)]
unsafe fn add_squares<T: Element, const BM: u32>(x_tile: SharedPtr, sum_sq: &mut f32) {
    let threads_per_row = THREADS / BM;
    let chunks = 8 / threads_per_row;
    let tid = thread_idx_x();
    let (row, part) = (tid / threads_per_row, tid % threads_per_row);
    let mut c = 0;
    while c < chunks {
        let values = T::unpack(x_tile.add(swizzled_offset(row, part * chunks + c)).load_v16());
        unroll!(e in [0, 1, 2, 3, 4, 5, 6, 7] {
            *sum_sq = fma_rn(values[e], values[e], *sum_sq);
        });
        c += 1;
    }
}

/// Step 4: the row's `rms_inv * out_scale` into `scales[row]`, then a barrier.
#[inline(always)]
unsafe fn store_row_scale<const BM: u32>(sum_sq: f32, shape: Shape, eps: f32, out_scale: f32, scales: SharedPtr) {
    let threads_per_row = THREADS / BM;
    let mut sum_sq = sum_sq;
    // The row's threads are adjacent lanes.
    if threads_per_row >= 4 {
        sum_sq += shuffle_xor_f32(sum_sq, 2);
    }
    sum_sq += shuffle_xor_f32(sum_sq, 1);
    let tid = thread_idx_x();
    if tid % threads_per_row == 0 {
        scales.offset_f32(tid / threads_per_row).store_f32(row_scale(sum_sq, shape.hidden, eps, out_scale));
    }
    sync_threads();
}

/// Step 5: `y = acc * row_scale + bias` for this thread's accumulators of the warpgroup tile at
/// (`row0`, `col0`) of y (local row `local_row0` of the block tile), rounded and packed in pairs
/// of columns, handed to `sink(row, col, local row, local col, pair)` for in-range pairs.
/// q_cols and kv_cols are even, so a pair never straddles q, k and v.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn for_each_pair<T: WgmmaElement, const WN: u32>(
    acc: &Acc,
    scales: SharedPtr,
    local_row0: u32,
    local_col0: u32,
    (row0, col0): (u32, u32),
    bias: *const T,
    shape: Shape,
    mut sink: impl FnMut(u32, u32, u32, u32, u32),
) {
    let (warp, lane) = (thread_idx_x() / 32 % 4, lane_id());
    let local_rows = [local_row0 + 16 * warp + lane / 4, local_row0 + 16 * warp + lane / 4 + 8];
    let row_scales = [scales.offset_f32(local_rows[0]).load_f32(), scales.offset_f32(local_rows[1]).load_f32()];
    let n = shape.n();
    unroll!(j in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
        let local_col = local_col0 + 8 * j as u32 + 2 * (lane % 4);
        let col = col0 - local_col0 + local_col;
        if (j as u32) < WN / 8 && col < n {
            let b = if bias.is_null() {
                None
            } else {
                Some([T::load(bias.add(col as usize)), T::load(bias.add(col as usize + 1))])
            };
            unroll!(half in [0, 1] {
                let row = row0 - local_row0 + local_rows[half];
                if row < shape.m {
                    let y = |i: usize| {
                        let y = acc[4 * j + 2 * half + i] * row_scales[half];
                        let y = match b { Some(b) => y + b[i], None => y };
                        T::round_bits(y) as u32
                    };
                    sink(row, col, local_rows[half], local_col, y(0) | (y(1) << 16));
                }
            });
        }
    });
}

/// Step 5, coalesced: copies the staged `BM x BN` output tile (`out_pitch(BN)` bytes per row) to
/// q, k and v in 16-byte pieces, consecutive threads along a row. Needs q_cols and kv_cols
/// multiples of 8 and 16-byte aligned q, k, v, so that a piece never straddles two of them.
#[inline(always)]
unsafe fn copy_out_tile<T, const BM: u32, const BN: u32>(
    staged: SharedPtr,
    (row0, col0): (u32, u32),
    out: [*mut T; 3],
    shape: Shape,
) {
    let pieces_per_row = BN / 8;
    let n = shape.n();
    let mut i = thread_idx_x();
    while i < BM * pieces_per_row {
        let (r, piece) = (i / pieces_per_row, i % pieces_per_row);
        let (row, col) = (row0 + r, col0 + piece * 8);
        if row < shape.m && col < n {
            let value = staged.add(r * out_pitch(BN) + piece * 16).load_v16();
            let (dst, cols, c) = destination(out, shape, col);
            crate::mem::store_v16(dst.add(row as usize * cols as usize + c as usize).cast(), value);
        }
        i += THREADS;
    }
}

/// The kernel body; see the module docs for the launch contract. `tensor_maps`: the generic
/// addresses of the `x` and `W'` tensor maps for TMA loads, or `None` for `cp.async` loads.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fused_qkv_gemm<T: WgmmaElement, const BM: u32, const BN: u32, const WN: u32, const S: u32>(
    x: *const T,
    qkv_weight: *const T,
    bias: *const T,
    out: [*mut T; 3],
    shape: Shape,
    eps: f32,
    out_scale: f32,
    tensor_maps: Option<(u64, u64)>,
) {
    let n = shape.n();
    let (row0, col0) = tile_origin::<BM, BN>(shape.m, n);
    let ring = Ring { base: dynamic_shared_base().align_up(SWIZZLE_ATOM_BYTES) };
    let k_blocks = shape.hidden.div_ceil(BK);
    let producer = thread_idx_x() == 0;
    if tensor_maps.is_some() {
        if producer {
            let mut slot = 0;
            while slot < S {
                mbarrier::init(ring.full::<BM, BN, S>(slot), 1);
                slot += 1;
            }
            mbarrier::fence_init();
        }
        sync_threads();
    }
    let load = |k_block: u32| match tensor_maps {
        Some((x_map, w_map)) => {
            if producer && k_block < k_blocks {
                let (a, b) = ring.stage::<BM, BN, S>(k_block);
                let full = ring.full::<BM, BN, S>(k_block);
                mbarrier::arrive_expect_tx(full, (BM + BN) * SWIZZLE_ROW_BYTES);
                tma::load_2d(a, x_map, k_block * BK, row0, full);
                tma::load_2d(b, w_map, k_block * BK, col0, full);
            }
        }
        None => {
            if k_block < k_blocks {
                let (a, b) = ring.stage::<BM, BN, S>(k_block);
                load_operand::<T, BM>(x, shape.m, shape.hidden, row0, k_block, a);
                load_operand::<T, BN>(qkv_weight, n, shape.hidden, col0, k_block, b);
            }
            // One group per k-block, empty past the end: the waits below count on it.
            async_copy::commit_group();
        }
    };
    let mut k_block = 0;
    while k_block < S - 1 {
        load(k_block);
        k_block += 1;
    }
    // This warpgroup's 64 x WN share of the tile.
    let wg = thread_idx_x() / 128;
    let (local_row0, local_col0) = if BM == 128 { (wg * 64, 0) } else { (0, wg * WN) };
    let (a_offset, b_offset) = (local_row0 * SWIZZLE_ROW_BYTES, local_col0 * SWIZZLE_ROW_BYTES);
    let mut acc: Acc = [0.0; 128];
    let mut sum_sq = 0.0f32;
    let mut k_block = 0;
    while k_block < k_blocks {
        // Stage k_block has landed for every thread; the MMAs of k_block - 1 may still run.
        if tensor_maps.is_some() {
            mbarrier::wait_parity(ring.full::<BM, BN, S>(k_block), k_block / S % 2);
        } else {
            async_copy::wait_group(S - 2);
            wgmma::fence_proxy_async_shared();
            sync_threads();
        }
        let (a, b) = ring.stage::<BM, BN, S>(k_block);
        let (desc_a, desc_b) = (descriptor_k_major_sw128(a.add(a_offset)), descriptor_k_major_sw128(b.add(b_offset)));
        wgmma::fence();
        // 16 elements of K are 32 bytes: 2 in the descriptors' address field.
        unroll!(k in [0, 1, 2, 3] {
            T::mma_async::<WN>(&mut acc, desc_a + 2 * k as u64, desc_b + 2 * k as u64);
        });
        wgmma::commit_group();
        add_squares::<T, BM>(a, &mut sum_sq);
        // Every warpgroup is done with the MMAs of k_block - 1: its slot takes k_block + S - 1
        // while this k-block's MMAs run.
        wgmma::wait_group::<WN, 1>(&mut acc);
        sync_threads();
        load(k_block + S - 1);
        k_block += 1;
    }
    wgmma::wait_group::<WN, 0>(&mut acc);
    let scales = ring.row_scales::<BM, BN, S>();
    // Also the barrier after which every MMA is done and the stages are free.
    store_row_scale::<BM>(sum_sq, shape, eps, out_scale, scales);
    let origin = (row0 + local_row0, col0 + local_col0);
    let aligned = |p: *mut T| (p as usize).is_multiple_of(16);
    let coalesced = shape.q_cols % 8 == 0 && shape.kv_cols % 8 == 0 && out.iter().all(|&p| aligned(p));
    if coalesced {
        let staged = ring.base;
        for_each_pair::<T, WN>(&acc, scales, local_row0, local_col0, origin, bias, shape, |_, _, r, c, pair| {
            staged.add(r * out_pitch(BN) + c * 2).store_u32(pair)
        });
        sync_threads();
        copy_out_tile::<T, BM, BN>(staged, (row0, col0), out, shape);
    } else {
        for_each_pair::<T, WN>(&acc, scales, local_row0, local_col0, origin, bias, shape, |row, col, _, _, pair| {
            let (dst, cols, c) = destination(out, shape, col);
            crate::mem::store_u32(dst.add(row as usize * cols as usize + c as usize).cast(), pair)
        });
    }
}

macro_rules! fused_qkv_gemm_kernel {
    ($name:ident, $t:ty, $bm:literal, $bn:literal, $wn:literal, $stages:literal) => {
        #[doc = concat!("Prefill fused RMSNorm + QKV for `", stringify!($t), "` on `wgmma`, `cp.async` loads: ", stringify!($bm), " x ", stringify!($bn), " tiles, ", stringify!($stages), " stages.")]
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
            const _: () = assert!(($bm == 64 || $bm == 128) && $wn * (128 / $bm) == $bn && $stages >= 3 && $stages <= 5);
            let shape = Shape { m, hidden, q_cols, kv_cols };
            fused_qkv_gemm::<$t, $bm, $bn, $wn, $stages>(x, qkv_weight, bias, [q, k, v], shape, eps, out_scale, None);
        }
    };
    (tma $name:ident, $t:ty, $bm:literal, $bn:literal, $wn:literal, $stages:literal) => {
        #[doc = concat!("Prefill fused RMSNorm + QKV for `", stringify!($t), "` on `wgmma`, TMA loads: ", stringify!($bm), " x ", stringify!($bn), " tiles, ", stringify!($stages), " stages.")]
        ///
        /// # Safety
        /// The launch contract of this module; `x_map` and `w_map` describe `x` (`[m, hidden]`,
        /// box 64 x `BM`) and `W'` (`[N, hidden]`, box 64 x `BN`), 128-byte swizzle.
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
            _x_map: TensorMap,
            _w_map: TensorMap,
        ) {
            const _: () = assert!(($bm == 64 || $bm == 128) && $wn * (128 / $bm) == $bn && $stages >= 3 && $stages <= 5);
            let shape = Shape { m, hidden, q_cols, kv_cols };
            // Read in place by the copy engine (parameters 12 and 13).
            let maps = (param_address!($name, 12), param_address!($name, 13));
            fused_qkv_gemm::<$t, $bm, $bn, $wn, $stages>(x, qkv_weight, bias, [q, k, v], shape, eps, out_scale, Some(maps));
        }
    };
}

// 128-row tiles load with TMA; 64-row tiles with cp.async: with TMA, ptxas serialises their
// MMAs (warning C7515), and for the small M they serve both load paths measured the same.
fused_qkv_gemm_kernel!(tma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n256_s4, Bf16, 128, 256, 256, 4);
fused_qkv_gemm_kernel!(tma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n128_s4, Bf16, 128, 128, 128, 4);
fused_qkv_gemm_kernel!(tma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n128_s3, Bf16, 128, 128, 128, 3);
fused_qkv_gemm_kernel!(fused_rmsnorm_qkv_bf16_wgmma_m64_n256_s4, Bf16, 64, 256, 128, 4);
fused_qkv_gemm_kernel!(fused_rmsnorm_qkv_bf16_wgmma_m64_n128_s4, Bf16, 64, 128, 64, 4);
fused_qkv_gemm_kernel!(tma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n256_s4, F16, 128, 256, 256, 4);
fused_qkv_gemm_kernel!(tma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n128_s4, F16, 128, 128, 128, 4);
fused_qkv_gemm_kernel!(tma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n128_s3, F16, 128, 128, 128, 3);
fused_qkv_gemm_kernel!(fused_rmsnorm_qkv_f16_wgmma_m64_n256_s4, F16, 64, 256, 128, 4);
fused_qkv_gemm_kernel!(fused_rmsnorm_qkv_f16_wgmma_m64_n128_s4, F16, 64, 128, 64, 4);
