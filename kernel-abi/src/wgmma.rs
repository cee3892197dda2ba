//! The Hopper prefill kernel (`kernel-gpu/src/family/wgmma.rs`, sm_90a): `tokens x out_cols`
//! tiles of `y` on `wgmma`, two warpgroups per block, a ring of `stages` shared-memory stages
//! filled by TMA or `cp.async`. bf16 and f16; needs `hidden % 8 == 0`, even `q_cols` and
//! `kv_cols`, 16-byte aligned `x` and 4-byte aligned outputs.
//!
//! Persistent tiles ([`Load::TmaProducer`]): one block per multiprocessor walks the tiles
//! `block, block + grid, ..`; a producer warp of its own keeps a ring of stages full through TMA
//! (per-stage "full" and "empty" mbarriers, no block-wide barrier in the mainloop) while the two
//! consumer warpgroups multiply, and keeps loading the next tile while they store this one (the
//! output tile is staged in shared memory of its own, not in the ring).
//!
//! Split-K: launched in clusters of `splits` blocks (2 to [`MAX_SPLITS`]), the blocks of a
//! cluster share one tile and each multiplies its share of `H` ([`k_range`]); their fp32
//! partial tiles meet in distributed shared memory and are added in rank order, so the result
//! does not depend on timing. This puts more multiprocessors on a tile where the tiles alone
//! would leave them idle (few tokens) or end in a part-empty wave.

use crate::Launch;

/// Threads per block that multiply (two warpgroups): every thread of the block, except the
/// producer warp of [`Load::TmaProducer`] tiles ([`WgmmaTile::threads`]).
pub const THREADS: u32 = 256;
/// Warps that multiply: each releases a stage (arrives on its "empty" mbarrier) when done with it.
pub const CONSUMER_WARPS: u32 = THREADS / crate::WARP_SIZE;
/// Elements of `H` per k-block: one 128-byte swizzled row of a 16-bit dtype.
pub const K_BLOCK: u32 = 64;
/// Bytes of one row of a 128-byte-swizzled K-major tile.
pub const SWIZZLE_ROW_BYTES: u32 = 128;
/// Bytes of one swizzle atom (8 rows); stage tiles start at multiples of it.
pub const SWIZZLE_ATOM_BYTES: u32 = 1024;
/// Row tiles per raster group (blocks walk `GROUP_M` row tiles per column tile).
pub const GROUP_M: u32 = 16;
/// Most dynamic shared memory a block may have on sm_90 (227 KB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;
/// Most blocks that split one tile's `H` (the portable cluster size).
pub const MAX_SPLITS: u32 = 8;

/// The k-blocks (`first`, `count`) that block `rank` of `splits` multiplies, of `k_blocks`:
/// consecutive ranges, their sizes differing by at most one.
pub const fn k_range(k_blocks: u32, rank: u32, splits: u32) -> (u32, u32) {
    let first = rank * k_blocks / splits;
    (first, (rank + 1) * k_blocks / splits - first)
}

/// How a `wgmma` kernel fills its stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Load {
    /// The copy engine, one thread issuing whole tiles ([`crate::TmaParams`]).
    Tma,
    /// `cp.async` by every thread ([`crate::QkvParams`]).
    CpAsync,
    /// The copy engine, driven by a producer warp of its own, ahead of the multiplying threads
    /// by up to the whole ring and across tiles: the persistent kernel ([`crate::TmaParams`];
    /// one block per multiprocessor, no split-K).
    TmaProducer,
}

impl Load {
    /// Whether the kernel takes [`crate::TmaParams`] (tensor maps), not [`crate::QkvParams`].
    pub const fn uses_tma(self) -> bool {
        matches!(self, Load::Tma | Load::TmaProducer)
    }
}

/// A `wgmma` kernel's tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WgmmaTile {
    /// Rows of `y` (tokens) per block: 64 or 128.
    pub tokens: u32,
    /// Columns of `y` per block: 128 or 256.
    pub out_cols: u32,
    /// Shared-memory stages: 3 to 8.
    pub stages: u32,
    pub load: Load,
}

impl WgmmaTile {
    /// Whether the kernel is written for this tile (the persistent kernel: 128 tokens, and its
    /// ring and staged output tile within the 227 KB a block may have).
    pub const fn is_valid(self) -> bool {
        let shape = matches!(self.tokens, 64 | 128) && matches!(self.out_cols, 128 | 256);
        let ring = self.stages >= 3 && self.stages <= 8;
        let persistent = !self.is_persistent() || (self.tokens == 128 && self.shared_bytes() <= MAX_SHARED_BYTES);
        shape && ring && persistent
    }

    /// One block per multiprocessor walks the tiles ([`Load::TmaProducer`]).
    pub const fn is_persistent(self) -> bool {
        matches!(self.load, Load::TmaProducer)
    }

    /// Threads per block: [`THREADS`], plus the producer warp of a persistent tile (the last warp).
    pub const fn threads(self) -> u32 {
        if self.is_persistent() {
            THREADS + crate::WARP_SIZE
        } else {
            THREADS
        }
    }

    /// Columns of `y` per warpgroup: with 128 tokens each warpgroup owns 64 rows and all
    /// columns; with 64 tokens, all rows and half of the columns.
    pub const fn cols_per_warpgroup(self) -> u32 {
        if self.tokens == 128 {
            self.out_cols
        } else {
            self.out_cols / 2
        }
    }

    /// Bytes of one stage: the `x` tile then the `W'` tile, 128 bytes per row.
    pub const fn stage_bytes(self) -> u32 {
        (self.tokens + self.out_cols) * SWIZZLE_ROW_BYTES
    }

    /// Where the row scales (one f32 per token row) start, after the stages.
    pub const fn row_scales_offset(self) -> u32 {
        self.stages * self.stage_bytes()
    }

    /// Where the stages' "full" mbarriers (8 bytes each) start, after the row scales; the
    /// "empty" ones follow them.
    pub const fn barriers_offset(self) -> u32 {
        self.row_scales_offset() + self.tokens * 4
    }

    /// Where the persistent kernel's staged output tile (`tokens` rows of [`Self::out_pitch`]
    /// bytes) starts, after the barriers; the other kernels stage it in their freed stages.
    pub const fn out_tile_offset(self) -> u32 {
        (self.barriers_offset() + 2 * self.stages * 8).next_multiple_of(16)
    }

    /// Dynamic shared memory: stages, row scales, barriers, the persistent kernel's output
    /// tile, and room to align the dynamic shared base up to a swizzle atom. Above 48 KB: the
    /// host raises the function's limit.
    pub const fn shared_bytes(self) -> u32 {
        let end = if self.is_persistent() {
            self.out_tile_offset() + self.tokens * self.out_pitch()
        } else {
            self.barriers_offset() + 2 * self.stages * 8
        };
        end + SWIZZLE_ATOM_BYTES
    }

    /// Bytes per row of the output tile staged in the freed stages for the coalesced store:
    /// 16 more than the row, so that the 8 rows a warp's accumulators store start 4 banks apart.
    pub const fn out_pitch(self) -> u32 {
        self.out_cols * 2 + 16
    }

    /// Bytes per row of the fp32 partial tile a split-K block leaves in its freed stages: 32
    /// more than the row, so that the 8 rows a warp's accumulators store start 8 banks apart.
    pub const fn partial_pitch(self) -> u32 {
        self.out_cols * 4 + 32
    }

    /// Tiles of `y` for `m` tokens and `n` columns.
    pub const fn tiles(self, m: u32, n: u32) -> u32 {
        m.div_ceil(self.tokens) * n.div_ceil(self.out_cols)
    }

    /// Grid: `splits` blocks per tile (1: no split), along x: the blocks of a tile are
    /// consecutive and form one cluster; tiles are walked in raster groups. A persistent tile
    /// takes one block per tile up to `multiprocessors` blocks, and never splits.
    pub const fn launch(self, m: u32, n: u32, splits: u32, multiprocessors: u32) -> Launch {
        let tiles = self.tiles(m, n);
        let (blocks, cluster) = if self.is_persistent() {
            (if tiles < multiprocessors { tiles } else { multiprocessors }, 1)
        } else {
            (tiles * splits, splits)
        };
        Launch { grid: (blocks, 1, 1), block_threads: self.threads(), shared_bytes: self.shared_bytes(), cluster }
    }

    /// Most tokens one launch with `splits` blocks per tile covers (grid x is at most 2^31 - 1).
    pub const fn max_tokens_per_launch(self, n: u32, splits: u32) -> u32 {
        let per_row_tile = n.div_ceil(self.out_cols) * splits;
        let row_tiles = (i32::MAX as u32) / per_row_tile;
        let max = row_tiles as u64 * self.tokens as u64;
        if max > u32::MAX as u64 {
            u32::MAX
        } else {
            max as u32
        }
    }
}

// The staged output tile, and a split-K block's fp32 partial tile, fit in the stages they reuse,
// for every valid tile shape at its smallest ring (3 stages; the load does not change the layout).
const _: () = {
    let shapes = [(128, 256), (128, 128), (64, 256), (64, 128)];
    let mut i = 0;
    while i < shapes.len() {
        let t = WgmmaTile { tokens: shapes[i].0, out_cols: shapes[i].1, stages: 3, load: Load::CpAsync };
        assert!(t.tokens * t.out_pitch() <= t.row_scales_offset());
        assert!(t.tokens * t.partial_pitch() <= t.row_scales_offset());
        i += 1;
    }
};
