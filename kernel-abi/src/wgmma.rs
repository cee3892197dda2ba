//! The Hopper prefill kernel (`kernel-gpu/src/family/wgmma.rs`, sm_90a): `tokens x out_cols`
//! tiles of `y` on `wgmma`, two warpgroups per block (three on 192-row tiles), a ring of
//! `stages` shared-memory stages filled by TMA or `cp.async`. bf16 and f16; needs
//! `hidden % 8 == 0`, even `q_cols` and `kv_cols`, 16-byte aligned `x` and 4-byte aligned outputs.
//!
//! Persistent ping-pong tiles ([`Load::TmaProducer`], measurement-only): clusters of
//! [`PERSISTENT_CLUSTER`] blocks, one block per multiprocessor, walk 128-row cluster tiles, each
//! block taking a 64-row half; a block's two consumer warpgroups take its tiles in turn (its even
//! tiles the first, odd ones the second), so that one warpgroup's epilogue runs while the other
//! multiplies. A producer warp of its own keeps a ring of stages full through TMA (per-stage
//! "full" and "empty" mbarriers, no block-wide barrier in the mainloop), the block's `x` rows and
//! half of the `W'` tile multicast into both blocks of the cluster; the warpgroups take turns at
//! the tensor cores and at the staged output tile (shared memory of its own, not in the ring),
//! passed by named barriers.
//!
//! Split-K: launched in clusters of `splits` blocks (2 to [`MAX_SPLITS`]), the blocks of a
//! cluster share one tile and each multiplies its share of `H` ([`k_range`]), then reduces and
//! stores a band of its rows ([`split_bands`]): each block sends the others its fp32
//! accumulators of their bands through distributed shared memory (`st.async` into their freed
//! stages, [`WgmmaTile::split_fits`]), and each adds what it receives in rank order, so the
//! result does not depend on timing. This puts more multiprocessors on a tile where the tiles alone
//! would leave them idle (few tokens) or end in a part-empty wave.
//!
//! Stream-K ([`WgmmaGrid::Stream`]): a grid of `blocks` blocks (no cluster, at most one per
//! resident slot) takes the full waves' tiles whole and splits the last wave's tiles between
//! the blocks that would otherwise idle ([`stream_tail`]). Every block of such a tile leaves in
//! the workspace ([`WgmmaTile::stream_workspace_bytes`]) the fp32 partial accumulators (and row
//! sums) of the rows the others store, then reduces its own share of the rows ([`tail_bands`]):
//! the tile's partials added in block order, and stores it. The sum order is fixed by the grid,
//! not by timing, so the bits repeat; every block of the grid must be resident at once (a block
//! waits for the others of its tile).
//! (Sharing every step evenly, tile boundaries anywhere, measured slower: blocks sharing a `W'`
//! tile then multiply different k ranges at one time, and W is read from DRAM once per row
//! tile; bench/NOTES.md "stream-K".)

use crate::Launch;

/// Threads per block that multiply on 64- and 128-row tiles (two warpgroups): every thread of
/// the block, except the producer warp of [`Load::TmaProducer`] tiles ([`WgmmaTile::threads`]).
/// 192-row tiles take three warpgroups ([`multiplying_threads`]).
pub const THREADS: u32 = 256;

/// Threads that multiply a `tokens`-row tile (not persistent): a warpgroup per 64 rows of 192-row
/// tiles, else two ([`THREADS`]: 128 rows, a warpgroup per 64; 64 rows, a warpgroup per half of
/// the columns).
pub const fn multiplying_threads(tokens: u32) -> u32 {
    if tokens == 192 {
        3 * WARPGROUP_THREADS
    } else {
        THREADS
    }
}
/// Threads of one warpgroup (the unit `wgmma` runs on).
pub const WARPGROUP_THREADS: u32 = 128;
/// Warps of the warpgroup that multiplies a ping-pong tile: each releases a stage (arrives on
/// its "empty" mbarrier) when done with it.
pub const CONSUMER_WARPS: u32 = WARPGROUP_THREADS / crate::WARP_SIZE;
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
/// Blocks of a persistent ping-pong cluster: they take the two 64-row halves of 128-row tiles
/// (the same `W'` columns), and each block's producer loads half of the `W'` tile into both
/// (TMA multicast), so that each multiprocessor reads half of `W'` from L2. (That bought 0-11 %
/// on the H200: the mainloop is bound by shared-memory bandwidth, not L2; bench/NOTES.md
/// "Ping-pong consumers".)
pub const PERSISTENT_CLUSTER: u32 = 2;

/// The k-blocks (`first`, `count`) that block `rank` of `splits` multiplies, of `k_blocks`:
/// consecutive ranges, their sizes differing by at most one.
pub const fn k_range(k_blocks: u32, rank: u32, splits: u32) -> (u32, u32) {
    let first = rank * k_blocks / splits;
    (first, (rank + 1) * k_blocks / splits - first)
}

/// Most blocks one tile of a stream-K grid's last wave is split between (each gathers the
/// others' partials of its rows into its stages: [`WgmmaTile::tail_gather_bytes`]).
pub const MAX_TAIL_SPLITS: u32 = 4;

/// How a stream-K grid of `blocks` blocks shares `tiles` tiles of `k_blocks` k-blocks: every
/// full wave's tiles whole, one block per tile (`block, block + blocks, ..`), then the last,
/// part-full wave's `tiles % blocks` tiles each split between `splits` consecutive blocks (as
/// many as fit, up to [`MAX_TAIL_SPLITS`] and the k-blocks), which multiply the same k ranges
/// ([`k_range`]) of every tile: blocks sharing an `x` or `W'` tile read it at the same time, so it
/// comes from L2 once, as in the plain grid. Each of a tile's blocks then reduces and stores its
/// share of the tile's rows ([`tail_bands`]). Returns (`whole tiles`, `splits`).
pub const fn stream_tail(tiles: u32, blocks: u32, k_blocks: u32) -> (u32, u32) {
    let whole = tiles / blocks * blocks;
    let rest = tiles - whole;
    let mut splits = match blocks.checked_div(rest) {
        Some(splits) => splits,
        None => 1,
    };
    if splits > MAX_TAIL_SPLITS {
        splits = MAX_TAIL_SPLITS;
    }
    if splits > k_blocks {
        splits = k_blocks;
    }
    if splits == 0 {
        splits = 1;
    }
    (whole, splits)
}

/// The multiply steps (step `u` is k-block `u % k_blocks` of tile `u / k_blocks`) of block
/// `block`'s share of the last wave of a stream-K grid ([`stream_tail`]: `whole` tiles taken
/// whole, the rest split `splits` ways): `[first, end)`, empty (at the end of the steps) for a
/// block without one. Increasing with `block`.
pub const fn stream_tail_units(tiles: u32, k_blocks: u32, (whole, splits): (u32, u32), block: u32) -> (u64, u64) {
    let tile = whole + block / splits;
    if tile >= tiles {
        let end = tiles as u64 * k_blocks as u64;
        return (end, end);
    }
    let (first, count) = k_range(k_blocks, block % splits, splits);
    let start = tile as u64 * k_blocks as u64 + first as u64;
    (start, start + count as u64)
}

/// Rows of one band of a tile: the rows one warp's accumulators cover. The blocks that split a
/// stream-K tail tile each reduce and store whole bands ([`tail_bands`]).
pub const BAND_ROWS: u32 = 16;

/// The bands (`first`, `count`) of a `tokens`-row tail tile that block `rank` of the `splits`
/// blocks sharing it reduces and stores: consecutive ranges, their sizes differing by at most one.
pub const fn tail_bands(tokens: u32, rank: u32, splits: u32) -> (u32, u32) {
    k_range(tokens / BAND_ROWS, rank, splits)
}

/// The bands (`first`, `count`) of a split-K tile that block `rank` of its `splits` reduces and
/// stores: the bands holding the rows the tile stores, local rows `first_row..end_row` (the
/// rows above `first_row` are the tile above's, those from `end_row` lie past `M`), shared as
/// [`k_range`] shares k-blocks. With fewer bands than blocks some blocks store none.
pub const fn split_bands(first_row: u32, end_row: u32, rank: u32, splits: u32) -> (u32, u32) {
    let (first_band, end_band) = stored_bands(first_row, end_row);
    let (first, count) = k_range(end_band - first_band, rank, splits);
    (first_band + first, count)
}

/// The bands (`first..end`) holding local rows `first_row..end_row` of a tile.
const fn stored_bands(first_row: u32, end_row: u32) -> (u32, u32) {
    (first_row / BAND_ROWS, end_row.div_ceil(BAND_ROWS))
}

/// Whether the blocks of a split-K tile of `splits` blocks storing local rows `rows`
/// (`first..end`) exchange their partials pushed, whole bands from registers into each other's
/// stages, rather than pulled row by row from each other's shared memory: in pairs, where each
/// block stores two bands or more. Measured on the H200 in CUDA graphs (bench/results/h200-s14,
/// eleven models, 17-512 tokens), pushed against pulled: pairs with two or more bands a block
/// 0.85-0.97x (qwen3-1.7b at 129-256 tokens, 128 x 128 in two, 13.5 -> 11.5 us; qwen3-14b at 256,
/// 128 x 256 in two, 38.6 -> 34.4); four blocks 0.97-1.07x (several blocks sending into one
/// multiprocessor at once, and whole bands leaving the rows uneven: at 129 tokens a 192-row tile
/// has nine bands for four blocks); one band a block or fewer 1.0-1.74x (qwen2.5-0.5b at 17
/// tokens, 64 x 128 in eight: two of the eight blocks store everything).
pub const fn split_pushes(splits: u32, (first_row, end_row): (u32, u32)) -> bool {
    let (first_band, end_band) = stored_bands(first_row, end_row);
    splits == 2 && end_band - first_band >= 2 * splits
}

/// How the blocks of a `wgmma` launch share the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WgmmaGrid {
    /// `splits` blocks per tile in a cluster (1: one block per tile), their partial tiles added
    /// through distributed shared memory.
    Split(u32),
    /// `blocks` blocks (at most one per resident slot): the full waves' tiles whole, the last
    /// wave's tiles split between the blocks that would idle ([`stream_tail`]), their partial
    /// tiles added through the workspace.
    Stream(u32),
}

/// How a `wgmma` kernel fills its stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Load {
    /// The copy engine, one thread issuing whole tiles ([`crate::TmaParams`]).
    Tma,
    /// `cp.async` by every thread ([`crate::QkvParams`]).
    CpAsync,
    /// The copy engine, driven by a producer warp of its own, ahead of the multiplying threads
    /// by up to the whole ring and across tiles: the persistent ping-pong kernel
    /// ([`crate::TmaParams`]; one block per multiprocessor in clusters of
    /// [`PERSISTENT_CLUSTER`], each warpgroup its own 64-row tiles, no split-K).
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
    /// Rows of `y` (tokens) per tile: 64, 128 or 192 (a block's tile; the persistent kernel's
    /// are 64, one per warpgroup).
    pub tokens: u32,
    /// Columns of `y` per tile: 160 (with 64 tokens), 64 (with 128), 96 (with 64 or 128), 128,
    /// 144 (with 128 or 192 tokens), 192, or 256 (with 64 or 128 tokens).
    pub out_cols: u32,
    /// Shared-memory stages: 3 to 8.
    pub stages: u32,
    pub load: Load,
}

impl WgmmaTile {
    /// Whether the kernel is written for this tile (the persistent kernel: 64 tokens), with its
    /// shared memory within the 227 KB a block may have; a 192-row tile's split-K partial tile
    /// fits in its stages from 4 of them.
    pub const fn is_valid(self) -> bool {
        // A warpgroup's share must be a `wgmma` width the epilogue's 16-column pieces cover: all
        // columns with 128 or 192 tokens (or a ping-pong warpgroup's own tile), half of them
        // with 64 (n48, n64, n80, n96, n128; so no 64 x 144). 192 x 256 would need 128
        // accumulators a thread of the 168 registers that three warpgroups leave each.
        let shape = if self.is_persistent() {
            self.tokens == 64 && matches!(self.out_cols, 128 | 192 | 256)
        } else {
            matches!(
                (self.tokens, self.out_cols),
                (128, 64 | 96 | 128 | 144 | 192 | 256) | (192, 128 | 144 | 192) | (64, 96 | 128 | 160 | 192 | 256)
            )
        };
        // 192-row tiles load through TMA only: `cp.async`'s thread-to-row mapping is written for
        // two warpgroups.
        let load = self.tokens != 192 || matches!(self.load, Load::Tma);
        let min_stages = if self.tokens == 192 { 4 } else { 3 };
        shape && load && self.stages >= min_stages && self.stages <= 8 && self.shared_bytes() <= MAX_SHARED_BYTES
    }

    /// One block per multiprocessor walks the tiles ([`Load::TmaProducer`]).
    pub const fn is_persistent(self) -> bool {
        matches!(self.load, Load::TmaProducer)
    }

    /// Threads per block: [`Self::multiplying`], plus the producer warp of a persistent tile
    /// (the last warp).
    pub const fn threads(self) -> u32 {
        if self.is_persistent() {
            THREADS + crate::WARP_SIZE
        } else {
            self.multiplying()
        }
    }

    /// Threads that multiply: [`multiplying_threads`], or both ping-pong warpgroups.
    pub const fn multiplying(self) -> u32 {
        if self.is_persistent() {
            THREADS
        } else {
            multiplying_threads(self.tokens)
        }
    }

    /// Columns of `y` per warpgroup: with 128 or 192 tokens each warpgroup owns 64 rows and all
    /// columns; with 64 tokens, all rows and half of the columns; a ping-pong warpgroup its own
    /// tile.
    pub const fn cols_per_warpgroup(self) -> u32 {
        if self.tokens >= 128 || self.is_persistent() {
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

    /// Rows of the row scales (one f32 each): the tile's, or both ping-pong warpgroups' tiles'.
    pub const fn row_scale_rows(self) -> u32 {
        if self.is_persistent() {
            2 * self.tokens
        } else {
            self.tokens
        }
    }

    /// Where the stages' "full" mbarriers (8 bytes each) start, after the row scales; the
    /// "empty" ones follow them.
    pub const fn barriers_offset(self) -> u32 {
        self.row_scales_offset() + self.row_scale_rows() * 4
    }

    /// Where the tile's column biases (one f32 per output column, read by the coalesced
    /// epilogue) start, after the barriers: each is loaded from memory once per tile, not once
    /// per thread that adds it.
    pub const fn col_bias_offset(self) -> u32 {
        (self.barriers_offset() + 2 * self.stages * 8).next_multiple_of(16)
    }

    /// Where the persistent kernel's staged output tile (`tokens` rows of [`Self::out_pitch`]
    /// bytes, the warpgroups' turn about) starts, after the column biases; the other kernels
    /// stage it in their freed stages.
    pub const fn out_tile_offset(self) -> u32 {
        self.col_bias_offset() + self.out_cols * 4
    }

    /// Dynamic shared memory: stages, row scales, barriers, column biases, the persistent
    /// kernel's output tile, and room to align the dynamic shared base up to a swizzle atom.
    /// Above 48 KB: the host raises the function's limit.
    pub const fn shared_bytes(self) -> u32 {
        let end = if self.is_persistent() {
            self.out_tile_offset() + self.tokens * self.out_pitch()
        } else {
            self.out_tile_offset()
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

    /// f32 values of one stream-K partial: the tile's accumulators warp by warp (warp `w`'s
    /// [`Self::warp_partial_bytes`] from `w * warp_partial_bytes`, its lane `l`'s `i`-th four
    /// accumulators at float `4 * (32 * i + l)` of them), then each thread's share of its row's
    /// sum of squares (thread `t`'s at float `tokens * out_cols + t`). A block leaves only what
    /// the other blocks of its tail tile reduce: the bands not its own.
    pub const fn stream_partial_floats(self) -> u32 {
        self.tokens * self.out_cols + self.multiplying()
    }

    /// Bytes of one warp's accumulators in a stream-K partial: 64 rows' worth of its
    /// warpgroup's columns.
    pub const fn warp_partial_bytes(self) -> u32 {
        self.cols_per_warpgroup() * 64
    }

    /// Warps whose accumulators cover `bands` bands: one per band, two with 64 tokens (where
    /// both warpgroups hold every row, each half of the columns).
    pub const fn band_warps(self, bands: u32) -> u32 {
        if self.tokens >= 128 {
            bands
        } else {
            2 * bands
        }
    }

    /// Bytes a tail block reducing `bands` bands gathers from each other block of its tile:
    /// their warps' accumulators, then their rows' sum-of-squares shares.
    pub const fn tail_slot_bytes(self, bands: u32) -> u32 {
        self.band_warps(bands) * self.warp_partial_bytes() + self.multiplying() / self.tokens * BAND_ROWS * bands * 4
    }

    /// Most shared memory a tail block gathers into (its freed stages): one slot per other block
    /// of its tile, for its largest band range, over every split up to [`MAX_TAIL_SPLITS`].
    pub const fn tail_gather_bytes(self) -> u32 {
        let bands = self.tokens / BAND_ROWS;
        let (mut splits, mut most) = (2, 0);
        while splits <= MAX_TAIL_SPLITS {
            let bytes = (splits - 1) * self.tail_slot_bytes(bands.div_ceil(splits));
            if bytes > most {
                most = bytes;
            }
            splits += 1;
        }
        most
    }

    /// Whether the blocks of a split-K grid of `splits` blocks per tile can exchange their
    /// partial tiles in their stages: each receives, from every other block, its accumulators
    /// and row-sum shares of the bands it stores ([`split_bands`], at most
    /// `ceil(bands / splits)`; [`Self::tail_slot_bytes`] each). False for some counts on short
    /// rings (128 x 256 with 4 stages in seven); the host lowers those to the largest that fits.
    pub const fn split_fits(self, splits: u32) -> bool {
        let bands = (self.tokens / BAND_ROWS).div_ceil(if splits > 0 { splits } else { 1 });
        splits <= 1 || (splits - 1) * self.tail_slot_bytes(bands) <= self.row_scales_offset()
    }

    /// Bytes of the stream-K flags (one u32 per block, 0 when its partial is not ready), which
    /// start the workspace; the partials follow, one per block.
    pub const fn stream_flags_bytes(blocks: u32) -> u64 {
        (blocks as u64 * 4).next_multiple_of(256)
    }

    /// Bytes of the workspace a stream-K grid of `blocks` blocks needs, zeroed before first use
    /// (the kernel leaves every flag zero again).
    pub const fn stream_workspace_bytes(self, blocks: u32) -> u64 {
        Self::stream_flags_bytes(blocks) + blocks as u64 * self.stream_partial_floats() as u64 * 4
    }

    /// Whether the stream-K grid applies: the block-barrier kernels (not the persistent one).
    pub const fn streams(self) -> bool {
        !self.is_persistent()
    }

    /// Tiles of `y` for `m` tokens and `n` columns.
    pub const fn tiles(self, m: u32, n: u32) -> u32 {
        m.div_ceil(self.tokens) * n.div_ceil(self.out_cols)
    }

    /// The persistent kernel's cluster tiles for `m` tokens and `n` columns: a cluster's blocks
    /// take the [`PERSISTENT_CLUSTER`] row tiles of one (`tokens * PERSISTENT_CLUSTER` rows).
    pub const fn cluster_tiles(self, m: u32, n: u32) -> u32 {
        m.div_ceil(self.tokens * PERSISTENT_CLUSTER) * n.div_ceil(self.out_cols)
    }

    /// Rows of `x` per TMA box for `m` tokens: the tile's rows, or all `m` of them where one
    /// row tile holds them. A box row past `M` would be filled with zeros by the copy engine,
    /// which costs about 0.2 us per k-block (bench/NOTES.md "The mid-M bound"); clipped, the
    /// stage's rows past `M` keep stale data, which only reaches accumulator rows that are
    /// never stored. Where `M` exceeds the tile, the last row tile moves up to end at row `M`
    /// instead, so no box ever reaches past `M`. The host encodes the `x` tensor map with this
    /// box and the kernel expects [`WgmmaTile::stage_tx_bytes`] per stage: a mismatch hangs.
    pub const fn x_box_rows(self, m: u32) -> u32 {
        if m < self.tokens {
            m
        } else {
            self.tokens
        }
    }

    /// Bytes the copy engine brings into one stage for `m` tokens: the `x` box
    /// ([`WgmmaTile::x_box_rows`]) and the whole `W'` tile (both halves, on persistent tiles).
    pub const fn stage_tx_bytes(self, m: u32) -> u32 {
        (self.x_box_rows(m) + self.out_cols) * SWIZZLE_ROW_BYTES
    }

    /// Rows of `W'` per TMA box: the tile's columns, or the half a persistent block multicasts.
    pub const fn w_box_rows(self) -> u32 {
        if self.is_persistent() {
            self.out_cols / PERSISTENT_CLUSTER
        } else {
            self.out_cols
        }
    }

    /// Grid: `splits` blocks per tile (1: no split), along x: the blocks of a tile are
    /// consecutive and form one cluster; tiles are walked in raster groups. A persistent tile
    /// takes one cluster of [`PERSISTENT_CLUSTER`] blocks per cluster tile, up to `resident`
    /// blocks (those that fit at once in such clusters), and never splits.
    pub const fn launch(self, m: u32, n: u32, splits: u32, resident: u32) -> Launch {
        let tiles = self.tiles(m, n);
        let (blocks, cluster) = if self.is_persistent() {
            let (wanted, most) = (self.cluster_tiles(m, n), resident / PERSISTENT_CLUSTER);
            let clusters = if wanted < most { wanted } else { most };
            let clusters = if clusters == 0 { 1 } else { clusters };
            (clusters * PERSISTENT_CLUSTER, PERSISTENT_CLUSTER)
        } else {
            (tiles * splits, splits)
        };
        Launch { grid: (blocks, 1, 1), block_threads: self.threads(), shared_bytes: self.shared_bytes(), cluster }
    }

    /// A stream-K grid of `blocks` blocks.
    pub const fn launch_stream(self, blocks: u32) -> Launch {
        Launch { grid: (blocks, 1, 1), block_threads: self.threads(), shared_bytes: self.shared_bytes(), cluster: 1 }
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

// The staged output tile, a split-K block's fp32 partial tile and a stream-K partial fit in the
// stages they reuse,
// for every valid tile shape at its smallest ring (3 stages, 4 with 192 rows; the load does not
// change the layout).
const _: () = {
    let shapes = [
        (128, 256),
        (128, 192),
        (128, 144),
        (128, 128),
        (128, 96),
        (128, 64),
        (192, 192),
        (192, 144),
        (192, 128),
        (64, 256),
        (64, 192),
        (64, 160),
        (64, 128),
        (64, 96),
    ];
    let mut i = 0;
    while i < shapes.len() {
        let stages = if shapes[i].0 == 192 { 4 } else { 3 };
        let t = WgmmaTile { tokens: shapes[i].0, out_cols: shapes[i].1, stages, load: Load::Tma };
        assert!(t.is_valid());
        assert!(t.tokens * t.out_pitch() <= t.row_scales_offset());
        assert!(t.tokens * t.partial_pitch() <= t.row_scales_offset());
        // Half the staged output tile fits in one stage (a stream-K block stages it in two
        // stages while the next tile's first k-blocks load into the others).
        assert!(t.tokens / 2 * t.out_pitch() <= t.stage_bytes());
        // What a stream-K tail block gathers from the others fits in the stages; its warps'
        // accumulators tile the partial.
        assert!(t.tail_gather_bytes() <= t.row_scales_offset());
        // What a split-K block receives from the others of its cluster fits in the stages, for
        // the counts the dispatch takes on every ring (it steps through 2, 4, 6 and 8 only on
        // the deeper rings of one-block-per-multiprocessor tiles).
        assert!(t.split_fits(2) && t.split_fits(3) && t.split_fits(4) && t.split_fits(8));
        assert!(t.multiplying() / crate::WARP_SIZE * t.warp_partial_bytes() == t.tokens * t.out_cols * 4);
        // The column biases follow the barriers, 16-byte aligned for the epilogue's paired
        // loads, and end where the persistent kernel's output tile starts; at every ring depth.
        let mut stages = t.stages;
        while stages <= 8 {
            let t = WgmmaTile { stages, ..t };
            assert!(
                t.col_bias_offset().is_multiple_of(16) && t.col_bias_offset() >= t.barriers_offset() + 2 * stages * 8
            );
            assert!(t.out_tile_offset() == t.col_bias_offset() + t.out_cols * 4);
            stages += 1;
        }
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of a split-K cluster store every band holding a row the tile stores exactly
    /// once, in order, and no other band; each receives no more than its stages hold wherever
    /// the host launches that split ([`WgmmaTile::split_fits`]).
    #[test]
    fn split_bands_cover_the_stored_rows_once() {
        for tokens in [64, 128, 192] {
            for first_row in [0, 1, 15, 16, 17, 63] {
                for end_row in [first_row + 1, first_row + 16, 65, 100, tokens] {
                    if end_row > tokens || end_row <= first_row {
                        continue;
                    }
                    for splits in 1..=MAX_SPLITS {
                        let mut next = first_row / BAND_ROWS;
                        for rank in 0..splits {
                            let (first, count) = split_bands(first_row, end_row, rank, splits);
                            assert_eq!(
                                first, next,
                                "{tokens} rows {first_row}..{end_row}, {splits} splits, rank {rank}"
                            );
                            assert!(count <= (tokens / BAND_ROWS).div_ceil(splits));
                            next = first + count;
                        }
                        assert_eq!(next, end_row.div_ceil(BAND_ROWS));
                    }
                }
            }
        }
    }

    /// The blocks sharing a tail tile store every band of its rows exactly once, in order.
    #[test]
    fn tail_bands_cover_every_row_once() {
        for tokens in [64, 128, 192] {
            for splits in 1..=MAX_TAIL_SPLITS {
                let mut next = 0;
                for rank in 0..splits {
                    let (first, count) = tail_bands(tokens, rank, splits);
                    assert!(first == next && count > 0, "{tokens} rows, {splits} splits, rank {rank}");
                    next = first + count;
                }
                assert_eq!(next * BAND_ROWS, tokens);
            }
        }
    }

    /// Every multiply step of every tile is taken by exactly one block of a stream-K grid:
    /// whole tiles by the full waves, the last wave's by the blocks of its splits, in order.
    #[test]
    fn stream_grid_takes_every_step_once() {
        for (tiles, blocks, k_blocks) in [
            (160, 132, 80),
            (320, 132, 80),
            (96, 132, 64),
            (40, 132, 80),
            (1, 132, 1),
            (5, 3, 7),
            (264, 132, 16),
            (7, 7, 2),
        ] {
            let (whole, splits) = stream_tail(tiles, blocks, k_blocks);
            assert!(whole % blocks == 0 && whole <= tiles && (1..=MAX_TAIL_SPLITS).contains(&splits));
            let mut taken = [0u8; 40_000];
            let units = |tile: u32| tile as usize * k_blocks as usize;
            for tile in 0..whole {
                taken[units(tile)..units(tile + 1)].iter_mut().for_each(|t| *t += 1);
            }
            let mut last_first = 0;
            for block in 0..blocks {
                let (first, end) = stream_tail_units(tiles, k_blocks, (whole, splits), block);
                assert!(first <= end && first >= last_first, "{tiles} {blocks} {k_blocks}: block {block}");
                last_first = first;
                taken[first as usize..end as usize].iter_mut().for_each(|t| *t += 1);
            }
            assert!(
                taken[..units(tiles)].iter().all(|&t| t == 1),
                "{tiles} tiles, {blocks} blocks, {k_blocks} k-blocks"
            );
        }
    }

    /// The `x` box never reaches past M: it holds M rows below the tile's height (one row
    /// tile), the whole tile from it; a stage then expects exactly the box and the `W'` tile.
    #[test]
    fn x_box_stays_inside_m() {
        for (tokens, out_cols) in [(64, 128), (128, 96), (128, 256), (192, 128), (192, 192)] {
            let tile = WgmmaTile { tokens, out_cols, stages: 4, load: Load::Tma };
            for m in [1, 5, 63, 64, 65, 127, 128, 129, 191, 192, 193, 8192] {
                let rows = tile.x_box_rows(m);
                assert!(rows >= 1 && rows <= m && rows <= tokens, "{tokens} x {out_cols} at {m}: {rows}");
                assert_eq!(rows == tokens, m >= tokens);
                assert_eq!(tile.stage_tx_bytes(m), tile.stage_bytes() - (tokens - rows) * SWIZZLE_ROW_BYTES);
            }
        }
    }
}
