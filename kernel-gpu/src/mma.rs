//! Tensor-core matrix multiply-accumulate (`mma.sync`), as in cuda_std's gemm example.

use core::arch::asm;

/// `D = A * B + D` for one m16n8k16 tile with bf16 inputs and f32 accumulators, held in the
/// PTX ISA's fragment layout. With `g = lane / 4` and `t = lane % 4`:
/// - `a[0]`: A[g][2t, 2t+1], `a[1]`: A[g+8][2t, 2t+1], `a[2]`: A[g][2t+8, 2t+9], `a[3]`: A[g+8][2t+8, 2t+9];
/// - `b[0]`: B[2t, 2t+1][g], `b[1]`: B[2t+8, 2t+9][g];
/// - `d[0..2]`: D[g][2t, 2t+1], `d[2..4]`: D[g+8][2t, 2t+1].
///
/// Each u32 holds two bf16, the lower index in the low half.
///
/// # Safety
/// All 32 lanes of the warp must execute it together (it is `.aligned`); sm_80 or later.
#[inline(always)]
pub unsafe fn mma_m16n8k16_bf16_f32(d: &mut [f32; 4], a: [u32; 4], b: [u32; 2]) {
    asm!(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
        d0 = inout(reg32) d[0], d1 = inout(reg32) d[1], d2 = inout(reg32) d[2], d3 = inout(reg32) d[3],
        a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
        b0 = in(reg32) b[0], b1 = in(reg32) b[1],
        // Not `pure`: like a shuffle it must stay where every lane executes it.
        options(nostack),
    );
}

/// Packs two f32 into bf16x2 (round to nearest even): `low` in bits 0..16, `high` in 16..32.
#[inline(always)]
pub fn pack_bf16x2(low: f32, high: f32) -> u32 {
    let out: u32;
    // SAFETY: pure arithmetic on registers. (PTX puts its first source in the upper half.)
    unsafe {
        asm!("cvt.rn.bf16x2.f32 {o}, {h}, {l};", o = out(reg32) out, h = in(reg32) high, l = in(reg32) low,
             options(pure, nomem, nostack))
    };
    out
}

/// Splits `v` into bf16 `hi + lo` with `hi = bf16(v)`, `lo = bf16(v - hi)`: 16 significant bits,
/// enough that the tensor-core product keeps the fp32-normalised row's precision (the relative
/// error of hi + lo is below 2^-16, against bf16's 2^-8 for hi alone).
#[inline(always)]
pub fn split_bf16x2(v0: f32, v1: f32) -> (u32, u32) {
    let hi = pack_bf16x2(v0, v1);
    let hi0 = f32::from_bits(hi << 16);
    let hi1 = f32::from_bits(hi & 0xffff_0000);
    (hi, pack_bf16x2(v0 - hi0, v1 - hi1))
}
