//! The kernel ABI: every fact both sides of a launch need, defined once and compiled into both
//! the device crate (`kernel-gpu`, for nvptx64) and the host library (`fused-qkv`).
//!
//! - [`params`]: the `#[repr(C)]` parameter struct each kernel family takes by value (pointers,
//!   shape, `eps`, the output scale; the fallback's staging chunk; the TMA kernels' tensor maps).
//! - [`KERNELS`]: every kernel entry point, by name, dtype and tile. The device crate declares
//!   its entry points from the same list ([`kernel_list!`]), so a name or a tile exists in one
//!   place. Entries marked `sweep` are measurement-only variants, compiled only with the
//!   `tile-sweep` feature (the host's feature of that name builds and loads them).
//! - [`gemv`], [`mma`], [`fallback`], [`wgmma`]: per kernel family, its tile type, the constants
//!   the kernel is written for, its shared memory (`const fn`, used by the kernel for its layout
//!   and by the host for the launch) and its launch geometry.
//! - [`timeline`]: the layout of the per-tile clock stamps a measurement build writes.
#![no_std]

pub mod fallback;
pub mod gemv;
pub mod mma;
pub mod params;
pub mod timeline;
pub mod wgmma;

pub use fallback::FallbackTile;
pub use gemv::GemvTile;
pub use mma::MmaTile;
pub use params::{FallbackParams, QkvParams, Shape, TensorMap, TmaParams};
pub use wgmma::{Load, WgmmaGrid, WgmmaTile};

/// Threads per warp.
pub const WARP_SIZE: u32 = 32;

/// The name of the benchmark's delay kernel (one thread spinning for a given number of ns).
pub const DELAY_KERNEL: &str = "bench_delay";

/// A storage dtype of the kernels' tensors (arithmetic is always fp32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bf16,
    F16,
    F32,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size_bytes(self) -> u32 {
        match self {
            Dtype::Bf16 | Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }

    /// Elements per 16-byte vector access.
    pub const fn vector_elems(self) -> u32 {
        16 / self.size_bytes()
    }
}

/// A kernel family's tile: which specialisation of the family an entry point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// SIMT decode ([`gemv`]).
    Gemv(GemvTile),
    /// Tensor cores through `mma.sync` ([`mma`]).
    Mma(MmaTile),
    /// The SIMT kernel for any shape and alignment ([`fallback`]).
    Fallback(FallbackTile),
    /// Hopper prefill on `wgmma` ([`wgmma`], sm_90a only).
    Wgmma(WgmmaTile),
}

/// One kernel entry point of the PTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// The entry point's symbol.
    pub name: &'static str,
    pub dtype: Dtype,
    pub tile: Tile,
    /// Shipped (the dispatch can pick it); `false`: a measurement-only variant, compiled only
    /// with the `tile-sweep` feature.
    pub shipped: bool,
}

impl Kernel {
    /// Whether the sm_80 PTX holds it too (everything but `wgmma`).
    pub const fn on_sm80(&self) -> bool {
        !matches!(self.tile, Tile::Wgmma(_))
    }
}

/// The launch configuration of one kernel for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block_threads: u32,
    /// Dynamic shared memory, bytes.
    pub shared_bytes: u32,
    /// Blocks per thread-block cluster along x (sm_90; 1: no cluster). `grid.0` is a multiple.
    pub cluster: u32,
}

/// Expands `$callback! { [set family name: dtype { tile fields }] ... }` with every kernel entry
/// point: the single list of kernels that the device crate declares and the host loads.
///
/// `set` is `shipped` or `sweep` (measurement-only, behind the `tile-sweep` feature of the
/// crate that expands the list); `family` is `gemv`, `mma`, `fallback` or `wgmma`; the tile
/// fields are those of the family's tile type, as literals.
#[macro_export]
macro_rules! kernel_list {
    ($callback:ident) => {
        $callback! {
            // SIMT decode: 1, 2 or 4 tokens per block.
            [shipped gemv fused_rmsnorm_qkv_bf16_gemv_m1: bf16 { tokens: 1, unroll: 4 }]
            [shipped gemv fused_rmsnorm_qkv_bf16_gemv_m2: bf16 { tokens: 2, unroll: 4 }]
            [shipped gemv fused_rmsnorm_qkv_bf16_gemv_m4: bf16 { tokens: 4, unroll: 2 }]
            [shipped gemv fused_rmsnorm_qkv_f16_gemv_m1: f16 { tokens: 1, unroll: 4 }]
            [shipped gemv fused_rmsnorm_qkv_f16_gemv_m2: f16 { tokens: 2, unroll: 4 }]
            [shipped gemv fused_rmsnorm_qkv_f16_gemv_m4: f16 { tokens: 4, unroll: 2 }]
            [shipped gemv fused_rmsnorm_qkv_f32_gemv_m1: f32 { tokens: 1, unroll: 4 }]
            [shipped gemv fused_rmsnorm_qkv_f32_gemv_m2: f32 { tokens: 2, unroll: 4 }]
            [shipped gemv fused_rmsnorm_qkv_f32_gemv_m4: f32 { tokens: 4, unroll: 2 }]
            // The fallback: any shape and alignment, 16-byte (`vec`) or scalar loads.
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_vec_m1: bf16 { tokens: 1, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_vec_m2: bf16 { tokens: 2, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_vec_m4: bf16 { tokens: 4, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_vec_m8: bf16 { tokens: 8, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_scalar_m1: bf16 { tokens: 1, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_scalar_m2: bf16 { tokens: 2, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_scalar_m4: bf16 { tokens: 4, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_bf16_fallback_scalar_m8: bf16 { tokens: 8, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_vec_m1: f16 { tokens: 1, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_vec_m2: f16 { tokens: 2, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_vec_m4: f16 { tokens: 4, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_vec_m8: f16 { tokens: 8, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_scalar_m1: f16 { tokens: 1, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_scalar_m2: f16 { tokens: 2, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_scalar_m4: f16 { tokens: 4, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f16_fallback_scalar_m8: f16 { tokens: 8, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_vec_m1: f32 { tokens: 1, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_vec_m2: f32 { tokens: 2, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_vec_m4: f32 { tokens: 4, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_vec_m8: f32 { tokens: 8, vector: true }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_scalar_m1: f32 { tokens: 1, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_scalar_m2: f32 { tokens: 2, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_scalar_m4: f32 { tokens: 4, vector: false }]
            [shipped fallback fused_rmsnorm_qkv_f32_fallback_scalar_m8: f32 { tokens: 8, vector: false }]
            // mma.sync: the dispatch's tile (16 W rows, 8 warps, depth 2) at 8, 16 and 32 tokens...
            [shipped mma fused_rmsnorm_qkv_bf16_mma_r16_t8_w8_d2: bf16 { weight_rows: 16, tokens: 8, warps: 8, depth: 2 }]
            [shipped mma fused_rmsnorm_qkv_bf16_mma_r16_t16_w8_d2: bf16 { weight_rows: 16, tokens: 16, warps: 8, depth: 2 }]
            [shipped mma fused_rmsnorm_qkv_bf16_mma_r16_t32_w8_d2: bf16 { weight_rows: 16, tokens: 32, warps: 8, depth: 2 }]
            [shipped mma fused_rmsnorm_qkv_f16_mma_r16_t8_w8_d2: f16 { weight_rows: 16, tokens: 8, warps: 8, depth: 2 }]
            [shipped mma fused_rmsnorm_qkv_f16_mma_r16_t16_w8_d2: f16 { weight_rows: 16, tokens: 16, warps: 8, depth: 2 }]
            [shipped mma fused_rmsnorm_qkv_f16_mma_r16_t32_w8_d2: f16 { weight_rows: 16, tokens: 32, warps: 8, depth: 2 }]
            // ...and the other tiles, for measuring that choice.
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t8_w4_d2: bf16 { weight_rows: 16, tokens: 8, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t8_w4_d3: bf16 { weight_rows: 16, tokens: 8, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t8_w8_d3: bf16 { weight_rows: 16, tokens: 8, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t16_w4_d2: bf16 { weight_rows: 16, tokens: 16, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t16_w4_d3: bf16 { weight_rows: 16, tokens: 16, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t16_w8_d3: bf16 { weight_rows: 16, tokens: 16, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t32_w4_d2: bf16 { weight_rows: 16, tokens: 32, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t32_w4_d3: bf16 { weight_rows: 16, tokens: 32, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r16_t32_w8_d3: bf16 { weight_rows: 16, tokens: 32, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t8_w4_d2: bf16 { weight_rows: 32, tokens: 8, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t8_w4_d3: bf16 { weight_rows: 32, tokens: 8, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t8_w8_d2: bf16 { weight_rows: 32, tokens: 8, warps: 8, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t8_w8_d3: bf16 { weight_rows: 32, tokens: 8, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t16_w4_d2: bf16 { weight_rows: 32, tokens: 16, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t16_w4_d3: bf16 { weight_rows: 32, tokens: 16, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t16_w8_d2: bf16 { weight_rows: 32, tokens: 16, warps: 8, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t16_w8_d3: bf16 { weight_rows: 32, tokens: 16, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t32_w4_d2: bf16 { weight_rows: 32, tokens: 32, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t32_w4_d3: bf16 { weight_rows: 32, tokens: 32, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t32_w8_d2: bf16 { weight_rows: 32, tokens: 32, warps: 8, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_bf16_mma_r32_t32_w8_d3: bf16 { weight_rows: 32, tokens: 32, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t8_w4_d2: f16 { weight_rows: 16, tokens: 8, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t8_w4_d3: f16 { weight_rows: 16, tokens: 8, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t8_w8_d3: f16 { weight_rows: 16, tokens: 8, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t16_w4_d2: f16 { weight_rows: 16, tokens: 16, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t16_w4_d3: f16 { weight_rows: 16, tokens: 16, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t16_w8_d3: f16 { weight_rows: 16, tokens: 16, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t32_w4_d2: f16 { weight_rows: 16, tokens: 32, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t32_w4_d3: f16 { weight_rows: 16, tokens: 32, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r16_t32_w8_d3: f16 { weight_rows: 16, tokens: 32, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t8_w4_d2: f16 { weight_rows: 32, tokens: 8, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t8_w4_d3: f16 { weight_rows: 32, tokens: 8, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t8_w8_d2: f16 { weight_rows: 32, tokens: 8, warps: 8, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t8_w8_d3: f16 { weight_rows: 32, tokens: 8, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t16_w4_d2: f16 { weight_rows: 32, tokens: 16, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t16_w4_d3: f16 { weight_rows: 32, tokens: 16, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t16_w8_d2: f16 { weight_rows: 32, tokens: 16, warps: 8, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t16_w8_d3: f16 { weight_rows: 32, tokens: 16, warps: 8, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t32_w4_d2: f16 { weight_rows: 32, tokens: 32, warps: 4, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t32_w4_d3: f16 { weight_rows: 32, tokens: 32, warps: 4, depth: 3 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t32_w8_d2: f16 { weight_rows: 32, tokens: 32, warps: 8, depth: 2 }]
            [sweep mma fused_rmsnorm_qkv_f16_mma_r32_t32_w8_d3: f16 { weight_rows: 32, tokens: 32, warps: 8, depth: 3 }]
            // wgmma (sm_90a): 128- and 192-row tiles load through TMA; 64-row tiles through TMA
            // with 6-8 stage rings (one block per multiprocessor) or through cp.async (4 stages,
            // two per multiprocessor). 192-row tiles take three warpgroups.
            // Persistent ping-pong (`pp`): a producer warp, one block per multiprocessor, each
            // consumer warpgroup its own 64-row tiles.
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_pp_m64_n256_s4: bf16 { tokens: 64, out_cols: 256, stages: 4, load: TmaProducer }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_pp_m64_n192_s5: bf16 { tokens: 64, out_cols: 192, stages: 5, load: TmaProducer }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_pp_m64_n192_s6: bf16 { tokens: 64, out_cols: 192, stages: 6, load: TmaProducer }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_pp_m64_n128_s6: bf16 { tokens: 64, out_cols: 128, stages: 6, load: TmaProducer }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n256_s4: bf16 { tokens: 128, out_cols: 256, stages: 4, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m192_n192_s4: bf16 { tokens: 192, out_cols: 192, stages: 4, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m192_n144_s5: bf16 { tokens: 192, out_cols: 144, stages: 5, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m192_n128_s5: bf16 { tokens: 192, out_cols: 128, stages: 5, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n192_s4: bf16 { tokens: 128, out_cols: 192, stages: 4, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n192_s5: bf16 { tokens: 128, out_cols: 192, stages: 5, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n144_s4: bf16 { tokens: 128, out_cols: 144, stages: 4, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n144_s5: bf16 { tokens: 128, out_cols: 144, stages: 5, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n128_s4: bf16 { tokens: 128, out_cols: 128, stages: 4, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n128_s3: bf16 { tokens: 128, out_cols: 128, stages: 3, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n96_s6: bf16 { tokens: 128, out_cols: 96, stages: 6, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m128_n64_s8: bf16 { tokens: 128, out_cols: 64, stages: 8, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_m64_n128_s4: bf16 { tokens: 64, out_cols: 128, stages: 4, load: CpAsync }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m64_n96_s8: bf16 { tokens: 64, out_cols: 96, stages: 8, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m64_n128_s6: bf16 { tokens: 64, out_cols: 128, stages: 6, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m64_n160_s6: bf16 { tokens: 64, out_cols: 160, stages: 6, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_bf16_wgmma_tma_m64_n192_s6: bf16 { tokens: 64, out_cols: 192, stages: 6, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_m64_n256_s4: bf16 { tokens: 64, out_cols: 256, stages: 4, load: CpAsync }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_m64_n128_s6: bf16 { tokens: 64, out_cols: 128, stages: 6, load: CpAsync }]
            [sweep wgmma fused_rmsnorm_qkv_bf16_wgmma_m64_n128_s8: bf16 { tokens: 64, out_cols: 128, stages: 8, load: CpAsync }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_pp_m64_n256_s4: f16 { tokens: 64, out_cols: 256, stages: 4, load: TmaProducer }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_pp_m64_n192_s5: f16 { tokens: 64, out_cols: 192, stages: 5, load: TmaProducer }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_pp_m64_n192_s6: f16 { tokens: 64, out_cols: 192, stages: 6, load: TmaProducer }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_pp_m64_n128_s6: f16 { tokens: 64, out_cols: 128, stages: 6, load: TmaProducer }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n256_s4: f16 { tokens: 128, out_cols: 256, stages: 4, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m192_n192_s4: f16 { tokens: 192, out_cols: 192, stages: 4, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m192_n144_s5: f16 { tokens: 192, out_cols: 144, stages: 5, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m192_n128_s5: f16 { tokens: 192, out_cols: 128, stages: 5, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n192_s4: f16 { tokens: 128, out_cols: 192, stages: 4, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n192_s5: f16 { tokens: 128, out_cols: 192, stages: 5, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n144_s4: f16 { tokens: 128, out_cols: 144, stages: 4, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n144_s5: f16 { tokens: 128, out_cols: 144, stages: 5, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n128_s4: f16 { tokens: 128, out_cols: 128, stages: 4, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n128_s3: f16 { tokens: 128, out_cols: 128, stages: 3, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n96_s6: f16 { tokens: 128, out_cols: 96, stages: 6, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m128_n64_s8: f16 { tokens: 128, out_cols: 64, stages: 8, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_m64_n128_s4: f16 { tokens: 64, out_cols: 128, stages: 4, load: CpAsync }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m64_n96_s8: f16 { tokens: 64, out_cols: 96, stages: 8, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m64_n128_s6: f16 { tokens: 64, out_cols: 128, stages: 6, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m64_n160_s6: f16 { tokens: 64, out_cols: 160, stages: 6, load: Tma }]
            [shipped wgmma fused_rmsnorm_qkv_f16_wgmma_tma_m64_n192_s6: f16 { tokens: 64, out_cols: 192, stages: 6, load: Tma }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_m64_n256_s4: f16 { tokens: 64, out_cols: 256, stages: 4, load: CpAsync }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_m64_n128_s6: f16 { tokens: 64, out_cols: 128, stages: 6, load: CpAsync }]
            [sweep wgmma fused_rmsnorm_qkv_f16_wgmma_m64_n128_s8: f16 { tokens: 64, out_cols: 128, stages: 8, load: CpAsync }]
        }
    };
}

macro_rules! kernel_table {
    ($([$set:ident $family:ident $name:ident : $dtype:ident $tile:tt])*) => {
        /// Every kernel entry point, shipped and measurement-only (see [`Kernel::shipped`]).
        pub const KERNELS: &[Kernel] = &[$(Kernel {
            name: stringify!($name),
            dtype: dtype_of!($dtype),
            tile: tile_of!($family $tile),
            shipped: shipped_of!($set),
        }),*];
    };
}

macro_rules! dtype_of {
    (bf16) => {
        Dtype::Bf16
    };
    (f16) => {
        Dtype::F16
    };
    (f32) => {
        Dtype::F32
    };
}

macro_rules! shipped_of {
    (shipped) => {
        true
    };
    (sweep) => {
        false
    };
}

macro_rules! tile_of {
    (gemv { tokens: $tokens:literal, unroll: $unroll:literal }) => {
        Tile::Gemv(GemvTile { tokens: $tokens, unroll: $unroll })
    };
    (fallback { tokens: $tokens:literal, vector: $vector:literal }) => {
        Tile::Fallback(FallbackTile { tokens: $tokens, vector: $vector })
    };
    (mma { weight_rows: $rows:literal, tokens: $tokens:literal, warps: $warps:literal, depth: $depth:literal }) => {
        Tile::Mma(MmaTile { weight_rows: $rows, tokens: $tokens, warps: $warps, depth: $depth })
    };
    (wgmma { tokens: $tokens:literal, out_cols: $cols:literal, stages: $stages:literal, load: $load:ident }) => {
        Tile::Wgmma(WgmmaTile { tokens: $tokens, out_cols: $cols, stages: $stages, load: Load::$load })
    };
}

kernel_list!(kernel_table);

// Every tile in the list is one its kernel is written for.
const _: () = {
    let mut i = 0;
    while i < KERNELS.len() {
        let k = &KERNELS[i];
        let valid = match k.tile {
            Tile::Gemv(t) => t.is_valid(),
            Tile::Mma(t) => t.is_valid() && !matches!(k.dtype, Dtype::F32),
            Tile::Fallback(t) => t.is_valid(),
            Tile::Wgmma(t) => t.is_valid() && !matches!(k.dtype, Dtype::F32),
        };
        assert!(valid, "a kernel's tile is outside what its family supports");
        i += 1;
    }
};
