//! Shared-memory barriers that count arrivals and transferred bytes (`mbarrier`, sm_90 for the
//! transaction counts). A phase completes when its arrivals and expected bytes are all in;
//! waiters name the phase by its parity.

use core::arch::asm;

use crate::shared::SharedPtr;

/// Initialises the barrier at `bar` (8 bytes, 8-byte aligned) for `arrivals` arrivals per phase.
///
/// # Safety
/// One thread only, before any other use; [`fence_init`] and a block barrier must follow before
/// other threads or the copy engine use it.
#[inline(always)]
pub unsafe fn init(bar: SharedPtr, arrivals: u32) {
    asm!("mbarrier.init.shared::cta.b64 [{b}], {n};", b = in(reg32) bar.0, n = in(reg32) arrivals, options(nostack));
}

/// Makes initialised barriers visible to the async proxy (the copy engine).
///
/// # Safety
/// sm_90.
#[inline(always)]
pub unsafe fn fence_init() {
    asm!("fence.mbarrier_init.release.cluster;", options(nostack));
}

/// Arrives once (release: this thread's earlier memory accesses happen before the phase
/// completes for a waiter).
///
/// # Safety
/// `bar` must be an initialised barrier that still expects an arrival in its current phase.
#[inline(always)]
pub unsafe fn arrive(bar: SharedPtr) {
    asm!("mbarrier.arrive.shared::cta.b64 _, [{b}];", b = in(reg32) bar.0, options(nostack));
}

/// Arrives once on the mbarrier at `bar` in the shared memory of block `rank` of the cluster.
/// The default semantics (release at CTA scope), not a cluster-scope release: that one made a
/// warp wait for its earlier global stores at every arrival, and the persistent kernel's
/// mainloop 1.3x slower (H200). What an arrival orders here is this warp's use of a stage
/// (its MMAs waited for) before the other block's copy engine refills it.
///
/// # Safety
/// As [`arrive`] for that block's barrier; `rank` < [`crate::cluster::cluster_blocks`], and the
/// block does not exit before a later cluster barrier that this arrival precedes.
#[inline(always)]
pub unsafe fn arrive_in_block(bar: SharedPtr, rank: u32) {
    let remote = crate::cluster::ClusterPtr::map(bar, rank);
    asm!("mbarrier.arrive.shared::cluster.b64 _, [{b}];", b = in(reg32) remote.address(), options(nostack));
}

/// Arrives once and adds `bytes` to the transactions the current phase waits for.
///
/// # Safety
/// `bar` must be an initialised barrier; sm_90.
#[inline(always)]
pub unsafe fn arrive_expect_tx(bar: SharedPtr, bytes: u32) {
    asm!(
        "mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};",
        b = in(reg32) bar.0, n = in(reg32) bytes,
        options(nostack),
    );
}

/// Waits until the phase of parity `parity` of the barrier has completed.
///
/// # Safety
/// `bar` must be an initialised barrier whose phase will complete; sm_90.
#[inline(always)]
pub unsafe fn wait_parity(bar: SharedPtr, parity: u32) {
    loop {
        let done: u32;
        // try_wait itself suspends the thread for a while before it reports "not yet".
        asm!(
            "{{",
            ".reg .pred done;",
            "mbarrier.try_wait.parity.shared::cta.b64 done, [{b}], {p};",
            "selp.u32 {d}, 1, 0, done;",
            "}}",
            b = in(reg32) bar.0, p = in(reg32) parity, d = out(reg32) done,
            options(nostack),
        );
        if done != 0 {
            break;
        }
    }
}
