//! Shapes of one attention layer's RMSNorm + QKV projection.

use crate::{Error, Result};

/// One layer's shapes and eps. Plain data; [`QkvConfig::validate`] says whether it is usable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QkvConfig {
    /// Hidden size `H` (length of a token's row and of gamma).
    pub hidden: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_heads`.
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon, finite and > 0.
    pub eps: f32,
    /// Whether the projection has a bias (Qwen2.5 does).
    pub bias: bool,
}

/// Named configurations of public models (values from their Hugging Face `config.json`).
pub const PRESETS: &[(&str, QkvConfig)] = &[
    ("qwen3-0.6b", QkvConfig { hidden: 1024, num_heads: 16, num_kv_heads: 8, head_dim: 128, eps: 1e-6, bias: false }),
    ("qwen3-1.7b", QkvConfig { hidden: 2048, num_heads: 16, num_kv_heads: 8, head_dim: 128, eps: 1e-6, bias: false }),
    ("qwen3-8b", QkvConfig { hidden: 4096, num_heads: 32, num_kv_heads: 8, head_dim: 128, eps: 1e-6, bias: false }),
    ("qwen3-32b", QkvConfig { hidden: 5120, num_heads: 64, num_kv_heads: 8, head_dim: 128, eps: 1e-6, bias: false }),
    ("qwen2.5-0.5b", QkvConfig { hidden: 896, num_heads: 14, num_kv_heads: 2, head_dim: 64, eps: 1e-6, bias: true }),
    ("llama-3-8b", QkvConfig { hidden: 4096, num_heads: 32, num_kv_heads: 8, head_dim: 128, eps: 1e-5, bias: false }),
];

impl QkvConfig {
    /// The preset called `name` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).ok_or_else(|| Error::UnknownPreset {
            name: name.to_string(),
            known: PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        })
    }

    /// Columns of q: `num_heads * head_dim`.
    pub fn q_cols(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Columns of k and of v: `num_kv_heads * head_dim`.
    pub fn kv_cols(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Output columns `N = (num_heads + 2 * num_kv_heads) * head_dim`.
    pub fn qkv_cols(&self) -> usize {
        self.q_cols() + 2 * self.kv_cols()
    }

    /// Checks that the config describes a layer the kernels can run: non-zero dims, heads a multiple
    /// of kv heads, eps finite and positive, and every size within the index types (u32 on the GPU).
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        for (name, value) in [
            ("hidden", self.hidden),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if value == 0 {
                return invalid(format!("{name} is 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return invalid(format!(
                "num_heads ({}) is not a multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.eps.is_finite() || self.eps <= 0.0 {
            return invalid(format!("eps must be finite and > 0, got {}", self.eps));
        }
        let n = self
            .num_heads
            .checked_add(2usize.saturating_mul(self.num_kv_heads))
            .and_then(|heads| heads.checked_mul(self.head_dim))
            .ok_or_else(|| Error::Overflow(format!("(num_heads + 2 * num_kv_heads) * head_dim for {self:?}")))?;
        n.checked_mul(self.hidden).filter(|&elems| elems <= i32::MAX as usize).ok_or_else(|| {
            Error::Overflow(format!("the QKV weight [{n}, {}] exceeds 2^31 - 1 elements", self.hidden))
        })?;
        Ok(())
    }

    /// Elements of the fused weight `W [N, H]`.
    pub fn weight_len(&self) -> usize {
        self.qkv_cols() * self.hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_have_known_widths() {
        for (name, c) in PRESETS {
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(QkvConfig::preset("qwen3-0.6b").unwrap().qkv_cols(), 4096);
        assert_eq!(QkvConfig::preset("qwen3-8b").unwrap().qkv_cols(), 6144);
        assert_eq!(QkvConfig::preset("qwen2.5-0.5b").unwrap().qkv_cols(), 1152);
        assert!(QkvConfig::preset("qwen2.5-0.5b").unwrap().bias);
    }
}
