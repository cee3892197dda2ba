//! The attention prologue (issue 13; CPU twin and float64 oracle so far, the GPU kernels to come):
//! residual add + RMSNorm + QKV + per-head q/k RMSNorm + RoPE + KV-cache store, for `m` tokens.
//!
//! Semantics (the same in every path):
//! 1. with a residual `r [m, H]`: `r = x + r` (the sum in f32, rounded once to the dtype, and
//!    written back, as vLLM's `fused_add_rms_norm`), `s = r`; else `s = x`;
//! 2. `y = s W'^T * rms_inv(s) * 2^-s + bias`, the fused RMSNorm + QKV of [`crate::gpu::GpuLayer`];
//! 3. q, k, v are `y`'s column ranges; with `q_norm` / `k_norm` (Qwen3), every q (k) head is
//!    RMS-normed over its `head_dim` values (same `eps`) and multiplied by `q_norm` (`k_norm`);
//! 4. RoPE on q and k at `positions[m]` from a [`RopeTable`]: "rotate half" (NeoX: element `i`
//!    pairs with `i + head_dim / 2`) or GPT-J (interleaved: `2i` with `2i + 1`);
//! 5. q, k, v rounded once to the dtype; with a KV cache `[num_blocks, block_size, num_kv_heads,
//!    head_dim]`, token `m`'s k and v also go to slot `slot_mapping[m]` (`block * block_size +
//!    offset`); a negative slot stores nothing (vLLM's padding).
//!
//! Steps 2-4 stay in fp32 (float64 in the oracle) with one rounding per output. Hugging Face
//! transformers rounds to the dtype after the projection and after the q/k norm as well, so the
//! two differ by up to a few units of the dtype's last place per element.

use crate::cpu::CpuLayer;
use crate::reference::reference_f64;
use crate::rope::RopeTable;
use crate::{Dtype, Error, QkvConfig, QkvWeights, Result};

/// How RoPE pairs a head's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Element `i` with `i + head_dim / 2` ("rotate half": Qwen, Llama in transformers).
    Neox,
    /// Element `2i` with `2i + 1` (interleaved).
    Gptj,
}

/// One layer's prologue weights: the fused QKV layer's, and Qwen3's per-head norms.
#[derive(Clone, Debug)]
pub struct PrologueWeights<T> {
    pub qkv: QkvWeights<T>,
    /// `[head_dim]` each; both or neither.
    pub q_norm: Option<Vec<T>>,
    pub k_norm: Option<Vec<T>>,
}

impl<T: Dtype> PrologueWeights<T> {
    /// Checks the norms' lengths (`head_dim`) and that both or neither are given.
    pub fn new(qkv: QkvWeights<T>, q_norm: Option<Vec<T>>, k_norm: Option<Vec<T>>) -> Result<Self> {
        let head_dim = qkv.config.head_dim;
        match (&q_norm, &k_norm) {
            (Some(q), Some(k)) if q.len() == head_dim && k.len() == head_dim => {}
            (None, None) => {}
            (Some(_), Some(_)) => {
                return Err(Error::InvalidConfig(format!("q_norm and k_norm need head_dim = {head_dim} values each")))
            }
            _ => return Err(Error::InvalidConfig("q_norm and k_norm come together (Qwen3) or not at all".into())),
        }
        Ok(PrologueWeights { qkv, q_norm, k_norm })
    }
}

/// The inputs of one call besides `x`.
pub struct PrologueCall<'a> {
    pub positions: &'a [i64],
    pub table: &'a RopeTable,
    pub style: RopeStyle,
}

/// Checks one call's inputs: `x` (and the residual) of `m` rows, a table for the layer's
/// head_dim, and a position inside it for every token.
fn check_call(c: &QkvConfig, call: &PrologueCall, x_len: usize, residual_len: Option<usize>, m: usize) -> Result<()> {
    crate::weights::check_input(c, m, x_len)?;
    if let Some(len) = residual_len.filter(|&len| len < m * c.hidden) {
        return Err(Error::TooShort { what: "residual", needed: m * c.hidden, actual: len });
    }
    if call.table.head_dim != c.head_dim {
        return Err(Error::InvalidConfig(format!(
            "the RoPE table is for head_dim {}, the layer has {}",
            call.table.head_dim, c.head_dim
        )));
    }
    if call.positions.len() < m {
        return Err(Error::TooShort { what: "positions", needed: m, actual: call.positions.len() });
    }
    if let Some((token, &position)) =
        call.positions[..m].iter().enumerate().find(|(_, &p)| p < 0 || p as u64 >= call.table.max_positions as u64)
    {
        return Err(Error::InvalidConfig(format!(
            "position {position} of token {token} is outside the RoPE table's 0..{}",
            call.table.max_positions
        )));
    }
    Ok(())
}

/// Step 1: `x + r`, the sum in f32 rounded once (what is written back to `r` and normed).
pub fn residual_add<T: Dtype>(x: &[T], residual: &[T]) -> Vec<T> {
    x.iter().zip(residual).map(|(a, b)| T::from_f32(a.to_f32() + b.to_f32())).collect()
}

/// Steps 3 and 4 on one token's `y` row (q | k | v), in place, in `F` (f32 or f64).
fn head_epilogue<F: Float>(
    row: &mut [F],
    c: &QkvConfig,
    norms: Option<(&[F], &[F])>,
    rope: (&[f32], &[f32]),
    style: RopeStyle,
    eps: F,
) {
    let d = c.head_dim;
    let heads = [(0, c.num_heads, norms.map(|n| n.0)), (c.q_cols(), c.num_kv_heads, norms.map(|n| n.1))];
    for (start, count, norm) in heads {
        for head in row[start..start + count * d].chunks_mut(d) {
            if let Some(weight) = norm {
                let mean_sq = head.iter().fold(F::ZERO, |acc, &v| acc + v * v) / F::from_usize(d);
                let inv = F::ONE / (mean_sq + eps).sqrt();
                for (v, &w) in head.iter_mut().zip(weight) {
                    *v = *v * inv * w;
                }
            }
            let (cos, sin) = rope;
            for i in 0..d / 2 {
                let (a_at, b_at) = match style {
                    RopeStyle::Neox => (i, i + d / 2),
                    RopeStyle::Gptj => (2 * i, 2 * i + 1),
                };
                let (a, b) = (head[a_at], head[b_at]);
                let (cs, sn) = (F::from_f32(cos[i]), F::from_f32(sin[i]));
                head[a_at] = a * cs - b * sn;
                head[b_at] = b * cs + a * sn;
            }
        }
    }
}

/// Steps 3 and 4 on every token's row of `y [m, N]`, at its position.
fn apply_head_epilogue<F: Float>(y: &mut [F], c: &QkvConfig, norms: Option<(&[F], &[F])>, call: &PrologueCall, eps: F) {
    let half = c.head_dim / 2;
    for (row, &position) in y.chunks_mut(c.qkv_cols()).zip(call.positions) {
        let at = position as usize * half;
        let rope = (&call.table.cos[at..at + half], &call.table.sin[at..at + half]);
        head_epilogue(row, c, norms, rope, call.style, eps);
    }
}

/// The float64 oracle: `y [m, N]` after steps 1-4 (f64, unrounded), from `x` (and the residual).
pub fn prologue_f64<T: Dtype>(
    w: &PrologueWeights<T>,
    x: &[T],
    residual: Option<&[T]>,
    call: &PrologueCall,
    m: usize,
) -> Result<Vec<f64>> {
    let c = w.qkv.config;
    check_call(&c, call, x.len(), residual.map(<[T]>::len), m)?;
    let s = residual.map(|r| residual_add(&x[..m * c.hidden], &r[..m * c.hidden]));
    let mut y = reference_f64(&w.qkv, s.as_deref().unwrap_or(x), m);
    let to64 = |v: &Vec<T>| v.iter().map(|e| e.to_f32() as f64).collect::<Vec<f64>>();
    let norms = w.q_norm.as_ref().zip(w.k_norm.as_ref()).map(|(q, k)| (to64(q), to64(k)));
    let norms = norms.as_ref().map(|(q, k)| (q.as_slice(), k.as_slice()));
    apply_head_epilogue(&mut y, &c, norms, call, c.eps as f64);
    Ok(y)
}

/// A KV cache to store k and v into: `[num_blocks, block_size, num_kv_heads, head_dim]` each,
/// token `m` to slot `slot_mapping[m]` (negative: not stored).
pub struct KvCache<'a, T> {
    pub k: &'a mut [T],
    pub v: &'a mut [T],
    pub block_size: usize,
    pub slot_mapping: &'a [i64],
}

/// The CPU twin: [`CpuLayer`] and the epilogue in f32.
pub struct CpuPrologue<T> {
    layer: CpuLayer<T>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
}

impl<T: Dtype> CpuPrologue<T> {
    pub fn new(weights: PrologueWeights<T>) -> Self {
        let to32 = |v: Vec<T>| v.iter().map(|e| e.to_f32()).collect::<Vec<f32>>();
        CpuPrologue {
            layer: CpuLayer::new(weights.qkv),
            q_norm: weights.q_norm.map(to32),
            k_norm: weights.k_norm.map(to32),
        }
    }

    /// Steps 1-5 for `m` tokens: `(q, k, v)`; the residual (if given) is updated in place and the
    /// cache (if given) receives k and v at their slots.
    pub fn forward(
        &self,
        x: &[T],
        residual: Option<&mut [T]>,
        call: &PrologueCall,
        cache: Option<KvCache<T>>,
        m: usize,
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let c = *self.layer.config();
        check_call(&c, call, x.len(), residual.as_deref().map(<[T]>::len), m)?;
        let summed = residual.map(|r| {
            let s = residual_add(&x[..m * c.hidden], &r[..m * c.hidden]);
            r[..m * c.hidden].copy_from_slice(&s);
            s
        });
        let mut y = self.layer.forward_f32(summed.as_deref().unwrap_or(x), m)?;
        let norms = self.q_norm.as_deref().zip(self.k_norm.as_deref());
        apply_head_epilogue(&mut y, &c, norms, call, c.eps);
        let (mut q, mut k, mut v) = (
            vec![T::default(); m * c.q_cols()],
            vec![T::default(); m * c.kv_cols()],
            vec![T::default(); m * c.kv_cols()],
        );
        crate::cpu::split_qkv(&c, m, &y, &mut q, &mut k, &mut v);
        if let Some(cache) = cache {
            store_kv(&c, cache, &k, &v, m)?;
        }
        Ok((q, k, v))
    }
}

/// Step 5's cache store, checked: every slot below the cache's `k.len() / kv_cols`.
fn store_kv<T: Dtype>(c: &QkvConfig, cache: KvCache<T>, k: &[T], v: &[T], m: usize) -> Result<()> {
    let kvc = c.kv_cols();
    if cache.k.len() != cache.v.len() || cache.block_size == 0 || !cache.k.len().is_multiple_of(cache.block_size * kvc)
    {
        return Err(Error::InvalidConfig(format!(
            "a KV cache of {} and {} elements is no whole number of blocks of {} slots x {kvc}",
            cache.k.len(),
            cache.v.len(),
            cache.block_size
        )));
    }
    if cache.slot_mapping.len() < m {
        return Err(Error::TooShort { what: "slot_mapping", needed: m, actual: cache.slot_mapping.len() });
    }
    let slots = cache.k.len() / kvc;
    let mapping = &cache.slot_mapping[..m];
    // Every slot is checked before any is written: a bad one leaves the cache as it was.
    if let Some((token, slot)) = mapping.iter().enumerate().find(|(_, &slot)| slot >= 0 && slot as u64 >= slots as u64)
    {
        return Err(Error::InvalidConfig(format!("slot {slot} of token {token} is past the cache's {slots} slots")));
    }
    for (token, &slot) in mapping.iter().enumerate().filter(|(_, &slot)| slot >= 0) {
        let at = slot as usize * kvc;
        cache.k[at..at + kvc].copy_from_slice(&k[token * kvc..(token + 1) * kvc]);
        cache.v[at..at + kvc].copy_from_slice(&v[token * kvc..(token + 1) * kvc]);
    }
    Ok(())
}

/// f32 and f64, for the one epilogue both the CPU twin and the oracle run.
trait Float:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn sqrt(self) -> Self;
    fn from_usize(v: usize) -> Self;
    fn from_f32(v: f32) -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn from_usize(v: usize) -> Self {
        v as f32
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn from_usize(v: usize) -> Self {
        v as f64
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}
