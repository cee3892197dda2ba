//! Thread-block clusters (sm_90): the blocks of a cluster run at the same time on one GPC and
//! can read and write each other's shared memory ("distributed shared memory"). The cluster's
//! shape is chosen by the host at launch (`CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION`); a launch
//! without one is a cluster of one block.

use core::arch::asm;

use crate::shared::SharedPtr;

/// This block's rank inside its cluster, `0..cluster_blocks()`.
#[inline(always)]
pub fn block_rank() -> u32 {
    let rank: u32;
    // SAFETY: reading a special register has no preconditions.
    unsafe { asm!("mov.u32 {r}, %cluster_ctarank;", r = out(reg32) rank, options(pure, nomem, nostack)) };
    rank
}

/// Blocks in this block's cluster (1 when launched without a cluster shape).
#[inline(always)]
pub fn cluster_blocks() -> u32 {
    let blocks: u32;
    // SAFETY: reading a special register has no preconditions.
    unsafe { asm!("mov.u32 {r}, %cluster_nctarank;", r = out(reg32) blocks, options(pure, nomem, nostack)) };
    blocks
}

/// Cluster-wide barrier: returns once every thread of every block of the cluster has arrived.
/// Shared-memory writes before it (by any block of the cluster) are visible after it (the
/// arrive releases, the wait acquires, at cluster scope).
///
/// # Safety
/// Every thread of every block of the cluster must reach the same call the same number of times
/// (`.aligned`: all threads of a warp together).
#[inline(always)]
pub unsafe fn sync_cluster() {
    asm!("barrier.cluster.arrive.release.aligned;", "barrier.cluster.wait.acquire.aligned;", options(nostack));
}

/// An address in the shared memory of one block of the cluster (the `shared::cluster` window).
#[derive(Clone, Copy)]
pub struct ClusterPtr(u32);

impl ClusterPtr {
    /// The address in block `rank`'s shared memory of what `local` addresses in this block's.
    ///
    /// # Safety
    /// `rank` < [`cluster_blocks`].
    #[inline(always)]
    pub unsafe fn map(local: SharedPtr, rank: u32) -> ClusterPtr {
        let mapped: u32;
        asm!(
            "mapa.shared::cluster.u32 {d}, {a}, {r};",
            d = out(reg32) mapped, a = in(reg32) local.0, r = in(reg32) rank,
            options(pure, nomem, nostack),
        );
        ClusterPtr(mapped)
    }

    /// The 32-bit `shared::cluster` address, for instructions that take one.
    #[inline(always)]
    pub fn address(self) -> u32 {
        self.0
    }

    /// Loads one f32.
    ///
    /// # Safety
    /// The address must lie in a shared array of the owning block, 4-byte aligned, written before
    /// a [`sync_cluster`] that this load follows, and the owning block must not exit (nor reuse
    /// the memory) until a later [`sync_cluster`] that this load precedes.
    #[inline(always)]
    pub unsafe fn load_f32(self) -> f32 {
        let out: f32;
        asm!("ld.shared::cluster.f32 {o}, [{a}];", o = out(reg32) out, a = in(reg32) self.0, options(readonly, nostack));
        out
    }

    /// Loads four consecutive f32 in one 16-byte access.
    ///
    /// # Safety
    /// As [`ClusterPtr::load_f32`], and the address must be 16-byte aligned.
    #[inline(always)]
    pub unsafe fn load_f32x4(self) -> [f32; 4] {
        let (a, b, c, d): (f32, f32, f32, f32);
        asm!(
            "ld.shared::cluster.v4.f32 {{{a}, {b}, {c}, {d}}}, [{p}];",
            a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
            p = in(reg32) self.0,
            options(readonly, nostack),
        );
        [a, b, c, d]
    }

    /// Stores four f32 asynchronously (`st.async`) into the owning block's shared memory; the
    /// 16 bytes count towards the transaction bytes of the owning block's mbarrier at
    /// `landed` (an address in the same block's window) once they have landed.
    ///
    /// # Safety
    /// The address 16-byte aligned in a shared array of the owning block that nothing else uses
    /// until `landed` completes; `landed` an initialised mbarrier of that block whose current
    /// phase expects these bytes, and the owning block waiting on it before it exits.
    #[inline(always)]
    pub unsafe fn store_async_f32x4(self, value: [f32; 4], landed: ClusterPtr) {
        asm!(
            "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [{p}], {{{a}, {b}, {c}, {d}}}, [{m}];",
            p = in(reg32) self.0, a = in(reg32) value[0], b = in(reg32) value[1], c = in(reg32) value[2],
            d = in(reg32) value[3], m = in(reg32) landed.0,
            options(nostack),
        );
    }

    /// [`ClusterPtr::store_async_f32x4`] for one f32 (4 bytes, 4-byte aligned).
    ///
    /// # Safety
    /// As [`ClusterPtr::store_async_f32x4`], the address 4-byte aligned.
    #[inline(always)]
    pub unsafe fn store_async_f32(self, value: f32, landed: ClusterPtr) {
        asm!(
            "st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [{p}], {v}, [{m}];",
            p = in(reg32) self.0, v = in(reg32) value, m = in(reg32) landed.0,
            options(nostack),
        );
    }
}
