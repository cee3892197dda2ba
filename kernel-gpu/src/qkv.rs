//! What every kernel shares: the problem's shape, the norm's scale and where `y` goes.
//!
//! `y [M, N]` is stored as q | k | v, consecutive column ranges. The weights the kernels read
//! are `W' = W * gamma * 2^s` (gamma folded in once by the host, `out_scale = 2^-s`), so
//! `y[m, n] = sum_h x[m, h] * W'[n, h] * (rms_inv[m] * out_scale) + bias[n]`.

use crate::element::Element;
use crate::float;

/// The problem as a kernel sees it.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Tokens (rows of `x`).
    pub m: u32,
    pub hidden: u32,
    pub q_cols: u32,
    pub kv_cols: u32,
}

impl Shape {
    /// Output columns, `q_cols + 2 * kv_cols`.
    #[inline(always)]
    pub fn n(&self) -> u32 {
        self.q_cols + 2 * self.kv_cols
    }
}

/// `rms_inv * out_scale` for a row whose squares sum to `sum_sq`, with `rms_inv = 1 /
/// sqrt(sum_sq / hidden + eps)` correctly rounded step by step (as the host's CPU path does).
#[inline(always)]
pub fn row_scale(sum_sq: f32, hidden: u32, eps: f32, out_scale: f32) -> f32 {
    let mean = float::div_rn(sum_sq, hidden as f32);
    float::div_rn(1.0, float::sqrt_rn(mean + eps)) * out_scale
}

/// Stores `y[row, n] = dot * row_scale + bias[n]` into q `[M, q_cols]`, k or v `[M, kv_cols]`,
/// rounding to the dtype.
///
/// # Safety
/// `out` must be the q, k, v base pointers of buffers holding row `row` at least, `bias` null or
/// `N` readable elements, `n < N`, and no other thread may write that element during the kernel.
#[inline(always)]
pub unsafe fn store_output<T: Element>(
    out: [*mut T; 3],
    bias: *const T,
    shape: Shape,
    row: u32,
    n: u32,
    dot: f32,
    row_scale: f32,
) {
    let y = dot * row_scale;
    let y = if bias.is_null() { y } else { y + T::load(bias.add(n as usize)) };
    let (dst, cols, col) = destination(out, shape, n);
    T::store(dst.add(row as usize * cols as usize + col as usize), y);
}

/// Where output column `col` (< N) of a row goes: q, k or v, that buffer's row length and the
/// column there.
#[inline(always)]
pub fn destination<T>(out: [*mut T; 3], shape: Shape, col: u32) -> (*mut T, u32, u32) {
    if col < shape.q_cols {
        (out[0], shape.q_cols, col)
    } else if col < shape.q_cols + shape.kv_cols {
        (out[1], shape.kv_cols, col - shape.q_cols)
    } else {
        (out[2], shape.kv_cols, col - shape.q_cols - shape.kv_cols)
    }
}
