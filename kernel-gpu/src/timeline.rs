//! Per-tile clock stamps for measurement builds (the `timeline` feature; layout in
//! [`kernel_abi::timeline`]). Without the feature every method is empty and [`Timeline`] holds
//! nothing, so the kernels' code is that of a plain build.

use kernel_abi::QkvParams;
#[cfg(feature = "timeline")]
use kernel_abi::timeline::*;

/// A block's record, written by its thread 0 where the launch gave one.
pub struct Timeline {
    #[cfg(feature = "timeline")]
    block: *mut u64,
    #[cfg(feature = "timeline")]
    items: u32,
}

#[cfg(feature = "timeline")]
#[inline(always)]
fn clock64() -> u64 {
    let t: u64;
    // SAFETY: reads a special register. Not `pure`: each read must happen where it is written.
    unsafe { core::arch::asm!("mov.u64 {t}, %clock64;", t = out(reg64) t, options(nomem, nostack)) };
    t
}

#[cfg(feature = "timeline")]
#[inline(always)]
fn sm_id() -> u32 {
    let id: u32;
    // SAFETY: reads a special register.
    unsafe { core::arch::asm!("mov.u32 {id}, %smid;", id = out(reg32) id, options(nomem, nostack)) };
    id
}

impl Timeline {
    /// The block's record, its start stamped.
    ///
    /// # Safety
    /// `params.timeline` is 0 or holds [`kernel_abi::timeline::WORDS_PER_BLOCK`] words for
    /// every block of the grid.
    #[inline(always)]
    pub unsafe fn begin(params: &QkvParams) -> Timeline {
        #[cfg(feature = "timeline")]
        {
            use crate::thread::{block_idx_x, global_timer_ns, thread_idx_x};
            let block = if params.timeline != 0 && thread_idx_x() == 0 {
                (params.timeline as usize as *mut u64).add(block_idx_x() as usize * WORDS_PER_BLOCK)
            } else {
                core::ptr::null_mut()
            };
            if !block.is_null() {
                block.add(HEADER_SM).write_volatile(sm_id() as u64);
                block.add(HEADER_START_NS).write_volatile(global_timer_ns());
                block.add(HEADER_START_CLOCK).write_volatile(clock64());
            }
            Timeline { block, items: 0 }
        }
        #[cfg(not(feature = "timeline"))]
        {
            let _ = params;
            Timeline {}
        }
    }

    /// A record that stamps nothing.
    #[inline(always)]
    pub fn none() -> Timeline {
        #[cfg(feature = "timeline")]
        {
            Timeline { block: core::ptr::null_mut(), items: 0 }
        }
        #[cfg(not(feature = "timeline"))]
        Timeline {}
    }

    /// Starts the record of a walk step (counted always; recorded while there is room).
    #[inline(always)]
    pub fn step(&mut self, tile: u32, first: u32, count: u32) {
        #[cfg(feature = "timeline")]
        if !self.block.is_null() {
            if (self.items as usize) < MAX_ITEMS {
                // SAFETY: the item lies inside the block's words (`items < MAX_ITEMS`).
                unsafe {
                    let item = self.block.add(HEADER_WORDS + self.items as usize * ITEM_WORDS);
                    item.add(ITEM_STEP).write_volatile(pack_step(tile, first, count));
                    item.add(ITEM_START).write_volatile(clock64());
                }
            }
            self.items += 1;
        }
        #[cfg(not(feature = "timeline"))]
        let _ = (tile, first, count);
    }

    /// Stamps word `word` ([`kernel_abi::timeline`]'s `ITEM_*`) of the current step, where it
    /// is recorded.
    #[inline(always)]
    pub fn stamp(&self, word: usize) {
        #[cfg(feature = "timeline")]
        if !self.block.is_null() && self.items > 0 && (self.items as usize) <= MAX_ITEMS {
            // SAFETY: as in `step`; `word < ITEM_WORDS` by the callers' constants.
            unsafe {
                self.block.add(HEADER_WORDS + (self.items as usize - 1) * ITEM_WORDS + word).write_volatile(clock64())
            };
        }
        #[cfg(not(feature = "timeline"))]
        let _ = word;
    }

    /// Stamps the block's end.
    #[inline(always)]
    pub fn end(&self) {
        #[cfg(feature = "timeline")]
        if !self.block.is_null() {
            // SAFETY: header words of the block's record.
            unsafe {
                self.block.add(HEADER_END_NS).write_volatile(crate::thread::global_timer_ns());
                self.block.add(HEADER_END_CLOCK).write_volatile(clock64());
                self.block.add(HEADER_ITEMS).write_volatile(self.items as u64);
            }
        }
    }
}
