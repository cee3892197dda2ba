//! Which kernel runs a call: the dispatch as data.
//!
//! A [`KernelPolicy`] names an ordered table of [`Rule`]s; the first rule whose family can run
//! the call and whose token range holds `m` picks the family, and the family's tile rule picks
//! the kernel from the kernel ABI's list ([`kernel_abi::KERNELS`]); for `wgmma`, [`wgmma_splits`]
//! picks the split-K blocks per tile. The tables and rules were measured on the H100
//! (bench/NOTES.md v4, v5) and the H200 (graph mode, split-K).

use kernel_abi::{Dtype, GemvTile, Kernel, Load, MmaTile, Tile, WgmmaGrid, WgmmaTile, KERNELS};

use crate::{Error, Result};

/// Which kernels a layer may use. `Auto` is the measured dispatch table:
///
/// | dtype | GPU | `x` aligned, `hidden % (16 B / dtype) == 0` | tokens | kernel |
/// |---|---|---|---|---|
/// | bf16, f16 | compute capability 9.0 | yes, and even q/kv widths, 4-byte aligned outputs | from 17 (from 9 where the mma.sync grid exceeds one wave) | `wgmma` (tile: [`wgmma_tile`], 64 tokens by 96 to 192 columns, from 65 tokens 128 by 64 or 96, or at 129-192 tokens 192 by 128, 144 or 192 as one row tile, where one wave of them is predicted fastest, else 64 or 128 tokens by 128, 144, 192 or 256 columns, or 192 by 192; grid: [`wgmma_grid`], split-K while tiles are few, as many as the clusters fit at once, the last part-full wave split stream-K style) |
/// | bf16, f16 | any | yes | 2 up to there (any, off Hopper) | tensor cores (mma.sync), 16 rows of W x 8, 16 or 32 tokens per block, 8 warps |
/// | any | any | yes | up to 4 (bf16, f16: 1) | SIMT decode (`gemv`), 1, 2 or 4 tokens per block |
/// | any | any | any | any | the SIMT fallback, 1 to 8 tokens per block, vector or scalar loads |
///
/// The tensor cores multiply bf16/f16 exactly with fp32 accumulation; f32 never uses them (no tf32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelPolicy {
    #[default]
    Auto,
    /// The SIMT kernels only (`gemv`, then the fallback).
    Simt,
    /// The `mma.sync` tensor-core kernel at any token count; an error where it does not apply.
    TensorCore,
    /// The Hopper `wgmma` kernel at any token count, its tile chosen as `Auto` does; an error
    /// where it does not apply.
    Wgmma,
    /// Exactly this entry point of [`kernel_abi::KERNELS`] (its name), to measure a tile; an
    /// error where it does not apply or is not loaded (measurement-only tiles need the
    /// `tile-sweep` feature).
    Kernel(&'static str),
}

impl KernelPolicy {
    /// The `Kernel` policy for the entry point of `dtype` whose name is `name` or ends with
    /// `_name` (e.g. `mma_r32_t16_w4_d3`, `wgmma_m64_n256_s4`).
    pub fn kernel(dtype: Dtype, name: &str) -> Result<Self> {
        let suffix = format!("_{name}");
        let mut found = KERNELS.iter().filter(|k| k.dtype == dtype && (k.name == name || k.name.ends_with(&suffix)));
        match (found.next(), found.next()) {
            (Some(k), None) => Ok(KernelPolicy::Kernel(k.name)),
            (first, second) => Err(Error::InvalidConfig(format!(
                "{} {dtype:?} kernel named `{name}`; the {dtype:?} kernels are: {}",
                if first.is_some() && second.is_some() { "more than one" } else { "no" },
                KERNELS.iter().filter(|k| k.dtype == dtype).map(|k| k.name).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// How many blocks split each `wgmma` tile's `H` (split-K: a cluster of blocks per tile whose
/// fp32 partial tiles are added in a fixed order, see [`kernel_abi::wgmma`]). The other kernel
/// families do not split; this setting does not apply to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitK {
    /// The measured rule, [`wgmma_splits`].
    #[default]
    Auto,
    /// This many blocks per tile, 1 (no split) to [`kernel_abi::wgmma::MAX_SPLITS`], or the
    /// largest count below it whose partials the tile's stages hold
    /// ([`kernel_abi::WgmmaTile::split_fits`]: not seven on 128 x 256); for measuring the rule.
    Fixed(u32),
    /// A stream-K grid ([`kernel_abi::WgmmaGrid::Stream`]) of this many blocks, at most one per
    /// resident slot and one per multiply step (0: one per resident slot); for measuring the rule.
    Stream(u32),
}

impl SplitK {
    /// `Fixed(splits)`, or an error outside 1..=[`kernel_abi::wgmma::MAX_SPLITS`].
    pub fn fixed(splits: u32) -> Result<Self> {
        let max = kernel_abi::wgmma::MAX_SPLITS;
        if (1..=max).contains(&splits) {
            Ok(SplitK::Fixed(splits))
        } else {
            Err(Error::InvalidConfig(format!("split-K takes 1 to {max} blocks per tile, not {splits}")))
        }
    }
}

/// What the dispatch needs to know about one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub m: usize,
    pub dtype: Dtype,
    /// Output columns `N`.
    pub n: usize,
    /// The row length `H`.
    pub hidden: usize,
    /// `hidden % (16 B / dtype) == 0` and a 16-byte aligned `x`: the 16-byte loads apply.
    pub vector: bool,
    /// q and kv widths even and q, k, v 4-byte aligned: `wgmma`'s paired stores apply.
    pub paired_outputs: bool,
    /// The sm_90a PTX is loaded (compute capability 9.0).
    pub hopper: bool,
    /// Every block of the mma.sync kernel `Auto` would pick ([`mma_tile`]) fits on the GPU at
    /// once (the occupancy calculator's blocks per SM x SMs).
    pub mma_fits_one_wave: bool,
    pub multiprocessors: usize,
    /// How many blocks of the `wgmma` tiles the tile rule compares fit at once ([`wgmma_tile`]).
    pub residencies: Residencies,
}

/// How many blocks of each `wgmma` tile the tile rule ([`wgmma_tile`]) compares fit at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Residencies {
    /// The [`WIDE_TILES`].
    pub wide: [Residency; WIDE_COUNT],
    /// The [`NARROW_TILES`].
    pub narrow: [Residency; NARROW_COUNT],
    /// [`SQUARE_TILE`].
    pub square: Residency,
    /// [`CP_ASYNC_TILE`].
    pub cp_async: Residency,
}

/// How many blocks of one kernel the GPU holds at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Residency {
    pub multiprocessors: usize,
    /// Without clusters: blocks per multiprocessor (the occupancy calculator's) x multiprocessors.
    pub slots: usize,
    /// In clusters of `i` blocks (2 to [`kernel_abi::wgmma::MAX_SPLITS`]): the most clusters that fit
    /// at once (`cuOccupancyMaxActiveClusters`) x `i`. A GPC holds whole clusters, so this is
    /// below `slots` where GPCs' multiprocessors are no multiple of `i`.
    pub clustered: [usize; kernel_abi::wgmma::MAX_SPLITS as usize + 1],
}

impl Residency {
    /// `per_multiprocessor` blocks on each of `multiprocessors`, clusters packed without loss.
    pub fn uniform(multiprocessors: usize, per_multiprocessor: usize) -> Self {
        let slots = multiprocessors * per_multiprocessor;
        let mut clustered = [0; kernel_abi::wgmma::MAX_SPLITS as usize + 1];
        for (size, blocks) in clustered.iter_mut().enumerate().skip(1) {
            *blocks = slots / size * size;
        }
        Residency { multiprocessors, slots, clustered }
    }

    /// Blocks resident at once in clusters of `splits` blocks (1: no cluster).
    pub fn blocks(&self, splits: u32) -> usize {
        match splits {
            0 | 1 => self.slots,
            _ => self.clustered.get(splits as usize).copied().unwrap_or(0),
        }
    }

    /// One block fills a multiprocessor.
    fn one_per_multiprocessor(&self) -> bool {
        self.slots <= self.multiprocessors
    }
}

/// A kernel family as the dispatch sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Gemv,
    Mma,
    Fallback,
    Wgmma,
}

/// Which token counts a rule takes.
#[derive(Clone, Copy, Debug)]
enum Tokens {
    Any,
    UpTo(usize),
    From(usize),
    /// From [`WGMMA_MIN_TOKENS`], or from [`WGMMA_MIN_TOKENS_MMA_OVER_A_WAVE`] where the mma.sync
    /// kernel's grid would not fit on the GPU at once ([`Call::mma_fits_one_wave`]).
    WgmmaCrossover,
}

/// One row of a dispatch table.
#[derive(Clone, Copy, Debug)]
struct Rule {
    family: Family,
    tokens: Tokens,
}

/// From this many tokens on, bf16 and f16 use the tensor-core kernel; below it the SIMT decode
/// kernel. Measured on the H200 in CUDA graphs (bench/results/h200-graph/sweep, NOTES "graph
/// mode"): at M = 2 the 8-token mma.sync tile takes 29.2 us on qwen3-32b against gemv's 36.7, 5.1
/// against 5.4 on qwen3-0.6b, and is within 2 % of gemv on qwen3-8b and qwen2.5-0.5b; at M = 1
/// gemv is ahead on every model (27.6 vs 29.4 us on qwen3-32b, 3.7 vs 4.4 on qwen2.5-0.5b).
pub const TENSOR_CORE_MIN_TOKENS: usize = 2;
/// From this many tokens on, bf16 and f16 on Hopper use the `wgmma` prefill kernel with split-K
/// ([`wgmma_splits`]); below it the mma.sync kernel. Measured on the H200 in CUDA graphs
/// (bench/results/h200-split-k, bench/NOTES.md "split-K"): at 32 tokens `wgmma` with split-K takes
/// 5.2 us against mma.sync's 6.1 on qwen2.5-0.5b, 10.1 vs 11.5 on qwen3-1.7b, 21.9 vs 22.4 on
/// qwen3-8b and 36.6 vs 40.7 on qwen3-32b (7.6 vs 7.4 on qwen3-0.6b); at 16 tokens mma.sync is
/// ahead or level on every model but qwen3-32b (19.6 vs 20.9 us on qwen3-8b, 6.2 vs 7.2 on
/// qwen3-0.6b).
pub const WGMMA_MIN_TOKENS: usize = 17;
/// ...and from this many where the mma.sync kernel's blocks (`N / 16`) do not all fit on the GPU
/// at once: its last, partial wave then costs more than `wgmma`'s higher fixed cost (qwen3-32b,
/// H200: 640 blocks of the 16-token tile, 4 per SM fit, 528: 41.6 us at 16 tokens against 30.4
/// at 8 with the 8-token tile, of which 5 per SM fit; `wgmma` with split-K 35.5 at 17).
pub const WGMMA_MIN_TOKENS_MMA_OVER_A_WAVE: usize = 9;

const AUTO: &[Rule] = &[
    Rule { family: Family::Wgmma, tokens: Tokens::WgmmaCrossover },
    Rule { family: Family::Mma, tokens: Tokens::From(TENSOR_CORE_MIN_TOKENS) },
    Rule { family: Family::Gemv, tokens: Tokens::UpTo(kernel_abi::gemv::MAX_TOKENS as usize) },
    Rule { family: Family::Fallback, tokens: Tokens::Any },
];
const SIMT: &[Rule] = &[
    Rule { family: Family::Gemv, tokens: Tokens::UpTo(kernel_abi::gemv::MAX_TOKENS as usize) },
    Rule { family: Family::Fallback, tokens: Tokens::Any },
];
const TENSOR_CORE: &[Rule] = &[Rule { family: Family::Mma, tokens: Tokens::Any }];
const WGMMA: &[Rule] = &[Rule { family: Family::Wgmma, tokens: Tokens::Any }];

/// Whether a launch of `tile` for a layer of `weight_bytes` of W, on a GPU of `l2_bytes` of L2,
/// goes as a programmatic dependent of the kernel before it (when the layer allows it,
/// [`super::GpuLayer::set_dependent_launch`]): the `wgmma` and fallback kernels always; the
/// decode kernels (gemv, mma.sync) where W is at most a quarter of L2, where a launch is short
/// enough that its ramp matters. Measured on the H200 (bench/NOTES.md "programmatic dependent
/// launch"), 28 layers in a CUDA graph, per layer: qwen2.5-0.5b (2 MB) at M = 1 3.34 -> 2.69 us,
/// qwen3-0.6b (8 MB) 4.94 -> 4.40; but qwen3-8b (50 MB) 16.3 -> 20.4 us (not understood: a
/// gemv grid that fills the GPU in one wave), qwen3-32b (73 MB) 28.0 -> 27.5. The `wgmma` grids
/// gain or hold from 16 tokens on (qwen2.5-0.5b at 384 tokens 8.4 -> 7.5, qwen3-0.6b at 8192 127
/// -> 125), but for qwen3-32b at 192 tokens (49.4 -> 51.7).
pub fn dependent_launch(tile: &Tile, weight_bytes: usize, l2_bytes: usize) -> bool {
    match tile {
        Tile::Gemv(_) | Tile::Mma(_) => weight_bytes <= l2_bytes / 4,
        Tile::Wgmma(_) | Tile::Fallback(_) => true,
    }
}

/// The `mma.sync` tile `Auto` uses (16 rows of W per block, 8 warps, depth 2: fastest measured
/// on the H100, bench/NOTES.md v4); its token count follows M.
const MMA_TILE: MmaTile = MmaTile { weight_rows: 16, tokens: 32, warps: 8, depth: 2 };

impl Tokens {
    fn holds(self, call: &Call) -> bool {
        match self {
            Tokens::Any => true,
            Tokens::UpTo(max) => call.m <= max,
            Tokens::From(min) => call.m >= min,
            Tokens::WgmmaCrossover => {
                call.m >= WGMMA_MIN_TOKENS || (call.m >= WGMMA_MIN_TOKENS_MMA_OVER_A_WAVE && !call.mma_fits_one_wave)
            }
        }
    }
}

impl Family {
    fn of(tile: &Tile) -> Family {
        match tile {
            Tile::Gemv(_) => Family::Gemv,
            Tile::Mma(_) => Family::Mma,
            Tile::Fallback(_) => Family::Fallback,
            Tile::Wgmma(_) => Family::Wgmma,
        }
    }

    /// Why the family cannot run `call`, or `None` when it can.
    fn unsupported(self, call: &Call) -> Option<&'static str> {
        let tensor_cores = call.dtype != Dtype::F32;
        match self {
            Family::Fallback => None,
            Family::Gemv if !call.vector => {
                Some("the gemv kernel needs hidden % (16 B / dtype) == 0 and a 16-byte aligned x")
            }
            Family::Gemv => None,
            Family::Mma if !(tensor_cores && call.vector) => {
                Some("the tensor-core kernel needs bf16 or f16, hidden % 8 == 0 and a 16-byte aligned x")
            }
            Family::Mma => None,
            Family::Wgmma if !(tensor_cores && call.vector && call.hopper && call.paired_outputs) => Some(
                "the wgmma kernel needs compute capability 9.0, bf16 or f16, hidden % 8 == 0, a 16-byte aligned x, \
                 even q and kv widths and 4-byte aligned outputs",
            ),
            Family::Wgmma => None,
        }
    }

    /// The family's tile for `call` (its measured rule).
    fn tile(self, call: &Call) -> Tile {
        match self {
            Family::Gemv => Tile::Gemv(GemvTile { tokens: gemv_tokens(call.m), unroll: 0 }),
            Family::Mma => Tile::Mma(mma_tile(call.m)),
            Family::Fallback => {
                Tile::Fallback(kernel_abi::FallbackTile { tokens: fallback_tokens(call.m), vector: call.vector })
            }
            Family::Wgmma => {
                Tile::Wgmma(wgmma_tile(call.m, call.n, call.hidden, call.multiprocessors, &call.residencies))
            }
        }
    }
}

/// The mma.sync tile `Auto` uses for `m` tokens.
pub fn mma_tile(m: usize) -> MmaTile {
    MmaTile { tokens: mma_tokens(m), ..MMA_TILE }
}

/// Whether every block of the mma.sync kernel `Auto` picks for `m` tokens of `dtype` and `n`
/// output columns fits on `sms` multiprocessors at once, `resident(index)` blocks of kernel
/// `index` per multiprocessor ([`Call::mma_fits_one_wave`]). Only the crossover from
/// [`WGMMA_MIN_TOKENS_MMA_OVER_A_WAVE`] to [`WGMMA_MIN_TOKENS`] asks, so elsewhere (every decode
/// call) this answers `true` without looking the kernel up.
pub(crate) fn mma_fits_one_wave(m: usize, dtype: Dtype, n: usize, sms: usize, resident: impl Fn(usize) -> u32) -> bool {
    if !(WGMMA_MIN_TOKENS_MMA_OVER_A_WAVE..WGMMA_MIN_TOKENS).contains(&m) {
        return true;
    }
    let tile = mma_tile(m);
    let Some(index) = find(dtype, &Tile::Mma(tile)) else {
        return true;
    };
    let grid = tile.launch(m as u32, n as u32).grid;
    grid.0 as usize * grid.1 as usize <= sms * resident(index) as usize
}

/// gemv tokens per block: 1, 2, or 4 from 3 tokens on.
fn gemv_tokens(m: usize) -> u32 {
    match m {
        1 => 1,
        2 => 2,
        _ => 4,
    }
}

/// mma.sync tokens per block: the smallest of 8, 16 and 32 that covers M, else 32.
fn mma_tokens(m: usize) -> u32 {
    match m {
        0..=8 => 8,
        9..=16 => 16,
        _ => 32,
    }
}

/// Fallback tokens per block: the smallest of 1, 2, 4 and 8 that covers M, else 8.
fn fallback_tokens(m: usize) -> u32 {
    match m {
        0..=2 => m.max(1) as u32,
        3 | 4 => 4,
        _ => 8,
    }
}

/// The `wgmma` tile for `m` tokens, `n` output columns and rows of `hidden` on `sms`
/// multiprocessors, `residencies` those of the tiles compared: the block rule's tile
/// ([`block_tile`]), or a narrow TMA tile ([`NARROW_TILES`], [`narrow_tile`]) where one
/// wave of it is predicted faster.
pub fn wgmma_tile(m: usize, n: usize, hidden: usize, sms: usize, residencies: &Residencies) -> WgmmaTile {
    let block = block_tile(m, n, hidden, sms, residencies.wide);
    narrow_tile(m, n, hidden, block, residencies).unwrap_or(block)
}

/// The `wgmma` tile of the block rule for `m` tokens, `n` output columns and rows of `hidden` on
/// `sms` multiprocessors, `wide` the residency of the [`WIDE_TILES`] (measured on the H100,
/// bench/NOTES.md v5, and the H200, NOTES "tiles x split-K", "stream-K", "128 x 192"): a wide tile
/// ([`wide_tile`]: 128 x 256, 192 or 144, or 192 x 192, by the predicted time of its grid) with
/// split-K from [`LONG_K_MIN_TOKENS`] where `H` has at least [`LONG_K_BLOCKS`] k-blocks and N is a multiple of
/// 256 (each block then multiplies enough k-blocks to pay for the partial-tile exchange, and W is
/// read once per 128 tokens, not per 64); else 64 x 128 up to 64 tokens (one row tile: W is read
/// once either way) and while 128 x 128 tiles would leave half the multiprocessors idle (small M
/// is W-bound: more, smaller blocks stream it faster; from half, the 64-token tile's second read
/// of W costs more: qwen3-0.6b at 384 and 512 tokens, 96 and 128 tiles, 12.4 and 12.7 us with 128
/// x 128 against 14.5 and 14.6 with 64 x 128, H200 sweep bench/results/h200-tiles; at 256 tokens,
/// 64 tiles, 64 x 128 stays ahead, 10.5 against 11.3); a wide tile where N is a multiple of 256
/// or 192 and such tiles still fill two thirds of the machine (qwen2.5-0.5b, N = 1152 = 6 x 192,
/// at 2048 and 8192 tokens: 16.6 and 44.9 us with 128 x 192 against 17.7 and 49.5 with 128 x
/// 128 at two blocks per SM, bench/results/h200-n192/rule); else 128 x 128 while its tiles fit in
/// one wave, and a wide tile, whatever N, beyond (128 x 128 at two blocks per multiprocessor, the
/// earlier choice there, was the slowest of the wide and 128 x 128 grids wherever measured:
/// qwen3-0.6b, N = 4096, at 640 tokens, 160 tiles of 128 x 128: 15.4 us, against 12.0 with 110 of
/// 128 x 192; qwen3-1.7b 27.3 against 19.7; bench/results/h200-mid). In the 64 x 128 range, where those
/// tiles alone give split-K nothing to do (they fill [`SPLIT_K_FILL_TENTHS`] of the SMs) and H
/// has at least [`MID_K_BLOCKS`] k-blocks, 128 x 128 tiles in split-K instead: as many blocks,
/// each with half the k-blocks, and W read half as often.
fn block_tile(m: usize, n: usize, hidden: usize, sms: usize, wide: [Residency; WIDE_COUNT]) -> WgmmaTile {
    let blocks = |rows: usize, cols: usize| m.div_ceil(rows) * n.div_ceil(cols);
    let long_k = hidden.div_ceil(kernel_abi::wgmma::K_BLOCK as usize) >= LONG_K_BLOCKS;
    if long_k && m >= LONG_K_MIN_TOKENS && n.is_multiple_of(256) {
        wide_tile(m, n, hidden, wide)
    } else if m <= 64 || 2 * blocks(128, 128) < sms {
        let k_blocks = hidden.div_ceil(kernel_abi::wgmma::K_BLOCK as usize);
        let unsplit = blocks(64, 128) * 10 >= SPLIT_K_FILL_TENTHS * sms;
        if m > 64 && unsplit && k_blocks >= MID_K_BLOCKS {
            SQUARE_TILE
        } else {
            CP_ASYNC_TILE
        }
    } else if (n.is_multiple_of(256) && 3 * blocks(128, 256) >= 2 * sms)
        || (n.is_multiple_of(192) && 3 * blocks(128, 192) >= 2 * sms)
        || blocks(128, 128) > sms
    {
        wide_tile(m, n, hidden, wide)
    } else {
        SQUARE_TILE
    }
}

/// The block rule's 64-row tile: 64 x 128 through a 4-stage cp.async ring, two blocks per
/// multiprocessor ([`block_tile`]).
pub const CP_ASYNC_TILE: WgmmaTile = WgmmaTile { tokens: 64, out_cols: 128, stages: 4, load: Load::CpAsync };
/// The block rule's 128 x 128 tile (TMA, one block per multiprocessor).
pub const SQUARE_TILE: WgmmaTile = WgmmaTile { tokens: 128, out_cols: 128, stages: 4, load: Load::Tma };

/// How many narrow tiles there are ([`NARROW_TILES`]).
pub const NARROW_COUNT: usize = 9;

/// The narrow tiles: few columns per tile through deep TMA rings, one block per multiprocessor,
/// so that some width's tile count fills one wave ([`narrow_tile`]): 64 tokens by 96 to 192
/// columns; 128 tokens by 64 or 96 (from 65 tokens: one row tile, or half the row tiles of the
/// 64-row ones, `W'` read by half as many blocks); and, only where one of them holds all of
/// 129-192 tokens, 192 tokens by 128, 144 or 192 (W read once, where 64- or 128-row tiles read
/// it from L2 three or two times). Their rings hold 160-200 KB, the bytes in flight one
/// multiprocessor needs to stream W at its share of the bandwidth.
pub const NARROW_TILES: [WgmmaTile; NARROW_COUNT] = [
    WgmmaTile { tokens: 64, out_cols: 96, stages: 8, load: Load::Tma },
    WgmmaTile { tokens: 64, out_cols: 128, stages: 6, load: Load::Tma },
    WgmmaTile { tokens: 64, out_cols: 160, stages: 6, load: Load::Tma },
    WgmmaTile { tokens: 64, out_cols: 192, stages: 6, load: Load::Tma },
    WgmmaTile { tokens: 128, out_cols: 64, stages: 8, load: Load::Tma },
    WgmmaTile { tokens: 128, out_cols: 96, stages: 6, load: Load::Tma },
    WgmmaTile { tokens: 192, out_cols: 128, stages: 5, load: Load::Tma },
    WgmmaTile { tokens: 192, out_cols: 144, stages: 5, load: Load::Tma },
    // 192 x 192: the same tile as the wide one of three warpgroups.
    WIDE_TILES[3],
];

/// Microseconds per k-block of each [`NARROW_TILES`] tile in a grid of one wave: the slopes
/// of `t = 2.24 us + k-blocks x slope`, fitted to unsplit one-wave grids of these tiles (H200,
/// graph mode; the 64-row tiles over 92 grids of five models at 64 to 512 tokens,
/// bench/results/h200-s10/m64-tma, residual 0.56 us rms; the 128-row tiles over 14 and 16
/// grids of seven models at 128 to 512 tokens with 64 blocks or more,
/// bench/results/h200-s12/m128-narrow, 0.31 and 0.5 us rms); the 192-row tiles' from their
/// split grids at 129-192 tokens (`t - 2.24 us - split cost` over k-blocks per block, median of
/// 105-130 grids of eleven models, bench/results/h200-s13/one-row). Nearly flat in the width up
/// to 128 rows: a block waits on latency, not on bytes, so the wider tile streams more W per
/// k-block in the same time; a 128-row tile multiplies twice the rows in about the same time
/// as a 64-row one.
const NARROW_K_BLOCK_US: [f64; NARROW_COUNT] = [0.38, 0.385, 0.40, 0.41, 0.35, 0.39, 0.54, 0.58, 0.66];
/// ... of 128 x 256, the unit of [`WIDE_K_BLOCK_TIME`] (bench/NOTES.md "What cuBLAS runs").
const WIDE_K_BLOCK_US: f64 = 0.64;
/// ... of the block rule's 128 x 128 tile ([`SQUARE_TILE`]) in a grid of one wave, unsplit or
/// split (qwen3-1.7b at 192-512 tokens, qwen3-0.6b at 384-512, bench/results/h200-s12/m128-narrow).
const SQUARE_K_BLOCK_US: f64 = 0.45;
/// ... of the cp.async tile ([`CP_ASYNC_TILE`]) split from 65 tokens (two per multiprocessor;
/// qwen3-1.7b and qwen3-0.6b at 128 tokens in two, bench/results/h200-s12/m128-narrow).
const CP_ASYNC_K_BLOCK_US: f64 = 0.47;
/// What splitting a tile's k-blocks between blocks costs, per 1024 elements of the tile: the
/// partial tiles' exchange and the wait for the cluster's slowest block. The value that
/// orders the measured grids best (bench/results/h200-s10/m64-tma, 64-row tiles in 2 and 4
/// and the block rule's split wide tiles at 128-256 tokens); 128 x 192 in two pays 6 us.
const SPLIT_US_PER_KILO_ELEMENT: f64 = 0.25;
/// [`SPLIT_US_PER_KILO_ELEMENT`] where a pair's partials are pushed
/// ([`kernel_abi::wgmma::split_pushes`]) on a 64- or 128-row tile, in a grid of at least half the
/// multiprocessors: the pushed exchange took 1.1-4.2 us off such grids against the pulled one
/// (H200, bench/results/h200-s14/ab: 128 x 64, 96, 128, 192 and 256 in two at 65-384 tokens,
/// 0.84-0.97x), 0.09-0.13 us per 1024 elements left of the pulled exchange's 0.25. Not on
/// 192-row tiles, whose pairs gained less (0.92-0.96x) and whose k-block times were fitted on
/// split grids; nor on grids of fewer blocks, which stream W slower than this model says
/// (qwen2.5-1.5b at 65-100 tokens: 128 x 64 in two, 64 blocks, 1.02-1.10x 128 x 96 in four,
/// bench/results/h200-s14/dispatch).
const PUSHED_SPLIT_US_PER_KILO_ELEMENT: f64 = 0.12;

/// Predicted microseconds of one wave of `tile`'s blocks at `m` tokens, each with
/// `k_blocks / splits` of the k-blocks at `k_block_us` each (less the fixed cost all grids
/// share); `half_full`: the grid has a block on at least half the multiprocessors.
fn one_wave_us(
    tile: WgmmaTile,
    k_block_us: f64,
    (splits, per_sm, half_full): (u32, usize, bool),
    (m, k_blocks): (usize, usize),
) -> f64 {
    let pushed =
        tile.tokens <= 128 && half_full && kernel_abi::wgmma::split_pushes(splits, (0, tile.tokens.min(m as u32)));
    let per_kilo = if pushed { PUSHED_SPLIT_US_PER_KILO_ELEMENT } else { SPLIT_US_PER_KILO_ELEMENT };
    let split = if splits > 1 { per_kilo * (tile.tokens * tile.out_cols) as f64 / 1024.0 } else { 0.0 };
    (k_blocks.div_ceil(splits as usize) * per_sm) as f64 * k_block_us + split
}

/// Which narrow tiles may replace the block rule's tile ([`narrow_tile`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replacing {
    /// Any.
    Any,
    /// 128- and 192-row tiles.
    Tall,
    /// Only a tall tile that holds every row in one row tile.
    OneRowTile,
}

/// The narrow tile ([`NARROW_TILES`]) that replaces the block rule's `block` tile for `m`
/// tokens, if any: of the narrow grids of one wave ([`wgmma_splits`] blocks per tile, all
/// resident at once, split only where the grid has one row tile), the one of least predicted
/// time ([`one_wave_us`]), where
/// - `m` is at most 64 tokens (one row tile, W read once), `block` being the cp.async tile,
///   and the narrow grid gives each block more k-blocks than the cp.async ring holds (its
///   deeper ring is what it brings). Measured on the H200, graph mode, at 17-64 tokens
///   (bench/results/h200-s11/ab, x): qwen3-8b 21.4 -> 19.6 us at 32 tokens (64 x 96 in two),
///   qwen3-32b 36.2 -> 32.7 (64 x 160 in two), qwen3-1.7b 10.8 -> 9.8 (64 x 160 in four),
///   qwen2.5-7b and Llama-3.2-3B -13 %; with 2-4 k-blocks per block it was slower
///   (qwen2.5-0.5b at 32 tokens 4.17 -> 4.40, qwen2.5-1.5b 5.96 -> 6.36). Below
///   [`NARROW_X_HALF_TOKENS`] the 64 x 96 tile is left out: of the narrow tiles its `x` box is
///   the largest share of a stage;
/// - or from 65 tokens, where `block` is the cp.async tile unsplit (the same grid through
///   TMA: qwen3-0.6b at 192 and 256 tokens 9.54 -> 8.88 and 9.67 -> 9.09 us, qwen2.5-0.5b at
///   512 8.84 -> 7.95), or a wide tile in a split-K grid of one wave predicted slower (qwen3-4b
///   at 192 tokens: 128 x 192 in two, 21.0 us, against 64 x 160 unsplit, 19.1; qwen3-14b at
///   192: 38.5 against 35.6 with 64 x 192; Llama-3.2-3B at 192: 22.1 against 20.9);
/// - or, by a 128- or 192-row tile only, where `block` is the cp.async tile split at 65-128
///   tokens (one 128-row tile: qwen3-1.7b 11.8 -> 10.6 us with 128 x 64 in two, qwen2.5-0.5b
///   6.3 -> 5.1-5.5 with 128 x 64 in four), or the 128 x 128 tile in a grid of one
///   wave (qwen3-1.7b at 192 and 256 tokens 13.7 -> 13.2 / 13.3 with 128 x 64, at 384 15.8 ->
///   14.7 with 128 x 96; qwen3-0.6b at 384 9.54 -> 9.03). The 64-row tiles stay out there:
///   128 x 128 was ahead of them wherever measured (qwen3-1.7b at 192 and 256 tokens, 13.7
///   against 14.3-14.8 us; qwen2.5-1.5b at 384 and 512, 11.2 and 11.7 against 12.1);
/// - or, by a tall tile that holds every row in one row tile only, where `block` is the
///   cp.async tile split over several row tiles (129-192 tokens: Llama-3.2-1B 15.8 -> 11.3-11.9
///   us with 192 x 128 in four; its 144 blocks share multiprocessors, which the prediction
///   counts) or a wide tile unsplit in one wave (qwen3-32b at 129-192, 128 x 192: 47.6-47.9 ->
///   42.2-43.1 with 192 x 192 in two).
///
/// Tall tiles hold at most one row tile past 64 tokens below their height: their `x` box is
/// then clipped to M ([`kernel_abi::wgmma::WgmmaTile::x_box_rows`]), so that TMA fills no
/// rows past M (that fill cost 0.2 us per k-block: 128 x 96 in two took 19.7 us on qwen3-4b at
/// 65 tokens against 15.2 at 128; clipped, 15.3, bench/results/h200-s13/one-row), and each
/// `W'` tile is read once. At 65-127 tokens that took qwen3-4b from 17.0-17.7 to 15.3 us
/// (128 x 96 in two, against 128 x 256 in four), qwen3-8b from 22.5-23.4 to 20.3-20.6; at
/// 129-192, qwen3-8b from 27.8 to 26.3 (192 x 128 in two, against 128 x 192 in two) and qwen3-14b
/// from 36.0 to 32.1 (against 64 x 192 unsplit). Known miss: qwen3-32b at 65-128 keeps 128 x
/// 192 in two (37.7-38.6 us) where 128 x 96 unsplit takes 34.1-34.8 (its split costs more
/// than [`SPLIT_US_PER_KILO_ELEMENT`] says there).
///
/// More than one wave of a narrow tile (one block per multiprocessor) measured 1.5-3x slower.
fn narrow_tile(m: usize, n: usize, hidden: usize, block: WgmmaTile, residencies: &Residencies) -> Option<WgmmaTile> {
    let k_blocks = hidden.div_ceil(kernel_abi::wgmma::K_BLOCK as usize);
    let one_wave = |tile: WgmmaTile, residency: Residency| {
        let splits = wgmma_splits(tile, m, n, hidden, residency);
        let blocks = tile.tiles(m as u32, n as u32) as usize * splits as usize;
        // Blocks that share a multiprocessor share its rate.
        let per_sm = blocks.div_ceil(residency.multiprocessors);
        (blocks <= residency.blocks(splits)).then_some((splits, per_sm, 2 * blocks >= residency.multiprocessors))
    };
    // What the narrow grid must beat, and which narrow tiles may.
    let (to_beat, replacing) = if block == CP_ASYNC_TILE {
        match one_wave(block, residencies.cp_async) {
            Some(grid) if m > 64 && grid.0 > 1 => {
                // Split over several row tiles, only one row tile replaces it.
                let replacing = if m > 128 { Replacing::OneRowTile } else { Replacing::Tall };
                (one_wave_us(block, CP_ASYNC_K_BLOCK_US, grid, (m, k_blocks)), replacing)
            }
            _ => (f64::INFINITY, Replacing::Any),
        }
    } else if block == SQUARE_TILE {
        match one_wave(block, residencies.square) {
            Some(grid) => (one_wave_us(block, SQUARE_K_BLOCK_US, grid, (m, k_blocks)), Replacing::Tall),
            None => return None,
        }
    } else if let Some(i) = WIDE_TILES.iter().position(|&t| t == block) {
        // A grid of one wave is never stream-K.
        let us = |grid| one_wave_us(block, WIDE_K_BLOCK_TIME[i] * WIDE_K_BLOCK_US, grid, (m, k_blocks));
        match one_wave(block, residencies.wide[i]) {
            Some(grid) if grid.0 > 1 => (us(grid), Replacing::Any),
            Some(grid) => (us(grid), Replacing::OneRowTile),
            None => return None,
        }
    } else {
        return None;
    };
    let mut best: Option<(f64, WgmmaTile, u32)> = None;
    for ((tile, residency), k_block_us) in NARROW_TILES.into_iter().zip(residencies.narrow).zip(NARROW_K_BLOCK_US) {
        let tall = tile.tokens >= 128;
        // A tall tile where one of them holds every row (its `x` box clipped to M) and the
        // next shorter one would not.
        let one_row_tile = tall && tile.tokens as usize >= m && m > tile.tokens as usize - 64;
        // 128-row tiles from 65 tokens, 192-row ones only as one row tile.
        let rows_fit = if tile.tokens > 128 { one_row_tile } else { !tall || m > 64 };
        let allowed = match replacing {
            Replacing::Any => true,
            Replacing::Tall => tall,
            Replacing::OneRowTile => one_row_tile,
        };
        if !allowed || !rows_fit || (m < NARROW_X_HALF_TOKENS && tile == NARROW_TILES[0]) {
            continue;
        }
        let Some(grid) = one_wave(tile, residency) else { continue };
        if grid.0 > 1 && m > tile.tokens as usize {
            continue;
        }
        let us = one_wave_us(tile, k_block_us, grid, (m, k_blocks));
        if us < to_beat && best.is_none_or(|(least, ..)| us < least) {
            best = Some((us, tile, grid.0));
        }
    }
    let (_, tile, splits) = best?;
    // Up to 64 tokens (the cp.async tile's range), the deeper ring is what the narrow grid brings.
    let deeper_ring_used = k_blocks.div_ceil(splits as usize) > CP_ASYNC_TILE.stages as usize;
    (m > 64 || deeper_ring_used).then_some(tile)
}

/// Below this many tokens more than half of a 64-row narrow tile's `x` rows lie past M
/// ([`narrow_tile`]).
pub const NARROW_X_HALF_TOKENS: usize = 32;

/// How many wide tiles there are ([`WIDE_TILES`]).
pub const WIDE_COUNT: usize = 4;

/// The wide tiles, one block per multiprocessor: 128 x 256, 128 x 192, 128 x 144 and 192 x 192
/// (three warpgroups), so that some shape's tile count fills the last wave where another's
/// leaves it part empty.
pub const WIDE_TILES: [WgmmaTile; WIDE_COUNT] = [
    WgmmaTile { tokens: 128, out_cols: 256, stages: 4, load: Load::Tma },
    WgmmaTile { tokens: 128, out_cols: 192, stages: 4, load: Load::Tma },
    WgmmaTile { tokens: 128, out_cols: 144, stages: 5, load: Load::Tma },
    WgmmaTile { tokens: 192, out_cols: 192, stages: 4, load: Load::Tma },
];

/// Time of one k-block of each [`WIDE_TILES`] tile on one multiprocessor, in units of the first's,
/// from one wave of whole tiles each (H200, graph mode):
/// - 128 x 192 does 3/4 of 128 x 256's work in 0.87 of its time (qwen3-8b at 384 tokens, 64
///   k-blocks per tile, 45.8 us for 72 tiles of 128 x 256, 39.3 for 96 of 128 x 192; at 512
///   tokens 46.3 and 40.8; bench/results/h200-n192);
/// - 128 x 144 does 3/4 of 128 x 192's work in 0.89-0.93 of its time (qwen3-8b and qwen3-4b at
///   384 tokens, 129 tiles against 96: 32.3 / 21.5 us against 36.2 / 24.2; qwen2.5-0.5b at 2048
///   tokens, 128 tiles against 96: 10.0 against 11.5; bench/results/h200-n144);
/// - 192 x 192 does 9/8 of 128 x 256's work in 1.15 of its time (qwen3-8b at 8192 tokens, 64
///   k-blocks per tile: 1376 tiles, 11 per block, 573 us against 1536 of 128 x 256, 12 per
///   block, 544; qwen3-4b at 2048 tokens 100.8 against 88.8 us, 3 tiles per block each;
///   bench/results/h200-m192).
const WIDE_K_BLOCK_TIME: [f64; WIDE_COUNT] = [1.0, 0.87, 0.78, 1.15];

/// What a stream-K tail tile's split costs beyond its k-blocks, per block past the first, in
/// 128 x 256 k-block times: the exchange of partials and the wait for the slowest block of the
/// tile (H200, `bench --kernel`: qwen3-8b at 768 tokens, a tail of 12 tiles split 4 ways took 25.8
/// us for 16 k-blocks of 0.7 us, one of 60 tiles split 2 ways 25.1 us for 32 k-blocks of 0.61).
const TAIL_SPLIT_K_BLOCKS: f64 = 7.0;

/// Of the [`WIDE_TILES`] (one block per multiprocessor, `wide` their residencies), the one whose
/// predicted time for `m` tokens is least: the k-blocks its busiest block multiplies on the grid
/// [`wgmma_grid`] gives it (whole waves of tiles, then a split tail tile; or its share of a
/// split-K tile, in as many waves as the clusters need) times its k-block time, plus the tail's
/// split cost. A narrower tile wins where its tile count fills the last wave better: qwen3-8b
/// (N = 6144) at 384 tokens has 72 tiles of 128 x 256 for 132 SMs, 96 of 128 x 192 and 129 of
/// 128 x 144; a taller one where its row tiles do: at 768 tokens 128 of 192 x 192.
///
/// 192-row tiles only where their grid has no split-K clusters: split, they measured far from
/// this prediction (qwen3-4b at 192 tokens, 32 tiles of 192 x 192: 20.2 us in 3-block clusters,
/// 24.8 in 2 and 31.7 in 4, against 21.0 for 128 x 192 in 2; the partial tiles' exchange, which
/// this cost leaves out, is 1.5x larger; bench/results/h200-m192).
pub fn wide_tile(m: usize, n: usize, hidden: usize, wide: [Residency; WIDE_COUNT]) -> WgmmaTile {
    let k_blocks = hidden.div_ceil(kernel_abi::wgmma::K_BLOCK as usize) as u32;
    let cost = |i: usize| {
        let (tile, residency) = (WIDE_TILES[i], wide[i]);
        let tiles = tile.tiles(m as u32, n as u32);
        let (k_blocks_busiest, splits_past_first) = match wgmma_grid(tile, m, n, hidden, residency) {
            WgmmaGrid::Stream(blocks) => {
                let (whole, splits) = kernel_abi::wgmma::stream_tail(tiles, blocks, k_blocks);
                let tail = if whole < tiles { k_blocks.div_ceil(splits) } else { 0 };
                let tail_splits = if whole < tiles { splits - 1 } else { 0 };
                (whole / blocks * k_blocks + tail, tail_splits)
            }
            WgmmaGrid::Split(splits) if splits > 1 && tile.tokens == 192 => return f64::INFINITY,
            WgmmaGrid::Split(splits) => {
                let waves = (tiles as usize * splits as usize).div_ceil(residency.blocks(splits).max(1));
                (waves as u32 * k_blocks.div_ceil(splits), 0)
            }
        };
        k_blocks_busiest as f64 * WIDE_K_BLOCK_TIME[i] + splits_past_first as f64 * TAIL_SPLIT_K_BLOCKS
    };
    let costs: [f64; WIDE_COUNT] = core::array::from_fn(cost);
    // The first of the least (the wider tile where two tie).
    let mut best = 0;
    for i in 1..WIDE_COUNT {
        if costs[i] < costs[best] {
            best = i;
        }
    }
    WIDE_TILES[best]
}

/// Blocks per tile for the `wgmma` `tile` at `m` tokens, `n` output columns and rows of `hidden`
/// on a GPU that holds `residency` of its blocks at once (split-K; 1: none): the fewest that
/// give at least [`SPLIT_K_FILL_TENTHS`] tenths of the multiprocessors a block, as long as every
/// block fits at once in its clusters and has a k-block to multiply.
///
/// Measured on the H200 (bench/results/h200-split-k, 64 x 128 tiles, 1 to 8 blocks per tile, five
/// models): below about 0.7 x SMs blocks, the few blocks leave tensor cores and memory
/// parallelism idle (qwen3-32b at 64 tokens: 80 tiles, 42.2 us unsplit, 37.0 in two); beyond it,
/// more blocks only add partial tiles to reduce (qwen3-0.6b at 128 tokens: 64 tiles, 8.6 us in
/// two, 9.7 in three, 10.2 unsplit). The rule is within 16 % of the best split in every
/// measured case (worst: qwen3-8b, which prefers 4 to the rule's 2 at 16-64 tokens).
///
/// Where one block fills a multiprocessor, the split is even (1, 2, 4, 6, 8). The three-block
/// cluster first measured slow (qwen3-32b at 128 tokens, 128 x 256 tiles: 41.7 us in two, 59.3
/// in three, 49.3 in four) was 120 blocks, more than the 117 such clusters an H200 holds at
/// once; three-block grids that fit measured mixed against this rule's (0.93-1.07x,
/// bench/NOTES.md "Odd split-K").
pub fn wgmma_splits(tile: WgmmaTile, m: usize, n: usize, hidden: usize, residency: Residency) -> u32 {
    let tiles = tile.tiles(m as u32, n as u32).max(1) as usize;
    let k_blocks = hidden.div_ceil(kernel_abi::wgmma::K_BLOCK as usize);
    let max = k_blocks.clamp(1, kernel_abi::wgmma::MAX_SPLITS as usize);
    let step = |splits: usize| if residency.one_per_multiprocessor() && splits > 1 { 2 } else { 1 };
    let fits = |splits: usize| tiles * splits <= residency.blocks(splits as u32) && tile.split_fits(splits as u32);
    let sms = residency.multiprocessors;
    // With a short H, no multiprocessor runs two blocks of a tile split to fill the machine.
    let pays = |splits: usize| k_blocks >= SHARE_SM_K_BLOCKS || tiles * splits <= sms;
    let mut splits = 1;
    while splits + step(splits) <= max
        && fits(splits + step(splits))
        && pays(splits + step(splits))
        && tiles * splits * 10 < SPLIT_K_FILL_TENTHS * sms
    {
        splits += step(splits);
    }
    splits as u32
}

/// How the blocks of a `wgmma` launch of `tile` share the tiles ([`wgmma_splits`] unless noted):
/// where one block fills a multiprocessor (`slots == sms`) and there are more tiles than
/// multiprocessors, a stream-K grid of one block per multiprocessor: each block walks whole
/// tiles, loading the next tile's first k-blocks while it stores one, and the last wave's tiles,
/// if it is part full, are split between the blocks that would idle
/// ([`kernel_abi::wgmma::stream_tail`]). Measured on the H200 in CUDA graphs, 128 x 256
/// (bench/results/h200-stream-k): the split last wave, qwen3-32b at 512 tokens (160 tiles) 115
/// -> 90 us, at 1024 (320) 172 -> 155, qwen3-8b at 768 (144) 94 -> 74, at 1024 (192) 92 -> 80
/// (tail/); the walk's loads under the stores, against the plain grid in the same run, qwen3-8b
/// at 8192 tokens 615 -> 573, qwen3-0.6b 138 -> 130, qwen3-32b 1178 -> 1160 (prefetch/). With
/// two blocks per multiprocessor (128 x 128, 3 stages) the plain grid stays ahead (qwen2.5-0.5b
/// at 4096 tokens: 30.3 against 33.0 us).
pub fn wgmma_grid(tile: WgmmaTile, m: usize, n: usize, hidden: usize, residency: Residency) -> WgmmaGrid {
    let tiles = tile.tiles(m as u32, n as u32) as usize;
    let slots = residency.slots;
    if tile.streams() && slots == residency.multiprocessors && tiles > slots {
        WgmmaGrid::Stream(slots as u32)
    } else {
        WgmmaGrid::Split(wgmma_splits(tile, m, n, hidden, residency))
    }
}

/// `H` of at least this many k-blocks (2560 elements) takes a wide tile ([`wide_tile`]) from
/// [`LONG_K_MIN_TOKENS`] ([`wgmma_tile`]). Measured on the H200 in CUDA graphs
/// (bench/results/h200-tiles, every tile at 1 to 8 splits): at 96 and 128 tokens qwen3-8b (64
/// k-blocks) takes 22.7 and 23.2 us with 128 x 256 in four against 32.1 and 32.4 with 64 x 128,
/// qwen3-32b (80) 41.4 and 41.7 in two against 54.5 and 55.2; at 256 tokens 32.2 (x2) against 45.1,
/// and 56.4 (x1) against 85.7. With 32 k-blocks or fewer (qwen3-1.7b, qwen3-0.6b, qwen2.5-0.5b)
/// 64 x 128 stays ahead up to 128-256 tokens (qwen3-1.7b at 128 tokens: 12.4 against 14.1);
/// with 40 (qwen3-4b) the wide tile is ahead from 128 tokens (17.2 against 22.6 us,
/// bench/results/h200-n192).
pub const LONG_K_BLOCKS: usize = 40;
/// ...from this many tokens (at 64 tokens 64 x 128 in four is ahead on qwen3-8b: 19.4 against 22.3).
pub const LONG_K_MIN_TOKENS: usize = 65;

/// From this many k-blocks of H, 128 x 128 tiles in split-K replace 64 x 128 tiles that would run
/// unsplit ([`wgmma_tile`]). H200, graph mode, programmatic dependent launch
/// (bench/results/h200-pdl/mid-m): qwen3-1.7b (32 k-blocks) at 192 and 256 tokens 15.1 and 13.8
/// us in two against 17.8 and 18.0 with 64 x 128; with 16 k-blocks it is a draw or a loss
/// (qwen3-0.6b at 256 tokens 10.3 against 10.4, at 192 10.7 against 10.3), with 14 a gain
/// (qwen2.5-0.5b at 768 tokens 9.6 against 10.3) that this threshold leaves alone.
pub const MID_K_BLOCKS: usize = 24;

/// Below this many k-blocks of H, split-K ([`wgmma_splits`]) stops where a tile that fits two
/// blocks per multiprocessor would have more blocks than multiprocessors: with so few k-blocks
/// per block, the two blocks on one multiprocessor take as long as one unsplit, and the partial
/// tiles' exchange comes on top. H200, graph mode (bench/results/h200-epilogue/sweep): qwen2.5-0.5b
/// (14 k-blocks) at 512 tokens, 72 tiles of 64 x 128, 8.8 us unsplit against 10.2 in two (144
/// blocks); at 384 tokens, 54 tiles, 7.2 in two (108 blocks) against 8.7 unsplit. From it,
/// streaming W gains from more blocks in flight: qwen3-32b (80 k-blocks) at 64 tokens, 80 tiles,
/// 37.0 us in two (160 blocks) against 42.2 unsplit (bench/results/h200-split-k).
pub const SHARE_SM_K_BLOCKS: usize = 24;

/// Split-K gives this many tenths of the multiprocessors a block ([`wgmma_splits`]).
pub const SPLIT_K_FILL_TENTHS: usize = 7;

/// The kernel for `call` under `policy`: its index in [`KERNELS`]. `loaded` says whether an
/// entry point is in the loaded PTX.
pub(crate) fn choose(policy: KernelPolicy, call: &Call, loaded: impl Fn(usize) -> bool) -> Result<usize> {
    let table = match policy {
        KernelPolicy::Auto => AUTO,
        KernelPolicy::Simt => SIMT,
        KernelPolicy::TensorCore => TENSOR_CORE,
        KernelPolicy::Wgmma => WGMMA,
        KernelPolicy::Kernel(name) => {
            let index = KERNELS
                .iter()
                .position(|k| k.name == name && k.dtype == call.dtype)
                .ok_or_else(|| Error::InvalidConfig(format!("no {:?} kernel named {name}", call.dtype)))?;
            let tile = &KERNELS[index].tile;
            if let Some(why) = Family::of(tile).unsupported(call) {
                return Err(Error::InvalidConfig(format!("{name}: {why}")));
            }
            if matches!(tile, Tile::Fallback(t) if t.vector && !call.vector) {
                return Err(Error::InvalidConfig(format!(
                    "{name}: the vector fallback needs hidden % (16 B / dtype) == 0 and a 16-byte aligned x"
                )));
            }
            if !loaded(index) {
                return Err(Error::InvalidConfig(format!(
                    "{name} is not loaded on this GPU{}",
                    if KERNELS[index].shipped {
                        ""
                    } else {
                        " (a measurement-only tile: build with --features tile-sweep)"
                    }
                )));
            }
            return Ok(index);
        }
    };
    let rule =
        table.iter().find(|r| r.tokens.holds(call) && r.family.unsupported(call).is_none()).ok_or_else(|| {
            let why =
                table.iter().find_map(|r| r.family.unsupported(call)).unwrap_or("no kernel takes this token count");
            Error::InvalidConfig(format!("{policy:?}: {why}"))
        })?;
    let tile = rule.family.tile(call);
    find(call.dtype, &tile).filter(|&i| loaded(i)).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "no loaded {:?} kernel with the tile {tile:?} (the kernel table lacks it)",
            call.dtype
        ))
    })
}

/// The index of the shipped kernel of `dtype` with `tile` (for gemv: with its token count).
fn find(dtype: Dtype, tile: &Tile) -> Option<usize> {
    KERNELS.iter().position(|k: &Kernel| {
        k.dtype == dtype
            && k.shipped
            && match (&k.tile, tile) {
                // The unroll depth is the kernel's own choice per token count.
                (Tile::Gemv(have), Tile::Gemv(want)) => have.tokens == want.tokens,
                (have, want) => have == want,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One block per SM on the H200 (132 SMs), as the driver reported it for the 1-per-SM
    /// `wgmma` tiles: GPCs hold whole clusters, so 3-, 4-, .. 8-block clusters fit fewer.
    const H200_ONE_PER_SM: Residency =
        Residency { multiprocessors: 132, slots: 132, clustered: [0, 132, 132, 117, 120, 110, 102, 105, 120] };
    const WIDE: [Residency; WIDE_COUNT] = [H200_ONE_PER_SM; WIDE_COUNT];
    /// The H200's: every tile compared one per SM but the cp.async tile, two.
    const H200: Residencies = Residencies {
        wide: WIDE,
        narrow: [H200_ONE_PER_SM; NARROW_COUNT],
        square: H200_ONE_PER_SM,
        cp_async: Residency {
            multiprocessors: 132,
            slots: 264,
            clustered: [0, 264, 264, 264, 264, 260, 264, 259, 264],
        },
    };

    fn call(m: usize, dtype: Dtype) -> Call {
        Call {
            m,
            dtype,
            n: 4096,
            hidden: 4096,
            vector: true,
            paired_outputs: true,
            hopper: true,
            multiprocessors: 132,
            mma_fits_one_wave: true,
            residencies: H200,
        }
    }

    /// Every choice the dispatch can make is a shipped kernel of the list, for every dtype,
    /// policy and token count, aligned or not.
    #[test]
    fn every_choice_is_a_shipped_kernel() {
        for dtype in [Dtype::Bf16, Dtype::F16, Dtype::F32] {
            for policy in [KernelPolicy::Auto, KernelPolicy::Simt, KernelPolicy::TensorCore, KernelPolicy::Wgmma] {
                for m in [1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 159, 160, 512, 8192] {
                    for (vector, hopper) in [(true, true), (false, true), (true, false)] {
                        let c = Call { vector, hopper, ..call(m, dtype) };
                        match choose(policy, &c, |_| true) {
                            Ok(i) => assert!(KERNELS[i].shipped && KERNELS[i].dtype == dtype, "{policy:?} {c:?}"),
                            Err(e) => assert!(
                                matches!(policy, KernelPolicy::TensorCore | KernelPolicy::Wgmma),
                                "{policy:?} {c:?}: {e}"
                            ),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn auto_follows_the_table() {
        let name = |m, dtype| KERNELS[choose(KernelPolicy::Auto, &call(m, dtype), |_| true).unwrap()].name;
        assert!(name(1, Dtype::Bf16).ends_with("gemv_m1"));
        assert!(name(2, Dtype::F16).ends_with("mma_r16_t8_w8_d2"));
        assert!(name(2, Dtype::F32).ends_with("gemv_m2"));
        assert!(name(3, Dtype::Bf16).ends_with("mma_r16_t8_w8_d2"));
        assert!(name(16, Dtype::Bf16).ends_with("mma_r16_t16_w8_d2"));
        assert!(name(17, Dtype::Bf16).contains("wgmma"));
        assert!(name(4, Dtype::F32).ends_with("gemv_m4"));
        assert!(name(5, Dtype::F32).ends_with("fallback_vec_m8"));
        // qwen3-32b's N = 10240 at 12 tokens: 640 blocks of the 16-token tile fit at 5 per SM,
        // not at 4; outside 9..=16 tokens the occupancy is not asked for.
        let n = 10240;
        assert!(mma_fits_one_wave(12, Dtype::Bf16, n, 132, |_| 5));
        assert!(!mma_fits_one_wave(12, Dtype::Bf16, n, 132, |_| 4));
        assert!(mma_fits_one_wave(8, Dtype::Bf16, n, 132, |_| unreachable!()));
        assert!(mma_fits_one_wave(17, Dtype::Bf16, n, 132, |_| unreachable!()));
        // An mma.sync grid over one wave hands 9 to 16 tokens to wgmma.
        let over = |m| Call { mma_fits_one_wave: false, ..call(m, Dtype::Bf16) };
        assert!(KERNELS[choose(KernelPolicy::Auto, &over(9), |_| true).unwrap()].name.contains("wgmma"));
        assert!(KERNELS[choose(KernelPolicy::Auto, &over(8), |_| true).unwrap()].name.contains("_mma_"));
        let unaligned = Call { vector: false, ..call(100, Dtype::Bf16) };
        assert!(KERNELS[choose(KernelPolicy::Auto, &unaligned, |_| true).unwrap()]
            .name
            .ends_with("fallback_scalar_m8"));
    }

    #[test]
    fn split_k_fills_idle_multiprocessors_only() {
        let tile = block_tile(64, 6144, 4096, 132, WIDE);
        assert_eq!((tile.tokens, tile.out_cols), (64, 128));
        // qwen3-8b at 64 tokens: 48 tiles on 132 SMs (2 blocks fit per SM): 96 blocks.
        assert_eq!(wgmma_splits(tile, 64, 6144, 4096, Residency::uniform(132, 2)), 2);
        // qwen3-0.6b at 64 and 128 tokens: 32 and 64 tiles.
        assert_eq!(wgmma_splits(tile, 64, 4096, 1024, Residency::uniform(132, 2)), 3);
        assert_eq!(wgmma_splits(tile, 128, 4096, 1024, Residency::uniform(132, 2)), 2);
        // Enough tiles: no split.
        assert_eq!(wgmma_splits(tile, 256, 4096, 1024, Residency::uniform(132, 2)), 1);
        assert_eq!(wgmma_splits(block_tile(8192, 6144, 4096, 132, WIDE), 8192, 6144, 4096, H200_ONE_PER_SM), 1);
        // Splits must fit at once, and one block per SM splits evenly: 40 tiles take 2, not 3.
        assert_eq!(wgmma_splits(tile, 64, 5120, 4096, H200_ONE_PER_SM), 2);
        assert_eq!(wgmma_splits(tile, 64, 5120, 4096, Residency::uniform(132, 2)), 3);
        // Long H from 65 tokens: 128 x 256, qwen3-8b at 128 tokens in 4, qwen3-32b in 2.
        let long = block_tile(128, 6144, 4096, 132, WIDE);
        assert_eq!((long.tokens, long.out_cols), (128, 256));
        assert_eq!(wgmma_splits(long, 128, 6144, 4096, H200_ONE_PER_SM), 4);
        assert_eq!(wgmma_splits(long, 128, 10240, 5120, H200_ONE_PER_SM), 2);
        assert_eq!(wgmma_splits(long, 384, 6144, 4096, H200_ONE_PER_SM), 1);
        // Short H (qwen3-1.7b) keeps 64 x 128 at 128 tokens; 64 tokens keep it for any H; from
        // half the SMs' worth of 128 x 128 tiles (qwen3-0.6b at 384 tokens), 128 x 128.
        assert_eq!(block_tile(128, 4096, 2048, 132, WIDE).tokens, 64);
        // qwen3-1.7b at 256 tokens: 128 tiles of 64 x 128 would run unsplit; 128 x 128 in two.
        let mid_k = block_tile(256, 4096, 2048, 132, WIDE);
        assert_eq!((mid_k.tokens, mid_k.out_cols, mid_k.stages), (128, 128, 4));
        assert_eq!(wgmma_splits(mid_k, 256, 4096, 2048, H200_ONE_PER_SM), 2);
        assert_eq!(block_tile(64, 10240, 5120, 132, WIDE).tokens, 64);
        assert_eq!(block_tile(256, 4096, 1024, 132, WIDE).tokens, 64);
        let mid = block_tile(384, 4096, 1024, 132, WIDE);
        assert_eq!((mid.tokens, mid.out_cols, mid.stages), (128, 128, 4));
        // Stream-K where one block fills an SM and there is more than a wave: qwen3-32b at 512
        // tokens (160 tiles of 128 x 256), qwen3-8b at 1408 (264); not within one wave, nor
        // with two blocks per SM.
        let big = block_tile(512, 10240, 5120, 132, WIDE);
        assert_eq!(wgmma_grid(big, 512, 10240, 5120, H200_ONE_PER_SM), WgmmaGrid::Stream(132));
        assert_eq!(wgmma_grid(big, 1408, 6144, 4096, H200_ONE_PER_SM), WgmmaGrid::Stream(132));
        assert_eq!(wgmma_grid(big, 256, 10240, 5120, H200_ONE_PER_SM), WgmmaGrid::Split(1));
        // Two blocks per SM (a measurement-only tile now) keep the plain grid.
        let two_per_sm = WgmmaTile { tokens: 128, out_cols: 128, stages: 3, load: Load::Tma };
        assert_eq!(wgmma_grid(two_per_sm, 4096, 1000, 1024, Residency::uniform(132, 2)), WgmmaGrid::Split(1));
        // Past one wave of 128 x 128, a wide tile whatever N: qwen3-0.6b (N = 4096) at 640
        // tokens, 160 tiles of 128 x 128, takes 110 of 128 x 192; N = 1000 at 4096 tokens.
        let past_a_wave = block_tile(640, 4096, 1024, 132, WIDE);
        assert_eq!((past_a_wave.out_cols, past_a_wave.stages), (192, 4));
        assert!(block_tile(4096, 1000, 1024, 132, WIDE).out_cols > 128);
        // Within one wave, 128 x 128 (qwen3-0.6b at 512 tokens: 128 tiles).
        assert_eq!(block_tile(512, 4096, 1024, 132, WIDE).out_cols, 128);
        // qwen2.5-0.5b at 16 tokens: 9 tiles, MAX_SPLITS; a short H caps it at its k-blocks.
        assert_eq!(wgmma_splits(tile, 16, 1152, 896, Residency::uniform(132, 2)), kernel_abi::wgmma::MAX_SPLITS);
        assert_eq!(wgmma_splits(tile, 16, 1152, 128, Residency::uniform(132, 2)), 2);
        assert!(SplitK::fixed(0).is_err() && SplitK::fixed(9).is_err() && SplitK::fixed(8).is_ok());
        // A short H never puts two split blocks on one SM: qwen2.5-0.5b at 512 tokens (72 tiles)
        // runs unsplit, at 384 (54 tiles) in two; a long one does (qwen3-32b at 64 tokens, 80 tiles).
        assert_eq!(wgmma_splits(tile, 512, 1152, 896, Residency::uniform(132, 2)), 1);
        assert_eq!(wgmma_splits(tile, 384, 1152, 896, Residency::uniform(132, 2)), 2);
        assert_eq!(wgmma_splits(tile, 64, 10240, 5120, Residency::uniform(132, 2)), 2);
    }

    /// The wide tile follows the predicted time of its grid: 128 x 144 or 192 where its tiles
    /// fill the last wave better (qwen3-8b, N = 6144: 129 tiles of 128 x 144 at 384 tokens, 128
    /// of 128 x 192 at 512, against 72-96 of 128 x 256), 192 x 192 where its row tiles do (128
    /// at 768 tokens, against 144-192 of the others), 128 x 256 where they fill it as well or
    /// its split-K clusters do not fit at once.
    #[test]
    fn wide_tile_follows_the_predicted_grid_time() {
        let dims = |tile: WgmmaTile| (tile.tokens, tile.out_cols);
        let cols = |m, n, hidden| wide_tile(m, n, hidden, WIDE).out_cols;
        let shape = |m, n, hidden| dims(wide_tile(m, n, hidden, WIDE));
        assert_eq!(shape(384, 6144, 4096), (128, 144), "qwen3-8b at 384 tokens");
        assert_eq!(shape(512, 6144, 4096), (128, 192), "qwen3-8b at 512 tokens");
        assert_eq!(shape(768, 6144, 4096), (192, 192), "qwen3-8b at 768 tokens");
        // 192-row tiles never split: 32 of them at 192 tokens would take 4-block clusters.
        assert_eq!(shape(192, 6144, 4096), (128, 192), "qwen3-8b at 192 tokens");
        // 128 tokens: 32 tiles of 128 x 192 in 4-block clusters would need 128 blocks at once;
        // 120 fit (whole clusters per GPC), so they split in 2, behind 128 x 256 in 4.
        assert_eq!(wgmma_splits(WIDE_TILES[1], 128, 6144, 4096, H200_ONE_PER_SM), 2);
        assert_eq!(wgmma_splits(WIDE_TILES[0], 128, 6144, 4096, H200_ONE_PER_SM), 4);
        assert_eq!(cols(128, 6144, 4096), 256);
        assert_eq!(shape(2048, 6144, 4096), (128, 256));
        assert_eq!(shape(8192, 6144, 4096), (128, 256));
        // qwen3-32b (N = 10240): 108 tiles of 128 x 192 at 256 tokens fill one wave better than
        // 80; at 512, 216 leave a tail of 84 that no split covers, 160 one of 28 split 4 ways.
        assert_eq!(cols(256, 10240, 5120), 192);
        assert_eq!(cols(512, 10240, 5120), 256);
        // N = 1152 (qwen2.5-0.5b, 6 x 192, 8 x 144): a wide tile once 128 x 192 tiles fill two
        // thirds of the SMs, else 128 x 128 as before; 128 x 144 where its tiles make whole waves
        // (128 at 2048 tokens), 192 x 192 where its do (132 at 4096 tokens; 258 at 8192, where
        // 128 x 192 leaves a last wave of 116 and 128 x 144 one of 124 of 512).
        let tile = |m| dims(block_tile(m, 1152, 896, 132, WIDE));
        assert_eq!(tile(8192), (192, 192));
        assert_eq!(tile(4096), (192, 192));
        assert_eq!(tile(2048), (128, 144));
        assert_eq!(block_tile(1024, 1152, 896, 132, WIDE).out_cols, 128);
        // The tile rule takes it for long H from 65 tokens: qwen3-4b (40 k-blocks) too, at 384
        // tokens 129 tiles of 128 x 144.
        assert_eq!(block_tile(384, 6144, 2560, 132, WIDE).out_cols, 144);
        assert_eq!(dims(block_tile(768, 6144, 2560, 132, WIDE)), (192, 192));
    }

    #[test]
    fn named_kernels_resolve_and_check_support() {
        let policy = KernelPolicy::kernel(Dtype::Bf16, "wgmma_m64_n128_s4").unwrap();
        assert_eq!(policy, KernelPolicy::Kernel("fused_rmsnorm_qkv_bf16_wgmma_m64_n128_s4"));
        assert!(KernelPolicy::kernel(Dtype::F32, "wgmma_m64_n128_s4").is_err());
        assert!(KernelPolicy::kernel(Dtype::Bf16, "no_such_tile").is_err());
        let off_hopper = Call { hopper: false, ..call(64, Dtype::Bf16) };
        assert!(choose(policy, &off_hopper, |_| true).is_err());
        assert!(choose(policy, &call(64, Dtype::Bf16), |_| false).is_err());
        assert!(choose(policy, &call(64, Dtype::Bf16), |_| true).is_ok());
        let vector_fallback = KernelPolicy::kernel(Dtype::F32, "fallback_vec_m8").unwrap();
        let unaligned = Call { vector: false, ..call(64, Dtype::F32) };
        assert!(choose(vector_fallback, &unaligned, |_| true).is_err());
        assert!(choose(vector_fallback, &call(64, Dtype::F32), |_| true).is_ok());
    }

    /// The narrow tiles take one row tile's grid from the cp.async tile, and grids of one wave
    /// from split-K where predicted faster; never more than one wave, never split past one row
    /// tile. The cases are the measured ones (bench/results/h200-s10/m64-tma).
    #[test]
    fn narrow_tiles_take_one_wave() {
        let plan = |m, n, hidden| {
            let tile = wgmma_tile(m, n, hidden, 132, &H200);
            // The other tiles are one per SM, as the wide ones.
            let residency = match NARROW_TILES.iter().position(|&t| t == tile) {
                Some(i) => H200.narrow[i],
                None if tile == CP_ASYNC_TILE => H200.cp_async,
                None => H200_ONE_PER_SM,
            };
            let splits = match wgmma_grid(tile, m, n, hidden, residency) {
                WgmmaGrid::Split(splits) => splits,
                WgmmaGrid::Stream(_) => 0,
            };
            (tile.tokens, tile.out_cols, tile.load, splits)
        };
        // One row tile: qwen3-8b, qwen3-32b and qwen3-1.7b at 32 tokens; at 17, qwen3-8b
        // leaves 64 x 96 out.
        assert_eq!(plan(32, 6144, 4096), (64, 96, Load::Tma, 2));
        assert_eq!(plan(32, 10240, 5120), (64, 160, Load::Tma, 2));
        assert_eq!(plan(32, 4096, 2048), (64, 160, Load::Tma, 4));
        assert_eq!(plan(17, 6144, 4096), (64, 128, Load::Tma, 2));
        // ... but not with 4 k-blocks per block or fewer: qwen2.5-0.5b, qwen2.5-1.5b; qwen3-0.6b
        // at 64 tokens takes a pushed pair of 64 x 96 (8 k-blocks a block; 7.87 -> 6.74 us,
        // bench/results/h200-s14/dispatch).
        assert_eq!(plan(64, 4096, 1024), (64, 96, Load::Tma, 2));
        assert_eq!(plan(32, 1152, 896).2, Load::CpAsync);
        assert_eq!(plan(32, 2048, 1536).2, Load::CpAsync);
        // The cp.async tile unsplit: qwen3-0.6b at 192 and 256 tokens, qwen2.5-0.5b at 512
        // (128 x 64: two row tiles, not three or four of 64 x 96 or 64 x 128).
        assert_eq!(plan(192, 4096, 1024), (128, 64, Load::Tma, 1));
        assert_eq!(plan(256, 4096, 1024), (128, 64, Load::Tma, 1));
        assert_eq!(plan(512, 1152, 896), (128, 64, Load::Tma, 1));
        // ... split at 65 to 128 tokens, by one 128-row tile, its `x` box clipped to M
        // (qwen3-1.7b, qwen3-0.6b and qwen2.5-0.5b at 65-128, bench/results/h200-s13/one-row);
        // from 129 tokens it stays (qwen2.5-0.5b at 192).
        assert_eq!(plan(128, 4096, 2048), (128, 64, Load::Tma, 2));
        assert_eq!(plan(65, 4096, 2048), (128, 64, Load::Tma, 2));
        assert_eq!(plan(128, 4096, 1024), (128, 64, Load::Tma, 2));
        assert_eq!(plan(100, 4096, 1024), (128, 64, Load::Tma, 2));
        assert_eq!(plan(128, 1152, 896), (128, 64, Load::Tma, 4));
        assert_eq!(plan(65, 1152, 896), (128, 64, Load::Tma, 4));
        assert_eq!(plan(192, 1152, 896), (64, 128, Load::CpAsync, 4));
        // ... or over three row tiles, by one 192-row tile (Llama-3.2-1B at 129-192 tokens).
        assert_eq!(plan(160, 3072, 2048), (192, 128, Load::Tma, 4));
        // Wide split-K grids predicted slower: qwen3-4b at 128 tokens, qwen3-8b at 128, qwen3-14b
        // at 192; from 129 tokens qwen3-4b takes 128 x 192 in a pushed pair (17.45-17.96 us
        // against 17.93-18.21 for 128 x 96 unsplit, bench/results/h200-s14/ab).
        assert_eq!(plan(128, 6144, 2560), (128, 96, Load::Tma, 2));
        assert_eq!(plan(65, 6144, 2560), (128, 96, Load::Tma, 2));
        assert_eq!(plan(192, 6144, 2560), (128, 192, Load::Tma, 2));
        assert_eq!(plan(256, 6144, 2560), (128, 192, Load::Tma, 2));
        assert_eq!(plan(128, 6144, 4096), (128, 96, Load::Tma, 2));
        assert_eq!(plan(65, 6144, 4096), (128, 96, Load::Tma, 2));
        // ... and one 192-row tile where it holds every row: qwen3-14b at 129-192 tokens (192 x
        // 128 in two), qwen3-32b (192 x 192 in two; an unsplit wide grid before); qwen3-8b there
        // takes 128 x 192 in a pushed pair (24.5-24.7 us either way).
        assert_eq!(plan(129, 6144, 4096), (128, 192, Load::Tma, 2));
        assert_eq!(plan(192, 7168, 5120), (192, 128, Load::Tma, 2));
        assert_eq!(plan(160, 10240, 5120), (192, 192, Load::Tma, 2));
        // ... predicted faster: qwen3-8b at 256 tokens, qwen3-14b at 128.
        assert_eq!(plan(256, 6144, 4096), (128, 192, Load::Tma, 2));
        assert_eq!(plan(128, 7168, 5120), (128, 256, Load::Tma, 4));
        // 128 x 128 predicted faster in split-K stays (qwen3-1.7b at 192 tokens); unsplit, a
        // 128-row narrow tile takes it where one wave of it fits (qwen3-1.7b and qwen3-0.6b at
        // 384 tokens), not where it does not (qwen3-0.6b at 512); qwen2.5-1.5b at 384 keeps 128 x
        // 128 in a pushed pair (9.65 us against 10.91 for 128 x 64 unsplit,
        // bench/results/h200-s14/dispatch).
        assert_eq!(plan(192, 4096, 2048), (128, 128, Load::Tma, 2));
        assert_eq!(plan(384, 4096, 2048), (128, 96, Load::Tma, 1));
        assert_eq!(plan(384, 4096, 1024), (128, 96, Load::Tma, 1));
        assert_eq!(plan(384, 2048, 1536), (128, 128, Load::Tma, 2));
        // More than one wave of the narrow tiles: the block rule (qwen3-0.6b at 512 tokens, N =
        // 30000 at 32 tokens, 157 tiles of 64 x 192).
        assert_eq!(plan(512, 4096, 1024), (128, 128, Load::Tma, 1));
        assert_eq!(plan(32, 30000, 1024).2, Load::CpAsync);
        // Every narrow choice fits at once, and splits only one row tile.
        for hidden in [512, 896, 1024, 2048, 2560, 3584, 4096, 5120, 8192] {
            for n in [1152, 2048, 3072, 4096, 4608, 5120, 6144, 7168, 10240, 14336] {
                for m in [9, 17, 33, 64, 65, 100, 128, 129, 160, 192, 193, 256, 320, 384, 512, 768, 1024] {
                    let tile = wgmma_tile(m, n, hidden, 132, &H200);
                    // (192 x 192 is also a wide tile, which the block rule takes for long M.)
                    let narrow = NARROW_TILES.iter().position(|&t| t == tile).filter(|_| !WIDE_TILES.contains(&tile));
                    if let Some(i) = narrow {
                        let residency = H200.narrow[i];
                        let splits = wgmma_splits(tile, m, n, hidden, residency);
                        let blocks = tile.tiles(m as u32, n as u32) as usize * splits as usize;
                        assert!(blocks <= residency.blocks(splits), "{m} x {n} x {hidden}: {blocks} blocks");
                        assert!(m <= tile.tokens as usize || splits == 1, "{m} x {n} x {hidden}: {splits} splits");
                        assert!(m > 64 || tile.tokens == 64, "{m} x {n} x {hidden}: {} rows", tile.tokens);
                        // A 192-row tile only as one row tile that a 128-row one would not be.
                        assert!(tile.tokens < 192 || (129..=192).contains(&m), "{m} x {n} x {hidden}: 192 rows");
                    }
                }
            }
        }
    }
}
