//! Tensor-core matrix multiply-accumulate (`mma.sync`), as in cuda_std's gemm example.

use core::arch::asm;

use crate::element::{Bf16, Element, F16};

/// A 16-bit storage dtype the tensor cores multiply exactly, accumulating in fp32.
pub trait MmaElement: Element {
    /// `D = A * B + D` for one m16n8k16 tile, operands in the PTX ISA's fragment layout. With
    /// `g = lane / 4` and `t = lane % 4`:
    /// - `a[0]`: A[g][2t, 2t+1], `a[1]`: A[g+8][2t, 2t+1], `a[2]`: A[g][2t+8, 2t+9], `a[3]`: A[g+8][2t+8, 2t+9];
    /// - `b[0]`: B[2t, 2t+1][g], `b[1]`: B[2t+8, 2t+9][g];
    /// - `d[0..2]`: D[g][2t, 2t+1], `d[2..4]`: D[g+8][2t, 2t+1].
    ///
    /// Each u32 holds two elements, the lower index in the low half.
    ///
    /// # Safety
    /// All 32 lanes of the warp must execute it together (it is `.aligned`); sm_80 or later.
    unsafe fn mma_m16n8k16(d: &mut [f32; 4], a: [u32; 4], b: [u32; 2]);
}

macro_rules! mma_impl {
    ($t:ty, $ptx_type:literal) => {
        impl MmaElement for $t {
            #[inline(always)]
            unsafe fn mma_m16n8k16(d: &mut [f32; 4], a: [u32; 4], b: [u32; 2]) {
                asm!(
                    concat!(
                        "mma.sync.aligned.m16n8k16.row.col.f32.", $ptx_type, ".", $ptx_type, ".f32 ",
                        "{{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};"
                    ),
                    d0 = inout(reg32) d[0], d1 = inout(reg32) d[1], d2 = inout(reg32) d[2], d3 = inout(reg32) d[3],
                    a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                    b0 = in(reg32) b[0], b1 = in(reg32) b[1],
                    // Not `pure`: like a shuffle it must stay where every lane executes it.
                    options(nostack),
                );
            }
        }
    };
}

mma_impl!(Bf16, "bf16");
mma_impl!(F16, "f16");
