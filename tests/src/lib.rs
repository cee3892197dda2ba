//! Shared generators for the property tests in `tests/`: random layer shapes, weights and inputs.
//!
//! Every case draws fresh random data from a proptest-chosen seed (never zeros), with rows whose
//! magnitudes span 1e-3 .. 1e3 so the norm's scaling is exercised.

use fused_qkv::{Dtype, QkvConfig, QkvWeights};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// One test case: a layer, a token count and the seed for its data.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub config: QkvConfig,
    pub m: usize,
    pub seed: u64,
}

/// Hidden sizes: anything in 1..=max, with the awkward ones (not multiples of 8, 32 or 128, and
/// chunk boundaries of the kernel) drawn often.
pub fn hidden_size(max: usize) -> impl Strategy<Value = usize> {
    let special: Vec<usize> =
        [1, 2, 3, 7, 8, 9, 31, 33, 127, 129, 255, 256, 257, 896, 1023, 1024, 1025, 2047, 2049, 4095, 4096, 5119, 5120]
            .into_iter()
            .filter(|&h| h <= max)
            .collect();
    prop_oneof![1..=max, proptest::sample::select(special)]
}

/// Head layouts: num_kv_heads in {1, 2, 3, 4, 8}, group size 1..=4, head_dim from real models.
pub fn heads(max_heads: usize) -> impl Strategy<Value = (usize, usize, usize)> {
    (
        proptest::sample::select(vec![1usize, 2, 3, 4, 8]),
        1usize..=4,
        proptest::sample::select(vec![64usize, 80, 96, 128, 256]),
    )
        .prop_map(move |(kv, group, head_dim)| ((kv * group).min(max_heads.max(kv)), kv, head_dim))
        .prop_filter("num_heads multiple of num_kv_heads", |(h, kv, _)| h % kv == 0)
}

/// A whole case, with `m * N * H` capped at `work` so the float64 reference stays fast.
pub fn case(max_m: usize, max_hidden: usize, work: usize) -> impl Strategy<Value = Case> {
    (hidden_size(max_hidden), heads(16), -12.0f64..-2.0, any::<bool>(), 0..=max_m, any::<u64>()).prop_map(
        move |(hidden, (num_heads, num_kv_heads, head_dim), log_eps, bias, m, seed)| {
            let config = QkvConfig { hidden, num_heads, num_kv_heads, head_dim, eps: 10f64.powf(log_eps) as f32, bias };
            let m = m.min(work / (config.qkv_cols() * hidden)).max(usize::from(m > 0));
            Case { config, m, seed }
        },
    )
}

/// Standard-normal-ish sample (sum of uniforms), cheap and never exactly zero in practice.
fn normalish(rng: &mut impl Rng) -> f32 {
    (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>() * 0.866
}

/// Random weights for `config`: gamma in ±[0.25, 2], W ~ N(0, 1/H), bias ~ N(0, 0.25).
pub fn weights<T: Dtype>(config: QkvConfig, seed: u64) -> QkvWeights<T> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let scale = 1.0 / (config.hidden as f32).sqrt();
    let gamma = (0..config.hidden)
        .map(|_| T::from_f32(rng.gen_range(0.25f32..2.0) * if rng.gen_bool(0.2) { -1.0 } else { 1.0 }))
        .collect();
    let qkv_weight = (0..config.weight_len()).map(|_| T::from_f32(normalish(&mut rng) * scale)).collect();
    let bias = config.bias.then(|| (0..config.qkv_cols()).map(|_| T::from_f32(normalish(&mut rng) * 0.5)).collect());
    QkvWeights::new(config, gamma, qkv_weight, bias).expect("generated weights match their config")
}

/// Random hidden states `[m, H]`, each row scaled by 10^u with u uniform in [-3, 3].
pub fn hidden_states<T: Dtype>(config: &QkvConfig, m: usize, seed: u64) -> Vec<T> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(m * config.hidden);
    for _ in 0..m {
        let magnitude = 10f32.powf(rng.gen_range(-3.0f32..3.0));
        x.extend((0..config.hidden).map(|_| T::from_f32(normalish(&mut rng) * magnitude)));
    }
    x
}

/// Proptest case count: `$FUSED_QKV_CASES` if set, else `default`.
pub fn case_count(default: u32) -> u32 {
    std::env::var("FUSED_QKV_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
