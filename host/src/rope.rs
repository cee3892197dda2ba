//! Rotary position embedding tables (issue 13's prologue reads them; built on the host).
//!
//! A table holds `cos` and `sin` of `position * inv_freq[i]` for every position below
//! `max_positions` and every frequency `i < head_dim / 2`, row-major `[max_positions, head_dim / 2]`,
//! computed in f64 and stored as f32. The kernel only reads the table, so any RoPE variant that is
//! a table works; this module builds the ones of the supported models' `config.json`:
//! `rope_scaling` absent or `null` (plain: `inv_freq[i] = theta^(-2i / head_dim)`), `"linear"`
//! (frequencies divided by `factor`) and `"llama3"` (Llama 3.1: long wavelengths divided by
//! `factor`, short ones kept, the band between interpolated). Other `rope_type`s are errors.

use serde_json::Value;

use crate::{Error, ModelConfig, Result};

/// `cos` and `sin` of `position * inv_freq[i]`, `[max_positions, head_dim / 2]` each.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeTable {
    pub head_dim: usize,
    pub max_positions: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// The table for `head_dim` (even), positions `0..max_positions`, base `theta` and the
    /// `rope_scaling` object of a `config.json` (`None` or JSON `null`: plain RoPE).
    pub fn new(head_dim: usize, max_positions: usize, theta: f64, scaling: Option<&Value>) -> Result<Self> {
        let inv_freq = inv_freq(head_dim, theta, scaling)?;
        let half = head_dim / 2;
        let len = max_positions
            .checked_mul(half)
            .ok_or_else(|| Error::Overflow(format!("a RoPE table of {max_positions} positions x {half}")))?;
        let (mut cos, mut sin) = (Vec::with_capacity(len), Vec::with_capacity(len));
        for position in 0..max_positions {
            for f in &inv_freq {
                let angle = position as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(RopeTable { head_dim, max_positions, cos, sin })
    }

    /// The table a model's `config.json` describes: its head_dim, `max_position_embeddings`,
    /// `rope_theta` and `rope_scaling`.
    pub fn for_model(config: &ModelConfig) -> Result<Self> {
        Self::new(config.qkv.head_dim, config.max_position_embeddings, config.rope_theta, config.rope_scaling.as_ref())
    }
}

/// The `head_dim / 2` rotary frequencies (radians per position) for base `theta` and the
/// `rope_scaling` object of a `config.json`.
pub fn inv_freq(head_dim: usize, theta: f64, scaling: Option<&Value>) -> Result<Vec<f64>> {
    let invalid = |msg: String| Error::InvalidConfig(format!("RoPE: {msg}"));
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(invalid(format!("head_dim must be even and > 0, got {head_dim}")));
    }
    if !(theta.is_finite() && theta > 1.0) {
        return Err(invalid(format!("rope_theta must be finite and > 1, got {theta}")));
    }
    let plain: Vec<f64> = (0..head_dim / 2).map(|i| theta.powf(-2.0 * i as f64 / head_dim as f64)).collect();
    let scaling = match scaling {
        None | Some(Value::Null) => return Ok(plain),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(invalid(format!("rope_scaling is neither an object nor null: {other}"))),
    };
    // transformers reads "rope_type", older configs "type".
    let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("default");
    let number = |field: &str| -> Result<f64> {
        scaling
            .get(field)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| invalid(format!("rope_scaling of type {kind} needs a positive number `{field}`")))
    };
    match kind {
        "default" => Ok(plain),
        "linear" => {
            let factor = number("factor")?;
            Ok(plain.into_iter().map(|f| f / factor).collect())
        }
        "llama3" => {
            let factor = number("factor")?;
            let (low, high) = (number("low_freq_factor")?, number("high_freq_factor")?);
            let old_context = number("original_max_position_embeddings")?;
            if high <= low {
                return Err(invalid(format!(
                    "llama3 scaling needs high_freq_factor > low_freq_factor ({high} <= {low})"
                )));
            }
            let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
            Ok(plain
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_context / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect())
        }
        other => Err(invalid(format!("rope_type `{other}` is not supported (default, linear, llama3)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_table_rotates_by_position_times_frequency() {
        let table = RopeTable::new(8, 5, 10_000.0, None).unwrap();
        assert_eq!((table.cos.len(), table.sin.len()), (20, 20));
        // Position 0: no rotation; frequency 0 is one radian per position.
        assert!(table.cos[..4].iter().all(|&c| c == 1.0) && table.sin[..4].iter().all(|&s| s == 0.0));
        assert_eq!(table.cos[3 * 4], (3.0f64).cos() as f32);
        // Frequency 1 of 4: theta^(-1/4) = 0.1 radian per position.
        assert!((table.sin[2 * 4 + 1] - (0.2f64).sin() as f32).abs() < 1e-7);
        for (c, s) in table.cos.iter().zip(&table.sin) {
            assert!((c * c + s * s - 1.0).abs() < 1e-6);
        }
        assert_eq!(RopeTable::new(8, 5, 10_000.0, Some(&Value::Null)).unwrap(), table);
    }

    /// Llama 3.1's published scaling (factor 8, low 1, high 4, original 8192): wavelengths
    /// below 2048 keep their frequency, above 8192 are divided by 8, between are interpolated
    /// (the formula of transformers' `_compute_llama3_parameters`, written out independently).
    #[test]
    fn llama3_scaling_keeps_short_divides_long_and_blends_between() {
        let scaling: Value = serde_json::from_str(
            r#"{"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}"#,
        )
        .unwrap();
        let plain = inv_freq(128, 500_000.0, None).unwrap();
        let scaled = inv_freq(128, 500_000.0, Some(&scaling)).unwrap();
        let mut seen = [false; 3];
        for (p, s) in plain.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f64::consts::PI / p;
            if wavelen < 2048.0 {
                assert_eq!(s, p);
                seen[0] = true;
            } else if wavelen > 8192.0 {
                assert!((s - p / 8.0).abs() <= 1e-15 * p);
                seen[1] = true;
            } else {
                assert!(*s < *p && *s > p / 8.0);
                seen[2] = true;
            }
        }
        assert_eq!(seen, [true; 3], "the test's frequencies span all three bands");
        let linear: Value = serde_json::from_str(r#"{"type": "linear", "factor": 2.0}"#).unwrap();
        assert_eq!(inv_freq(4, 100.0, Some(&linear)).unwrap(), vec![0.5, 0.05]);
    }

    #[test]
    fn bad_rope_settings_are_errors_naming_them() {
        let error = |head_dim, theta, scaling: &str| {
            let value: Value = serde_json::from_str(scaling).unwrap();
            inv_freq(head_dim, theta, Some(&value)).unwrap_err().to_string()
        };
        assert!(error(7, 1e4, "null").contains("head_dim must be even"));
        assert!(error(8, 0.5, "null").contains("rope_theta"));
        assert!(error(8, 1e4, r#"{"rope_type": "yarn", "factor": 4}"#).contains("`yarn` is not supported"));
        assert!(error(8, 1e4, r#"{"rope_type": "llama3", "factor": 8}"#).contains("`low_freq_factor`"));
        assert!(error(8, 1e4, r#"{"rope_type": "linear"}"#).contains("`factor`"));
        assert!(error(8, 1e4, "[1]").contains("neither an object nor null"));
    }
}
