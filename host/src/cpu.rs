//! The CPU implementation: the same semantics and API shape as [`crate::gpu::GpuLayer`], parallel
//! with rayon, usable without a GPU.

use rayon::prelude::*;

use crate::weights::{check_input, check_outputs, FoldedWeights};
use crate::{Dtype, QkvConfig, QkvWeights, Result};

/// One layer's weights on the host, gamma folded into W as on the GPU ([`FoldedWeights`]).
#[derive(Clone, Debug)]
pub struct CpuLayer<T> {
    weights: FoldedWeights<T>,
}

/// Output rows of `W` handled by one rayon task.
const COLS_PER_TASK: usize = 64;

impl<T: Dtype> CpuLayer<T> {
    /// Folds gamma into the weights (already checked against their config by [`QkvWeights`]).
    pub fn new(weights: QkvWeights<T>) -> Self {
        CpuLayer { weights: weights.fold_gamma() }
    }

    /// The layer's config.
    pub fn config(&self) -> &QkvConfig {
        &self.weights.config
    }

    /// `(q [m, Hq], k [m, Hkv], v [m, Hkv])` for the first `m` rows of `x` (row-major `[m, H]`).
    pub fn forward(&self, x: &[T], m: usize) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let c = self.config();
        check_input(c, m, x.len())?;
        let mut q = vec![T::default(); m * c.q_cols()];
        let mut k = vec![T::default(); m * c.kv_cols()];
        let mut v = vec![T::default(); m * c.kv_cols()];
        self.forward_into(x, m, &mut q, &mut k, &mut v)?;
        Ok((q, k, v))
    }

    /// As [`CpuLayer::forward`], into caller buffers of at least `m * Hq` / `m * Hkv` elements.
    pub fn forward_into(&self, x: &[T], m: usize, q: &mut [T], k: &mut [T], v: &mut [T]) -> Result<()> {
        let c = *self.config();
        check_input(&c, m, x.len())?;
        check_outputs(&c, m, [q.len(), k.len(), v.len()])?;
        let (h, n) = (c.hidden, c.qkv_cols());
        let w = &self.weights;
        let out_scale = w.out_scale();
        // fp32 throughout, rounded once at the output, in the order the kernels use:
        // sum_h x * W' * (rms_inv * out_scale) + bias, W' = gamma folded into W.
        let rows: Vec<(f32, Vec<f32>)> = x[..m * h]
            .par_chunks(h)
            .map(|row| {
                let sum_sq: f32 = row.iter().map(|v| v.to_f32() * v.to_f32()).sum();
                let rms_inv = 1.0 / (sum_sq / h as f32 + c.eps).sqrt();
                (rms_inv * out_scale, row.iter().map(|x| x.to_f32()).collect())
            })
            .collect();
        let mut y = vec![0.0f32; m * n];
        // Tasks over blocks of output columns, so a single token (decode) still uses every core.
        let col_blocks: Vec<(std::ops::Range<usize>, Vec<f32>)> = (0..n.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .map(|block| {
                let cols = block * COLS_PER_TASK..((block + 1) * COLS_PER_TASK).min(n);
                let mut out = Vec::with_capacity(m * cols.len());
                for (row_scale, x_row) in &rows {
                    for col in cols.clone() {
                        let w_row = &w.qkv_weight[col * h..(col + 1) * h];
                        let dot: f32 = w_row.iter().zip(x_row).map(|(w, x)| w.to_f32() * x).sum();
                        let bias = w.bias.as_ref().map_or(0.0, |b| b[col].to_f32());
                        out.push(dot * row_scale + bias);
                    }
                }
                (cols, out)
            })
            .collect();
        for (cols, out) in col_blocks {
            for (row, chunk) in out.chunks(cols.len()).enumerate() {
                y[row * n + cols.start..row * n + cols.end].copy_from_slice(chunk);
            }
        }
        split_qkv(&c, m, &y, q, k, v);
        Ok(())
    }
}

/// Rounds `y [m, N]` to the dtype and writes its column ranges into q, k and v.
fn split_qkv<T: Dtype>(c: &QkvConfig, m: usize, y: &[f32], q: &mut [T], k: &mut [T], v: &mut [T]) {
    let (qc, kvc, n) = (c.q_cols(), c.kv_cols(), c.qkv_cols());
    for row in 0..m {
        let y_row = &y[row * n..(row + 1) * n];
        for (dst, src) in [
            (&mut q[row * qc..(row + 1) * qc], &y_row[..qc]),
            (&mut k[row * kvc..(row + 1) * kvc], &y_row[qc..qc + kvc]),
            (&mut v[row * kvc..(row + 1) * kvc], &y_row[qc + kvc..]),
        ] {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = T::from_f32(*s);
            }
        }
    }
}
