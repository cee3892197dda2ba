//! Host copies of one layer's weights, checked against its config.

use crate::{Dtype, DtypeKind, Error, QkvConfig, Result};

/// gamma `[H]`, the fused weight `W [N, H]` (row `n` = output `n`, rows ordered q | k | v) and an
/// optional bias `[N]`, as stored in checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct QkvWeights<T> {
    pub config: QkvConfig,
    pub gamma: Vec<T>,
    pub qkv_weight: Vec<T>,
    pub bias: Option<Vec<T>>,
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::Length { what, expected, actual })
    }
}

impl<T: Dtype> QkvWeights<T> {
    /// From the fused weight. The bias must be present exactly when `config.bias` is set.
    pub fn new(config: QkvConfig, gamma: Vec<T>, qkv_weight: Vec<T>, bias: Option<Vec<T>>) -> Result<Self> {
        config.validate()?;
        Self::assemble(config, gamma, qkv_weight, bias)
    }

    /// [`QkvWeights::new`] for a config already validated.
    fn assemble(config: QkvConfig, gamma: Vec<T>, qkv_weight: Vec<T>, bias: Option<Vec<T>>) -> Result<Self> {
        check_len("gamma", config.hidden, gamma.len())?;
        check_len("qkv_weight", config.weight_len(), qkv_weight.len())?;
        match (&bias, config.bias) {
            (Some(b), true) => check_len("bias", config.qkv_cols(), b.len())?,
            (None, false) => {}
            (Some(_), false) => return Err(Error::InvalidConfig("a bias was given but config.bias is false".into())),
            (None, true) => return Err(Error::InvalidConfig("config.bias is true but no bias was given".into())),
        }
        Ok(QkvWeights { config, gamma, qkv_weight, bias })
    }

    /// From separate projections `q_weight [Hq, H]`, `k_weight`, `v_weight [Hkv, H]` (and biases),
    /// as Hugging Face checkpoints store them; rows are concatenated q | k | v.
    pub fn from_separate(
        config: QkvConfig,
        gamma: Vec<T>,
        [q_weight, k_weight, v_weight]: [&[T]; 3],
        bias: Option<[&[T]; 3]>,
    ) -> Result<Self> {
        config.validate()?;
        check_len("q_weight", config.q_cols() * config.hidden, q_weight.len())?;
        check_len("k_weight", config.kv_cols() * config.hidden, k_weight.len())?;
        check_len("v_weight", config.kv_cols() * config.hidden, v_weight.len())?;
        let qkv_weight = [q_weight, k_weight, v_weight].concat();
        let bias = match bias {
            None => None,
            Some([q_bias, k_bias, v_bias]) => {
                check_len("q_bias", config.q_cols(), q_bias.len())?;
                check_len("k_bias", config.kv_cols(), k_bias.len())?;
                check_len("v_bias", config.kv_cols(), v_bias.len())?;
                Some([q_bias, k_bias, v_bias].concat())
            }
        };
        Self::assemble(config, gamma, qkv_weight, bias)
    }

    /// Rank `rank`'s share of the layer under tensor parallelism over `world_size` ranks, as
    /// engines shard QKV (column parallel, by heads; no communication for this op): query heads
    /// `rank * Hq/world ..` and, when `world_size` divides the kv heads, kv heads
    /// `rank * Hkv/world ..`; when `world_size` exceeds them (a multiple of them), each rank gets
    /// one kv head, the one its query heads use, replicated across `world_size / Hkv` ranks (as
    /// vLLM does). The norm weight is the whole of it on every rank; the bias is sliced as the
    /// weight. Every column is computed as in the whole layer, so the ranks' q (and distinct
    /// kv) outputs side by side are the whole layer's, bit for bit.
    pub fn shard(&self, rank: usize, world_size: usize) -> Result<Self> {
        let c = self.config;
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        if world_size == 0 || rank >= world_size {
            return invalid(format!("rank {rank} of {world_size} ranks"));
        }
        if !c.num_heads.is_multiple_of(world_size) {
            return invalid(format!("{world_size} ranks do not divide the {} query heads", c.num_heads));
        }
        let (kv_first, kv_heads) = if world_size <= c.num_kv_heads {
            if !c.num_kv_heads.is_multiple_of(world_size) {
                return invalid(format!("{world_size} ranks do not divide the {} kv heads", c.num_kv_heads));
            }
            let per_rank = c.num_kv_heads / world_size;
            (rank * per_rank, per_rank)
        } else {
            if !world_size.is_multiple_of(c.num_kv_heads) {
                return invalid(format!(
                    "{world_size} ranks are more than the {} kv heads but not a multiple of them",
                    c.num_kv_heads
                ));
            }
            (rank / (world_size / c.num_kv_heads), 1)
        };
        let q_heads = c.num_heads / world_size;
        let shard = QkvConfig { num_heads: q_heads, num_kv_heads: kv_heads, ..c };
        // Row ranges of the fused [N, H] weight (and of the bias): q, then k, then v.
        let d = c.head_dim;
        let q_rows = rank * q_heads * d..(rank + 1) * q_heads * d;
        let k_rows = c.q_cols() + kv_first * d..c.q_cols() + (kv_first + kv_heads) * d;
        let v_rows = k_rows.start + c.kv_cols()..k_rows.end + c.kv_cols();
        let rows = [q_rows, k_rows, v_rows];
        let weight =
            rows.iter().flat_map(|r| &self.qkv_weight[r.start * c.hidden..r.end * c.hidden]).copied().collect();
        let bias = self.bias.as_ref().map(|b| rows.iter().flat_map(|r| &b[r.clone()]).copied().collect());
        QkvWeights::new(shard, self.gamma.clone(), weight, bias)
    }

    /// Seeded random weights with magnitudes like a trained layer's: gamma near 1, W uniform with
    /// a 1/sqrt(H) scale, bias small. For demos, benchmarks and tests.
    pub fn random(config: QkvConfig, seed: u64) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        config.validate()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let scale = 1.0 / (config.hidden as f32).sqrt();
        let gamma = (0..config.hidden).map(|_| T::from_f32(rng.gen_range(0.5..1.5))).collect();
        let qkv_weight = (0..config.weight_len()).map(|_| T::from_f32(rng.gen_range(-scale..scale))).collect();
        let bias = config.bias.then(|| (0..config.qkv_cols()).map(|_| T::from_f32(rng.gen_range(-0.5..0.5))).collect());
        Self::assemble(config, gamma, qkv_weight, bias)
    }
}

/// The weights as every path computes with them: gamma folded into W once, when a layer is built.
///
/// `qkv_weight[n, h] = round_dtype(W[n, h] * gamma[h] * 2^scale_log2)` (one rounding: the product
/// of two bf16 or two f16 values is exact in fp32; f32 rounds the product once), and
/// `y = out_scale * rms_inv * sum_h x * qkv_weight + b` with `out_scale = 2^-scale_log2`, an exact
/// power of two. `scale_log2` is 0 for bf16 and f32, whose range is fp32's; for f16 it places the
/// largest `|W * gamma|` in `[2^14, 2^15)`, inside f16's range whatever gamma's magnitude.
/// Folding is what lets the kernels feed `x` to the tensor cores exactly as stored: the only
/// rounding added to the unfused math is that of one weight (relative 2^-9 for bf16, 2^-12 for
/// f16, 2^-25 for f32), the same as storing the checkpoint in the dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedWeights<T> {
    pub config: QkvConfig,
    pub qkv_weight: Vec<T>,
    pub bias: Option<Vec<T>>,
    /// The power of two `W * gamma` was scaled by before rounding.
    pub scale_log2: i32,
}

impl<T> FoldedWeights<T> {
    /// `2^-scale_log2`: what the accumulated dot products are multiplied by (exact).
    pub fn out_scale(&self) -> f32 {
        (-self.scale_log2 as f32).exp2()
    }

    /// Checks the config and that W and the bias match it (the fields are public, so a caller
    /// may have built or changed them).
    pub fn check(&self) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        check_len("qkv_weight", c.weight_len(), self.qkv_weight.len())?;
        match (&self.bias, c.bias) {
            (Some(b), true) => check_len("bias", c.qkv_cols(), b.len()),
            (None, false) => Ok(()),
            (b, _) => Err(Error::InvalidConfig(format!(
                "folded weights: bias of {:?} elements does not match config.bias = {} (N = {})",
                b.as_ref().map(Vec::len),
                c.bias,
                c.qkv_cols()
            ))),
        }
    }
}

impl<T: Dtype> QkvWeights<T> {
    /// Folds gamma into W (see [`FoldedWeights`]); parallel over rows.
    pub fn fold_gamma(&self) -> FoldedWeights<T> {
        use rayon::prelude::*;
        let h = self.config.hidden;
        let gamma: Vec<f32> = self.gamma.iter().map(|g| g.to_f32()).collect();
        let max_abs = self
            .qkv_weight
            .par_chunks(h)
            .map(|row| row.iter().zip(&gamma).map(|(w, g)| (w.to_f32() * g).abs()).fold(0.0f32, f32::max))
            .reduce(|| 0.0, f32::max);
        let scale_log2 = match T::KIND {
            DtypeKind::F16 if max_abs.is_finite() && max_abs > 0.0 => 14 - max_abs.log2().floor() as i32,
            _ => 0,
        };
        let scale = (scale_log2 as f32).exp2();
        let qkv_weight = self
            .qkv_weight
            .par_chunks(h)
            .flat_map_iter(|row| row.iter().zip(&gamma).map(|(w, g)| T::from_f32(w.to_f32() * g * scale)))
            .collect();
        FoldedWeights { config: self.config, qkv_weight, bias: self.bias.clone(), scale_log2 }
    }
}

/// Checks a token count and the input length for `forward`: `x` holds at least `m * H` elements.
pub(crate) fn check_input(config: &QkvConfig, m: usize, x_len: usize) -> Result<()> {
    let needed = m.checked_mul(config.hidden).ok_or_else(|| Error::Overflow(format!("m = {m} tokens times hidden")))?;
    if x_len < needed {
        return Err(Error::TooShort { what: "x", needed, actual: x_len });
    }
    m.checked_mul(config.qkv_cols()).ok_or_else(|| Error::Overflow(format!("m = {m} tokens times N")))?;
    Ok(())
}

/// Checks output lengths for `forward_into`: q holds `m * Hq`, k and v `m * Hkv` elements at least.
pub(crate) fn check_outputs(config: &QkvConfig, m: usize, [q, k, v]: [usize; 3]) -> Result<()> {
    for (what, cols, actual) in [("q", config.q_cols(), q), ("k", config.kv_cols(), k), ("v", config.kv_cols(), v)] {
        let needed = m * cols;
        if actual < needed {
            return Err(Error::TooShort { what, needed, actual });
        }
    }
    Ok(())
}
