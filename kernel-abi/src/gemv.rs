//! The SIMT decode kernel (`kernel-gpu/src/gemv.rs`): a warp per pair of `W'` rows, 1, 2 or 4
//! tokens per block, no shared memory. Needs `hidden % VEC == 0` and 16-byte aligned `x`.

use crate::{Launch, WARP_SIZE};

/// Threads per block.
pub const THREADS: u32 = 128;
/// Rows of `W'` per warp.
pub const ROWS_PER_WARP: u32 = 2;
/// Rows of `W'` (output columns) per block.
pub const ROWS_PER_BLOCK: u32 = THREADS / WARP_SIZE * ROWS_PER_WARP;
/// Most tokens per block.
pub const MAX_TOKENS: u32 = 4;
/// Most 16-byte loads per row and lane in one batch.
pub const MAX_UNROLL: u32 = 4;

/// A `gemv` specialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemvTile {
    /// Tokens per block: 1, 2 or 4.
    pub tokens: u32,
    /// 16-byte loads per row and lane in flight before the first use: 1 to 4.
    pub unroll: u32,
}

impl GemvTile {
    /// Whether the kernel is written for this tile.
    pub const fn is_valid(self) -> bool {
        matches!(self.tokens, 1 | 2 | 4) && self.unroll >= 1 && self.unroll <= MAX_UNROLL
    }

    /// Grid: `W'` rows along x, token tiles along y.
    pub const fn launch(self, m: u32, n: u32) -> Launch {
        Launch {
            grid: (n.div_ceil(ROWS_PER_BLOCK), m.div_ceil(self.tokens), 1),
            block_threads: THREADS,
            shared_bytes: 0,
            cluster: 1,
        }
    }

    /// Most tokens one launch covers (grid y is at most 65535).
    pub const fn max_tokens_per_launch(self) -> u32 {
        65535 * self.tokens
    }
}
