//! Thread and block indices, and the block-wide and named barriers (as in `cuda_std::thread`).

use core::arch::nvptx;

/// Index of this thread inside its block, x dimension.
#[inline(always)]
pub fn thread_idx_x() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_thread_idx_x() as u32 }
}

/// [`thread_idx_x`], read again at every use: what derives from it stays where it is used.
/// The compiler hoists values derived from the intrinsic out of loops, and in a loop over
/// tiles that keeps a whole epilogue's addresses in registers through the mainloop (the
/// persistent `wgmma` kernel: 213 instead of 126 registers for its 128 x 128 tile).
#[inline(always)]
pub fn thread_idx_x_unhoisted() -> u32 {
    let tid: u32;
    // SAFETY: reads a special register; not `pure`, so that it is neither merged nor hoisted.
    unsafe { core::arch::asm!("mov.u32 {t}, %tid.x;", t = out(reg32) tid, options(nomem, nostack)) };
    tid
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

/// Blocks in the grid, x dimension.
#[inline(always)]
pub fn grid_dim_x() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_grid_dim_x() as u32 }
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

/// Barrier `id` (1 to 15; 0 is [`sync_threads`]'s) among `threads` threads of the block
/// (`bar.sync id, threads`, a multiple of 32: whole warps), which also orders their
/// shared-memory accesses: a barrier for part of the block, such as the warps that multiply
/// while a producer warp runs on.
///
/// # Safety
/// Exactly `threads` threads, in whole warps, must reach the same call the same number of
/// times, and no other thread may use barrier `id` meanwhile.
#[inline(always)]
pub unsafe fn sync_named(id: u32, threads: u32) {
    core::arch::asm!("bar.sync {id}, {n};", id = in(reg32) id, n = in(reg32) threads, options(nostack));
}

/// Arrives at barrier `id` among `threads` threads (`bar.arrive id, threads`) without waiting:
/// the other side of a [`sync_named`] by the rest of the `threads`, as when one warpgroup hands
/// a turn to another. Memory accesses before it are performed for the threads that sync.
///
/// # Safety
/// As [`sync_named`]: the arriving and syncing threads together exactly `threads`, in whole
/// warps, once per use of the barrier.
#[inline(always)]
pub unsafe fn arrive_named(id: u32, threads: u32) {
    core::arch::asm!("bar.arrive {id}, {n};", id = in(reg32) id, n = in(reg32) threads, options(nostack));
}

/// The GPU's global nanosecond timer (`%globaltimer`).
#[inline(always)]
pub fn global_timer_ns() -> u64 {
    let t: u64;
    // SAFETY: reading a special register has no preconditions. Not `pure`: each read must happen.
    unsafe { core::arch::asm!("mov.u64 {t}, %globaltimer;", t = out(reg64) t, options(nomem, nostack)) };
    t
}
