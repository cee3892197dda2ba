//! The tensor-core kernel on `mma.sync` (`kernel-gpu/src/fused_qkv_mma.rs`): `weight_rows` rows
//! of `W'` by `tokens` tokens per block, warps splitting the hidden dimension. bf16 and f16;
//! needs `hidden % 8 == 0` and 16-byte aligned `x`.

use crate::{Launch, WARP_SIZE};

/// Hidden elements per k-step (two m16n8k16 MMAs).
pub const K_STEP: u32 = 32;
/// Most warps per block.
pub const MAX_WARPS: u32 = 8;
/// Most 16-row tiles of `W'` per block.
pub const MAX_M_TILES: u32 = 2;
/// Most 8-token groups per block (with 8, ptxas keeps part of the fragments in local memory).
pub const MAX_TOKEN_GROUPS: u32 = 4;
/// Static shared memory: the per-warp sums of squares and the row scales.
pub const SUM_SQ_BYTES: u32 = MAX_WARPS * MAX_TOKEN_GROUPS * 8 * 4;
/// Static shared memory for the row scales.
pub const ROW_SCALE_BYTES: u32 = MAX_TOKEN_GROUPS * 8 * 4;

/// An `mma.sync` kernel's tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmaTile {
    /// Rows of `W'` (output columns) per block: 16 or 32.
    pub weight_rows: u32,
    /// Tokens per block: 8, 16 or 32.
    pub tokens: u32,
    /// Warps per block: 4 or 8.
    pub warps: u32,
    /// Software pipeline depth in k-steps: 2 or 3.
    pub depth: u32,
}

impl MmaTile {
    /// Whether the kernel is written for this tile.
    pub const fn is_valid(self) -> bool {
        matches!(self.weight_rows, 16 | 32)
            && matches!(self.tokens, 8 | 16 | 32)
            && matches!(self.warps, 4 | 8)
            && matches!(self.depth, 2 | 3)
    }

    /// 16-row tiles of `W'` per block.
    pub const fn m_tiles(self) -> u32 {
        self.weight_rows / 16
    }

    /// 8-token groups per block.
    pub const fn token_groups(self) -> u32 {
        self.tokens / 8
    }

    /// Dynamic shared memory: every warp's partial accumulators, 4 per lane per (m-tile, group).
    pub const fn shared_bytes(self) -> u32 {
        self.warps * self.m_tiles() * self.token_groups() * 4 * WARP_SIZE * 4
    }

    /// Grid: `W'` row tiles along x, token tiles along y.
    pub const fn launch(self, m: u32, n: u32) -> Launch {
        Launch {
            grid: (n.div_ceil(self.weight_rows), m.div_ceil(self.tokens), 1),
            block_threads: WARP_SIZE * self.warps,
            shared_bytes: self.shared_bytes(),
            cluster: 1,
        }
    }

    /// Most tokens one launch covers (grid y is at most 65535).
    pub const fn max_tokens_per_launch(self) -> u32 {
        65535 * self.tokens
    }
}
