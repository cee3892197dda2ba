//! Warp-level primitives (as in `cuda_std::warp`).

use core::arch::asm;

/// Threads per warp on every NVIDIA GPU this crate targets (defined in the kernel ABI).
pub use kernel_abi::WARP_SIZE;

/// Lane index of this thread inside its warp.
#[inline(always)]
pub fn lane_id() -> u32 {
    crate::thread::thread_idx_x() % WARP_SIZE
}

/// Warp index of this thread inside its block.
#[inline(always)]
pub fn warp_id() -> u32 {
    crate::thread::thread_idx_x() / WARP_SIZE
}

/// Waits for every lane of the warp (`bar.warp.sync`) and orders their memory accesses
/// before what follows, as `__syncwarp()`.
///
/// # Safety
/// All 32 lanes of the warp must execute this call together.
#[inline(always)]
pub unsafe fn sync_warp() {
    asm!("bar.warp.sync -1;", options(nostack));
}

/// `shfl.sync.bfly`: the value of lane `lane ^ lane_mask`.
///
/// # Safety
/// All 32 lanes of the warp must execute this call together (full member mask).
#[inline(always)]
pub unsafe fn shuffle_xor_f32(value: f32, lane_mask: u32) -> f32 {
    let out: f32;
    asm!(
        "shfl.sync.bfly.b32 {out}, {v}, {m}, 31, -1;",
        out = out(reg32) out,
        v = in(reg32) value,
        m = in(reg32) lane_mask,
        // Not `pure`: LLVM may then sink the shuffle into a branch taken by some lanes only (it did:
        // into `if lane == 0`, a deadlock). Inline asm cannot be marked convergent; a side-effecting
        // asm is never moved into or out of conditional code.
        options(nostack),
    );
    out
}

/// Sum of `value` over the 32 lanes, returned to every lane (butterfly reduction).
///
/// # Safety
/// All 32 lanes of the warp must execute this call together.
#[inline(always)]
pub unsafe fn reduce_sum_f32(mut value: f32) -> f32 {
    let mut mask = WARP_SIZE / 2;
    while mask > 0 {
        value += shuffle_xor_f32(value, mask);
        mask /= 2;
    }
    value
}
