//! Warpgroup matrix multiply-accumulate (`wgmma.mma_async`, sm_90a) and its shared-memory
//! operand descriptors.
//!
//! A warpgroup is 4 consecutive warps starting at a warp index divisible by 4. It multiplies a
//! 64 x 16 tile of A by a 16 x N tile of B, both read by the tensor cores straight from shared
//! memory through 64-bit descriptors, into 64 x N fp32 accumulators spread over its 128 threads'
//! registers. The instruction is asynchronous: issue [`fence`], the MMAs, [`commit_group`], and
//! read the accumulators only after [`WgmmaElement`]'s `wait_*` says the group is done.
//!
//! Accumulator layout (`d[i]` of thread `t`, warp `w = t / 32 % 4`, lane `l`): for the 8-column
//! piece `j = i / 4`, `d[4j]`, `d[4j + 1]` hold row `16 w + l / 4`, columns `8 j + 2 (l % 4)` and
//! `+ 1`; `d[4j + 2]`, `d[4j + 3]` the same columns of row `16 w + l / 4 + 8`.
//!
//! Every wrapper names all the accumulators it covers as in-out operands, and so do the waits:
//! the compiler then cannot move or read them while the tensor cores still write them.

use core::arch::asm;

use crate::element::{Bf16, F16};
use crate::mma::MmaElement;
use crate::shared::SharedPtr;

/// One warpgroup's accumulators for the widest tile (N = 256); narrower tiles use a prefix and
/// the compiler drops the rest.
pub type Acc = [f32; 128];

/// Bytes of one row of a 128-byte-swizzled K-major tile (64 16-bit elements of K), and of one
/// swizzle atom (8 rows; tiles start at multiples of it), as the kernel ABI defines them.
pub use kernel_abi::wgmma::{SWIZZLE_ATOM_BYTES, SWIZZLE_ROW_BYTES};

/// Where 16-byte chunk `chunk` (0..8) of row `row` of a 128-byte-swizzled K-major tile lives,
/// in bytes from the tile's start: the layout `wgmma` reads with [`descriptor_k_major_sw128`]
/// (chunk index XOR row mod 8, so the 8 rows of an atom spread a column over all banks).
#[inline(always)]
pub fn swizzled_offset(row: u32, chunk: u32) -> u32 {
    row * SWIZZLE_ROW_BYTES + ((chunk ^ (row % 8)) << 4)
}

/// The descriptor of a K-major operand tile in the 128-byte-swizzled layout of
/// [`swizzled_offset`], starting at `start` (a row multiple of 8 of a tile aligned to
/// [`SWIZZLE_ATOM_BYTES`], plus `32 * k` bytes for the k-th 16-wide slice of its 64 K columns).
/// Fields (PTX ISA, matrix descriptor): start address >> 4 (bits 0-13), leading byte offset
/// (unused for swizzled K-major; 1), stride byte offset >> 4 = one atom (bits 32-45),
/// base offset 0 (atoms are aligned), swizzle mode 1 = 128 bytes (bits 62-63).
#[inline(always)]
pub fn descriptor_k_major_sw128(start: SharedPtr) -> u64 {
    ((start.0 as u64 & 0x3_FFFF) >> 4) | (1 << 16) | (((SWIZZLE_ATOM_BYTES >> 4) as u64) << 32) | (1 << 62)
}

/// Orders this thread's earlier register writes before the next `wgmma` (required before the
/// first MMA of a group).
///
/// # Safety
/// All threads of the warpgroup must execute it together; sm_90a.
#[inline(always)]
pub unsafe fn fence() {
    asm!("wgmma.fence.sync.aligned;", options(nostack));
}

/// Closes the MMAs issued since the last commit into one group.
///
/// # Safety
/// All threads of the warpgroup must execute it together; sm_90a.
#[inline(always)]
pub unsafe fn commit_group() {
    asm!("wgmma.commit_group.sync.aligned;", options(nostack));
}

/// Makes this thread's shared-memory writes through the generic proxy (`st.shared`,
/// `cp.async`) visible to the async proxy that `wgmma` reads through; a barrier must follow.
///
/// # Safety
/// sm_90.
#[inline(always)]
pub unsafe fn fence_proxy_async_shared() {
    asm!("fence.proxy.async.shared::cta;", options(nostack));
}

/// Calls `$then!(args.., [indices])` with the accumulator indices a 64 x `$n` tile covers.
macro_rules! with_acc_indices {
    (48, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]) };
    (80, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]) };
    (96, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47]) };
    (64, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]) };
    (128, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63]) };
    (144, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71]) };
    (192, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95]) };
    (256, $then:ident!($($args:tt)*)) => { $then!($($args)* [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127]) };
}

/// `wgmma.mma_async` of shape m64n`$n`k16 on the accumulators `$acc[$i]`, A given by the PTX
/// text `$a_text` (a descriptor, or four registers) with its operands `$a_ops`, and `$trans` the
/// transpose immediates that follow the scales (A's too where A is in shared memory).
macro_rules! mma_async_asm {
    ($ty:literal, $n:literal, $acc:ident, ($a_text:literal, $trans:literal, $($a_ops:tt)*), $b:ident,
     [$first:literal $(, $i:literal)*]) => {
        asm!(
            "{{",
            ".reg .pred p;",
            "setp.ne.b32 p, {one}, 0;",
            concat!(
                "wgmma.mma_async.sync.aligned.m64n", stringify!($n), "k16.f32.", $ty, ".", $ty, " ",
                "{{{", stringify!($first), "}" $(, ", {", stringify!($i), "}")*, "}}, ",
                $a_text, ", {b}, p, 1, 1, ", $trans, ";"
            ),
            "}}",
            inout(reg32) $acc[$first], $(inout(reg32) $acc[$i],)*
            $($a_ops)*
            b = in(reg64) $b, one = in(reg32) 1u32,
            options(nostack),
        )
    };
}

/// [`mma_async_asm`] for the tile width `$n` (a const generic: 48, 64, 80, 96, 128, 144, 192,
/// else 256).
macro_rules! mma_async_for_width {
    ($ty:literal, $n:ident, $acc:ident, $a:tt, $b:ident) => {
        match $n {
            48 => with_acc_indices!(48, mma_async_asm!($ty, 48, $acc, $a, $b,)),
            80 => with_acc_indices!(80, mma_async_asm!($ty, 80, $acc, $a, $b,)),
            96 => with_acc_indices!(96, mma_async_asm!($ty, 96, $acc, $a, $b,)),
            64 => with_acc_indices!(64, mma_async_asm!($ty, 64, $acc, $a, $b,)),
            128 => with_acc_indices!(128, mma_async_asm!($ty, 128, $acc, $a, $b,)),
            144 => with_acc_indices!(144, mma_async_asm!($ty, 144, $acc, $a, $b,)),
            192 => with_acc_indices!(192, mma_async_asm!($ty, 192, $acc, $a, $b,)),
            _ => with_acc_indices!(256, mma_async_asm!($ty, 256, $acc, $a, $b,)),
        }
    };
}

/// `wgmma.wait_group $pending`, naming the accumulators `$acc[$i]` (in a comment) so they count as
/// written here.
macro_rules! wait_asm {
    ($pending:literal, $acc:ident, [$first:literal $(, $i:literal)*]) => {
        asm!(
            concat!(
                "wgmma.wait_group.sync.aligned ", stringify!($pending), "; // {", stringify!($first), "}"
                $(, " {", stringify!($i), "}")*
            ),
            inout(reg32) $acc[$first], $(inout(reg32) $acc[$i],)*
            options(nostack),
        )
    };
}

/// Waits until at most `PENDING` (0 or 1) of this warpgroup's MMA groups are in flight; the
/// accumulators of a 64 x `N` tile (48, 64, 80, 96, 128, 144, 192 or 256) are then safe to read
/// if `PENDING` is 0.
///
/// # Safety
/// All threads of the warpgroup must execute it together; sm_90a.
#[inline(always)]
pub unsafe fn wait_group<const N: u32, const PENDING: u32>(acc: &mut Acc) {
    // One `wait_group` per width, its accumulators named.
    macro_rules! wait_for_width {
        ($n:tt) => {
            if PENDING == 0 {
                with_acc_indices!($n, wait_asm!(0, acc,))
            } else {
                with_acc_indices!($n, wait_asm!(1, acc,))
            }
        };
    }
    match N {
        48 => wait_for_width!(48),
        64 => wait_for_width!(64),
        80 => wait_for_width!(80),
        96 => wait_for_width!(96),
        128 => wait_for_width!(128),
        144 => wait_for_width!(144),
        192 => wait_for_width!(192),
        _ => wait_for_width!(256),
    }
}

/// Marks the A fragments of an [`WgmmaElement::mma_async_rs`] group as read here, after the
/// [`wait_group`] that completes the group: until then ptxas keeps their registers (the MMAs read
/// them asynchronously, and nothing else tells ptxas so; reusing them earlier corrupts A).
///
/// # Safety
/// None; `unsafe` as the other `wgmma` primitives, and it must follow that wait.
#[inline(always)]
pub unsafe fn release_fragments(fragments: &[[u32; 4]; 4]) {
    let f = fragments;
    asm!(
        "// A fragments released: {0} {1} {2} {3} {4} {5} {6} {7} {8} {9} {10} {11} {12} {13} {14} {15}",
        in(reg32) f[0][0], in(reg32) f[0][1], in(reg32) f[0][2], in(reg32) f[0][3],
        in(reg32) f[1][0], in(reg32) f[1][1], in(reg32) f[1][2], in(reg32) f[1][3],
        in(reg32) f[2][0], in(reg32) f[2][1], in(reg32) f[2][2], in(reg32) f[2][3],
        in(reg32) f[3][0], in(reg32) f[3][1], in(reg32) f[3][2], in(reg32) f[3][3],
        options(nostack),
    );
}

/// A 16-bit dtype `wgmma` multiplies exactly, accumulating in fp32.
pub trait WgmmaElement: MmaElement {
    /// `acc += A * B` for a 64 x 16 tile of A and a 16 x `N` tile of B (`N` = 64, 128, 192 or 256),
    /// both K-major in shared memory, described by `a` and `b`
    /// ([`descriptor_k_major_sw128`]); asynchronous, see the module docs.
    ///
    /// # Safety
    /// All 128 threads of the warpgroup must execute it together with the same descriptors,
    /// after [`fence`]; the tiles must hold their data (written, then
    /// [`fence_proxy_async_shared`] and a barrier) and stay unchanged until the group is waited
    /// for; sm_90a.
    unsafe fn mma_async<const N: u32>(acc: &mut Acc, a: u64, b: u64);

    /// As [`WgmmaElement::mma_async`] with the 64 x 16 tile of A in registers: this warp's 16
    /// rows in the fragment layout of [`crate::mma::MmaElement::mma_m16n8k16`].
    ///
    /// # Safety
    /// As [`WgmmaElement::mma_async`] for B; `a` is read asynchronously: its registers must not
    /// be written until the group is waited for: name them in [`release_fragments`] after that
    /// wait, so that ptxas keeps their registers until then, and carry none of them across a loop
    /// (a carried value may be copied, and the copy's source register reused).
    unsafe fn mma_async_rs<const N: u32>(acc: &mut Acc, a: [u32; 4], b: u64);

    /// The dtype's bits of `lo` and `hi`, each rounded to nearest even, `lo` in the low half:
    /// one conversion for the pair.
    fn round_pair_bits(lo: f32, hi: f32) -> u32;
}

macro_rules! wgmma_impl {
    ($t:ty, $ty:literal, $round_pair:path) => {
        impl WgmmaElement for $t {
            #[inline(always)]
            unsafe fn mma_async<const N: u32>(acc: &mut Acc, a: u64, b: u64) {
                mma_async_for_width!($ty, N, acc, ("{a}", "0, 0", a = in(reg64) a,), b)
            }

            #[inline(always)]
            unsafe fn mma_async_rs<const N: u32>(acc: &mut Acc, a: [u32; 4], b: u64) {
                let [a0, a1, a2, a3] = a;
                mma_async_for_width!(
                    $ty,
                    N,
                    acc,
                    ("{{{a0}, {a1}, {a2}, {a3}}}", "0", a0 = in(reg32) a0, a1 = in(reg32) a1, a2 = in(reg32) a2, a3 = in(reg32) a3,),
                    b
                )
            }

            #[inline(always)]
            fn round_pair_bits(lo: f32, hi: f32) -> u32 {
                $round_pair(lo, hi)
            }
        }
    };
}

wgmma_impl!(Bf16, "bf16", crate::float::f32x2_to_bf16x2);
wgmma_impl!(F16, "f16", crate::float::f32x2_to_f16x2);
