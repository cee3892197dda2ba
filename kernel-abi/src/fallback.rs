//! The SIMT kernel for any shape and alignment (`kernel-gpu/src/fallback.rs`): `tokens` rows of
//! `x` staged in shared memory as fp32, a chunk of the hidden dimension at a time, times
//! [`ROWS_PER_BLOCK`] rows of `W'`. Every dtype; 16-byte (`vector`) or scalar loads.

use crate::{Launch, WARP_SIZE};

/// Threads per block.
pub const THREADS: u32 = 128;
/// Warps per block.
pub const WARPS: u32 = THREADS / WARP_SIZE;
/// Most tokens per block.
pub const MAX_TOKENS: u32 = 8;
/// Rows of `W'` per warp.
pub const ROWS_PER_WARP: u32 = 2;
/// Rows of `W'` (output columns) per block.
pub const ROWS_PER_BLOCK: u32 = WARPS * ROWS_PER_WARP;
/// Static shared memory: per-warp sums of squares for each token.
pub const SUM_SQ_BYTES: u32 = WARPS * MAX_TOKENS * 4;
/// Static shared memory: each token's row scale.
pub const ROW_SCALE_BYTES: u32 = MAX_TOKENS * 4;
/// Dynamic shared memory for the staged rows: what a block gets without opting in (48 KB) less
/// the static shared memory.
pub const MAX_STAGE_BYTES: u32 = 48 * 1024 - SUM_SQ_BYTES - ROW_SCALE_BYTES;

/// A fallback specialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FallbackTile {
    /// Tokens per block: 1, 2, 4 or 8 (the smallest that covers a small M, else 8).
    pub tokens: u32,
    /// 16-byte loads (needs `hidden % VEC == 0` and 16-byte aligned `x` and `W'`) or scalar.
    pub vector: bool,
}

impl FallbackTile {
    /// Whether the kernel is written for this tile.
    pub const fn is_valid(self) -> bool {
        matches!(self.tokens, 1 | 2 | 4 | 8)
    }

    /// Elements of each `x` row staged per pass for `m` tokens of `hidden` elements
    /// (`vector_elems` per 16 bytes): the whole row where it fits (one pass, two barriers), else
    /// as much as [`MAX_STAGE_BYTES`] holds, always a multiple of a warp's vector step.
    pub const fn chunk(self, m: u32, hidden: u32, vector_elems: u32) -> u32 {
        let lane_step = WARP_SIZE * vector_elems;
        let rows = if m < self.tokens { m } else { self.tokens };
        let rows = if rows == 0 { 1 } else { rows };
        let max_chunk = MAX_STAGE_BYTES / (rows * 4) / lane_step * lane_step;
        let whole = hidden.div_ceil(lane_step) * lane_step;
        if whole < max_chunk {
            whole
        } else {
            max_chunk
        }
    }

    /// Grid: `W'` row tiles along x, token tiles along y; `chunk` from [`FallbackTile::chunk`].
    pub const fn launch(self, m: u32, n: u32, chunk: u32) -> Launch {
        let rows = if m < self.tokens { m } else { self.tokens };
        Launch {
            grid: (n.div_ceil(ROWS_PER_BLOCK), m.div_ceil(self.tokens), 1),
            block_threads: THREADS,
            shared_bytes: rows * chunk * 4,
            cluster: 1,
        }
    }

    /// Most tokens one launch covers (grid y is at most 65535).
    pub const fn max_tokens_per_launch(self) -> u32 {
        65535 * self.tokens
    }
}
