//! Programmatic dependent launch (sm_90): a kernel launched with the host's
//! programmatic-stream-serialization attribute may start while the kernel before it on the
//! stream still runs, up to [`wait_for_prerequisites`]. What a kernel does before that wait
//! overlaps its predecessor's tail: block scheduling, shared-memory setup and prefetching the
//! layer's weights into L2, which no earlier kernel writes. Everything that reads memory another
//! kernel may write (`x`, the stream-K workspace) or writes memory (q, k, v) comes after it.
//!
//! Built for sm_80 these are no-ops (the host launches there without the attribute); built for
//! sm_90a, a kernel launched without the attribute passes the wait at once.

#[cfg(target_feature = "sm_90a")]
use core::arch::asm;

/// Lets the next kernel on the stream, if it was launched as a programmatic dependent, start
/// once every block of this grid has called this or exited. A hint with no effect on this
/// kernel's own memory: the dependent still waits ([`wait_for_prerequisites`]) for this grid's
/// completion before it touches what this grid writes.
#[inline(always)]
pub fn launch_dependents() {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: a scheduling hint with no preconditions.
    unsafe {
        asm!("griddepcontrol.launch_dependents;", options(nostack))
    };
}

/// Waits until the grids this one depends on (the previous kernel on the stream) have completed
/// and their memory operations are visible to this grid; returns at once where there are none.
/// Not `nomem`: no memory access of the caller moves across it.
#[inline(always)]
pub fn wait_for_prerequisites() {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: waiting has no preconditions; the asm is a compiler memory barrier too.
    unsafe {
        asm!("griddepcontrol.wait;", options(nostack))
    };
}

/// [`wait_for_prerequisites`], then [`launch_dependents`]: where every kernel of this crate
/// signals. Signalling at the start instead lets a chain of kernels run ahead: the next kernel's
/// blocks, and the one's after them, take the SMs' free slots while they wait, and a grid that
/// leaves SMs idle (64 x 128 `wgmma` tiles at 96 blocks) then runs doubled up on a few of them
/// (H200, qwen3-0.6b at 128 tokens: 10.1 us against 8.3 signalling here and 9.0 without
/// programmatic launch; bench/NOTES.md "programmatic dependent launch").
#[inline(always)]
pub fn wait_then_launch_dependents() {
    wait_for_prerequisites();
    launch_dependents();
}
