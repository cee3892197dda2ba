//! Fused RMSNorm + QKV projection for LLM inference on NVIDIA GPUs.
//!
//! For hidden states `x [M, H]`, the norm weight `gamma [H]`, the fused QKV weight `W [N, H]` in
//! checkpoint layout (row `n` is output `n`) and an optional bias `b [N]`:
//!
//! ```text
//! rms_inv[m] = 1 / sqrt(mean_h x[m, h]^2 + eps)
//! y[m, n]    = sum_h x[m, h] * rms_inv[m] * gamma[h] * W[n, h]  (+ b[n])
//! q = y[:, 0 .. Hq],  k = y[:, Hq .. Hq + Hkv],  v = y[:, Hq + Hkv .. N]
//! ```
//!
//! with `Hq = num_heads * head_dim`, `Hkv = num_kv_heads * head_dim`, `N = Hq + 2 * Hkv`. Every
//! path folds gamma into W once ([`FoldedWeights`]: one rounding of `W * gamma` to the dtype, with
//! a power-of-two scale for f16), accumulates `x * W'` in fp32, applies `rms_inv` (fp32, from `x`)
//! in the epilogue and rounds once to the dtype at the output. Both the GPU kernels and
//! [`cpu::CpuLayer`] compute `sum_h x[m, h] * W'[n, h] * (rms_inv[m] * 2^-s) + b[n]`.
//!
//! - [`QkvConfig`]: shapes and eps, with presets for common models.
//! - [`QkvWeights`]: host copies of gamma, W and the bias; [`checkpoint`] loads them from safetensors;
//!   [`FoldedWeights`]: gamma folded into W, what the kernels read.
//! - [`gpu::GpuLayer`]: device copies and the launch ([`gpu::Kernels`] holds the loaded PTX,
//!   [`gpu::KernelPolicy`] the dispatch table); [`kernel_abi`] what the kernels and the launch share.
//! - [`cpu::CpuLayer`]: the same API shape on the CPU, parallel with rayon.
//! - [`reference`](mod@reference): the float64 oracle the tests and the CLI compare against.

pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod prologue;
pub mod reference;
pub mod rope;
pub mod weights;

pub use config::{ModelConfig, QkvConfig};
pub use dtype::{Dtype, DtypeKind};
pub use error::{CudaResultExt, Error, Result};
/// The `half` crate (1.x) whose `bf16` and `f16` the layer stores.
pub use half;
/// The kernel ABI shared with the device crate: parameter structs, tiles, the kernel list.
pub use kernel_abi;
pub use weights::{FoldedWeights, QkvWeights};
