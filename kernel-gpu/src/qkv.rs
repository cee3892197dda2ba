//! The steps every kernel family shares: the masked row load, the sum of squares, the norm's
//! row scale and the epilogue (scale, bias, round, store into q, k or v).
//!
//! `y [M, N]` is stored as q | k | v, consecutive column ranges. The weights the kernels read
//! are `W' = W * gamma * 2^s` (gamma folded in once by the host, `out_scale = 2^-s`), so
//! `y[m, n] = sum_h x[m, h] * W'[n, h] * (rms_inv[m] * out_scale) + bias[n]`.

pub use kernel_abi::Shape;

use crate::element::Element;
use crate::float::{self, fma_rn};
use crate::mem::{load_nc_v16, load_v16, Vec16};

/// A position along rows of `hidden` elements for masked 16-byte loads: the same position of
/// several rows (a batch of loads) shares one bounds test.
///
/// Needs `hidden % VEC == 0` and `h % VEC == 0`, so a vector is wholly inside or wholly past the
/// row. Past it a load re-reads the row's last vector and zeroes it: no branch around the loads,
/// so a batch issues back to back.
#[derive(Clone, Copy)]
pub struct MaskedColumn {
    // 32-bit: 64-bit index arithmetic cost the mma kernel 16 registers and an occupancy step.
    at: u32,
    inside: bool,
}

impl MaskedColumn {
    /// Element `h` of rows of `hidden` elements (`hidden >= VEC`).
    #[inline(always)]
    pub fn new<T: Element>(h: u32, hidden: u32) -> Self {
        let inside = h < hidden;
        MaskedColumn { at: if inside { h } else { hidden - T::VEC as u32 }, inside }
    }

    /// The 16-byte vector of `row` of the weights here, or zeros past the row's end, through the
    /// read-only path.
    ///
    /// # Safety
    /// `row` must be 16-byte aligned with `hidden` readable elements that no thread writes
    /// during the kernel.
    #[inline(always)]
    pub unsafe fn load<T: Element>(self, row: *const T) -> Vec16 {
        self.masked(load_nc_v16(row.add(self.at as usize).cast()))
    }

    /// As [`MaskedColumn::load`] for a row of `x`, which the previous kernel may still be
    /// writing when this one starts: through the coherent path ([`crate::mem::load_v16`]).
    ///
    /// # Safety
    /// `row` must be 16-byte aligned with `hidden` readable elements, written (if during the
    /// kernel) only before the wait for the previous kernel.
    #[inline(always)]
    pub unsafe fn load_x<T: Element>(self, row: *const T) -> Vec16 {
        self.masked(load_v16(row.add(self.at as usize).cast()))
    }

    #[inline(always)]
    fn masked(self, raw: Vec16) -> Vec16 {
        if self.inside {
            raw
        } else {
            [0; 4]
        }
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

/// `bias[n]`, or `None` when the layer has no bias (`bias` null).
///
/// # Safety
/// `bias` null or with `N > n` readable elements.
#[inline(always)]
pub unsafe fn bias_at<T: Element>(bias: *const T, n: u32) -> Option<f32> {
    if bias.is_null() {
        None
    } else {
        Some(T::load(bias.add(n as usize)))
    }
}

/// `dot * row_scale (+ bias)`: the value the epilogue rounds to the dtype.
#[inline(always)]
pub fn output_value(dot: f32, row_scale: f32, bias: Option<f32>) -> f32 {
    let y = dot * row_scale;
    match bias {
        Some(b) => y + b,
        None => y,
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
    T::store(dst.add(row as usize * cols as usize + col as usize), output_value(dot, row_scale, bias_at(bias, n)));
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
