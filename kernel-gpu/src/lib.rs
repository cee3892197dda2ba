//! Device crate: the fused RMSNorm + QKV projection kernels.
//!
//! Compiled to PTX by stock rustc's `nvptx64-nvidia-cuda` backend (see `ptx-builder`). The small
//! device API below is named after `cuda_std`'s modules so that a later port to rust-cuda is
//! mechanical: [`thread`], [`warp`], [`shared`], [`mem`], [`float`], [`async_copy`];
//! [`dependency`] starts a kernel under its predecessor's tail (programmatic dependent launch),
//! [`element`] maps the storage dtypes (bf16, f16, f32) onto fp32 arithmetic, [`mma`] the tensor
//! cores, and [`qkv`] holds the steps every kernel shares (masked load, sum of squares, row
//! scale, epilogue), [`timeline`] the per-tile clock stamps of measurement builds. The kernel
//! families are in [`family`]: `gemv` (decode, SIMT), `mma` (a few to 32
//! tokens per block, tensor cores), `fallback` (any shape, SIMT) and, built for sm_90a
//! (`-C target-cpu=sm_90a`, which also brings Hopper's [`mbarrier`], [`tma`], [`cluster`] and
//! [`wgmma`] modules), `wgmma` (prefill). [`kernels`] declares the entry points from the kernel ABI's list
//! (`kernel-abi`), which also defines their parameter structs, tiles and launch geometry.
#![no_std]
#![feature(abi_ptx, stdarch_nvptx, asm_experimental_arch)]
#![allow(clippy::missing_safety_doc)] // every unsafe fn carries a `# Safety` section instead

/// Repeats `$body` once per listed index, binding `$i` to each as a `usize` constant.
///
/// LLVM does not always fully unroll a loop whose body is large; a register array indexed by a
/// loop counter then moves to local memory (a stack frame in ptxas's report). This makes the
/// unrolling part of the source.
#[macro_export]
macro_rules! unroll {
    ($i:ident in [$($n:literal),* $(,)?] $body:block) => {
        $( { let $i: usize = $n; $body } )*
    };
}

pub mod async_copy;
#[cfg(target_feature = "sm_90a")]
pub mod cluster;
pub mod delay;
pub mod dependency;
pub mod element;
pub mod family;
pub mod float;
pub mod kernels;
#[cfg(target_feature = "sm_90a")]
pub mod mbarrier;
pub mod mem;
pub mod mma;
pub mod qkv;
pub mod shared;
pub mod thread;
pub mod timeline;
#[cfg(target_feature = "sm_90a")]
pub mod tma;
pub mod warp;
#[cfg(target_feature = "sm_90a")]
pub mod wgmma;

/// A panic on the device cannot unwind or print: stop the kernel with `trap`, which the host sees
/// as a launch failure (`CUDA_ERROR_ILLEGAL_INSTRUCTION`) rather than as wrong numbers.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` has no preconditions; it aborts the kernel.
    unsafe { core::arch::nvptx::trap() }
}
