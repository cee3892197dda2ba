//! Thread and block indices, and the block-wide barrier (as in `cuda_std::thread`).

use core::arch::nvptx;

/// Index of this thread inside its block, x dimension.
#[inline(always)]
pub fn thread_idx_x() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_thread_idx_x() as u32 }
}

/// Index of this block inside the grid, x dimension.
#[inline(always)]
pub fn block_idx_x() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_block_idx_x() as u32 }
}

/// Index of this block inside the grid, y dimension.
#[inline(always)]
pub fn block_idx_y() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_block_idx_y() as u32 }
}

/// Threads per block, x dimension.
#[inline(always)]
pub fn block_dim_x() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_block_dim_x() as u32 }
}

/// Block-wide barrier (`bar.sync 0`), which also orders shared-memory accesses among the block.
///
/// # Safety
/// Every thread of the block must reach the same call the same number of times; a barrier under
/// a condition that differs between threads deadlocks or is undefined behaviour.
#[inline(always)]
pub unsafe fn sync_threads() {
    nvptx::_syncthreads()
}

/// The GPU's global nanosecond timer (`%globaltimer`).
#[inline(always)]
pub fn global_timer_ns() -> u64 {
    let t: u64;
    // SAFETY: reading a special register has no preconditions. Not `pure`: each read must happen.
    unsafe { core::arch::asm!("mov.u64 {t}, %globaltimer;", t = out(reg64) t, options(nomem, nostack)) };
    t
}
