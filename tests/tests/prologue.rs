//! The attention prologue's CPU twin against its float64 oracle (issue 13): residual add, q/k
//! norm, both RoPE styles, the KV-cache store with padding slots, and every error path.

use fused_qkv::prologue::{prologue_f64, residual_add, CpuPrologue, KvCache, PrologueCall, PrologueWeights, RopeStyle};
use fused_qkv::reference::{compare, reference_f64};
use fused_qkv::rope::RopeTable;
use fused_qkv::{DtypeKind, QkvConfig, QkvWeights};
use half::bf16;
use tests::{hidden_states, weights};

fn prologue_weights(config: QkvConfig, qk_norm: bool, seed: u64) -> PrologueWeights<bf16> {
    let norm = |offset: u64| -> Vec<bf16> {
        (0..config.head_dim)
            .map(|i| bf16::from_f32(0.5 + ((i as u64 * 37 + seed + offset) % 100) as f32 / 100.0))
            .collect()
    };
    let (q, k) = if qk_norm { (Some(norm(1)), Some(norm(2))) } else { (None, None) };
    PrologueWeights::new(weights::<bf16>(config, seed), q, k).unwrap()
}

/// `y [m, N]` as f64 from the twin's outputs.
fn joined(c: &QkvConfig, m: usize, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<f64> {
    let w = QkvWeights::<bf16>::random(*c, 0).unwrap();
    fused_qkv::reference::join_qkv(&w, m, q, k, v)
}

#[test]
fn cpu_twin_matches_the_oracle() {
    let m = 9;
    let table = RopeTable::new(128, 4096, 1_000_000.0, None).unwrap();
    let table64 = RopeTable::new(64, 4096, 10_000.0, None).unwrap();
    for (case, (head_dim, kv_heads, bias, qk_norm, with_residual, style)) in [
        (128, 4, false, true, true, RopeStyle::Neox),
        (128, 2, true, false, false, RopeStyle::Neox),
        (64, 2, true, false, true, RopeStyle::Gptj),
        (64, 1, false, true, false, RopeStyle::Gptj),
    ]
    .into_iter()
    .enumerate()
    {
        let config = QkvConfig { hidden: 320, num_heads: 4, num_kv_heads: kv_heads, head_dim, eps: 1e-6, bias };
        let w = prologue_weights(config, qk_norm, case as u64);
        let x = hidden_states::<bf16>(&config, m, 10 + case as u64);
        let residual: Vec<bf16> = hidden_states::<bf16>(&config, m, 20 + case as u64);
        let positions: Vec<i64> = (0..m as i64).map(|i| (i * 977 + case as i64 * 13) % 4096).collect();
        let table = if head_dim == 128 { &table } else { &table64 };
        let call = PrologueCall { positions: &positions, table, style };
        let reference = prologue_f64(&w, &x, with_residual.then_some(&residual[..]), &call, m).unwrap();
        let mut r = residual.clone();
        let twin = CpuPrologue::new(w.clone());
        let (q, k, v) = twin.forward(&x, with_residual.then_some(&mut r[..]), &call, None, m).unwrap();
        let report = compare(&joined(&config, m, &q, &k, &v), &reference, &config);
        let what = format!("case {case}: head_dim {head_dim} qk_norm {qk_norm} residual {with_residual} {style:?}");
        assert!(report.passes(DtypeKind::Bf16.error_bound()), "{what}: {report:?}");
        if with_residual {
            let sum = residual_add(&x, &residual);
            assert!(r.iter().zip(&sum).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: residual written back");
        } else {
            assert!(r.iter().zip(&residual).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: residual untouched");
        }
    }
}

/// At position 0 RoPE is the identity and without q/k norms the prologue is the fused op.
#[test]
fn position_zero_without_norms_is_the_fused_op() {
    let config = QkvConfig { hidden: 64, num_heads: 4, num_kv_heads: 2, head_dim: 16, eps: 1e-6, bias: true };
    let w = prologue_weights(config, false, 3);
    let x = hidden_states::<bf16>(&config, 5, 4);
    let table = RopeTable::new(16, 8, 10_000.0, None).unwrap();
    for style in [RopeStyle::Neox, RopeStyle::Gptj] {
        let call = PrologueCall { positions: &[0; 5], table: &table, style };
        assert_eq!(prologue_f64(&w, &x, None, &call, 5).unwrap(), reference_f64(&w.qkv, &x, 5));
    }
}

/// Every stored slot holds its token's k and v bit for bit; padding slots (negative) store
/// nothing, and every other element of the cache keeps its value.
#[test]
fn kv_cache_store_writes_exactly_the_mapped_slots() {
    let config = QkvConfig { hidden: 64, num_heads: 4, num_kv_heads: 2, head_dim: 16, eps: 1e-6, bias: false };
    let (m, block_size, blocks) = (6, 4, 3);
    let kvc = config.kv_cols();
    let twin = CpuPrologue::new(prologue_weights(config, true, 5));
    let x = hidden_states::<bf16>(&config, m, 6);
    let table = RopeTable::new(16, 64, 10_000.0, None).unwrap();
    let positions = [3, 9, 17, 0, 63, 5];
    let call = PrologueCall { positions: &positions, table: &table, style: RopeStyle::Neox };
    let slots = [5, -1, 11, 0, -1, 7];
    let sentinel = bf16::from_f32(-123.5);
    let (mut k_cache, mut v_cache) =
        (vec![sentinel; blocks * block_size * kvc], vec![sentinel; blocks * block_size * kvc]);
    let cache = KvCache { k: &mut k_cache, v: &mut v_cache, block_size, slot_mapping: &slots };
    let (_, k, v) = twin.forward(&x, None, &call, Some(cache), m).unwrap();
    for slot in 0..blocks * block_size {
        let token = slots.iter().position(|&s| s == slot as i64);
        for (cache, out) in [(&k_cache, &k), (&v_cache, &v)] {
            let stored = &cache[slot * kvc..(slot + 1) * kvc];
            match token {
                Some(t) => assert_eq!(stored, &out[t * kvc..(t + 1) * kvc], "slot {slot}"),
                None => assert!(stored.iter().all(|&e| e.to_bits() == sentinel.to_bits()), "slot {slot} touched"),
            }
        }
    }
}

#[test]
fn bad_prologue_inputs_are_errors() {
    let config = QkvConfig { hidden: 64, num_heads: 4, num_kv_heads: 2, head_dim: 16, eps: 1e-6, bias: false };
    let w = prologue_weights(config, true, 7);
    let twin = CpuPrologue::new(w.clone());
    let x = hidden_states::<bf16>(&config, 2, 8);
    let table = RopeTable::new(16, 32, 10_000.0, None).unwrap();
    let error = |positions: &[i64], table: &RopeTable| {
        let call = PrologueCall { positions, table, style: RopeStyle::Neox };
        twin.forward(&x, None, &call, None, 2).unwrap_err().to_string()
    };
    assert!(error(&[0, 32], &table).contains("position 32 of token 1"));
    assert!(error(&[-1, 0], &table).contains("position -1 of token 0"));
    assert!(error(&[0], &table).contains("positions"));
    assert!(error(&[0, 1], &RopeTable::new(8, 32, 10_000.0, None).unwrap()).contains("head_dim 8"));
    let call = PrologueCall { positions: &[0, 1], table: &table, style: RopeStyle::Neox };
    let (mut kc, mut vc) = (vec![bf16::ZERO; 4 * 32], vec![bf16::ZERO; 4 * 32]);
    let cache = KvCache { k: &mut kc, v: &mut vc, block_size: 2, slot_mapping: &[0, 4] };
    assert!(twin.forward(&x, None, &call, Some(cache), 2).unwrap_err().to_string().contains("slot 4 of token 1"));
    // A bad slot leaves the cache as it was, token 0's valid slot included.
    assert!(kc.iter().chain(&vc).all(|e| e.to_bits() == bf16::ZERO.to_bits()));
    // Short inputs are errors in the oracle as in the twin, not panics.
    let short = vec![bf16::ONE; 64];
    assert!(prologue_f64(&w, &x, Some(&short), &call, 2).unwrap_err().to_string().contains("residual"));
    assert!(prologue_f64(&w, &x[..64], None, &call, 2).is_err());
    let norm = vec![bf16::ONE; 16];
    assert!(PrologueWeights::new(w.qkv.clone(), Some(norm.clone()), None).is_err());
    assert!(PrologueWeights::new(w.qkv.clone(), Some(norm), Some(vec![bf16::ONE; 15])).is_err());
}

/// The oracle's q/k norm and RoPE against the formulas written out by hand: an identity W and
/// unit-RMS rows make q, k, v the input itself (times 1/sqrt(1 + eps)).
#[test]
fn oracle_rotates_and_norms_as_written() {
    let eps = 1e-6f32;
    let config = QkvConfig { hidden: 12, num_heads: 1, num_kv_heads: 1, head_dim: 4, eps, bias: false };
    let identity: Vec<bf16> = (0..144).map(|i| bf16::from_f32(if i % 13 == 0 { 1.0 } else { 0.0 })).collect();
    let qkv = QkvWeights::new(config, vec![bf16::ONE; 12], identity, None).unwrap();
    let signs: [f64; 12] = [1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0];
    let x: Vec<bf16> = signs.iter().map(|&s| bf16::from_f32(s as f32)).collect();
    let q_norm: [f32; 4] = [1.0, 2.0, 1.0, 0.5];
    let w = PrologueWeights::new(qkv, Some(q_norm.map(bf16::from_f32).to_vec()), Some(vec![bf16::ONE; 4])).unwrap();
    let table = RopeTable::new(4, 8, 100.0, None).unwrap();
    let scale = 1.0 / (1.0 + eps as f64).sqrt();
    for (style, pairs) in [(RopeStyle::Neox, [(0, 2), (1, 3)]), (RopeStyle::Gptj, [(0, 1), (2, 3)])] {
        let call = PrologueCall { positions: &[2], table: &table, style };
        let y = prologue_f64(&w, &x, None, &call, 1).unwrap();
        for (start, norm) in [(0, q_norm), (4, [1.0; 4])] {
            // The head after its RMS norm (its values are +-scale, so its RMS is scale).
            let normed: Vec<f64> = (0..4)
                .map(|i| signs[start + i] * scale / (scale * scale + eps as f64).sqrt() * norm[i] as f64)
                .collect();
            // Frequencies 100^(-2i/4): 1 and 0.1 radian per position, at position 2.
            for (i, (a, b)) in pairs.into_iter().enumerate() {
                let angle: f64 = 2.0 * [1.0, 0.1][i];
                let (cos, sin) = (angle.cos() as f32 as f64, angle.sin() as f32 as f64);
                let expected = [normed[a] * cos - normed[b] * sin, normed[b] * cos + normed[a] * sin];
                for (at, want) in [a, b].into_iter().zip(expected) {
                    assert!(
                        (y[start + at] - want).abs() < 1e-6,
                        "{style:?} head at {start}, element {at}: {} vs {want}",
                        y[start + at]
                    );
                }
            }
        }
        // v is not rotated or normed.
        for i in 8..12 {
            assert!((y[i] - signs[i] * scale).abs() < 1e-6);
        }
    }
}

/// RoPE tables shared between cases (building one of 131072 positions takes a while).
fn shared_table(head_dim: usize) -> &'static RopeTable {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static TABLES: OnceLock<Mutex<HashMap<usize, &'static RopeTable>>> = OnceLock::new();
    let mut tables = TABLES.get_or_init(Default::default).lock().unwrap();
    tables.entry(head_dim).or_insert_with(|| {
        // Long tables for the common head sizes; the others need not be as long to test.
        let positions = if matches!(head_dim, 64 | 128) { 131_072 } else { 16_384 };
        Box::leak(Box::new(RopeTable::new(head_dim, positions, 1_000_000.0, None).unwrap()))
    })
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use tests::{case, case_count, Case};

    fn check(c: Case, qk_norm: bool, with_residual: bool, gptj: bool) -> Result<(), TestCaseError> {
        let (config, m) = (c.config, c.m.max(1));
        let w = prologue_weights(config, qk_norm, c.seed);
        let x = hidden_states::<bf16>(&config, m, c.seed.wrapping_add(1));
        let residual = hidden_states::<bf16>(&config, m, c.seed.wrapping_add(2));
        let table = shared_table(config.head_dim);
        // Positions near 0 and near the table's end (the largest angles).
        let positions: Vec<i64> = (0..m as u64)
            .map(|i| {
                let r = c.seed.wrapping_mul(6364136223846793005).wrapping_add(i * 1442695040888963407) >> 33;
                let r = (r % 4096) as i64;
                if i % 2 == 0 {
                    r
                } else {
                    table.max_positions as i64 - 1 - r
                }
            })
            .collect();
        let style = if gptj { RopeStyle::Gptj } else { RopeStyle::Neox };
        let call = PrologueCall { positions: &positions, table, style };
        let reference = prologue_f64(&w, &x, with_residual.then_some(&residual[..]), &call, m).unwrap();
        let mut r = residual.clone();
        let (q, k, v) = CpuPrologue::new(w).forward(&x, with_residual.then_some(&mut r[..]), &call, None, m).unwrap();
        let report = compare(&joined(&config, m, &q, &k, &v), &reference, &config);
        prop_assert!(
            report.passes(DtypeKind::Bf16.error_bound()),
            "{c:?} qk_norm {qk_norm} residual {with_residual} {style:?}: {report:?}"
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: case_count(64), ..ProptestConfig::default() })]

        /// The CPU twin against the oracle over shapes (head_dim 64 to 256), eps, bias, q/k norm,
        /// residual, both RoPE styles and positions up to the table's end.
        #[test]
        fn cpu_twin_matches_the_oracle_everywhere(
            c in case(12, 700, 2_000_000),
            qk_norm in any::<bool>(),
            with_residual in any::<bool>(),
            gptj in any::<bool>(),
        ) {
            check(c, qk_norm, with_residual, gptj)?;
        }
    }
}
