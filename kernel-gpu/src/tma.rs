//! Hopper's tensor memory accelerator (TMA): whole tiles copied from global to shared memory
//! by one thread's instruction, completing on an mbarrier (sm_90).
//!
//! A copy is described by a tensor map (`CUtensorMap`, 128 bytes, encoded by the host with
//! `cuTensorMapEncodeTiled`) passed by value as a kernel parameter. The map fixes the matrix's
//! address, sizes and row pitch, the box (tile) shape and the shared-memory swizzle; boxes that
//! reach past the matrix are zero-filled, which is how the kernels handle tails.

use core::arch::asm;

use crate::shared::SharedPtr;

/// The generic address of the (only) parameter of kernel `$kernel`, a struct passed by value
/// whose tensor maps the copy engine reads in place (as CUDA's `__grid_constant__`).
#[macro_export]
macro_rules! param_address {
    ($kernel:ident) => {{
        let address: u64;
        // SAFETY: reads the address of the enclosing kernel's parameter; no memory is touched.
        unsafe {
            core::arch::asm!(
                concat!("mov.u64 {a}, ", stringify!($kernel), "_param_0;"),
                "cvta.param.u64 {a}, {a};",
                a = out(reg64) address,
                options(pure, nomem, nostack),
            )
        };
        address
    }};
}

/// Copies the box of the 2-D tensor `map` whose first element is at (`inner`, `outer`)
/// (element index along the contiguous dimension, then row) into `dst`; the transfer's bytes
/// count towards `barrier`'s expected transactions.
///
/// # Safety
/// `map` must be the generic address of a valid tensor map in parameter, constant or global
/// memory; `dst` must be aligned as the map's swizzle requires (1024 bytes for 128-byte swizzle)
/// with room for the box, and not be read or written by anyone until `barrier` completes;
/// `barrier` must be an initialised mbarrier expecting these bytes ([`crate::mbarrier`]).
#[inline(always)]
pub unsafe fn load_2d(dst: SharedPtr, map: u64, inner: u32, outer: u32, barrier: SharedPtr) {
    asm!(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c0}, {c1}}}], [{b}];",
        d = in(reg32) dst.0, m = in(reg64) map, c0 = in(reg32) inner, c1 = in(reg32) outer, b = in(reg32) barrier.0,
        options(nostack),
    );
}

/// [`load_2d`] into the same offset `dst` of the shared memory of every block of the cluster
/// whose bit is set in `blocks` (TMA multicast: read from L2 once), each transfer counting
/// towards the mbarrier at offset `barrier` of the block it lands in.
///
/// # Safety
/// As [`load_2d`], for `dst` and `barrier` in every block of `blocks` (each block's mbarrier
/// expecting these bytes in its current phase); launched in clusters containing those blocks.
#[inline(always)]
pub unsafe fn load_2d_multicast(dst: SharedPtr, map: u64, (inner, outer): (u32, u32), barrier: SharedPtr, blocks: u16) {
    asm!(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [{d}], [{m}, {{{c0}, {c1}}}], [{b}], {mask};",
        d = in(reg32) dst.0, m = in(reg64) map, c0 = in(reg32) inner, c1 = in(reg32) outer, b = in(reg32) barrier.0,
        mask = in(reg16) blocks,
        options(nostack),
    );
}

/// Asks the copy engine to bring the box of the 2-D tensor `map` at (`inner`, `outer`) into L2
/// (no shared memory, no barrier; nothing waits for it).
///
/// # Safety
/// `map` must be the generic address of a valid tensor map in parameter, constant or global
/// memory.
#[inline(always)]
pub unsafe fn prefetch_2d(map: u64, inner: u32, outer: u32) {
    asm!(
        "cp.async.bulk.prefetch.tensor.2d.L2.global.tile [{m}, {{{c0}, {c1}}}];",
        m = in(reg64) map, c0 = in(reg32) inner, c1 = in(reg32) outer,
        options(nostack),
    );
}

/// Copies `bytes` contiguous bytes from global memory at `src` into `dst` through the copy
/// engine (a bulk copy, no tensor map); the transfer's bytes count towards `barrier`'s expected
/// transactions.
///
/// # Safety
/// `src` and `dst` 16-byte aligned and `bytes` a multiple of 16; `src` readable (written, if
/// during the kernel, before a release this thread has acquired); `dst` not read or written by
/// anyone until `barrier` completes, and every earlier generic-proxy access to it ordered before
/// this by a proxy fence ([`crate::wgmma::fence_proxy_async_shared`]) and a barrier; `barrier` an
/// initialised mbarrier expecting these bytes.
#[inline(always)]
pub unsafe fn load_bulk(dst: SharedPtr, src: *const u8, bytes: u32, barrier: SharedPtr) {
    asm!(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [{d}], [{s}], {n}, [{b}];",
        d = in(reg32) dst.0, s = in(reg64) src, n = in(reg32) bytes, b = in(reg32) barrier.0,
        options(nostack),
    );
}
