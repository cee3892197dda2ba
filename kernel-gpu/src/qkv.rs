//! Where the fused output goes: `y [M, N]` is stored as q | k | v, consecutive column ranges.

use crate::element::Element;

/// Stores `y[row, n]` into q `[M, q_cols]`, k or v `[M, kv_cols]`, rounding to the dtype.
///
/// # Safety
/// `out` must be the q, k, v base pointers of buffers holding row `row` at least, `n` below
/// `q_cols + 2 * kv_cols`, and no other thread may write that element during the kernel.
#[inline(always)]
pub unsafe fn store_column<T: Element>(out: [*mut T; 3], q_cols: u32, kv_cols: u32, row: u32, n: u32, y: f32) {
    let (dst, cols, col) = if n < q_cols {
        (out[0], q_cols, n)
    } else if n < q_cols + kv_cols {
        (out[1], kv_cols, n - q_cols)
    } else {
        (out[2], kv_cols, n - q_cols - kv_cols)
    };
    T::store(dst.add(row as usize * cols as usize + col as usize), y);
}
