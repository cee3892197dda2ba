//! Every validation error path of the host API (no GPU needed; the GPU-side buffer checks are in
//! gpu_fuzz.rs).

use fused_qkv::cpu::CpuLayer;
use fused_qkv::{DtypeKind, Error, QkvConfig, QkvWeights};
use half::bf16;
use tests::{hidden_states, weights};

fn tiny() -> QkvConfig {
    QkvConfig { hidden: 16, num_heads: 4, num_kv_heads: 2, head_dim: 4, eps: 1e-6, bias: false }
}

fn invalid(config: QkvConfig) -> String {
    match config.validate() {
        Err(Error::InvalidConfig(msg)) => msg,
        other => panic!("expected InvalidConfig for {config:?}, got {other:?}"),
    }
}

#[test]
fn zero_dimensions_are_rejected() {
    assert!(invalid(QkvConfig { hidden: 0, ..tiny() }).contains("hidden"));
    assert!(invalid(QkvConfig { num_heads: 0, ..tiny() }).contains("num_heads"));
    assert!(invalid(QkvConfig { num_kv_heads: 0, ..tiny() }).contains("num_kv_heads"));
    assert!(invalid(QkvConfig { head_dim: 0, ..tiny() }).contains("head_dim"));
}

#[test]
fn heads_must_be_a_multiple_of_kv_heads() {
    assert!(invalid(QkvConfig { num_heads: 6, num_kv_heads: 4, ..tiny() }).contains("multiple"));
}

#[test]
fn eps_must_be_finite_and_positive() {
    for eps in [0.0, -1e-6, f32::NAN, f32::INFINITY] {
        assert!(invalid(QkvConfig { eps, ..tiny() }).contains("eps"), "eps = {eps}");
    }
}

#[test]
fn sizes_that_overflow_are_rejected() {
    let huge = QkvConfig { hidden: 1 << 20, num_heads: 1 << 12, num_kv_heads: 1 << 12, head_dim: 1 << 10, ..tiny() };
    assert!(matches!(huge.validate(), Err(Error::Overflow(_))));
    let wrapping = QkvConfig { num_heads: usize::MAX, num_kv_heads: 1, ..tiny() };
    assert!(matches!(wrapping.validate(), Err(Error::Overflow(_))));
}

#[test]
fn unknown_preset_and_dtype_are_errors() {
    match QkvConfig::preset("gpt-5") {
        Err(Error::UnknownPreset { name, known }) => assert!(name == "gpt-5" && known.contains("qwen3-0.6b")),
        other => panic!("{other:?}"),
    }
    assert!(matches!("bf8".parse::<DtypeKind>(), Err(Error::UnknownDtype(_))));
    assert_eq!("BF16".parse::<DtypeKind>().unwrap(), DtypeKind::Bf16);
}

#[test]
fn weight_lengths_are_checked() {
    let c = tiny();
    let ok = weights::<bf16>(c, 1);
    let err = QkvWeights::new(c, ok.gamma[1..].to_vec(), ok.qkv_weight.clone(), None).unwrap_err();
    assert!(matches!(err, Error::Length { what: "gamma", expected: 16, actual: 15 }), "{err}");
    let err = QkvWeights::new(c, ok.gamma.clone(), ok.qkv_weight[1..].to_vec(), None).unwrap_err();
    assert!(matches!(err, Error::Length { what: "qkv_weight", .. }), "{err}");
    let with_bias = QkvConfig { bias: true, ..c };
    let err =
        QkvWeights::new(with_bias, ok.gamma.clone(), ok.qkv_weight.clone(), Some(vec![bf16::ONE; 3])).unwrap_err();
    assert!(matches!(err, Error::Length { what: "bias", .. }), "{err}");
}

#[test]
fn bias_presence_must_match_the_config() {
    let c = tiny();
    let w = weights::<bf16>(c, 1);
    let n = c.qkv_cols();
    let err = QkvWeights::new(c, w.gamma.clone(), w.qkv_weight.clone(), Some(vec![bf16::ONE; n])).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err = QkvWeights::new(QkvConfig { bias: true, ..c }, w.gamma, w.qkv_weight, None).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[test]
fn separate_projections_are_checked_and_concatenated_in_order() {
    let c = QkvConfig { bias: true, ..tiny() };
    let (h, qc, kvc) = (c.hidden, c.q_cols(), c.kv_cols());
    let q: Vec<bf16> = (0..qc * h).map(|i| bf16::from_f32(i as f32)).collect();
    let k = vec![bf16::from_f32(-1.0); kvc * h];
    let v = vec![bf16::from_f32(-2.0); kvc * h];
    let (qb, kb, vb) = (vec![bf16::ONE; qc], vec![bf16::ZERO; kvc], vec![bf16::NEG_ONE; kvc]);
    let gamma = vec![bf16::ONE; h];
    let w = QkvWeights::from_separate(c, gamma.clone(), [&q, &k, &v], Some([&qb, &kb, &vb])).unwrap();
    assert_eq!(w.qkv_weight, [q.clone(), k.clone(), v.clone()].concat());
    assert_eq!(w.bias.unwrap(), [qb.clone(), kb.clone(), vb.clone()].concat());
    let err = QkvWeights::from_separate(c, gamma.clone(), [&q, &k[1..], &v], Some([&qb, &kb, &vb])).unwrap_err();
    assert!(matches!(err, Error::Length { what: "k_weight", .. }), "{err}");
    let err = QkvWeights::from_separate(c, gamma, [&q, &k, &v], Some([&qb, &kb, &vb[1..]])).unwrap_err();
    assert!(matches!(err, Error::Length { what: "v_bias", .. }), "{err}");
}

#[test]
fn cpu_rejects_short_buffers() {
    let c = tiny();
    let layer = CpuLayer::new(weights::<bf16>(c, 1));
    let x = hidden_states::<bf16>(&c, 3, 2);
    let err = layer.forward(&x, 4).unwrap_err();
    assert!(matches!(err, Error::TooShort { what: "x", needed: 64, actual: 48 }), "{err}");
    let (mut q, mut k, mut v) =
        (vec![bf16::ZERO; 3 * c.q_cols()], vec![bf16::ZERO; 3 * c.kv_cols()], vec![bf16::ZERO; 3 * c.kv_cols() - 1]);
    let err = layer.forward_into(&x, 3, &mut q, &mut k, &mut v).unwrap_err();
    assert!(matches!(err, Error::TooShort { what: "v", .. }), "{err}");
    let err = layer.forward(&x, usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Overflow(_)), "{err}");
}
