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

/// Output columns (rows of `W'`) per rayon task: converted to f32 once per call, then reused by
/// every token (16 x H f32 stays in a core's L2 for H up to 8192).
const COLS_PER_TASK: usize = 16;
/// f32 lanes of each dot product: lane `i` adds the products of elements `i, i + LANES, ..` in
/// order, then the lanes are added in a fixed tree. No fused multiply-add, so the bits do not
/// depend on the vector width the compiler picks (SSE2, or AVX2 where the CPU has it).
const LANES: usize = 8;
/// Register block of the dot products: tokens x columns computed together, each `x` and `W'`
/// chunk loaded once for all of them.
const TOKENS_BLOCK: usize = 4;
const COLS_BLOCK: usize = 2;

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
        let y = self.forward_f32(x, m)?;
        split_qkv(&c, m, &y, q, k, v);
        Ok(())
    }

    /// `y [m, N]` (q | k | v columns) in f32, before the one rounding to the dtype: what an
    /// epilogue that goes on in fp32 (the attention prologue's q/k norm and RoPE) starts from.
    pub fn forward_f32(&self, x: &[T], m: usize) -> Result<Vec<f32>> {
        let c = *self.config();
        check_input(&c, m, x.len())?;
        let (h, n) = (c.hidden, c.qkv_cols());
        let w = &self.weights;
        let out_scale = w.out_scale();
        // fp32 throughout, rounded once at the output, in the order the kernels use:
        // sum_h x * W' * (rms_inv * out_scale) + bias, W' = gamma folded into W.
        // Rows of x and of W' as f32, padded with zeros to whole lane chunks (and x to whole
        // token blocks), so the inner loop has no tails; zeros add nothing.
        let h_pad = h.next_multiple_of(LANES);
        let m_pad = m.next_multiple_of(TOKENS_BLOCK);
        let mut x_f32 = vec![0.0f32; m_pad * h_pad];
        let mut row_scales = vec![0.0f32; m];
        x_f32.par_chunks_mut(h_pad).zip(row_scales.par_iter_mut()).zip(x[..m * h].par_chunks(h)).for_each(
            |((dst, scale), row)| {
                for (d, s) in dst.iter_mut().zip(row) {
                    *d = s.to_f32();
                }
                let sum_sq: f32 = dst[..h].iter().map(|v| v * v).sum();
                let rms_inv = 1.0 / (sum_sq / h as f32 + c.eps).sqrt();
                *scale = rms_inv * out_scale;
            },
        );
        let mut y = vec![0.0f32; m * n];
        // Tasks over blocks of output columns, so a single token (decode) still uses every core.
        let col_blocks: Vec<(std::ops::Range<usize>, Vec<f32>)> = (0..n.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .map(|block| {
                let cols = block * COLS_PER_TASK..((block + 1) * COLS_PER_TASK).min(n);
                let panel_cols = cols.len().next_multiple_of(COLS_BLOCK);
                let mut panel = vec![0.0f32; panel_cols * h_pad];
                for (dst, col) in panel.chunks_mut(h_pad).zip(cols.clone()) {
                    for (d, s) in dst.iter_mut().zip(&w.qkv_weight[col * h..(col + 1) * h]) {
                        *d = s.to_f32();
                    }
                }
                let dots = dot_panel(&x_f32, &panel, h_pad, m_pad);
                let mut out = Vec::with_capacity(m * cols.len());
                for (token, row_scale) in row_scales.iter().enumerate() {
                    for (j, col) in cols.clone().enumerate() {
                        let bias = w.bias.as_ref().map_or(0.0, |b| b[col].to_f32());
                        out.push(dots[token * panel_cols + j] * row_scale + bias);
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
        Ok(y)
    }
}

/// `x_f32 [m_pad, h_pad] . panel [cols, h_pad]^T` as `[m_pad, cols]`, with AVX2 where the CPU
/// has it (the same bits either way: see [`LANES`]).
fn dot_panel(x_f32: &[f32], panel: &[f32], h_pad: usize, m_pad: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { dot_panel_avx2(x_f32, panel, h_pad, m_pad) };
    }
    dot_panel_blocks(x_f32, panel, h_pad, m_pad)
}

/// [`dot_panel_blocks`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_panel_avx2(x_f32: &[f32], panel: &[f32], h_pad: usize, m_pad: usize) -> Vec<f32> {
    dot_panel_blocks(x_f32, panel, h_pad, m_pad)
}

#[inline(always)]
fn dot_panel_blocks(x_f32: &[f32], panel: &[f32], h_pad: usize, m_pad: usize) -> Vec<f32> {
    let cols = panel.len() / h_pad;
    let mut dots = vec![0.0f32; m_pad * cols];
    for t0 in (0..m_pad).step_by(TOKENS_BLOCK) {
        let x_rows: [&[f32]; TOKENS_BLOCK] = std::array::from_fn(|t| &x_f32[(t0 + t) * h_pad..(t0 + t + 1) * h_pad]);
        for j0 in (0..cols).step_by(COLS_BLOCK) {
            let w_rows: [&[f32]; COLS_BLOCK] = std::array::from_fn(|j| &panel[(j0 + j) * h_pad..(j0 + j + 1) * h_pad]);
            let block = dot_block(x_rows, w_rows);
            for (t, row) in block.iter().enumerate() {
                dots[(t0 + t) * cols + j0..(t0 + t) * cols + j0 + COLS_BLOCK].copy_from_slice(row);
            }
        }
    }
    dots
}

/// The `TOKENS_BLOCK x COLS_BLOCK` dot products of `x_rows` and `w_rows` (equal lengths, whole
/// lane chunks), in the order [`LANES`] fixes.
#[inline(always)]
fn dot_block(x_rows: [&[f32]; TOKENS_BLOCK], w_rows: [&[f32]; COLS_BLOCK]) -> [[f32; COLS_BLOCK]; TOKENS_BLOCK] {
    let mut acc = [[[0.0f32; LANES]; COLS_BLOCK]; TOKENS_BLOCK];
    let chunks = x_rows[0].len() / LANES;
    for chunk in 0..chunks {
        let at = chunk * LANES;
        let xs: [[f32; LANES]; TOKENS_BLOCK] = std::array::from_fn(|t| x_rows[t][at..at + LANES].try_into().unwrap());
        let ws: [[f32; LANES]; COLS_BLOCK] = std::array::from_fn(|j| w_rows[j][at..at + LANES].try_into().unwrap());
        for (acc_t, x) in acc.iter_mut().zip(&xs) {
            for (acc_tj, w) in acc_t.iter_mut().zip(&ws) {
                for lane in 0..LANES {
                    acc_tj[lane] += x[lane] * w[lane];
                }
            }
        }
    }
    acc.map(|row| row.map(|l| ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))))
}

// The lane tree in `dot_block` adds exactly 8 lanes.
const _: () = assert!(LANES == 8);

/// Rounds `y [m, N]` to the dtype and writes its column ranges into q, k and v.
pub(crate) fn split_qkv<T: Dtype>(c: &QkvConfig, m: usize, y: &[f32], q: &mut [T], k: &mut [T], v: &mut [T]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised dot products give the same bits with and without AVX2 (no fused
    /// multiply-add, lanes in a fixed order), and match a plain f64 dot product closely.
    #[test]
    fn dot_panel_bits_do_not_depend_on_the_vector_width() {
        let (m_pad, cols, h_pad) = (8, 6, 136);
        let value = |i: usize| ((i * 2654435761) % 1000) as f32 / 250.0 - 2.0;
        let x: Vec<f32> = (0..m_pad * h_pad).map(value).collect();
        let panel: Vec<f32> = (0..cols * h_pad).map(|i| value(i + 7)).collect();
        let generic = dot_panel_blocks(&x, &panel, h_pad, m_pad);
        let dispatched = dot_panel(&x, &panel, h_pad, m_pad);
        assert!(generic.iter().zip(&dispatched).all(|(a, b)| a.to_bits() == b.to_bits()));
        for t in 0..m_pad {
            for j in 0..cols {
                let exact: f64 = (0..h_pad).map(|k| x[t * h_pad + k] as f64 * panel[j * h_pad + k] as f64).sum();
                let got = generic[t * cols + j] as f64;
                assert!((got - exact).abs() <= 1e-4 * (1.0 + exact.abs()), "{t} {j}: {got} vs {exact}");
            }
        }
    }
}
