//! The steps every kernel family shares: the masked row load, the sum of squares, the norm's
//! row scale and the epilogue (scale, bias, round, store into q, k or v).
//!
//! `y [M, N]` is stored as q | k | v, consecutive column ranges. The weights the kernels read
//! are `W' = W * gamma * 2^s` (gamma folded in once by the host, `out_scale = 2^-s`), so
//! `y[m, n] = sum_h x[m, h] * W'[n, h] * (rms_inv[m] * out_scale) + bias[n]`.

pub use kernel_abi::Shape;

use crate::element::Element;
use crate::float::{self, fma_rn};
use crate::mem::{load_nc_v16, Vec16};

/// Loads the 16-byte vector of `row` at element `h`, or zeros when `h` is past `hidden`.
///
/// Needs `hidden % VEC == 0` and `h % VEC == 0`, so a vector is wholly inside or wholly past the
/// row. Past it the lane re-reads the row's last vector and zeroes it: no branch around the load,
/// so a batch of these issues back to back.
///
/// # Safety
/// `row` must be 16-byte aligned with `hidden` readable elements that no thread writes during
/// the kernel; `hidden >= VEC`.
#[inline(always)]
pub unsafe fn load_vec_or_zero<T: Element>(row: *const T, h: usize, hidden: usize) -> Vec16 {
    let inside = h < hidden;
    let raw = load_nc_v16(row.add(if inside { h } else { hidden - T::VEC }).cast());
    if inside {
        raw
    } else {
        [0; 4]
    }
}

/// Adds the squares of the first `T::VEC` of `values` to `sum_sq`, each step one `fma.rn`
/// (the rounding the CPU path's `mul_add` reproduces).
#[inline(always)]
pub fn add_squares<T: Element>(values: &[f32; 8], sum_sq: f32) -> f32 {
    let mut s = sum_sq;
    unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7] {
        if i < T::VEC {
            s = fma_rn(values[i], values[i], s);
        }
    });
    s
}

/// `rms_inv * out_scale` for a row whose squares sum to `sum_sq`, with `rms_inv = 1 /
/// sqrt(sum_sq / hidden + eps)` correctly rounded step by step (as the host's CPU path does).
#[inline(always)]
pub fn row_scale(sum_sq: f32, hidden: u32, eps: f32, out_scale: f32) -> f32 {
    let mean = float::div_rn(sum_sq, hidden as f32);
    float::div_rn(1.0, float::sqrt_rn(mean + eps)) * out_scale
}

/// `dot * row_scale + bias[n]` (no bias when `bias` is null): the value the epilogue rounds.
///
/// # Safety
/// `bias` null or with `N > n` readable elements.
#[inline(always)]
pub unsafe fn output_value<T: Element>(dot: f32, row_scale: f32, bias: *const T, n: u32) -> f32 {
    let y = dot * row_scale;
    if bias.is_null() {
        y
    } else {
        y + T::load(bias.add(n as usize))
    }
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
    let (dst, cols, col) = destination(out, shape, n);
    T::store(dst.add(row as usize * cols as usize + col as usize), output_value(dot, row_scale, bias, n));
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
