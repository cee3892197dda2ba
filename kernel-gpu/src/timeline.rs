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

/// Stores `value` at `at` where `at` is not null: a predicated store, not a branch. A branch
/// around the stamps let LLVM duplicate the cluster barriers after them into both of its arms,
/// which split warp 0 between two copies of an `.aligned` barrier and hung the split-K kernels.
#[cfg(feature = "timeline")]
#[inline(always)]
unsafe fn store_where_given(at: *mut u64, value: u64) {
    core::arch::asm!(
        "{{ .reg .pred given; setp.ne.u64 given, {at}, 0; @given st.volatile.global.u64 [{at}], {value}; }}",
        at = in(reg64) at as u64, value = in(reg64) value, options(nostack),
    );
}

/// `base + words` where `base` is given and `ok`, else null, without a branch.
#[cfg(feature = "timeline")]
#[inline(always)]
fn word_at(base: *mut u64, words: usize, ok: bool) -> *mut u64 {
    let at = (base as usize).wrapping_add(words * 8);
    (if ok && !base.is_null() { at } else { 0 }) as *mut u64
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
            store_where_given(word_at(block, HEADER_SM, true), sm_id() as u64);
            store_where_given(word_at(block, HEADER_START_NS, true), global_timer_ns());
            store_where_given(word_at(block, HEADER_START_CLOCK, true), clock64());
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
        {
            let (item, room) = (HEADER_WORDS + self.items as usize * ITEM_WORDS, (self.items as usize) < MAX_ITEMS);
            // SAFETY: the item lies inside the block's words where there is room.
            unsafe {
                store_where_given(word_at(self.block, item + ITEM_STEP, room), pack_step(tile, first, count));
                store_where_given(word_at(self.block, item + ITEM_START, room), clock64());
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
        {
            let recorded = self.items > 0 && (self.items as usize) <= MAX_ITEMS;
            let at = HEADER_WORDS + (self.items as usize).wrapping_sub(1).wrapping_mul(ITEM_WORDS) + word;
            // SAFETY: as in `step`; `word < ITEM_WORDS` by the callers' constants.
            unsafe { store_where_given(word_at(self.block, at, recorded), clock64()) };
        }
        #[cfg(not(feature = "timeline"))]
        let _ = word;
    }

    /// Stamps the block's end.
    #[inline(always)]
    pub fn end(&self) {
        #[cfg(feature = "timeline")]
        // SAFETY: header words of the block's record.
        unsafe {
            store_where_given(word_at(self.block, HEADER_END_NS, true), crate::thread::global_timer_ns());
            store_where_given(word_at(self.block, HEADER_END_CLOCK, true), clock64());
            store_where_given(word_at(self.block, HEADER_ITEMS, true), self.items as u64);
        }
    }
}
