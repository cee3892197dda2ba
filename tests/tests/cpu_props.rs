//! The CPU implementation against the float64 oracle, and algebraic properties of the op.

use fused_qkv::cpu::CpuLayer;
use fused_qkv::reference::{compare, join_qkv, reference_f64};
use fused_qkv::{Dtype, QkvConfig, QkvWeights};
use half::{bf16, f16};
use proptest::prelude::*;
use tests::{case, case_count, hidden_states, weights, Case};

fn forward_y<T: Dtype>(w: &QkvWeights<T>, x: &[T], m: usize) -> Vec<f64> {
    let (q, k, v) = CpuLayer::new(w.clone()).forward(x, m).expect("valid inputs");
    join_qkv(w, m, &q, &k, &v)
}

fn check_against_oracle<T: Dtype>(c: Case) -> Result<(), TestCaseError> {
    let w = weights::<T>(c.config, c.seed);
    let x = hidden_states::<T>(&c.config, c.m, c.seed.wrapping_add(1));
    let report = compare(&forward_y(&w, &x, c.m), &reference_f64(&w, &x, c.m), &c.config);
    let bound = T::KIND.error_bound();
    prop_assert!(report.passes(bound), "{} {:?}: {report:?} (bound {bound})", T::KIND, c);
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: case_count(64), ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bf16_matches_oracle(c in case(24, 700, 3_000_000)) { check_against_oracle::<bf16>(c)?; }

    #[test]
    fn f16_matches_oracle(c in case(24, 700, 3_000_000)) { check_against_oracle::<f16>(c)?; }

    #[test]
    fn f32_matches_oracle(c in case(24, 700, 3_000_000)) { check_against_oracle::<f32>(c)?; }

    /// Scaling a row by a positive power of two scales its rms by the same factor, so the
    /// normalized row and the output do not change (eps kept negligible against the row's mean square:
    /// rows are at least ~1e-3 in magnitude, so their mean squares stay far above 1e-30).
    #[test]
    fn positive_scale_invariance(c in case(8, 300, 1_000_000), k in -6i32..=6) {
        let config = QkvConfig { eps: 1e-30, ..c.config };
        let w = weights::<f32>(config, c.seed);
        let x = hidden_states::<f32>(&config, c.m, c.seed ^ 7);
        let scaled: Vec<f32> = x.iter().map(|v| v * 2f32.powi(k)).collect();
        let report = compare(&forward_y(&w, &scaled, c.m), &forward_y(&w, &x, c.m), &config);
        prop_assert!(report.passes(1e-5), "{report:?}");
    }

    /// Without bias the output is linear in W: y(W1 + W2) = y(W1) + y(W2).
    #[test]
    fn linear_in_weight(c in case(8, 300, 1_000_000)) {
        let config = QkvConfig { bias: false, ..c.config };
        let w1 = weights::<f32>(config, c.seed);
        let other = weights::<f32>(config, c.seed ^ 0x55);
        let w2 = QkvWeights::new(config, w1.gamma.clone(), other.qkv_weight, None).unwrap();
        let sum: Vec<f32> = w1.qkv_weight.iter().zip(&w2.qkv_weight).map(|(a, b)| a + b).collect();
        let w12 = QkvWeights::new(config, w1.gamma.clone(), sum, None).unwrap();
        let x = hidden_states::<f32>(&config, c.m, c.seed ^ 3);
        let (y1, y2) = (forward_y(&w1, &x, c.m), forward_y(&w2, &x, c.m));
        let added: Vec<f64> = y1.iter().zip(&y2).map(|(a, b)| a + b).collect();
        let report = compare(&forward_y(&w12, &x, c.m), &added, &config);
        prop_assert!(report.passes(1e-5), "{report:?}");
    }

    /// A zero weight gives exactly the bias (or zero) in every row.
    #[test]
    fn zero_weight_gives_bias(c in case(8, 300, 1_000_000)) {
        let mut w = weights::<bf16>(c.config, c.seed);
        w.qkv_weight.iter_mut().for_each(|v| *v = bf16::ZERO);
        let x = hidden_states::<bf16>(&c.config, c.m, c.seed);
        let y = forward_y(&w, &x, c.m);
        let n = c.config.qkv_cols();
        for (i, value) in y.iter().enumerate() {
            let expected = w.bias.as_ref().map_or(0.0, |b| b[i % n].to_f32() as f64);
            prop_assert_eq!(*value, expected, "element {}", i);
        }
    }

    /// q, k and v are the consecutive column ranges of y, in that order.
    #[test]
    fn outputs_are_the_column_ranges_of_y(c in case(6, 200, 500_000)) {
        let w = weights::<f32>(c.config, c.seed);
        let x = hidden_states::<f32>(&c.config, c.m, c.seed);
        let (q, k, v) = CpuLayer::new(w.clone()).forward(&x, c.m).unwrap();
        prop_assert_eq!(q.len(), c.m * c.config.q_cols());
        prop_assert_eq!(k.len(), c.m * c.config.kv_cols());
        prop_assert_eq!(v.len(), c.m * c.config.kv_cols());
        let report = compare(&join_qkv(&w, c.m, &q, &k, &v), &reference_f64(&w, &x, c.m), &c.config);
        prop_assert!(report.passes(1e-5), "{report:?}");
    }
}

#[test]
fn zero_tokens_give_empty_outputs() {
    let config = QkvConfig::preset("qwen2.5-0.5b").unwrap();
    let layer = CpuLayer::new(weights::<bf16>(config, 1));
    let (q, k, v) = layer.forward(&[], 0).unwrap();
    assert!(q.is_empty() && k.is_empty() && v.is_empty());
    let sentinel = bf16::from_f32(-7.0);
    let (mut q, mut k, mut v) = (vec![sentinel; 5], vec![sentinel; 6], vec![sentinel; 7]);
    layer.forward_into(&[], 0, &mut q, &mut k, &mut v).unwrap();
    assert!([&q, &k, &v].iter().all(|out| out.iter().all(|e| *e == sentinel)), "M = 0 wrote output");
}

#[test]
fn forward_into_leaves_rows_past_m_untouched() {
    let config = QkvConfig::preset("qwen2.5-0.5b").unwrap();
    let layer = CpuLayer::new(weights::<f16>(config, 2));
    let x = hidden_states::<f16>(&config, 3, 9);
    let sentinel = f16::from_f32(-7.0);
    let (mut q, mut k, mut v) = (
        vec![sentinel; 4 * config.q_cols()],
        vec![sentinel; 4 * config.kv_cols()],
        vec![sentinel; 4 * config.kv_cols()],
    );
    layer.forward_into(&x, 3, &mut q, &mut k, &mut v).unwrap();
    for (out, cols) in [(&q, config.q_cols()), (&k, config.kv_cols()), (&v, config.kv_cols())] {
        assert!(out[3 * cols..].iter().all(|e| *e == sentinel));
        assert!(out[..3 * cols].iter().all(|e| *e != sentinel && e.is_finite()));
    }
}

/// gamma folded into W keeps f16 inside its range whatever gamma's scale: the per-layer power of
/// two puts the largest `|W * gamma|` in [2^14, 2^15). With gamma ~ 1e-3 the products would sit
/// among f16's subnormals unscaled; scaled, the result still matches the oracle. With gamma ~ 3e4
/// and large W they would overflow f16; scaled, every folded weight is finite.
#[test]
fn f16_fold_scales_gamma_into_range() {
    let config = QkvConfig::preset("qwen3-0.6b").unwrap();
    for (gamma_scale, w_scale, check_output) in [(1e-3f32, 1.0f32, true), (3e4, 40.0, false)] {
        let mut w = weights::<f16>(config, 5);
        w.qkv_weight.iter_mut().for_each(|v| *v = f16::from_f32(v.to_f32() * w_scale));
        w.gamma.iter_mut().for_each(|g| *g = f16::from_f32(g.to_f32() * gamma_scale));
        let folded = w.fold_gamma();
        let max = folded.qkv_weight.iter().map(|v| v.to_f32().abs()).fold(0.0f32, f32::max);
        assert!((16384.0..32768.0).contains(&max), "gamma x {gamma_scale}: max |W'| = {max}");
        assert!(folded.qkv_weight.iter().all(|v| v.is_finite()));
        assert_eq!(folded.out_scale(), (-folded.scale_log2 as f32).exp2());
        if check_output {
            let x = hidden_states::<f16>(&config, 3, 6);
            let report = compare(&forward_y(&w, &x, 3), &reference_f64(&w, &x, 3), &config);
            assert!(report.passes(f16::KIND.error_bound()), "gamma x {gamma_scale}: {report:?}");
        }
    }
}

/// bf16 and f32 have fp32's range: no scaling, W' = round(W * gamma).
#[test]
fn bf16_fold_is_one_rounding_of_w_times_gamma() {
    let config = QkvConfig::preset("qwen2.5-0.5b").unwrap();
    let w = weights::<bf16>(config, 7);
    let folded = w.fold_gamma();
    assert_eq!(folded.scale_log2, 0);
    let h = config.hidden;
    for (i, v) in folded.qkv_weight.iter().enumerate().step_by(997) {
        assert_eq!(*v, bf16::from_f32(w.qkv_weight[i].to_f32() * w.gamma[i % h].to_f32()));
    }
}
