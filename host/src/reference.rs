//! The float64 oracle: the layer's semantics evaluated in f64 from the same stored inputs, for
//! tests and for the CLI's error report.

use rayon::prelude::*;

use crate::{Dtype, QkvWeights};

/// `y [m, N]` in f64 (q | k | v columns), from the first `m` rows of `x`.
///
/// # Panics
/// If `x` holds fewer than `m * H` elements (an oracle for tests, not a library entry point).
pub fn reference_f64<T: Dtype>(weights: &QkvWeights<T>, x: &[T], m: usize) -> Vec<f64> {
    let c = &weights.config;
    let (h, n) = (c.hidden, c.qkv_cols());
    let f = |v: &T| v.to_f32() as f64;
    // Parallel over rows only: each output is still one sequential f64 sum.
    x[..m * h]
        .par_chunks(h)
        .flat_map_iter(|row| {
            let mean_sq = row.iter().map(|v| f(v) * f(v)).sum::<f64>() / h as f64;
            let rms_inv = 1.0 / (mean_sq + c.eps as f64).sqrt();
            let normed: Vec<f64> = row.iter().zip(&weights.gamma).map(|(x, g)| f(x) * rms_inv * f(g)).collect();
            (0..n).map(move |col| {
                let w_row = &weights.qkv_weight[col * h..(col + 1) * h];
                let dot: f64 = w_row.iter().zip(&normed).map(|(w, xn)| f(w) * xn).sum();
                dot + weights.bias.as_ref().map_or(0.0, |b| f(&b[col]))
            })
        })
        .collect()
}

/// Joins q, k, v (`[m, Hq]`, `[m, Hkv]`, `[m, Hkv]`) back into `y [m, N]` as f64.
pub fn join_qkv<T: Dtype>(weights: &QkvWeights<T>, m: usize, q: &[T], k: &[T], v: &[T]) -> Vec<f64> {
    let c = &weights.config;
    let (qc, kvc) = (c.q_cols(), c.kv_cols());
    let mut y = Vec::with_capacity(m * c.qkv_cols());
    for row in 0..m {
        for part in [&q[row * qc..(row + 1) * qc], &k[row * kvc..(row + 1) * kvc], &v[row * kvc..(row + 1) * kvc]] {
            y.extend(part.iter().map(|v| v.to_f32() as f64));
        }
    }
    y
}

/// Comparison of an output against the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorReport {
    /// `||out - ref||_F / ||ref||_F` (0 when both are zero; infinite when only `ref` is zero).
    pub rel_frobenius: f64,
    /// Largest `|out - ref|`.
    pub max_abs: f64,
    /// Elements where `out` is NaN or infinite but `ref` is finite.
    pub non_finite: usize,
}

/// Compares `out` with `reference` element by element.
pub fn compare(out: &[f64], reference: &[f64]) -> ErrorReport {
    assert_eq!(out.len(), reference.len(), "compare: lengths differ");
    let (mut diff_sq, mut ref_sq, mut max_abs, mut non_finite) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (&o, &r) in out.iter().zip(reference) {
        if !o.is_finite() && r.is_finite() {
            non_finite += 1;
            continue;
        }
        let d = o - r;
        diff_sq += d * d;
        ref_sq += r * r;
        max_abs = max_abs.max(d.abs());
    }
    let rel_frobenius = if diff_sq == 0.0 { 0.0 } else { (diff_sq / ref_sq).sqrt() };
    ErrorReport { rel_frobenius, max_abs, non_finite }
}

impl ErrorReport {
    /// Within `bound` and no spurious NaN/Inf.
    pub fn passes(&self, bound: f64) -> bool {
        self.non_finite == 0 && self.rel_frobenius <= bound
    }
}
