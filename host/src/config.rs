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
    ("qwen3-4b", QkvConfig { hidden: 2560, num_heads: 32, num_kv_heads: 8, head_dim: 128, eps: 1e-6, bias: false }),
    ("qwen3-14b", QkvConfig { hidden: 5120, num_heads: 40, num_kv_heads: 8, head_dim: 128, eps: 1e-6, bias: false }),
    ("llama-3.1-8b", QkvConfig { hidden: 4096, num_heads: 32, num_kv_heads: 8, head_dim: 128, eps: 1e-5, bias: false }),
    (
        "llama-3.1-70b",
        QkvConfig { hidden: 8192, num_heads: 64, num_kv_heads: 8, head_dim: 128, eps: 1e-5, bias: false },
    ),
];

/// What a model's Hugging Face `config.json` says about its attention layers: the QKV shapes, and
/// what the rest of the attention prologue needs (rotary embedding, Qwen3's q/k norm).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `model_type`: one of [`ModelConfig::MODEL_TYPES`].
    pub model_type: String,
    pub qkv: QkvConfig,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `rope_theta` (default 10000).
    pub rope_theta: f64,
    /// `rope_scaling` as written (e.g. Llama 3.1's `{"rope_type": "llama3", ..}`), if any.
    pub rope_scaling: Option<serde_json::Value>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// RMSNorm of each q and k head before the rotary embedding (Qwen3).
    pub qk_norm: bool,
}

/// The fields of a `config.json` that [`ModelConfig`] reads; the others are ignored.
#[derive(serde::Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    attention_bias: Option<bool>,
    num_hidden_layers: Option<usize>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
}

impl ModelConfig {
    /// The `model_type`s whose attention layers this library knows.
    pub const MODEL_TYPES: &'static [&'static str] = &["qwen3", "qwen2", "llama", "mistral"];

    /// Reads a Hugging Face `config.json` (a file, or a model directory holding one).
    pub fn from_hf_config(path: &std::path::Path) -> Result<Self> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io { path: file.clone(), source })?;
        Self::from_hf_json(&text).map_err(|e| match e {
            Error::InvalidConfig(reason) => Error::ModelConfig { path: file, reason },
            other => other,
        })
    }

    /// As [`ModelConfig::from_hf_config`], from the file's text.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let hf: HfConfig =
            serde_json::from_str(text).map_err(|e| Error::InvalidConfig(format!("not a config.json: {e}")))?;
        let missing = |field: &str| Error::InvalidConfig(format!("`{field}` is missing"));
        let model_type = hf.model_type.ok_or_else(|| missing("model_type"))?;
        if !Self::MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::InvalidConfig(format!(
                "model_type `{model_type}` is not one this library knows ({})",
                Self::MODEL_TYPES.join(", ")
            )));
        }
        let hidden = hf.hidden_size.ok_or_else(|| missing("hidden_size"))?;
        let num_heads = hf.num_attention_heads.ok_or_else(|| missing("num_attention_heads"))?;
        if num_heads == 0 {
            return Err(Error::InvalidConfig("`num_attention_heads` is 0".into()));
        }
        let eps = hf.rms_norm_eps.ok_or_else(|| missing("rms_norm_eps"))?;
        // Qwen2 has a QKV bias without saying so; the others say it with `attention_bias`.
        let bias = model_type == "qwen2" || hf.attention_bias.unwrap_or(false);
        let qkv = QkvConfig {
            hidden,
            num_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(num_heads),
            head_dim: hf.head_dim.unwrap_or(hidden / num_heads),
            eps: eps as f32,
            bias,
        };
        qkv.validate()?;
        Ok(ModelConfig {
            qk_norm: model_type == "qwen3",
            model_type,
            qkv,
            layers: hf.num_hidden_layers.ok_or_else(|| missing("num_hidden_layers"))?,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_scaling: hf.rope_scaling.filter(|v| !v.is_null()),
            max_position_embeddings: hf.max_position_embeddings.ok_or_else(|| missing("max_position_embeddings"))?,
        })
    }
}

impl QkvConfig {
    /// The preset called `name` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).ok_or_else(|| Error::UnknownPreset {
            name: name.to_string(),
            known: PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        })
    }

    /// The attention layer of the model whose Hugging Face `config.json` is at `path` (the file,
    /// or a model directory holding it); see [`ModelConfig::from_hf_config`].
    pub fn from_hf_config(path: &std::path::Path) -> Result<Self> {
        ModelConfig::from_hf_config(path).map(|m| m.qkv)
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
        assert_eq!(QkvConfig::preset("llama-3.1-70b").unwrap().qkv_cols(), 10240);
    }

    /// Trimmed from the published config.json files (Qwen3-8B, Qwen2.5-0.5B, Llama-3.1-8B,
    /// Mistral-7B-v0.3): each gives its preset, or the shapes its model card states.
    #[test]
    fn hugging_face_configs_give_the_layer_shapes() {
        let qwen3 = r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "head_dim": 128,
            "hidden_size": 4096, "max_position_embeddings": 40960, "model_type": "qwen3",
            "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
            "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "torch_dtype": "bfloat16"}"#;
        let m = ModelConfig::from_hf_json(qwen3).unwrap();
        assert_eq!(m.qkv, QkvConfig::preset("qwen3-8b").unwrap());
        assert!(m.qk_norm && m.rope_scaling.is_none() && m.layers == 36 && m.rope_theta == 1e6);
        let qwen2 = r#"{"hidden_size": 896, "max_position_embeddings": 32768, "model_type": "qwen2",
            "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0}"#;
        let m = ModelConfig::from_hf_json(qwen2).unwrap();
        assert_eq!(m.qkv, QkvConfig::preset("qwen2.5-0.5b").unwrap());
        assert!(m.qkv.bias && !m.qk_norm);
        let llama = r#"{"attention_bias": false, "hidden_size": 4096, "max_position_embeddings": 131072,
            "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0,
            "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
            "rope_type": "llama3"}, "rope_theta": 500000.0}"#;
        let m = ModelConfig::from_hf_json(llama).unwrap();
        assert_eq!(m.qkv, QkvConfig::preset("llama-3.1-8b").unwrap());
        assert_eq!(m.rope_scaling.as_ref().unwrap()["rope_type"], "llama3");
        let mistral = r#"{"hidden_size": 4096, "head_dim": null, "max_position_embeddings": 32768,
            "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0}"#;
        let m = ModelConfig::from_hf_json(mistral).unwrap();
        assert_eq!((m.qkv.head_dim, m.qkv.num_kv_heads, m.qkv.bias), (128, 8, false));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let error = |text: &str| ModelConfig::from_hf_json(text).unwrap_err().to_string();
        let base = r#""hidden_size": 64, "num_attention_heads": 4, "rms_norm_eps": 1e-6,
            "num_hidden_layers": 2, "max_position_embeddings": 128"#;
        assert!(error(&format!(r#"{{"model_type": "gpt2", {base}}}"#)).contains("gpt2"));
        assert!(error(&format!("{{{base}}}")).contains("`model_type` is missing"));
        assert!(error(r#"{"model_type": "qwen3", "hidden_size": 64}"#).contains("`num_attention_heads` is missing"));
        let no_eps = r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}"#;
        assert!(error(no_eps).contains("`rms_norm_eps` is missing"));
        let odd_kv = format!(r#"{{"model_type": "llama", "num_key_value_heads": 3, {base}}}"#);
        assert!(error(&odd_kv).contains("num_kv_heads"));
        assert!(error("[1, 2]").contains("not a config.json"));
        assert!(error(r#"{"model_type": "qwen3", "hidden_size": -1}"#).contains("not a config.json"));
        assert!(ModelConfig::from_hf_json(&format!(r#"{{"model_type": "llama", {base}}}"#)).is_ok());
        let missing_file = ModelConfig::from_hf_config(std::path::Path::new("/nonexistent/model")).unwrap_err();
        assert!(missing_file.to_string().contains("/nonexistent/model"));
    }
}
