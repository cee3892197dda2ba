//! Prefill: the fused RMSNorm + QKV projection as a tiled GEMM on Hopper's warpgroup tensor
//! cores (`wgmma`, sm_90a; bf16 and f16).
//!
//! `y = x * W'^T` with `W' = W * gamma * 2^s` folded by the host (see [`crate::qkv`]), so both
//! operands are used exactly as stored: A = `x [M, H]` and B = `W' [N, H]`, both K-major.
//! `rms_inv` is applied in the epilogue, from sums of squares taken from the same `x` tiles
//! while they sit in shared memory: `x` is read from memory once per tile, never in a second pass.
//!
//! Block: two warpgroups (256 threads; three for `BM = 192`) compute a `BM x BN` tile of `y`.
//! With `BM = 128` or `192` each warpgroup owns 64 rows and all `BN` columns; with `BM = 64` each
//! owns half of the columns (`WN` = columns per warpgroup). Steps:
//! 1. load: the k-block `S - 1` ahead (64 elements of `H`) of the `x` and `W'` tiles goes into a
//!    ring of `S` shared-memory stages in the 128-byte swizzled layout `wgmma` reads
//!    ([`crate::wgmma::swizzled_offset`]), by a [`StageLoader`]: [`Tma`] (one thread, whole
//!    tiles, completion on an mbarrier per stage) or [`CpAsync`] (every thread, 16 bytes at a
//!    time). Columns past the matrix are zero-filled, so odd `N` and `H` need no other tail
//!    path. No `x` row past `M` is loaded, since filling rows with zeros is slow: where `M` is at
//!    least the tile's rows, the last row tile is moved up to end at row `M` ([`tile_origin`]);
//!    below, the TMA box holds `M` rows ([`WgmmaTile::x_box_rows`]) and the stage's other rows
//!    keep stale data, which reaches only accumulator rows that are never stored (`cp.async`
//!    zero-fills them). Before its first tile a block has the `W'` tiles of the first `S - 1`
//!    k-blocks brought into L2, then waits for the previous kernel ([`prefetch_then_wait`]);
//! 2. mma: per k-block, each warpgroup issues four m64n`WN`k16 MMAs and keeps one group in
//!    flight across the barriers (one before the MMAs: the stage has landed; one after: the
//!    previous k-block's MMAs are done, so its slot can be refilled). B comes from shared
//!    memory; A too on 64-token and 3-stage tiles, else from registers (`ldmatrix`), since
//!    shared-memory bandwidth bounds the mainloop and the squares can then use the same
//!    registers ([`multiply_a_in_registers`]);
//! 3. reduce: meanwhile the squares of the stage's `x` rows are added up: from the A fragments
//!    (a quad of lanes per row), or by 2 or 4 threads per row from a second read of the tile;
//! 4. normalize: the row's `rms_inv * out_scale` goes to shared memory;
//! 5. store: each thread scales its accumulators, adds the bias (the tile's column biases, put
//!    in shared memory once per tile) and rounds pairs of columns into a staged copy of the tile
//!    in the (now free) stages, 16 x 16 per warp at a time (`stmatrix`, [`stage_tile`]); the
//!    block then copies it to q, k and v in coalesced 16-byte pieces. Where q_cols or kv_cols is
//!    no multiple of 8 or an output is not 16-byte aligned, the pairs go straight to global
//!    memory instead. (Before `stmatrix` and the shared biases, this step was a third of the
//!    small models' prefill: bench/NOTES.md "The epilogue".)
//!
//! Blocks walk the tiles in groups of [`GROUP_M`] row tiles, column tile after column tile, so
//! that the blocks running at one time share `x` and `W'` tiles in L2.
//!
//! How blocks share the tiles ([`kernel_abi::WgmmaGrid`]): in clusters, split-K, the partial
//! tiles meeting in distributed shared memory ([`run_split_k`]); else a stream-K grid, each
//! block taking whole tiles of the full waves, then its part of a tile of the last wave
//! ([`kernel_abi::wgmma::stream_tail`]), the partials meeting in the workspace
//! ([`StreamWorkspace`]), each block of the tile storing a band of its rows. One block per tile
//! is the plain grid. Tiles are 64 rows by 96, 128, 160, 192 or 256 columns, 128 rows by 64,
//! 96, 128, 144, 192 or 256, or 192 rows by 128, 144 or 192 ([`kernel_abi::WgmmaTile::is_valid`]).
//!
//! Launch contract: [`kernel_abi::WgmmaTile::launch`] for the kernel's tile (dynamic shared
//! memory [`kernel_abi::WgmmaTile::shared_bytes`], laid out by its `*_offset` functions; above
//! 48 KB the host raises the function's limit); `hidden % 8 == 0`, `q_cols` and `kv_cols` even;
//! `x` and `W'` 16-byte aligned, q, k, v 4-byte aligned; buffers as in [`kernel_abi::QkvParams`].

use kernel_abi::wgmma::{k_range, stream_tail, stream_tail_units, tail_bands, BAND_ROWS, CONSUMER_WARPS, GROUP_M, K_BLOCK};
use kernel_abi::wgmma::{split_bands, split_pushes};
use kernel_abi::timeline::{ITEM_LANDED, ITEM_LEAVE_WRITTEN, ITEM_LEFT, ITEM_LOWERED, ITEM_SEEN};
use kernel_abi::timeline::{ITEM_MULTIPLIED, ITEM_SCALED, ITEM_STAGED, ITEM_STORED};
use kernel_abi::wgmma::{multiplying_threads, MAX_SPLITS, PERSISTENT_CLUSTER, THREADS, WARPGROUP_THREADS};
use kernel_abi::{Load, QkvParams, WgmmaTile};

use crate::async_copy;
use crate::cluster::{self, ClusterPtr};
use crate::dependency;
use crate::mbarrier;
use crate::qkv::{add_squares, bias_at, destination, output_value, row_scale, Shape};
use crate::shared::{dynamic_shared_base, SharedPtr};
// The epilogue (steps 4 and 5) reads the thread index at each use: in the persistent kernel's
// loop over tiles its addresses would otherwise stay in registers through the mainloop.
use crate::thread::{arrive_named, block_idx_x, grid_dim_x, sync_named, sync_threads, thread_idx_x, thread_idx_x_unhoisted};
use crate::timeline::Timeline;
use crate::tma;
use crate::warp::{lane_id, shuffle_xor_f32, sync_warp, WARP_SIZE};
use crate::wgmma::{self, descriptor_k_major_sw128, swizzled_offset, Acc, WgmmaElement};
use crate::wgmma::{SWIZZLE_ATOM_BYTES, SWIZZLE_ROW_BYTES};

/// The first row and column of tile number `tile` (see the module docs for the order). Where
/// `M >= BM`, the last row tile is moved up to end at row `M`, so that its `x` box lies inside
/// the matrix: TMA filling the rows past `M` with zeros cost up to a third of a mid-M call
/// (bench/NOTES.md "the 192-token cliff"). The rows it then shares with the tile above are
/// that tile's to store ([`first_own_row`]). Where `M < BM`, the one row tile's box is clipped
/// to `M` rows instead ([`WgmmaTile::x_box_rows`]).
#[inline(always)]
fn tile_origin<const BM: u32, const BN: u32>(tile: u32, m: u32, n: u32) -> (u32, u32) {
    let (tiles_m, tiles_n) = (m.div_ceil(BM), n.div_ceil(BN));
    let per_group = GROUP_M * tiles_n;
    let first_m = tile / per_group * GROUP_M;
    let group_rows = (tiles_m - first_m).min(GROUP_M);
    let in_group = tile % per_group;
    let row0 = (first_m + in_group % group_rows) * BM;
    let row0 = row0.min(m.saturating_sub(BM));
    (row0, in_group / group_rows * BN)
}

/// The first row of the tile at `row0` ([`tile_origin`]) that it stores: rows above its place
/// in the grid of tiles (a multiple of `BM`) belong to the tile above.
#[inline(always)]
fn first_own_row<const BM: u32>(row0: u32) -> u32 {
    row0.next_multiple_of(BM) - row0
}

/// The shared-memory ring, laid out as the tile's [`WgmmaTile`] functions say: the stages (`x`
/// tile then `W'` tile, 128 bytes per row), the row scales, one "full" mbarrier per stage.
#[derive(Clone, Copy)]
pub struct Ring {
    base: SharedPtr,
    tile: WgmmaTile,
}

impl Ring {
    /// The `x` and `W'` tiles of the stage that holds the block's `step`-th k-block.
    #[inline(always)]
    fn stage(self, step: u32) -> (SharedPtr, SharedPtr) {
        let a = self.base.add(step % self.tile.stages * self.tile.stage_bytes());
        (a, a.add(self.tile.tokens * SWIZZLE_ROW_BYTES))
    }

    #[inline(always)]
    fn row_scales(self) -> SharedPtr {
        self.base.add(self.tile.row_scales_offset())
    }

    /// The mbarrier that completes when the TMA copies into `step`'s stage have landed.
    #[inline(always)]
    fn full(self, step: u32) -> SharedPtr {
        self.base.add(self.tile.barriers_offset() + step % self.tile.stages * 8)
    }

    /// The persistent kernel's mbarrier that completes when every multiplying warp is done with
    /// `step`'s stage (its MMAs and its row sums), so that the producer may refill it.
    #[inline(always)]
    fn empty(self, step: u32) -> SharedPtr {
        self.base.add(self.tile.barriers_offset() + (self.tile.stages + step % self.tile.stages) * 8)
    }

    /// The tile's column biases, one f32 per column ([`Epilogue::store`]).
    #[inline(always)]
    fn col_bias(self) -> SharedPtr {
        self.base.add(self.tile.col_bias_offset())
    }

    /// The persistent kernel's staged output tile.
    #[inline(always)]
    fn out_tile(self) -> SharedPtr {
        self.base.add(self.tile.out_tile_offset())
    }

    /// Room for the staged output tile in one piece from `start`, as the two halves
    /// [`Epilogue::staged`] takes.
    #[inline(always)]
    fn staged_at(self, start: SharedPtr) -> [SharedPtr; 2] {
        [start, start.add(self.tile.tokens / 2 * self.tile.out_pitch())]
    }
}

/// The k-blocks of `H` a block multiplies: `count` of them from `first` (all of them, or its
/// share under split-K, [`kernel_abi::wgmma::k_range`]).
#[derive(Clone, Copy)]
pub struct KRange {
    pub first: u32,
    pub count: u32,
    /// The ring step of the first: steps count on across a block's tiles, and the stages and
    /// their mbarriers' phases follow them.
    pub ring_step: u32,
}

/// Step 1, and the wait for it: how the stages are filled.
pub trait StageLoader {
    /// Which [`Load`] of the kernel ABI this is (it sizes the tile's shared memory).
    const LOAD: Load;
    /// Before the first load; every thread calls it.
    ///
    /// # Safety
    /// Once per block, before any other use of the ring.
    unsafe fn init(&self, ring: Ring);
    /// Issues the copies of the block's `step`-th k-block (k-block `k.first + step` of `H`, of
    /// `k.count` this block multiplies) of its tiles at (`row0`, `col0`) into the stage of ring step `k.ring_step + step`;
    /// every thread calls it, also past the last step.
    ///
    /// # Safety
    /// The stage must be free: every MMA that read it is done.
    unsafe fn load(&self, ring: Ring, step: u32, k: KRange, origin: (u32, u32));
    /// Has the copy engine bring the `W'` tile of the block's `step`-th k-block (as in
    /// [`StageLoader::load`]) into L2: issued before the wait for the previous kernel
    /// ([`crate::dependency`]; no kernel writes the weights), so that it streams in during that
    /// kernel's tail and the stage's copy finds it in L2. Every thread calls it.
    ///
    /// # Safety
    /// The loader's pointers or tensor maps valid.
    unsafe fn prefetch_weights(&self, tile: WgmmaTile, step: u32, k: KRange, origin: (u32, u32));
    /// Returns once ring step `step`'s stage has landed, for every thread of the block.
    ///
    /// # Safety
    /// Every thread calls it, once per step, in order.
    unsafe fn wait(&self, ring: Ring, step: u32);
}

/// The copy engine: thread 0 copies whole tiles described by tensor maps (in the kernel's
/// parameter space, see [`kernel_abi::TmaParams`]); they complete on the stage's mbarrier.
pub struct Tma {
    /// Generic addresses of the `x` and `W'` tensor maps.
    pub x_map: u64,
    pub w_map: u64,
    /// Tokens (`M`): the `x` map's box is [`WgmmaTile::x_box_rows`] of it.
    pub m: u32,
}

impl Tma {
    /// The loader of a kernel whose parameter ([`kernel_abi::TmaParams`]) is at the generic
    /// address `params` ([`crate::param_address!`]): the copy engine reads the maps in place.
    /// `m` is the launch's token count (the parameter's `qkv.shape.m`).
    #[inline(always)]
    pub fn in_params(params: u64, m: u32) -> Tma {
        Tma {
            x_map: params + kernel_abi::TmaParams::X_MAP_OFFSET as u64,
            w_map: params + kernel_abi::TmaParams::W_MAP_OFFSET as u64,
            m,
        }
    }

    /// Copies k-block `k_block` of the `x` and `W'` tiles at (`row0`, `col0`) into `step`'s
    /// stage, completing on its "full" mbarrier.
    ///
    /// # Safety
    /// One thread; the stage must be free (every MMA and row sum that read it is done).
    #[inline(always)]
    unsafe fn issue(&self, ring: Ring, step: u32, k_block: u32, (row0, col0): (u32, u32)) {
        let (a, b) = ring.stage(step);
        let full = ring.full(step);
        let h = k_block * K_BLOCK;
        mbarrier::arrive_expect_tx(full, ring.tile.stage_tx_bytes(self.m));
        tma::load_2d(a, self.x_map, h, row0, full);
        tma::load_2d(b, self.w_map, h, col0, full);
    }
}

impl StageLoader for Tma {
    const LOAD: Load = Load::Tma;

    #[inline(always)]
    unsafe fn init(&self, ring: Ring) {
        if thread_idx_x() == 0 {
            let mut slot = 0;
            while slot < ring.tile.stages {
                mbarrier::init(ring.full(slot), 1);
                slot += 1;
            }
            mbarrier::fence_init();
        }
        sync_threads();
    }

    #[inline(always)]
    unsafe fn load(&self, ring: Ring, step: u32, k: KRange, origin: (u32, u32)) {
        if thread_idx_x() == 0 && step < k.count {
            self.issue(ring, k.ring_step + step, k.first + step, origin);
        }
    }

    #[inline(always)]
    unsafe fn prefetch_weights(&self, _tile: WgmmaTile, step: u32, k: KRange, (_, col0): (u32, u32)) {
        if thread_idx_x() == 0 && step < k.count {
            tma::prefetch_2d(self.w_map, (k.first + step) * K_BLOCK, col0);
        }
    }

    #[inline(always)]
    unsafe fn wait(&self, ring: Ring, step: u32) {
        mbarrier::wait_parity(ring.full(step), step / ring.tile.stages % 2);
    }
}

/// `cp.async` by every thread: thread `t` copies chunk `t % 8` of rows `t / 8 + 32 i`.
pub struct CpAsync<T> {
    pub x: *const T,
    pub qkv_weight: *const T,
    pub shape: Shape,
}

impl<T> CpAsync<T> {
    /// `rows` rows of a K-major matrix (`rows_total` x `hidden`) starting at `row0`, k-block
    /// `k_block`, into `tile`.
    #[inline(always)]
    unsafe fn load_operand(&self, src: *const T, rows: u32, rows_total: u32, row0: u32, k_block: u32, tile: SharedPtr) {
        let tid = thread_idx_x();
        let chunk = tid % 8;
        let k = k_block * K_BLOCK + chunk * 8;
        // hidden % 8 == 0: a chunk is wholly inside or wholly past the row.
        let k_inside = k < self.shape.hidden;
        let k_at = if k_inside { k } else { 0 } as usize;
        let mut pass = 0;
        while pass < rows / 32 {
            let r = tid / 8 + pass * 32;
            let row = row0 + r;
            let inside = row < rows_total;
            let at = if inside { row } else { 0 } as usize * self.shape.hidden as usize + k_at;
            async_copy::copy_16(tile.add(swizzled_offset(r, chunk)), src.add(at).cast(), inside && k_inside);
            pass += 1;
        }
    }
}

impl<T> StageLoader for CpAsync<T> {
    const LOAD: Load = Load::CpAsync;

    #[inline(always)]
    unsafe fn init(&self, _ring: Ring) {}

    #[inline(always)]
    unsafe fn load(&self, ring: Ring, step: u32, k: KRange, (row0, col0): (u32, u32)) {
        if step < k.count {
            let (a, b) = ring.stage(k.ring_step + step);
            let tile = ring.tile;
            let k_block = k.first + step;
            self.load_operand(self.x, tile.tokens, self.shape.m, row0, k_block, a);
            self.load_operand(self.qkv_weight, tile.out_cols, self.shape.n(), col0, k_block, b);
        }
        // One group per k-block, empty past the end: the waits count on it.
        async_copy::commit_group();
    }

    /// Thread `t` takes row `t` of the tile's `W'` rows: the 128-byte line of the k-block.
    #[inline(always)]
    unsafe fn prefetch_weights(&self, tile: WgmmaTile, step: u32, k: KRange, (_, col0): (u32, u32)) {
        let (row, n) = (col0 + thread_idx_x(), self.shape.n());
        if step < k.count && thread_idx_x() < tile.out_cols && row < n {
            let h = (k.first + step) * K_BLOCK;
            let at = self.qkv_weight.add(row as usize * self.shape.hidden as usize + h as usize);
            crate::mem::prefetch_l2_line(at.cast());
        }
    }

    #[inline(always)]
    unsafe fn wait(&self, ring: Ring, _step: u32) {
        async_copy::wait_group(ring.tile.stages - 2);
        wgmma::fence_proxy_async_shared();
        sync_threads();
    }
}

/// Threads that share one row of a `BM`-row tile's sums of squares ([`add_row_squares`]): 4
/// with 64 rows, 2 with 128 or 192.
#[inline(always)]
const fn threads_per_row<const BM: u32>() -> u32 {
    multiplying_threads(BM) / BM
}

/// Step 3: adds the squares of this thread's share of its row of the stage's `x` tile.
#[inline(always)]
unsafe fn add_row_squares<T: WgmmaElement, const BM: u32>(x_tile: SharedPtr, sum_sq: &mut f32) {
    let threads_per_row = threads_per_row::<BM>();
    let chunks = 8 / threads_per_row;
    let tid = thread_idx_x();
    let (row, part) = (tid / threads_per_row, tid % threads_per_row);
    let mut c = 0;
    while c < chunks {
        let values = T::unpack(x_tile.add(swizzled_offset(row, part * chunks + c)).load_v16());
        *sum_sq = add_squares::<T>(&values, *sum_sq);
        c += 1;
    }
}

/// Step 4: the row's sum of squares (of this block's share of `H`) from its threads' shares,
/// handed to `sink(local row, sum)` by the row's first thread; a barrier must follow before
/// other threads read what the sink stored.
#[inline(always)]
unsafe fn row_sums<const BM: u32>(sum_sq: f32, mut sink: impl FnMut(u32, f32)) {
    let threads_per_row = threads_per_row::<BM>();
    let mut sum_sq = sum_sq;
    // The row's threads are adjacent lanes.
    if threads_per_row >= 4 {
        sum_sq += shuffle_xor_f32(sum_sq, 2);
    }
    sum_sq += shuffle_xor_f32(sum_sq, 1);
    let tid = thread_idx_x_unhoisted();
    if tid % threads_per_row == 0 {
        sink(tid / threads_per_row, sum_sq);
    }
}

/// Step 5: `y = acc * row_scale + bias` for this thread's accumulators of the warpgroup tile at
/// (`row0`, `col0`) of y (local row `local_row0` of the block tile), rounded and packed in pairs
/// of columns, handed to `sink(row, col, local row, pair)` for in-range pairs.
/// q_cols and kv_cols are even, so a pair never straddles q, k and v.
#[inline(always)]
unsafe fn for_each_pair<T: WgmmaElement, const WN: u32, const BIAS: bool>(
    acc: &Acc,
    scales: SharedPtr,
    (local_row0, local_col0): (u32, u32),
    (row0, col0): (u32, u32),
    params: &QkvParams,
    mut sink: impl FnMut(u32, u32, u32, u32),
) {
    let (warp, lane) = (thread_idx_x_unhoisted() / 32 % 4, thread_idx_x_unhoisted() % WARP_SIZE);
    let local_rows = [local_row0 + 16 * warp + lane / 4, local_row0 + 16 * warp + lane / 4 + 8];
    let row_scales = [scales.offset_f32(local_rows[0]).load_f32(), scales.offset_f32(local_rows[1]).load_f32()];
    let (shape, bias) = (params.shape, params.bias::<T>());
    let n = shape.n();
    unroll!(j in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
        let local_col = local_col0 + 8 * j as u32 + 2 * (lane % 4);
        let col = col0 - local_col0 + local_col;
        if (j as u32) < WN / 8 && col < n {
            let b = if BIAS { [bias_at(bias, col), bias_at(bias, col + 1)] } else { [None, None] };
            unroll!(half in [0, 1] {
                let row = row0 - local_row0 + local_rows[half];
                if row < shape.m {
                    let y = |i: usize| output_value(acc[4 * j + 2 * half + i], row_scales[half], b[i]);
                    sink(row, col, local_rows[half], T::round_pair_bits(y(0), y(1)));
                }
            });
        }
    });
}

/// [`for_each_pair`] with the bias test made once, outside: with the test inside, per column,
/// the persistent 128 x 256 tile took 255 registers (168 this way).
#[inline(always)]
unsafe fn for_each_pair_by_bias<T: WgmmaElement, const WN: u32>(
    has_bias: bool,
    (acc, scales, local, origin): (&Acc, SharedPtr, (u32, u32), (u32, u32)),
    params: &QkvParams,
    sink: impl FnMut(u32, u32, u32, u32),
) {
    if has_bias {
        for_each_pair::<T, WN, true>(acc, scales, local, origin, params, sink);
    } else {
        for_each_pair::<T, WN, false>(acc, scales, local, origin, params, sink);
    }
}

/// Step 5 into the staged output tile: `y = acc * row_scale + bias` for this thread's
/// accumulators of its warpgroup's share at `local` in the tile, rounded in pairs of columns
/// and written 16 columns x 16 rows per warp at a time (`stmatrix`). Every row and column of
/// the share is written, also those past `M` or `N` (the copy to q, k, v skips them), so
/// there are no per-element tests. The biases come from the tile's column biases
/// ([`Ring::col_bias`]) when `BIAS`.
///
/// # Safety
/// Every thread of the warpgroup, after its last MMA wait, with the row scales (and column
/// biases) written and a barrier passed since; the staged tile is this block's to write.
#[inline(always)]
unsafe fn stage_tile<T: WgmmaElement, const WN: u32, const BIAS: bool>(
    acc: &Acc,
    (scales, col_bias): (SharedPtr, SharedPtr),
    staged: [SharedPtr; 2],
    tile: WgmmaTile,
    (local_row0, local_col0): (u32, u32),
) {
    let (warp, lane) = (thread_idx_x_unhoisted() / 32 % 4, thread_idx_x_unhoisted() % WARP_SIZE);
    let row_in_warp = 16 * warp + lane / 4;
    let row_scales =
        [scales.offset_f32(local_row0 + row_in_warp).load_f32(), scales.offset_f32(local_row0 + row_in_warp + 8).load_f32()];
    // stmatrix: lanes 8 i.. address the rows of matrix i = (column block 2 p + i / 2, rows
    // 8 (i % 2)..) of the 16 x 16 piece p.
    let matrix = lane / 8;
    let row_base = staged_row(staged, tile, local_row0 + 16 * warp + 8 * (matrix % 2) + lane % 8)
        .add((local_col0 + 8 * (matrix / 2)) * 2);
    let lane_col = local_col0 + 2 * (lane % 4);
    unroll!(p in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] {
        if (p as u32) < WN / 16 {
            let mut fragments = [0u32; 4];
            unroll!(i in [0, 1] {
                let j = 2 * p + i;
                let b = col_bias_pair(col_bias, lane_col + 8 * j as u32, BIAS);
                unroll!(half in [0, 1] {
                    let y = |e: usize| output_value(acc[4 * j + 2 * half + e], row_scales[half], b[e]);
                    fragments[2 * i + half] = T::round_pair_bits(y(0), y(1));
                });
            });
            row_base.add(32 * p as u32).stmatrix_x4(fragments);
        }
    });
}

/// Row `r` of a staged output tile held in two halves ([`Epilogue::staged`]).
#[inline(always)]
fn staged_row(staged: [SharedPtr; 2], tile: WgmmaTile, r: u32) -> SharedPtr {
    let half = tile.tokens / 2;
    let part = if r < half { staged[0] } else { staged[1] };
    part.add(r % half * tile.out_pitch())
}

/// Step 5, coalesced: copies rows `first_row..end_row` of the staged output tile (`out_pitch`
/// bytes per row, in two halves) to q, k and v in 16-byte pieces, consecutive threads (`tid` of
/// `threads` that copy) along a row; rows past `M` and columns past `N` stay. Each thread keeps one piece of the row (the
/// threads a whole number of rows cover; the rest idle), so its destination is worked out once.
/// Needs q_cols and kv_cols multiples of 8 and 16-byte aligned q, k, v, so that a piece never
/// straddles two of them.
#[inline(always)]
unsafe fn copy_out_tile<T>(
    staged: [SharedPtr; 2],
    tile: WgmmaTile,
    (row0, col0): (u32, u32),
    (first_row, end_row): (u32, u32),
    (tid, threads): (u32, u32),
    params: &QkvParams,
) {
    let pieces_per_row = tile.out_cols / 8;
    let rows_per_pass = threads / pieces_per_row;
    let (shape, out) = (params.shape, params.outputs::<T>());
    let (piece, mut r) = (tid % pieces_per_row, first_row + tid / pieces_per_row);
    let col = col0 + piece * 8;
    let end_row = end_row.min(shape.m - row0);
    if tid < rows_per_pass * pieces_per_row && col < shape.n() {
        let (dst, cols, c) = destination(out, shape, col);
        while r < end_row {
            let value = staged_row(staged, tile, r).add(piece * 16).load_v16();
            crate::mem::store_v16(dst.add((row0 + r) as usize * cols as usize + c as usize).cast(), value);
            r += rows_per_pass;
        }
    }
}

/// Whether the outputs take whole 16-byte pieces of 8 columns: q_cols and kv_cols multiples of
/// 8 and q, k, v 16-byte aligned, so that no piece straddles two of them. Else step 5 stores
/// pairs of columns.
#[inline(always)]
fn coalesced_outputs<T>(params: &QkvParams) -> bool {
    let shape = params.shape;
    let aligned = |p: *mut T| (p as usize).is_multiple_of(16);
    shape.q_cols % 8 == 0 && shape.kv_cols % 8 == 0 && params.outputs::<T>().iter().all(|&p| aligned(p))
}

/// Split-K, step 5a: this thread's fp32 accumulators of the warpgroup tile at local
/// (`row0`, `col0`) into the block's partial tile (`partial_pitch` bytes per row).
#[inline(always)]
unsafe fn store_partial<const WN: u32>(acc: &Acc, partial: SharedPtr, tile: WgmmaTile, (row0, col0): (u32, u32)) {
    let (warp, lane) = (thread_idx_x() / 32 % 4, lane_id());
    let rows = [row0 + 16 * warp + lane / 4, row0 + 16 * warp + lane / 4 + 8];
    unroll!(j in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
        if (j as u32) < WN / 8 {
            let col = col0 + 8 * j as u32 + 2 * (lane % 4);
            unroll!(half in [0, 1] {
                let at = partial.add(rows[half] * tile.partial_pitch() + col * 4);
                at.store_f32x2([acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]]);
            });
        }
    });
}

/// The tile's column biases (0 past N) into [`Ring::col_bias`], where there is a bias; a
/// barrier must follow before they are read.
///
/// # Safety
/// Every thread of the block; no thread reads the column biases of an earlier tile any more.
#[inline(always)]
unsafe fn load_col_bias<T: WgmmaElement>(col_bias: SharedPtr, tile: WgmmaTile, col0: u32, params: &QkvParams) {
    store_col_bias::<T>(col_bias, tile, fetch_col_bias::<T>(tile, col0, params), params);
}

/// This thread's column bias of the tile at column `col0` (0 past N, or without a bias), for
/// [`store_col_bias`]: on 128-row tiles fetched at the start of the tile, so that the epilogue
/// does not wait for global memory (0.6 us of each tile's epilogue, bench/NOTES.md "the stream-K
/// tail's exchange").
///
/// # Safety
/// Every thread of the block; after the wait for the previous kernel.
#[inline(always)]
unsafe fn fetch_col_bias<T: WgmmaElement>(tile: WgmmaTile, col0: u32, params: &QkvParams) -> f32 {
    let (bias, tid) = (params.bias::<T>(), thread_idx_x_unhoisted());
    let col = col0 + tid;
    if !bias.is_null() && tid < tile.out_cols && col < params.shape.n() {
        T::load(bias.add(col as usize))
    } else {
        0.0
    }
}

/// The tile's column biases, [`fetch_col_bias`]'s `value` from each thread, into
/// [`Ring::col_bias`], where there is a bias; a barrier must follow before they are read.
///
/// # Safety
/// Every thread of the block; no thread reads the column biases of an earlier tile any more.
#[inline(always)]
unsafe fn store_col_bias<T: WgmmaElement>(col_bias: SharedPtr, tile: WgmmaTile, value: f32, params: &QkvParams) {
    let tid = thread_idx_x_unhoisted();
    if !params.bias::<T>().is_null() && tid < tile.out_cols {
        col_bias.offset_f32(tid).store_f32(value);
    }
}

/// The column biases of the tile's columns `col` and `col + 1` ([`load_col_bias`]), where
/// `has_bias`.
///
/// # Safety
/// `col` even and below the tile's columns; the biases loaded and a barrier passed since.
#[inline(always)]
unsafe fn col_bias_pair(col_bias: SharedPtr, col: u32, has_bias: bool) -> [Option<f32>; 2] {
    if has_bias {
        let pair = col_bias.offset_f32(col).load_f32x2();
        [Some(pair[0]), Some(pair[1])]
    } else {
        [None, None]
    }
}

/// Split-K, step 5b: block `rank` of the cluster's `splits` finishes its band of the rows the
/// tile at (`row0`, `col0`) stores (local `own..rows`, as [`run_split_k`] works them out): per 4
/// columns, the partial tiles and row sums of every block of the cluster added in
/// rank order (so the bits do not depend on which block finished first), then the row scale,
/// the bias (the tile's column biases, put in shared memory by [`load_col_bias`] before the
/// cluster barrier) and the rounding of [`stage_tile`], stored to q, k and v: 8 bytes at once
/// where the outputs allow ([`Epilogue::store`]'s test), else pair by pair. (A thread per 4
/// columns, not 8: 8 took 10-30 % longer at 3-8 splits, its 16-byte loads 32 bytes apart. Also
/// slower, 3-43 % on split-K grids: this block's own share read locally behind a branch per
/// block, and two quads a pass with every load ahead; H200, bench/NOTES.md "192-row tiles".)
#[inline(always)]
unsafe fn reduce_partials<T: WgmmaElement, const BM: u32>(
    ring: Ring,
    (rank, splits): (u32, u32),
    (row0, col0): (u32, u32),
    (own, rows): (u32, u32),
    params: &QkvParams,
) {
    let tile = ring.tile;
    let (partial, row_sums, col_bias) = (ring.base, ring.row_scales(), ring.col_bias());
    let (shape, out) = (params.shape, params.outputs::<T>());
    // The rows this tile stores (local `own..rows`), shared evenly: with one row tile below its
    // height, the rows past M are no one's.
    let span = rows - own;
    let (first_row, end_row) = (own + rank * span / splits, own + (rank + 1) * span / splits);
    let n = shape.n();
    let has_bias = !params.bias::<T>().is_null();
    // Then n is a multiple of 8 too: a quad is wholly inside one of q, k, v or past N.
    let coalesced = coalesced_outputs::<T>(params);
    let quads_per_row = tile.out_cols / 4;
    let mut i = first_row * quads_per_row + thread_idx_x();
    while i < end_row * quads_per_row {
        let (r, quad) = (i / quads_per_row, i % quads_per_row);
        let (row, col) = (row0 + r, col0 + quad * 4);
        if row < shape.m && col < n {
            // Every block's share first (one round trip to the cluster, not one per block)...
            let mut parts = [[0.0f32; 4]; MAX_SPLITS as usize];
            let mut sums = [0.0f32; MAX_SPLITS as usize];
            unroll!(peer in [0, 1, 2, 3, 4, 5, 6, 7] {
                if (peer as u32) < splits {
                    let at = partial.add(r * tile.partial_pitch() + quad * 16);
                    parts[peer] = ClusterPtr::map(at, peer as u32).load_f32x4();
                    sums[peer] = ClusterPtr::map(row_sums.offset_f32(r), peer as u32).load_f32();
                }
            });
            // ...then added in rank order.
            let (mut dot, mut sum_sq) = ([0.0f32; 4], 0.0f32);
            unroll!(peer in [0, 1, 2, 3, 4, 5, 6, 7] {
                if (peer as u32) < splits {
                    unroll!(c in [0, 1, 2, 3] {
                        dot[c] += parts[peer][c];
                    });
                    sum_sq += sums[peer];
                }
            });
            let scale = row_scale(sum_sq, shape.hidden, params.eps, params.out_scale);
            let mut pairs = [0u32; 2];
            unroll!(pair in [0, 1] {
                let b = col_bias_pair(col_bias, quad * 4 + 2 * pair as u32, has_bias);
                pairs[pair] = T::round_pair_bits(output_value(dot[2 * pair], scale, b[0]), output_value(dot[2 * pair + 1], scale, b[1]));
            });
            if coalesced {
                let (dst, cols, at) = destination(out, shape, col);
                crate::mem::store_v8(dst.add(row as usize * cols as usize + at as usize).cast(), pairs);
            } else {
                unroll!(pair in [0, 1] {
                    let c = col + 2 * pair as u32;
                    // n is even: a pair is wholly inside or wholly past the last column.
                    if c < n {
                        let (dst, cols, at) = destination(out, shape, c);
                        crate::mem::store_u32(dst.add(row as usize * cols as usize + at as usize).cast(), pairs[pair]);
                    }
                });
            }
        }
        i += multiplying_threads(BM);
    }
}

// `reduce_partials` unrolls its loads over this many blocks.
const _: () = assert!(MAX_SPLITS == 8);

/// Step 1 ahead of the mainloop: issues the loads of `k`'s steps `from..to` for the tile at
/// `origin`.
///
/// # Safety
/// Every thread of the block calls it; those steps' stages are free.
#[inline(always)]
unsafe fn load_ahead<L: StageLoader>(ring: Ring, loader: &L, k: KRange, origin: (u32, u32), (from, to): (u32, u32)) {
    let mut step = from;
    while step < to {
        loader.load(ring, step, k, origin);
        step += 1;
    }
}

/// Before the block's first tile: the `W'` tiles of its first `S - 1` k-blocks into L2 (when it
/// was launched as a dependent, [`QkvParams::dependent_launch`]), then the
/// wait for the previous kernel ([`crate::dependency`]), after which `x` may be read and q, k, v
/// and the workspace written, and the next kernel may start. (Into L2, not into the stages:
/// loading the stages' `W'` halves before the wait took the two-blocks-per-SM tile from 96 to 130
/// registers.)
///
/// # Safety
/// Every thread of the block calls it, once, before anything reads `x` or writes global memory.
#[inline(always)]
unsafe fn prefetch_then_wait<L: StageLoader, const S: u32>(
    ring: Ring,
    loader: &L,
    (k, origin): (KRange, (u32, u32)),
    params: &QkvParams,
) {
    if params.dependent_launch != 0 {
        let mut step = 0;
        while step < S - 1 {
            loader.prefetch_weights(ring.tile, step, k, origin);
            step += 1;
        }
    }
    dependency::wait_then_launch_dependents();
}

/// Steps 1-3 for the k-blocks `k` of the tile at `origin`: the rest of the ring's prologue
/// (`prefetched` of its `S - 1` loads were issued before, [`load_ahead`]), then per k-block this
/// warpgroup's MMAs (its share at `local` in the tile) and the row squares. Returns the
/// accumulators, every MMA waited for, and this thread's share of its row's sum of squares.
///
/// # Safety
/// Every thread of the block calls it; the stages of `k`'s ring steps are free.
#[inline(always)]
unsafe fn multiply<T: WgmmaElement, L: StageLoader, const BM: u32, const WN: u32, const S: u32>(
    ring: Ring,
    loader: &L,
    (k, prefetched): (KRange, u32),
    origin: (u32, u32),
    local: (u32, u32),
) -> (Acc, f32) {
    load_ahead(ring, loader, k, origin, (prefetched, S - 1));
    // The 3-stage tile runs two blocks per SM, which needs 128 registers or fewer: the two
    // fragment sets would take it past that (168).
    if BM >= 128 && S >= 4 {
        multiply_a_in_registers::<T, L, BM, WN, S>(ring, loader, k, origin, local)
    } else {
        multiply_a_in_shared::<T, L, BM, WN, S>(ring, loader, k, origin, local)
    }
}

/// After a step's MMAs are issued and the previous step's waited for: the previous step's stage
/// takes step `step + S - 1` while this step's MMAs run.
///
/// # Safety
/// Every thread of the block, once per step, after the wait for the previous step's MMAs.
#[inline(always)]
unsafe fn refill<L: StageLoader, const S: u32>(ring: Ring, loader: &L, step: u32, k: KRange, origin: (u32, u32)) {
    sync_threads();
    loader.load(ring, step + S - 1, k, origin);
}

/// [`multiply`]'s mainloop with A read by `wgmma` from shared memory and the squares from a
/// second read of the `x` tile (64-token tiles, where both warpgroups multiply the same rows,
/// and the 3-stage tile).
#[inline(always)]
unsafe fn multiply_a_in_shared<T: WgmmaElement, L: StageLoader, const BM: u32, const WN: u32, const S: u32>(
    ring: Ring,
    loader: &L,
    k: KRange,
    origin: (u32, u32),
    local: (u32, u32),
) -> (Acc, f32) {
    let (a_offset, b_offset) = (local.0 * SWIZZLE_ROW_BYTES, local.1 * SWIZZLE_ROW_BYTES);
    let mut acc: Acc = [0.0; 128];
    let mut sum_sq = 0.0f32;
    let mut step = 0;
    while step < k.count {
        // The step's stage has landed for every thread; the previous step's MMAs may still run.
        loader.wait(ring, k.ring_step + step);
        let (a, b) = ring.stage(k.ring_step + step);
        let (desc_a, desc_b) = (descriptor_k_major_sw128(a.add(a_offset)), descriptor_k_major_sw128(b.add(b_offset)));
        wgmma::fence();
        // 16 elements of K are 32 bytes: 2 in the descriptors' address field.
        unroll!(kk in [0, 1, 2, 3] {
            T::mma_async::<WN>(&mut acc, desc_a + 2 * kk as u64, desc_b + 2 * kk as u64);
        });
        wgmma::commit_group();
        add_row_squares::<T, BM>(a, &mut sum_sq);
        wgmma::wait_group::<WN, 1>(&mut acc);
        refill::<L, S>(ring, loader, step, k, origin);
        step += 1;
    }
    wgmma::wait_group::<WN, 0>(&mut acc);
    (acc, sum_sq)
}

/// One step of [`multiply_a_in_registers`]: this warp's A fragments from the landed stage, the
/// MMAs on them, their squares, then the wait for the previous step's MMAs. Returns the
/// fragments, in flight until the next step's wait.
///
/// # Safety
/// Every thread of the block, once per step, in order.
#[inline(always)]
unsafe fn step_a_in_registers<T: WgmmaElement, L: StageLoader, const WN: u32>(
    ring: Ring,
    loader: &L,
    ring_step: u32,
    a_offset: u32,
    (acc, sums): (&mut Acc, &mut [f32; 2]),
) -> [[u32; 4]; 4] {
    loader.wait(ring, ring_step);
    let (a, b) = ring.stage(ring_step);
    let desc_b = descriptor_k_major_sw128(b);
    let fragments = load_a_fragments(a.add(a_offset));
    wgmma::fence();
    unroll!(kk in [0, 1, 2, 3] {
        T::mma_async_rs::<WN>(acc, fragments[kk], desc_b + 2 * kk as u64);
    });
    wgmma::commit_group();
    add_fragment_squares::<T>(&fragments, sums);
    wgmma::wait_group::<WN, 1>(acc);
    fragments
}

/// [`multiply`]'s mainloop for 128-token tiles, where each warpgroup multiplies its own 64 rows:
/// A comes into registers (`ldmatrix`) and the squares from the same registers, so the `x` tile
/// is read from shared memory once per k-block, not twice (shared-memory bandwidth limits the
/// mainloop: bench/NOTES.md "A from registers"). Even steps load their fragments into one set,
/// odd steps into the other; a set is released ([`wgmma::release_fragments`]) after the wait
/// for its MMAs and only then loaded again, so each set can stay in the same registers across
/// the loop.
#[inline(always)]
unsafe fn multiply_a_in_registers<T: WgmmaElement, L: StageLoader, const BM: u32, const WN: u32, const S: u32>(
    ring: Ring,
    loader: &L,
    k: KRange,
    origin: (u32, u32),
    local: (u32, u32),
) -> (Acc, f32) {
    let a_offset = local.0 * SWIZZLE_ROW_BYTES;
    let mut acc: Acc = [0.0; 128];
    let mut sums = [0.0f32; 2];
    let (mut even, mut odd) = ([[0u32; 4]; 4], [[0u32; 4]; 4]);
    let mut step = 0;
    while step < k.count {
        even = step_a_in_registers::<T, L, WN>(ring, loader, k.ring_step + step, a_offset, (&mut acc, &mut sums));
        wgmma::release_fragments(&odd);
        refill::<L, S>(ring, loader, step, k, origin);
        step += 1;
        if step < k.count {
            odd = step_a_in_registers::<T, L, WN>(ring, loader, k.ring_step + step, a_offset, (&mut acc, &mut sums));
            wgmma::release_fragments(&even);
            refill::<L, S>(ring, loader, step, k, origin);
            step += 1;
        }
    }
    wgmma::wait_group::<WN, 0>(&mut acc);
    wgmma::release_fragments(&even);
    wgmma::release_fragments(&odd);
    let sum_sq = fragment_row_shares::<BM>(sums, ring.row_scales(), local.0);
    (acc, sum_sq)
}

/// This warp's A fragments of one k-block (four k16 slices) of its warpgroup's 64-row x tile at
/// `a` (128-byte swizzled, [`swizzled_offset`]): the warp's 16 rows `16 (warp % 4)..`, in the
/// layout [`WgmmaElement::mma_async_rs`] takes.
///
/// # Safety
/// Every lane of the warp; the tile has landed.
#[inline(always)]
unsafe fn load_a_fragments(a: SharedPtr) -> [[u32; 4]; 4] {
    let (warp, lane) = (thread_idx_x() / WARP_SIZE % 4, lane_id());
    // Lanes 0-7 and 16-23 address rows 0-7, lanes 8-15 and 24-31 rows 8-15; lanes from 16 on
    // the slice's second 8 columns (16 bytes).
    let row = 16 * warp + lane % 8 + 8 * (lane / 8 % 2);
    let mut fragments = [[0u32; 4]; 4];
    unroll!(kk in [0, 1, 2, 3] {
        fragments[kk] = a.add(swizzled_offset(row, 2 * kk as u32 + lane / 16)).ldmatrix_x4();
    });
    fragments
}

/// Adds the squares of this lane's A fragments to its sums of rows `lane / 4` and `+ 8` of the
/// warp's 16 (registers 0 and 2 hold the first row's elements, 1 and 3 the second's).
#[inline(always)]
fn add_fragment_squares<T: WgmmaElement>(fragments: &[[u32; 4]; 4], sums: &mut [f32; 2]) {
    unroll!(half in [0, 1] {
        unroll!(pair in [0, 1] {
            let (f0, f1) = (fragments[2 * pair], fragments[2 * pair + 1]);
            let values = T::unpack([f0[half], f0[half + 2], f1[half], f1[half + 2]]);
            sums[half] = add_squares::<T>(&values, sums[half]);
        });
    });
}

/// Adds up each row's sum of squares of [`add_fragment_squares`] over the row's quad of lanes,
/// and hands the warp's rows (`local_row0 + 16 (warp % 4) + lane / 4` and `+ 8`) with their sums
/// to `sink`, from the quad's first lane.
///
/// # Safety
/// Every lane of the warp.
#[inline(always)]
unsafe fn quad_row_sums(sums: [f32; 2], local_row0: u32, mut sink: impl FnMut(u32, f32)) {
    let mut sums = sums;
    unroll!(half in [0, 1] {
        sums[half] += shuffle_xor_f32(sums[half], 1);
        sums[half] += shuffle_xor_f32(sums[half], 2);
    });
    let tid = thread_idx_x_unhoisted();
    let (warp, lane) = (tid / WARP_SIZE % 4, tid % WARP_SIZE);
    if lane % 4 == 0 {
        let row = local_row0 + 16 * warp + lane / 4;
        sink(row, sums[0]);
        sink(row + 8, sums[1]);
    }
}

/// The sums of squares of [`add_fragment_squares`] as the per-thread shares the epilogue and
/// the partial exchanges take ([`add_row_squares`]'s mapping: thread `t` holds a share of row
/// `t / threads_per_row::<BM>()`): each row's quad adds its lanes' sums, its first lane leaves the row's
/// sum in `scratch` (one f32 per row of the tile), and the row's first thread in the other
/// mapping takes it (its other threads 0).
///
/// # Safety
/// Every thread of the block, after its last MMA of the tile; `scratch` not in use until the
/// reading thread writes it (the row scales: the epilogue's writer of a row is its reader here).
#[inline(always)]
unsafe fn fragment_row_shares<const BM: u32>(sums: [f32; 2], scratch: SharedPtr, local_row0: u32) -> f32 {
    quad_row_sums(sums, local_row0, |row, sum| scratch.offset_f32(row).store_f32(sum));
    sync_threads();
    let tid = thread_idx_x_unhoisted();
    let threads_per_row = threads_per_row::<BM>();
    if tid % threads_per_row == 0 {
        scratch.offset_f32(tid / threads_per_row).load_f32()
    } else {
        0.0
    }
}

/// A stream-K grid's workspace ([`kernel_abi::WgmmaTile::stream_workspace_bytes`]): a flag per
/// block, then a partial per block (see [`kernel_abi::WgmmaTile::stream_partial_floats`]).
#[derive(Clone, Copy)]
struct StreamWorkspace {
    base: u64,
    tile: WgmmaTile,
    blocks: u32,
    tiles: u32,
    k_blocks: u32,
    /// The tiles taken whole and the last wave's splits ([`kernel_abi::wgmma::stream_tail`]).
    tail: (u32, u32),
}

impl StreamWorkspace {
    #[inline(always)]
    fn flag(self, block: u32) -> *mut u32 {
        (self.base + block as u64 * 4) as usize as *mut u32
    }

    #[inline(always)]
    fn partial(self, block: u32) -> *mut f32 {
        let at = WgmmaTile::stream_flags_bytes(self.blocks) + block as u64 * self.tile.stream_partial_floats() as u64 * 4;
        (self.base + at) as usize as *mut f32
    }

    /// Leaves in this block's slot what the other blocks of its tail tile reduce: the
    /// accumulators and row-sum shares of the rows outside `bands` (this block's own), then
    /// raises its flag (a release: the block's stores before it are visible to whoever sees it).
    ///
    /// # Safety
    /// Every thread of the block, once per launch (a block's only split tile is its last).
    #[inline(always)]
    unsafe fn leave<const BM: u32, const WN: u32>(
        self,
        (acc, sum_sq): (&Acc, f32),
        block: u32,
        bands: (u32, u32),
        timeline: &Timeline,
    ) {
        let tid = thread_idx_x_unhoisted();
        let (warp, lane) = (tid / WARP_SIZE, tid % WARP_SIZE);
        let partial = self.partial(block);
        if !in_bands(acc_band::<BM>(warp), bands) {
            let chunk = partial.add((warp * self.tile.warp_partial_bytes() / 4) as usize);
            unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                          16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
                if (i as u32) < WN / 8 {
                    let at = chunk.add(4 * (i * WARP_SIZE as usize + lane as usize));
                    crate::mem::store_f32x4(at, [acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]]);
                }
            });
        }
        if !in_bands(row_sum_band::<BM>(tid), bands) {
            crate::mem::store_f32(partial.add((self.tile.tokens * self.tile.out_cols + tid) as usize), sum_sq);
        }
        sync_threads();
        timeline.stamp(ITEM_LEAVE_WRITTEN);
        if tid == 0 {
            crate::mem::fence_acq_rel_gpu();
            crate::mem::store_relaxed_gpu_u32(self.flag(block), 1);
        }
        timeline.stamp(ITEM_LEFT);
    }

    /// Adds to this block's accumulators and row-sum shares of `bands` those the other blocks of
    /// its tail tile (blocks `first_block..first_block + splits`, this one `rank`) left, in
    /// block order after its own: an order fixed by the grid, so the bits repeat. Waits for each
    /// block's flag, gathers its part in bulk copies into the (free) stages, completing on
    /// `landed`; the last of a partial's readers lowers its flag again for the next launch.
    ///
    /// # Safety
    /// Every thread of the block, after [`Self::leave`]; every block of the grid resident at once;
    /// `landed` an initialised mbarrier used only here, once per launch.
    #[inline(always)]
    unsafe fn gather<const BM: u32, const WN: u32>(
        self,
        (acc, sum_sq): (&mut Acc, &mut f32),
        ring: Ring,
        landed: SharedPtr,
        (first_block, rank, splits): (u32, u32, u32),
        bands: (u32, u32),
        timeline: &Timeline,
    ) {
        let tile = self.tile;
        let tid = thread_idx_x_unhoisted();
        let (warp_bytes, slot_bytes) = (tile.warp_partial_bytes(), tile.tail_slot_bytes(bands.1));
        let (band_warps, row_threads) = (tile.band_warps(bands.1), threads_per_row::<BM>() * BAND_ROWS);
        // The other blocks' slots in block order, this block's skipped.
        let slot = |peer: u32| ring.base.add((peer - (peer > rank) as u32) * slot_bytes);
        // Every generic access to the stages is done before the copy engine writes them.
        wgmma::fence_proxy_async_shared();
        sync_threads();
        if tid == 0 {
            mbarrier::arrive_expect_tx(landed, (splits - 1) * slot_bytes);
            let mut peer = 0;
            while peer < splits {
                if peer != rank {
                    while crate::mem::load_relaxed_gpu_u32(self.flag(first_block + peer)) == 0 {}
                    crate::mem::fence_acq_rel_gpu();
                    let partial = self.partial(first_block + peer).cast::<u8>();
                    // The bands' warps: one run, or one per warpgroup with 64 tokens.
                    let runs = if BM >= 128 { 1 } else { 2 };
                    let run_warps = band_warps / runs;
                    let mut run = 0;
                    while run < runs {
                        let first_warp = run * 4 + bands.0;
                        let src = partial.add((first_warp * warp_bytes) as usize);
                        tma::load_bulk(slot(peer).add(run * run_warps * warp_bytes), src, run_warps * warp_bytes, landed);
                        run += 1;
                    }
                    let sums = tile.tokens * tile.out_cols + row_threads * bands.0;
                    let src = partial.add(sums as usize * 4);
                    tma::load_bulk(slot(peer).add(band_warps * warp_bytes), src, row_threads * bands.1 * 4, landed);
                }
                peer += 1;
            }
        }
        timeline.stamp(ITEM_SEEN);
        mbarrier::wait_parity(landed, 0);
        timeline.stamp(ITEM_LANDED);
        if tid == 0 {
            let mut peer = 0;
            while peer < splits {
                let flag = self.flag(first_block + peer);
                // Read by `splits - 1` blocks: the last (the one that sees `splits - 1` before
                // its add, 1 from the writer and one per earlier reader) lowers it. Of two
                // blocks, the other is its only reader: a plain store lowers it, without
                // waiting for an atomic's answer while the block waits at the barrier below.
                if peer != rank && (splits == 2 || crate::mem::add_relaxed_gpu_u32(flag, 1) == splits - 1) {
                    crate::mem::store_relaxed_gpu_u32(flag, 0);
                }
                peer += 1;
            }
        }
        timeline.stamp(ITEM_LOWERED);
        let (warp, lane) = (tid / WARP_SIZE, tid % WARP_SIZE);
        if in_bands(acc_band::<BM>(warp), bands) {
            // This warp's place among the bands' warps in a slot.
            let at = band_warp_place::<BM>(warp, bands) * warp_bytes;
            unroll!(peer in [0, 1, 2, 3] {
                if (peer as u32) < splits && peer as u32 != rank {
                    add_warp_part::<WN>(acc, slot(peer as u32).add(at + 16 * lane));
                }
            });
        }
        if in_bands(row_sum_band::<BM>(tid), bands) {
            let at = band_warps * warp_bytes + 4 * (tid - row_threads * bands.0);
            unroll!(peer in [0, 1, 2, 3] {
                if (peer as u32) < splits && peer as u32 != rank {
                    *sum_sq += slot(peer as u32).add(at).load_f32();
                }
            });
        }
        // The stages are read: the epilogue may stage the output tile in them.
        sync_threads();
    }
}

// `gather` unrolls over this many blocks.
const _: () = assert!(kernel_abi::wgmma::MAX_TAIL_SPLITS == 4);

/// The band (16 rows, [`kernel_abi::wgmma::BAND_ROWS`]) of the tile whose accumulators warp
/// `warp` holds: warpgroup `g`'s warp `w % 4` holds rows `64 g + 16 (w % 4)..` with 128 tokens,
/// `16 (w % 4)..` with 64 (both warpgroups hold every row then).
#[inline(always)]
fn acc_band<const BM: u32>(warp: u32) -> u32 {
    if BM >= 128 {
        warp
    } else {
        warp % 4
    }
}

/// The band of the row whose sum-of-squares share thread `tid` adds ([`add_row_squares`]).
#[inline(always)]
fn row_sum_band<const BM: u32>(tid: u32) -> u32 {
    tid / threads_per_row::<BM>() / BAND_ROWS
}

/// The place of warp `warp` (whose accumulators hold rows of `bands`) among the bands' warps in
/// a partial of those bands: one run, or one per warpgroup with 64 tokens.
#[inline(always)]
fn band_warp_place<const BM: u32>(warp: u32, bands: (u32, u32)) -> u32 {
    if BM >= 128 {
        warp - bands.0
    } else {
        warp / 4 * bands.1 + warp % 4 - bands.0
    }
}

/// Adds to this lane's accumulators its part of a warp's accumulators laid out as a partial's
/// ([`kernel_abi::WgmmaTile::warp_partial_bytes`]: the lane's `i`-th four at `16 (32 i)` bytes
/// from `part`, which is the lane's own address).
///
/// # Safety
/// `part` 16-byte aligned in shared memory, the warp's part written and visible.
#[inline(always)]
unsafe fn add_warp_part<const WN: u32>(acc: &mut Acc, part: SharedPtr) {
    unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
        if (i as u32) < WN / 8 {
            let part = part.add(16 * WARP_SIZE * i as u32).load_f32x4();
            unroll!(c in [0, 1, 2, 3] {
                acc[4 * i + c] += part[c];
            });
        }
    });
}

/// Whether `band` is one of `bands` (`first`, `count`).
#[inline(always)]
fn in_bands(band: u32, (first, count): (u32, u32)) -> bool {
    band >= first && band < first + count
}

/// The kernel body; see the module docs for the launch contract. In clusters: split-K through
/// distributed shared memory ([`run_split_k`]); else the stream-K grid ([`run_stream`]; one block
/// per tile: the plain grid).
///
/// # Safety
/// The launch contract of this module.
#[inline(always)]
pub unsafe fn run<T: WgmmaElement, L: StageLoader, const BM: u32, const BN: u32, const WN: u32, const S: u32>(
    params: &QkvParams,
    loader: L,
) {
    let tile = WgmmaTile { tokens: BM, out_cols: BN, stages: S, load: L::LOAD };
    let ring = Ring { base: dynamic_shared_base().align_up(SWIZZLE_ATOM_BYTES), tile };
    loader.init(ring);
    // This warpgroup's 64 x WN share of the tile.
    let wg = thread_idx_x() / 128;
    let local = if BM >= 128 { (wg * 64, 0) } else { (0, wg * WN) };
    if cluster::cluster_blocks() > 1 {
        run_split_k::<T, L, BM, BN, WN, S>(params, &loader, ring, local);
    } else {
        run_stream::<T, L, BM, BN, WN, S>(params, &loader, ring, local);
    }
}

/// Split-K: the cluster's blocks share a tile (consecutive blocks, rank = block % splits), each
/// multiplies its k range, then each reduces and stores a share of the rows the tile stores,
/// adding the blocks' partials in rank order (so the bits do not depend on which block finished
/// first). Two ways, by [`kernel_abi::wgmma::split_pushes`]:
/// - pushed ([`push_partials`]): each block sends the other its accumulators of the other's
///   bands straight from registers into its freed stages, adds what it receives and stores its
///   bands through the unsplit tile's epilogue;
/// - pulled ([`reduce_partials`]): each block leaves its whole partial tile in its stages and
///   reads the others' parts of its rows from their shared memory, row by row.
///
/// # Safety
/// As [`run`], launched in clusters; the ring initialised.
#[inline(always)]
unsafe fn run_split_k<T: WgmmaElement, L: StageLoader, const BM: u32, const BN: u32, const WN: u32, const S: u32>(
    params: &QkvParams,
    loader: &L,
    ring: Ring,
    local: (u32, u32),
) {
    let (tile, shape) = (ring.tile, params.shape);
    let (rank, splits) = (cluster::block_rank(), cluster::cluster_blocks());
    let origin = tile_origin::<BM, BN>(block_idx_x() / splits, shape.m, shape.n());
    let (first, count) = k_range(shape.hidden.div_ceil(K_BLOCK), rank, splits);
    let k = KRange { first, count, ring_step: 0 };
    // The rows this tile stores, from its first own row to M or its end.
    let rows = (first_own_row::<BM>(origin.0), BM.min(shape.m - origin.0));
    let pushed = split_pushes(splits, rows);
    let mut timeline = Timeline::begin(params);
    prefetch_then_wait::<L, S>(ring, loader, (k, origin), params);
    timeline.step(block_idx_x() / splits, first, count);
    let bias = if BM >= 128 && pushed { Some(fetch_col_bias::<T>(tile, origin.1, params)) } else { None };
    let (acc, sum_sq) = multiply::<T, L, BM, WN, S>(ring, loader, (k, 0), origin, local);
    timeline.stamp(ITEM_MULTIPLIED);
    if pushed {
        push_partials::<T, BM, WN>((acc, sum_sq), ring, (rank, splits), (origin, local, rows), bias, params, &mut timeline);
    } else {
        let scales = ring.row_scales();
        row_sums::<BM>(sum_sq, |row, sum| scales.offset_f32(row).store_f32(sum));
        // Every MMA is done and the stages are free.
        sync_threads();
        store_partial::<WN>(&acc, ring.base, ring.tile, local);
        load_col_bias::<T>(ring.col_bias(), ring.tile, origin.1, params);
        // Every block's partial tile, row sums and column biases are complete and visible
        // cluster-wide...
        cluster::sync_cluster();
        reduce_partials::<T, BM>(ring, (rank, splits), origin, rows, params);
        // ...and no block exits (freeing its shared memory) while another still reads it.
        cluster::sync_cluster();
    }
    timeline.end();
}

/// Split-K, pushed (see [`run_split_k`]): sends the other blocks of the cluster this block's
/// accumulators and row-sum shares of their bands ([`send_parts`]; bands:
/// [`kernel_abi::wgmma::split_bands`] of the stored `rows`), adds theirs of its own bands
/// ([`add_parts`]) and stores those bands as an unsplit tile's epilogue does. Two mbarriers of the
/// ring that only the persistent kernel uses otherwise: "landed", complete when the others'
/// parts have landed here, and "taken", complete when each block this one sent to has seen its
/// parts land, so that no block exits while its `st.async` stores are on their way.
///
/// # Safety
/// Every thread of the block, after its last MMA wait, as [`run_split_k`].
#[inline(always)]
unsafe fn push_partials<T: WgmmaElement, const BM: u32, const WN: u32>(
    (mut acc, mut sum_sq): (Acc, f32),
    ring: Ring,
    (rank, splits): (u32, u32),
    (origin, local, rows): ((u32, u32), (u32, u32), (u32, u32)),
    bias: Option<f32>,
    params: &QkvParams,
    timeline: &mut Timeline,
) {
    let tile = ring.tile;
    let bands_of = |r: u32| split_bands(rows.0, rows.1, r, splits);
    let mine = bands_of(rank);
    let (landed, taken) = (ring.empty(0), ring.empty(1));
    if thread_idx_x() == 0 {
        // The blocks this one sends to each arrive on "taken" once.
        let mut receivers = 0;
        let mut peer = 0;
        while peer < splits {
            receivers += (peer != rank && bands_of(peer).1 > 0) as u32;
            peer += 1;
        }
        mbarrier::init(landed, 1);
        mbarrier::init(taken, receivers + 1);
        mbarrier::fence_init();
        mbarrier::arrive_expect_tx(landed, (splits - 1) * tile.tail_slot_bytes(mine.1));
        mbarrier::arrive(taken);
    }
    timeline.stamp(ITEM_LEAVE_WRITTEN);
    // Every block's MMAs are done with its stages, and its barriers are set up.
    cluster::sync_cluster();
    timeline.stamp(ITEM_LEFT);
    send_parts::<BM, WN>((&acc, sum_sq), ring, landed, (rank, splits), bands_of);
    timeline.stamp(ITEM_SEEN);
    mbarrier::wait_parity(landed, 0);
    timeline.stamp(ITEM_LANDED);
    // The senders may go.
    if thread_idx_x() == 0 && mine.1 > 0 {
        let mut peer = 0;
        while peer < splits {
            if peer != rank {
                mbarrier::arrive_in_block(taken, peer);
            }
            peer += 1;
        }
    }
    add_parts::<BM, WN>((&mut acc, &mut sum_sq), ring, (rank, splits), mine);
    // The stages are read: the epilogue may stage the output tile in them.
    sync_threads();
    timeline.stamp(ITEM_LOWERED);
    let band_rows = (mine.0 * BAND_ROWS, (mine.0 + mine.1) * BAND_ROWS);
    let (scales, col_bias, staged) = (ring.row_scales(), ring.col_bias(), ring.staged_at(ring.base));
    let (sync, timeline) = (|| sync_threads(), &*timeline);
    let epilogue = Epilogue { tile, scales, col_bias, bias, staged, origin, local, rows: band_rows, sync, timeline };
    epilogue.store::<T, BM, WN>(&acc, sum_sq, params);
    mbarrier::wait_parity(taken, 0);
}

/// Where block `rank` of a split-K cluster keeps what block `sender` sends it ([`send_parts`])
/// in its stages at `base`, for its `bands`: one slot per other block in rank order
/// ([`kernel_abi::WgmmaTile::tail_slot_bytes`]; the warps' accumulators, then the row-sum shares).
#[inline(always)]
fn split_slot(base: SharedPtr, tile: WgmmaTile, (sender, rank): (u32, u32), bands: u32) -> SharedPtr {
    base.add((sender - (sender > rank) as u32) * tile.tail_slot_bytes(bands))
}

/// The offsets in a slot of [`split_slot`] for `bands` of this thread's accumulators (where its
/// warp holds rows of them) and of its row-sum share (where its row is in them).
#[inline(always)]
fn slot_offsets<const BM: u32>(tile: WgmmaTile, bands: (u32, u32)) -> (Option<u32>, Option<u32>) {
    let tid = thread_idx_x_unhoisted();
    let (warp, lane) = (tid / WARP_SIZE, tid % WARP_SIZE);
    let warp_bytes = tile.warp_partial_bytes();
    let acc = in_bands(acc_band::<BM>(warp), bands).then(|| band_warp_place::<BM>(warp, bands) * warp_bytes + 16 * lane);
    let row_threads = threads_per_row::<BM>() * BAND_ROWS;
    let sum = in_bands(row_sum_band::<BM>(tid), bands)
        .then(|| tile.band_warps(bands.1) * warp_bytes + 4 * (tid - row_threads * bands.0));
    (acc, sum)
}

/// Split-K: this block's accumulators and row-sum shares of every other block's bands
/// (`bands_of(rank)`) into that block's slot for this one ([`split_slot`]), with `st.async`
/// completing on its `landed` mbarrier.
///
/// # Safety
/// Every thread of the block, after its last MMA wait, once every block of the cluster has
/// freed its stages and set up `landed` to expect its bytes (a cluster barrier since).
#[inline(always)]
unsafe fn send_parts<const BM: u32, const WN: u32>(
    (acc, sum_sq): (&Acc, f32),
    ring: Ring,
    landed: SharedPtr,
    (rank, splits): (u32, u32),
    bands_of: impl Fn(u32) -> (u32, u32),
) {
    unroll!(peer in [0, 1, 2, 3, 4, 5, 6, 7] {
        let peer = peer as u32;
        if peer < splits && peer != rank {
            let bands = bands_of(peer);
            let slot = split_slot(ring.base, ring.tile, (rank, peer), bands.1);
            let remote_landed = ClusterPtr::map(landed, peer);
            let (acc_at, sum_at) = slot_offsets::<BM>(ring.tile, bands);
            if let Some(at) = acc_at {
                let part = slot.add(at);
                unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                              16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
                    if (i as u32) < WN / 8 {
                        let value = [acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]];
                        ClusterPtr::map(part.add(16 * WARP_SIZE * i as u32), peer).store_async_f32x4(value, remote_landed);
                    }
                });
            }
            if let Some(at) = sum_at {
                ClusterPtr::map(slot.add(at), peer).store_async_f32(sum_sq, remote_landed);
            }
        }
    });
}

/// Split-K: adds to this block's accumulators and row-sum shares of its `bands` what the other
/// blocks of its cluster sent ([`send_parts`]), in rank order after its own.
///
/// # Safety
/// Every thread of the block, once the sent parts have landed.
#[inline(always)]
unsafe fn add_parts<const BM: u32, const WN: u32>(
    (acc, sum_sq): (&mut Acc, &mut f32),
    ring: Ring,
    (rank, splits): (u32, u32),
    bands: (u32, u32),
) {
    let (acc_at, sum_at) = slot_offsets::<BM>(ring.tile, bands);
    unroll!(peer in [0, 1, 2, 3, 4, 5, 6, 7] {
        let peer = peer as u32;
        if peer < splits && peer != rank {
            let slot = split_slot(ring.base, ring.tile, (peer, rank), bands.1);
            if let Some(at) = acc_at {
                add_warp_part::<WN>(acc, slot.add(at));
            }
            if let Some(at) = sum_at {
                *sum_sq += slot.add(at).load_f32();
            }
        }
    });
}

/// The stream-K grid: this block's walk ([`Walk`]) of whole tiles, then its part of a tile of
/// the last wave: each block of a tile's split leaves in the workspace what the others store,
/// adds the others' parts of its own band of rows ([`kernel_abi::wgmma::tail_bands`]) and
/// stores that band.
///
/// # Safety
/// As [`run`], without clusters, every block resident at once; the ring initialised.
#[inline(always)]
unsafe fn run_stream<T: WgmmaElement, L: StageLoader, const BM: u32, const BN: u32, const WN: u32, const S: u32>(
    params: &QkvParams,
    loader: &L,
    ring: Ring,
    local: (u32, u32),
) {
    let (tile, shape) = (ring.tile, params.shape);
    let k_blocks = shape.hidden.div_ceil(K_BLOCK);
    let (tiles, blocks) = (tile.tiles(shape.m, shape.n()), grid_dim_x());
    let tail = stream_tail(tiles, blocks, k_blocks);
    let stream = StreamWorkspace { base: params.workspace, tile, blocks, tiles, k_blocks, tail };
    // Whole tiles `block, block + blocks, ..` below `dp_tiles` first, then this block's steps.
    let dp_tiles = tail.0;
    let (unit, end) = stream_tail_units(tiles, k_blocks, tail, block_idx_x());
    // Completes when the other blocks' partials of a tail tile have landed in the stages (the
    // ring's first "empty" barrier, which only the persistent kernel uses otherwise).
    let landed = ring.empty(0);
    let mut timeline = Timeline::begin(params);
    if thread_idx_x() == 0 {
        mbarrier::init(landed, 1);
        mbarrier::fence_init();
    }
    sync_threads();
    let mut walk = Walk { dp_tile: block_idx_x(), dp_tiles, blocks, unit, end, k_blocks };
    let mut next = walk.next();
    match next {
        Some((tile_index, first, count)) => {
            let origin = tile_origin::<BM, BN>(tile_index, shape.m, shape.n());
            prefetch_then_wait::<L, S>(ring, loader, (KRange { first, count, ring_step: 0 }, origin), params);
        }
        None => dependency::wait_then_launch_dependents(),
    }
    let mut ring_step = 0;
    let mut prefetched = 0;
    while let Some((tile_index, first, count)) = next {
        let origin = tile_origin::<BM, BN>(tile_index, shape.m, shape.n());
        if ring_step > 0 {
            // The last tile's epilogue wrote the stages through the generic proxy; the copy
            // engine writes them next.
            wgmma::fence_proxy_async_shared();
            sync_threads();
        }
        let k = KRange { first, count, ring_step };
        timeline.step(tile_index, first, count);
        // (Not on 64-row tiles: the register it holds through the mainloop took them to 128, and
        // 1-3 % slower at 256-1024 tokens; H200, bench/results/h200-exchange/bias.)
        let bias = if BM >= 128 { Some(fetch_col_bias::<T>(tile, origin.1, params)) } else { None };
        let (mut acc, mut sum_sq) = multiply::<T, L, BM, WN, S>(ring, loader, (k, prefetched), origin, local);
        timeline.stamp(ITEM_MULTIPLIED);
        ring_step += count;
        prefetched = 0;
        next = walk.next();
        let (staged, rows) = if count < k_blocks {
            // A tail tile, split between `splits` consecutive blocks (this block's last item):
            // each leaves what the others store, then adds the others' parts of its own rows.
            let (splits, rank) = (tail.1, block_idx_x() % tail.1);
            let bands = tail_bands(BM, rank, splits);
            stream.leave::<BM, WN>((&acc, sum_sq), block_idx_x(), bands, &timeline);
            let blocks = (block_idx_x() - rank, rank, splits);
            stream.gather::<BM, WN>((&mut acc, &mut sum_sq), ring, landed, blocks, bands, &timeline);
            // The stages are free (every MMA waited for, the partials added): they hold the
            // staged output tile.
            (ring.staged_at(ring.base), (bands.0 * BAND_ROWS, (bands.0 + bands.1) * BAND_ROWS))
        } else if let Some((next_tile, next_first, next_count)) = next {
            // A whole tile and another after it: that one's first `S - 2` k-blocks load while
            // this one is stored, the staged output tile in the two stages they leave free.
            prefetched = S - 2;
            let next_k = KRange { first: next_first, count: next_count, ring_step };
            let next_origin = tile_origin::<BM, BN>(next_tile, shape.m, shape.n());
            load_ahead(ring, loader, next_k, next_origin, (0, prefetched));
            ([ring.stage(ring_step + prefetched).0, ring.stage(ring_step + prefetched + 1).0], (0, BM))
        } else {
            (ring.staged_at(ring.base), (0, BM))
        };
        let (scales, col_bias) = (ring.row_scales(), ring.col_bias());
        let (sync, timeline) = (|| sync_threads(), &timeline);
        let epilogue = Epilogue { tile, scales, col_bias, bias, staged, origin, local, rows, sync, timeline };
        epilogue.store::<T, BM, WN>(&acc, sum_sq, params);
    }
    timeline.end();
}

/// A stream-K block's walk: whole tiles `block, block + blocks, ..` below `dp_tiles`, then the
/// steps `unit..end`, as (tile, first k-block, k-blocks).
struct Walk {
    dp_tile: u32,
    dp_tiles: u32,
    blocks: u32,
    unit: u64,
    end: u64,
    k_blocks: u32,
}

impl Walk {
    #[inline(always)]
    fn next(&mut self) -> Option<(u32, u32, u32)> {
        let k_blocks = self.k_blocks;
        if self.dp_tile < self.dp_tiles {
            self.dp_tile += self.blocks;
            Some((self.dp_tile - self.blocks, 0, k_blocks))
        } else if self.unit < self.end {
            let (tile, first) = ((self.unit / k_blocks as u64) as u32, (self.unit % k_blocks as u64) as u32);
            let left = self.end - self.unit;
            let count = if left < (k_blocks - first) as u64 { left as u32 } else { k_blocks - first };
            self.unit += count as u64;
            Some((tile, first, count))
        } else {
            None
        }
    }
}

/// Steps 4 and 5 of an unsplit tile: what the epilogue needs besides the accumulators.
struct Epilogue<'a, F: Fn()> {
    tile: WgmmaTile,
    /// The row scales, one f32 per row of the tile.
    scales: SharedPtr,
    /// The column biases, one f32 per column of the tile ([`Ring::col_bias`]).
    col_bias: SharedPtr,
    /// This thread's column bias, fetched ahead ([`fetch_col_bias`]), or `None`: loaded in
    /// the epilogue.
    bias: Option<f32>,
    /// Room for the staged output tile, `out_pitch` bytes per row: its first `tokens / 2` rows
    /// at the first, the others at the second.
    staged: [SharedPtr; 2],
    /// The tile's first row and column of `y`.
    origin: (u32, u32),
    /// This warpgroup's first row and column in the tile.
    local: (u32, u32),
    /// The tile's rows to store, `first..end` (all but where blocks share a tile).
    rows: (u32, u32),
    /// The barrier of the threads that multiply.
    sync: F,
    /// Where the epilogue's steps are stamped (nothing outside measurement builds).
    timeline: &'a Timeline,
}

impl<F: Fn()> Epilogue<'_, F> {
    #[inline(always)]
    fn sync_then_stamp(&self, word: usize) {
        (self.sync)();
        self.timeline.stamp(word);
    }

    /// Row scales from the row sums, then `y` to q, k and v: through the staged tile in 16-byte
    /// pieces where q_cols and kv_cols are multiples of 8 and q, k, v 16-byte aligned, else pair
    /// by pair. Ends with a barrier, so the scales and the staged tile may be reused at once.
    ///
    /// # Safety
    /// Every multiplying thread calls it, after its last MMA wait; the staged tile must not be
    /// in use by anyone else.
    #[inline(always)]
    unsafe fn store<T: WgmmaElement, const BM: u32, const WN: u32>(&self, acc: &Acc, sum_sq: f32, params: &QkvParams) {
        let (tile, scales, staged, origin, local, rows) = (self.tile, self.scales, self.staged, self.origin, self.local, self.rows);
        let rows = (rows.0.max(first_own_row::<BM>(origin.0)), rows.1);
        let shape = params.shape;
        let out = params.outputs::<T>();
        let coalesced = coalesced_outputs::<T>(params);
        let has_bias = !params.bias::<T>().is_null();
        if coalesced {
            // Fetched ahead, or loaded now while the row sums are added up.
            let bias = self.bias.unwrap_or_else(|| fetch_col_bias::<T>(tile, origin.1, params));
            store_col_bias::<T>(self.col_bias, tile, bias, params);
        }
        row_sums::<BM>(sum_sq, |row, sum| {
            scales.offset_f32(row).store_f32(row_scale(sum, shape.hidden, params.eps, params.out_scale))
        });
        self.sync_then_stamp(ITEM_SCALED);
        let warpgroup_origin = (origin.0 + local.0, origin.1 + local.1);
        let pairs = (acc, scales, local, warpgroup_origin);
        if coalesced {
            let smem = (scales, self.col_bias);
            if has_bias {
                stage_tile::<T, WN, true>(acc, smem, staged, tile, local);
            } else {
                stage_tile::<T, WN, false>(acc, smem, staged, tile, local);
            }
            self.sync_then_stamp(ITEM_STAGED);
            copy_out_tile::<T>(staged, tile, origin, rows, (thread_idx_x_unhoisted(), multiplying_threads(BM)), params);
        } else {
            for_each_pair_by_bias::<T, WN>(has_bias, pairs, params, |row, col, r, pair| {
                if r >= rows.0 && r < rows.1 {
                    let (dst, cols, c) = destination(out, shape, col);
                    crate::mem::store_u32(dst.add(row as usize * cols as usize + c as usize).cast(), pair)
                }
            });
        }
        self.sync_then_stamp(ITEM_STORED);
    }
}

/// Rows of a ping-pong warpgroup's tile ([`run_persistent`]).
const OWN_ROWS: u32 = 64;

/// Named barriers of the ping-pong kernel (0 is the block's): warpgroup `g`'s turn at the
/// tensor cores is barrier `MATH_TURN + g`, its turn at the staged output tile
/// `EPILOGUE_TURN + g` (both between the two warpgroups), and `WARPGROUP_BARRIER + g` is its
/// own 128 threads'.
const MATH_TURN: u32 = 1;
const EPILOGUE_TURN: u32 = 3;
const WARPGROUP_BARRIER: u32 = 5;

/// A turn handed between the two consumer warpgroups of the ping-pong kernel, on a pair of
/// named barriers (`first` + the warpgroup that takes it): the one that holds it passes it
/// (`bar.arrive`, without waiting), the other takes it (`bar.sync`).
#[derive(Clone, Copy)]
struct Turn {
    first: u32,
}

impl Turn {
    /// Waits until the other warpgroup has passed the turn to warpgroup `g`.
    ///
    /// # Safety
    /// Every thread of warpgroup `g`, once per [`Turn::pass`] of the other one.
    #[inline(always)]
    unsafe fn take(self, g: u32) {
        sync_named(self.first + g, THREADS);
    }

    /// Passes the turn from warpgroup `g` to the other one; what `g` wrote to shared memory
    /// before is visible to it once it has taken the turn.
    ///
    /// # Safety
    /// Every thread of warpgroup `g`, once per [`Turn::take`] of the other one.
    #[inline(always)]
    unsafe fn pass(self, g: u32) {
        arrive_named(self.first + 1 - g, THREADS);
    }
}

/// Releases `step`'s stage to the producers of both blocks of the cluster (each multicasts
/// into it): every lane of the warp is done with it (its MMAs waited for, its row sums added),
/// then one arrival for the warp on each block's "empty" mbarrier.
///
/// # Safety
/// All lanes of a multiplying warp, once per step, after the step's MMAs are waited for.
#[inline(always)]
unsafe fn release(ring: Ring, step: u32) {
    sync_warp();
    if lane_id() == 0 {
        let rank = cluster::block_rank();
        mbarrier::arrive(ring.empty(step));
        let mut peer = 1;
        while peer < PERSISTENT_CLUSTER {
            mbarrier::arrive_in_block(ring.empty(step), (rank + peer) % PERSISTENT_CLUSTER);
            peer += 1;
        }
    }
}

/// A persistent block's place: its cluster's cluster tiles (`cluster, cluster + clusters, ..`
/// of `count`), and its rank, the 64-row half of each it multiplies.
#[derive(Clone, Copy)]
struct ClusterWalk {
    cluster: u32,
    clusters: u32,
    count: u32,
    rank: u32,
}

impl ClusterWalk {
    #[inline(always)]
    fn of_block(tile: WgmmaTile, shape: Shape) -> ClusterWalk {
        let (cluster, clusters) = (block_idx_x() / PERSISTENT_CLUSTER, grid_dim_x() / PERSISTENT_CLUSTER);
        let count = tile.cluster_tiles(shape.m, shape.n()).saturating_sub(cluster).div_ceil(clusters);
        ClusterWalk { cluster, clusters, count, rank: cluster::block_rank() }
    }

    /// The block's `i`-th tile: its first row and column of `y` (the cluster tile's, moved up to
    /// end at row `M` as [`tile_origin`] does, plus 64 rows for rank 1), and the rows of it the
    /// block stores (none where the cluster tile's half is wholly past `M` or the tile above's).
    #[inline(always)]
    fn tile<const BN: u32>(self, i: u32, shape: Shape) -> ((u32, u32), (u32, u32)) {
        const CLUSTER_ROWS: u32 = OWN_ROWS * PERSISTENT_CLUSTER;
        let (row0, col0) = tile_origin::<CLUSTER_ROWS, BN>(self.cluster + i * self.clusters, shape.m, shape.n());
        let offset = self.rank * OWN_ROWS;
        let first = first_own_row::<CLUSTER_ROWS>(row0).saturating_sub(offset);
        let first = if row0 + offset >= shape.m { OWN_ROWS } else { first.min(OWN_ROWS) };
        ((row0 + offset, col0), (first, OWN_ROWS))
    }
}

/// The ping-pong kernel's producer: for every tile of this block in order, every k-block into
/// the next stage once the warpgroups of both blocks of the cluster that multiplied its last use
/// have released it: this block's `x` rows, and its half of the `W'` tile into both blocks
/// (multicast). Runs up to the whole ring ahead, across tiles.
///
/// # Safety
/// One thread; the ring's barriers initialised in both blocks and a cluster barrier passed since.
#[inline(always)]
unsafe fn produce<const BN: u32>(ring: Ring, loader: &Tma, shape: Shape) {
    let tile = ring.tile;
    let stages = tile.stages;
    let walk = ClusterWalk::of_block(tile, shape);
    let k_blocks = shape.hidden.div_ceil(K_BLOCK);
    let half = tile.w_box_rows();
    let mut step = 0;
    let mut i = 0;
    while i < walk.count {
        let ((row0, col0), _) = walk.tile::<BN>(i, shape);
        let mut k_block = 0;
        while k_block < k_blocks {
            if step >= stages {
                // The stage's previous use (phase step / stages - 1) is released.
                mbarrier::wait_parity(ring.empty(step), (step / stages + 1) % 2);
            }
            let (a, b) = ring.stage(step);
            let full = ring.full(step);
            let h = k_block * K_BLOCK;
            // This block's x rows, and both halves of W' (one from each block's producer).
            mbarrier::arrive_expect_tx(full, tile.stage_tx_bytes(loader.m));
            tma::load_2d(a, loader.x_map, h, row0, full);
            let own_half = b.add(walk.rank * half * SWIZZLE_ROW_BYTES);
            let every_block = ((1u32 << PERSISTENT_CLUSTER) - 1) as u16;
            tma::load_2d_multicast(own_half, loader.w_map, (h, col0 + walk.rank * half), full, every_block);
            step += 1;
            k_block += 1;
        }
        i += 1;
    }
}

/// Steps 2 and 3 of a ping-pong warpgroup's own 64-row tile, the k-blocks `k` (every k-block
/// of `H`): A in registers as in [`multiply_a_in_registers`], each stage waited for on its
/// "full" mbarrier and released on its "empty" one. `issued` runs once the last stage has been
/// waited for and its MMAs issued (the other warpgroup may then take the tensor cores). Returns
/// the accumulators, every MMA waited for, and this lane's sums of squares of its two rows.
///
/// # Safety
/// Every thread of the warpgroup, holding the turn at the tensor cores.
#[inline(always)]
unsafe fn multiply_own_tile<T: WgmmaElement, const BN: u32>(
    ring: Ring,
    loader: &Tma,
    k: KRange,
    issued: impl FnOnce(),
) -> (Acc, [f32; 2]) {
    let mut acc: Acc = [0.0; 128];
    let mut sums = [0.0f32; 2];
    let (mut even, mut odd) = ([[0u32; 4]; 4], [[0u32; 4]; 4]);
    let mut step = 0;
    while step < k.count {
        even = step_a_in_registers::<T, Tma, BN>(ring, loader, k.ring_step + step, 0, (&mut acc, &mut sums));
        wgmma::release_fragments(&odd);
        if step > 0 {
            release(ring, k.ring_step + step - 1);
        }
        step += 1;
        if step < k.count {
            odd = step_a_in_registers::<T, Tma, BN>(ring, loader, k.ring_step + step, 0, (&mut acc, &mut sums));
            wgmma::release_fragments(&even);
            release(ring, k.ring_step + step - 1);
            step += 1;
        }
    }
    issued();
    wgmma::wait_group::<BN, 0>(&mut acc);
    wgmma::release_fragments(&even);
    wgmma::release_fragments(&odd);
    if k.count > 0 {
        release(ring, k.ring_step + k.count - 1);
    }
    (acc, sums)
}

/// Step 4 of a ping-pong tile: each row's `rms_inv * out_scale` from the sums of squares of
/// [`add_fragment_squares`] (a quad of lanes per row) into `scales`, the warpgroup's 64 rows.
/// Each warp reads only its own 16 rows, so a warp's sync orders it.
///
/// # Safety
/// Every lane of the warp.
#[inline(always)]
unsafe fn store_own_row_scales(sums: [f32; 2], scales: SharedPtr, params: &QkvParams) {
    quad_row_sums(sums, 0, |row, sum| {
        scales.offset_f32(row).store_f32(row_scale(sum, params.shape.hidden, params.eps, params.out_scale))
    });
    sync_warp();
}

/// The column biases of a tile at column `col0` (0 past N) into `col_bias` by the 128 threads of
/// a warpgroup, where there is a bias; a barrier of the warpgroup must follow before they are
/// read.
///
/// # Safety
/// Every thread of the warpgroup, holding the turn at the staged output tile.
#[inline(always)]
unsafe fn load_col_bias_by_warpgroup<T: WgmmaElement>(col_bias: SharedPtr, tile: WgmmaTile, col0: u32, params: &QkvParams) {
    let bias = params.bias::<T>();
    if bias.is_null() {
        return;
    }
    let mut c = thread_idx_x_unhoisted() % WARPGROUP_THREADS;
    while c < tile.out_cols {
        let col = col0 + c;
        let value = if col < params.shape.n() { T::load(bias.add(col as usize)) } else { 0.0 };
        col_bias.offset_f32(c).store_f32(value);
        c += WARPGROUP_THREADS;
    }
}

/// The ping-pong kernel's consumer warpgroup `g`: tiles `g, g + 2, ..` of the block's tiles
/// ([`ClusterWalk`]). Per tile: its turn at the tensor cores (after the other warpgroup has
/// issued its last MMAs of the tile before), steps 2-3, the row scales, then its turn at the
/// staged output tile and step 5, while the other warpgroup multiplies the next tile.
///
/// # Safety
/// The 128 threads of consumer warpgroup `g`; the ring's barriers initialised.
#[inline(always)]
unsafe fn consume<T: WgmmaElement, const BN: u32>(ring: Ring, loader: &Tma, params: &QkvParams, g: u32) {
    let (tile, shape) = (ring.tile, params.shape);
    let walk = ClusterWalk::of_block(tile, shape);
    let (count, k_blocks) = (walk.count, shape.hidden.div_ceil(K_BLOCK));
    let (math, epilogue) = (Turn { first: MATH_TURN }, Turn { first: EPILOGUE_TURN });
    let coalesced = coalesced_outputs::<T>(params);
    let has_bias = !params.bias::<T>().is_null();
    let scales = ring.row_scales().add(g * OWN_ROWS * 4);
    let mut i = g;
    while i < count {
        let (origin, own_rows) = walk.tile::<BN>(i, shape);
        let next = i + 1 < count;
        if i > 0 {
            math.take(g);
        }
        let k = KRange { first: 0, count: k_blocks, ring_step: i * k_blocks };
        let (acc, sums) = multiply_own_tile::<T, BN>(ring, loader, k, || {
            if next {
                math.pass(g)
            }
        });
        store_own_row_scales(sums, scales, params);
        if coalesced {
            if i > 0 {
                epilogue.take(g);
            }
            let (col_bias, staged) = (ring.col_bias(), ring.staged_at(ring.out_tile()));
            load_col_bias_by_warpgroup::<T>(col_bias, tile, origin.1, params);
            sync_named(WARPGROUP_BARRIER + g, WARPGROUP_THREADS);
            if has_bias {
                stage_tile::<T, BN, true>(&acc, (scales, col_bias), staged, tile, (0, 0));
            } else {
                stage_tile::<T, BN, false>(&acc, (scales, col_bias), staged, tile, (0, 0));
            }
            sync_named(WARPGROUP_BARRIER + g, WARPGROUP_THREADS);
            let copier = (thread_idx_x_unhoisted() % WARPGROUP_THREADS, WARPGROUP_THREADS);
            copy_out_tile::<T>(staged, tile, origin, own_rows, copier, params);
            if next {
                epilogue.pass(g);
            }
        } else {
            let (out, pairs) = (params.outputs::<T>(), (&acc, scales, (0, 0), origin));
            for_each_pair_by_bias::<T, BN>(has_bias, pairs, params, |row, col, r, pair| {
                if r >= own_rows.0 {
                    let (dst, cols, c) = destination(out, shape, col);
                    crate::mem::store_u32(dst.add(row as usize * cols as usize + c as usize).cast(), pair)
                }
            });
        }
        i += 2;
    }
}

/// The persistent ping-pong kernel body ([`Load::TmaProducer`] tiles: 64 x `BN`, `S` stages):
/// clusters of [`PERSISTENT_CLUSTER`] blocks, one block per multiprocessor, walk the 128-row
/// cluster tiles ([`ClusterWalk`], the raster order of [`tile_origin`]); each block's two
/// consumer warpgroups (warps 0-7) take its 64-row halves in turn; warp 8's first lane produces.
/// Launch contract as for [`run`], with the tile's threads, grid and clusters
/// ([`kernel_abi::WgmmaTile::launch`]).
///
/// # Safety
/// The launch contract.
#[inline(always)]
pub unsafe fn run_persistent<T: WgmmaElement, const BN: u32, const S: u32>(params: &QkvParams, loader: Tma) {
    let tile = WgmmaTile { tokens: OWN_ROWS, out_cols: BN, stages: S, load: Load::TmaProducer };
    let ring = Ring { base: dynamic_shared_base().align_up(SWIZZLE_ATOM_BYTES), tile };
    if thread_idx_x() == 0 {
        let mut slot = 0;
        while slot < S {
            mbarrier::init(ring.full(slot), 1);
            // Every multiplying warp of the cluster releases each stage (both producers write it).
            mbarrier::init(ring.empty(slot), CONSUMER_WARPS * PERSISTENT_CLUSTER);
            slot += 1;
        }
        mbarrier::fence_init();
    }
    // The barriers are initialised in every block before any is multicast into or arrived on.
    cluster::sync_cluster();
    // Nothing prefetched before the wait (yet).
    dependency::wait_then_launch_dependents();
    if thread_idx_x() >= THREADS {
        if thread_idx_x() == THREADS {
            produce::<BN>(ring, &loader, params.shape);
        }
        sync_warp();
    } else {
        consume::<T, BN>(ring, &loader, params, thread_idx_x() / WARPGROUP_THREADS);
    }
    // No block exits while the other may still multicast into it or arrive on its barriers.
    cluster::sync_cluster();
}
