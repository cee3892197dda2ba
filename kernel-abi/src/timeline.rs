//! The per-tile timeline of a measurement build (the device crate's `timeline` feature): where a
//! `wgmma` stream-K block's time goes, tile by tile, for the performance log (bench/NOTES.md).
//!
//! Each block of the grid owns [`WORDS_PER_BLOCK`] `u64` words at `timeline + block *
//! WORDS_PER_BLOCK`, written by its thread 0: a header (`HEADER_*` indices), then one item of
//! [`ITEM_WORDS`] per walk step (a whole tile or a tail tile's share), at most [`MAX_ITEMS`].
//! Stamps are the SM's `%clock64`; the header's two `%globaltimer` readings (ns) convert them and
//! place the blocks on one time axis.

/// `u64` words per block.
pub const WORDS_PER_BLOCK: usize = 128;
/// Header word: the block's SM (`%smid`).
pub const HEADER_SM: usize = 0;
/// Header word: `%globaltimer` at the block's start.
pub const HEADER_START_NS: usize = 1;
/// Header word: `%clock64` at the block's start.
pub const HEADER_START_CLOCK: usize = 2;
/// Header word: `%globaltimer` at the block's end.
pub const HEADER_END_NS: usize = 3;
/// Header word: `%clock64` at the block's end.
pub const HEADER_END_CLOCK: usize = 4;
/// Header word: walk steps taken; the first [`MAX_ITEMS`] are recorded as items.
pub const HEADER_ITEMS: usize = 5;
/// Words before the first item.
pub const HEADER_WORDS: usize = 6;

/// Item word: `tile << 32 | first k-block << 16 | k-blocks`.
pub const ITEM_STEP: usize = 0;
/// Item word: `%clock64` before the step's loads and MMAs.
pub const ITEM_START: usize = 1;
/// Item word: `%clock64` once its MMAs are done (thread 0's warpgroup).
pub const ITEM_MULTIPLIED: usize = 2;
/// Item word: `%clock64` once the epilogue's row scales are in shared memory (after a tail
/// step's partials are gathered).
pub const ITEM_SCALED: usize = 3;
/// Item word: `%clock64` once the output tile is staged in shared memory (0 where the epilogue
/// stores pair by pair).
pub const ITEM_STAGED: usize = 4;
/// Item word: `%clock64` once its outputs are stored.
pub const ITEM_STORED: usize = 5;
/// Item word (tail steps only, else 0): `%clock64` once the block's partial is written
/// (every thread's stores issued, the block's barrier passed).
pub const ITEM_LEAVE_WRITTEN: usize = 6;
/// Item word (tail steps only): `%clock64` once the block's flag is raised (after the fence that
/// makes the partial visible).
pub const ITEM_LEFT: usize = 7;
/// Item word (tail steps only): `%clock64` once every other block's flag of the tile is seen and
/// the copies of their partials issued.
pub const ITEM_SEEN: usize = 8;
/// Item word (tail steps only): `%clock64` once the other blocks' partials have landed in
/// shared memory.
pub const ITEM_LANDED: usize = 9;
/// Item word (tail steps only): `%clock64` once the flags read are lowered for the next launch.
pub const ITEM_LOWERED: usize = 10;
// A split-K block records one item, its k range, with the exchange words meaning: its
// "landed" barrier set up (`ITEM_LEAVE_WRITTEN`), the cluster barrier passed (`ITEM_LEFT`), its
// parts sent to the others (`ITEM_SEEN`), theirs landed (`ITEM_LANDED`), added (`ITEM_LOWERED`);
// then the epilogue's words as for a whole tile.

/// Words per item.
pub const ITEM_WORDS: usize = 11;
/// Items per block.
pub const MAX_ITEMS: usize = (WORDS_PER_BLOCK - HEADER_WORDS) / ITEM_WORDS;

/// Packs a walk step into its [`ITEM_STEP`] word.
#[inline(always)]
pub const fn pack_step(tile: u32, first: u32, count: u32) -> u64 {
    ((tile as u64) << 32) | ((first as u64 & 0xffff) << 16) | (count as u64 & 0xffff)
}

/// Unpacks an [`ITEM_STEP`] word: (tile, first k-block, k-blocks).
pub const fn unpack_step(word: u64) -> (u32, u32, u32) {
    ((word >> 32) as u32, ((word >> 16) & 0xffff) as u32, (word & 0xffff) as u32)
}
