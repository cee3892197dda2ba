//! A kernel that only waits, for benchmarks: enqueued before a batch of launches it holds the
//! stream while the host enqueues the batch, so the batch then runs back to back on the GPU
//! instead of at the host's launch rate.

use crate::thread::global_timer_ns;

/// Spins one thread for `nanos` nanoseconds of `%globaltimer`.
///
/// # Safety
/// None beyond a valid launch; launch it with one block of one thread.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn bench_delay(nanos: u64) {
    let start = global_timer_ns();
    while global_timer_ns().wrapping_sub(start) < nanos {}
}
