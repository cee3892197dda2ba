//! Tensor-parallel shards of a layer: every rank's outputs side by side are the whole layer's,
//! bit for bit (CPU), for split and replicated kv heads; world sizes that do not fit are errors.

use fused_qkv::cpu::CpuLayer;
use fused_qkv::{QkvConfig, QkvWeights};
use half::bf16;

fn x(config: &QkvConfig, m: usize) -> Vec<bf16> {
    (0..m * config.hidden).map(|i| bf16::from_f32(((i * 7919) % 201) as f32 / 50.0 - 2.0)).collect()
}

/// Columns `cols` of every row of `y [m, width]`.
fn columns(y: &[bf16], width: usize, cols: std::ops::Range<usize>) -> Vec<u16> {
    y.chunks(width).flat_map(|row| row[cols.clone()].iter().map(|v| v.to_bits())).collect()
}

#[test]
fn ranks_side_by_side_are_the_whole_layer() {
    let m = 5;
    for bias in [false, true] {
        let config = QkvConfig { hidden: 24, num_heads: 8, num_kv_heads: 2, head_dim: 4, eps: 1e-6, bias };
        let whole = QkvWeights::<bf16>::random(config, 3).unwrap();
        let x = x(&config, m);
        let (q, k, v) = CpuLayer::new(whole.clone()).forward(&x, m).unwrap();
        for world in [1, 2, 4, 8] {
            let mut q_ranks = vec![Vec::new(); m];
            for rank in 0..world {
                let shard = whole.shard(rank, world).unwrap();
                let sc = shard.config;
                assert_eq!((sc.num_heads, sc.num_kv_heads), (8 / world, (2 / world).max(1)));
                let (sq, sk, sv) = CpuLayer::new(shard).forward(&x, m).unwrap();
                for (row, part) in sq.chunks(sc.q_cols()).enumerate() {
                    q_ranks[row].extend(part.iter().map(|v| v.to_bits()));
                }
                // kv heads: split (world <= 2) or the one this rank's query heads use.
                let kv_head = if world <= 2 { rank * (2 / world) } else { rank / (world / 2) };
                let cols = kv_head * 4..kv_head * 4 + sc.kv_cols();
                let what = format!("bias {bias} world {world} rank {rank}");
                assert_eq!(columns(&k, 8, cols.clone()), columns(&sk, sc.kv_cols(), 0..sc.kv_cols()), "k {what}");
                assert_eq!(columns(&v, 8, cols), columns(&sv, sc.kv_cols(), 0..sc.kv_cols()), "v {what}");
            }
            assert_eq!(q_ranks.concat(), columns(&q, 32, 0..32), "q, bias {bias} world {world}");
        }
    }
}

#[test]
fn world_sizes_that_do_not_fit_are_errors() {
    let config = QkvConfig { hidden: 16, num_heads: 8, num_kv_heads: 2, head_dim: 4, eps: 1e-6, bias: false };
    let w = QkvWeights::<bf16>::random(config, 1).unwrap();
    let error = |rank, world| w.shard(rank, world).unwrap_err().to_string();
    assert!(error(0, 3).contains("3 ranks do not divide the 8 query heads"));
    assert!(error(0, 16).contains("16 ranks do not divide the 8 query heads"));
    assert!(error(4, 4).contains("rank 4 of 4"));
    assert!(error(0, 0).contains("of 0 ranks"));
    let odd_kv = QkvConfig { num_heads: 6, num_kv_heads: 3, ..config };
    let w = QkvWeights::<bf16>::random(odd_kv, 1).unwrap();
    assert!(w.shard(0, 2).unwrap_err().to_string().contains("2 ranks do not divide the 3 kv heads"));
    assert!(w.shard(0, 6).is_ok());
}
