//! Correctly rounded fp32 arithmetic and conversions between storage dtypes and fp32.
//!
//! Written with explicit PTX so the rounding mode is stated, not left to the compiler's
//! fast-math choices: the host's CPU implementation uses the same IEEE operations.

use core::arch::asm;

/// IEEE square root, round to nearest even (`sqrt.rn.f32`).
#[inline(always)]
pub fn sqrt_rn(x: f32) -> f32 {
    let out: f32;
    // SAFETY: pure arithmetic on registers.
    unsafe { asm!("sqrt.rn.f32 {o}, {x};", o = out(reg32) out, x = in(reg32) x, options(pure, nomem, nostack)) };
    out
}

/// IEEE division, round to nearest even (`div.rn.f32`).
#[inline(always)]
pub fn div_rn(a: f32, b: f32) -> f32 {
    let out: f32;
    // SAFETY: pure arithmetic on registers.
    unsafe {
        asm!(
            "div.rn.f32 {o}, {a}, {b};",
            o = out(reg32) out, a = in(reg32) a, b = in(reg32) b,
            options(pure, nomem, nostack),
        )
    };
    out
}

/// bf16 bits to f32 (exact: bf16 is the top half of an f32).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 to bf16 bits, round to nearest even (`cvt.rn.bf16.f32`, sm_80+). NaN stays NaN.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let out: u16;
    // SAFETY: pure arithmetic on registers.
    unsafe { asm!("cvt.rn.bf16.f32 {o}, {x};", o = out(reg16) out, x = in(reg32) x, options(pure, nomem, nostack)) };
    out
}

/// Two f32 to a pair of bf16, each rounded to nearest even: `lo` in bits 0-15, `hi` in 16-31
/// (`cvt.rn.bf16x2.f32`, one instruction for what [`f32_to_bf16`] does twice).
#[inline(always)]
pub fn f32x2_to_bf16x2(lo: f32, hi: f32) -> u32 {
    let out: u32;
    // SAFETY: pure arithmetic on registers.
    unsafe {
        asm!(
            "cvt.rn.bf16x2.f32 {o}, {hi}, {lo};",
            o = out(reg32) out, hi = in(reg32) hi, lo = in(reg32) lo,
            options(pure, nomem, nostack),
        )
    };
    out
}

/// Two f32 to a pair of f16 as [`f32_to_f16`] rounds them: `lo` in bits 0-15, `hi` in 16-31
/// (`cvt.rn.f16x2.f32`).
#[inline(always)]
pub fn f32x2_to_f16x2(lo: f32, hi: f32) -> u32 {
    let out: u32;
    // SAFETY: pure arithmetic on registers.
    unsafe {
        asm!(
            "cvt.rn.f16x2.f32 {o}, {hi}, {lo};",
            o = out(reg32) out, hi = in(reg32) hi, lo = in(reg32) lo,
            options(pure, nomem, nostack),
        )
    };
    out
}

/// f16 bits to f32 (exact).
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: pure arithmetic on registers.
    unsafe { asm!("cvt.f32.f16 {o}, {x};", o = out(reg32) out, x = in(reg16) bits, options(pure, nomem, nostack)) };
    out
}

/// f32 to f16 bits, round to nearest even; overflow goes to infinity as IEEE says.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let out: u16;
    // SAFETY: pure arithmetic on registers.
    unsafe { asm!("cvt.rn.f16.f32 {o}, {x};", o = out(reg16) out, x = in(reg32) x, options(pure, nomem, nostack)) };
    out
}

/// Fused multiply-add `a * b + c` with one rounding (`fma.rn.f32`): the dot products' inner step.
#[inline(always)]
pub fn fma_rn(a: f32, b: f32, c: f32) -> f32 {
    let out: f32;
    // SAFETY: pure arithmetic on registers.
    unsafe {
        asm!(
            "fma.rn.f32 {o}, {a}, {b}, {c};",
            o = out(reg32) out, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c,
            options(pure, nomem, nostack),
        )
    };
    out
}
