//! Asynchronous global-to-shared copies (`cp.async`, sm_80+), as in `cuda_std`'s pipeline helpers.
//!
//! A thread issues copies, closes them into a group with [`commit_group`] and later waits until
//! at most `N` of its groups are still in flight ([`wait_group`]). The wait covers the calling
//! thread's copies only: a barrier must follow before other threads read the data.

use core::arch::asm;

use crate::shared::SharedPtr;

/// Copies 16 bytes from `src` to `dst`, or zero-fills `dst` when `full` is false (for rows and
/// columns past the end of a matrix), bypassing L1 (`.cg`).
///
/// # Safety
/// `dst` must be a 16-byte aligned address in this block's shared memory that nobody reads or
/// writes until the copy's group has been waited for; when `full`, `src` must be a 16-byte aligned
/// global address with 16 readable bytes that no thread writes during the kernel. When not `full`,
/// `src` is not read but must still be a valid global address.
#[inline(always)]
pub unsafe fn copy_16(dst: SharedPtr, src: *const u8, full: bool) {
    let src_bytes: u32 = if full { 16 } else { 0 };
    asm!(
        "cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
        d = in(reg32) dst.0, s = in(reg64) src, n = in(reg32) src_bytes,
        options(nostack),
    );
}

/// Closes this thread's copies issued since the last commit into one group.
///
/// # Safety
/// sm_80 or later.
#[inline(always)]
pub unsafe fn commit_group() {
    asm!("cp.async.commit_group;", options(nostack));
}

/// Waits until at most `pending` (0..=6, a constant after inlining) of this thread's committed
/// groups are in flight.
///
/// # Safety
/// sm_80 or later.
#[inline(always)]
pub unsafe fn wait_group(pending: u32) {
    match pending {
        0 => asm!("cp.async.wait_group 0;", options(nostack)),
        1 => asm!("cp.async.wait_group 1;", options(nostack)),
        2 => asm!("cp.async.wait_group 2;", options(nostack)),
        3 => asm!("cp.async.wait_group 3;", options(nostack)),
        4 => asm!("cp.async.wait_group 4;", options(nostack)),
        5 => asm!("cp.async.wait_group 5;", options(nostack)),
        _ => asm!("cp.async.wait_group 6;", options(nostack)),
    }
}
