//! Shared memory, static and dynamic (as in `cuda_std::shared`).
//!
//! Stock rustc has no shared address space attribute, so shared arrays are declared in PTX and
//! handled through their 32-bit shared-window addresses, which `ld.shared`/`st.shared` take directly.

use core::arch::asm;

// The block's dynamically sized shared memory; its size is set by the host at launch.
core::arch::global_asm!(".extern .shared .align 128 .b8 dynamic_shared[];");

/// Address of the block's dynamic shared memory (sized by the launch's `shared_mem_bytes`).
#[inline(always)]
pub fn dynamic_shared_base() -> SharedPtr {
    let base: u32;
    // SAFETY: reads the address of a symbol; no memory is touched.
    unsafe { asm!("mov.u32 {r}, dynamic_shared;", r = out(reg32) base, options(pure, nomem, nostack)) };
    SharedPtr(base)
}

/// Declares a static shared array of `$bytes` bytes named `$name` and evaluates to its
/// [`SharedPtr`]. Each name may be declared once per kernel: expand it in the kernel body (or in a
/// function inlined into exactly one kernel), never in a helper that is inlined twice.
#[macro_export]
macro_rules! static_shared {
    ($name:ident, $bytes:expr) => {{
        let base: u32;
        // SAFETY: declares a shared array and reads its address; no memory is touched.
        unsafe {
            core::arch::asm!(
                concat!(".shared .align 16 .b8 ", stringify!($name), "[{bytes}];"),
                concat!("mov.u32 {r}, ", stringify!($name), ";"),
                bytes = const $bytes,
                r = out(reg32) base,
                options(nomem, nostack),
            )
        };
        $crate::shared::SharedPtr(base)
    }};
}

/// A byte address in the block's shared-memory window.
#[derive(Clone, Copy)]
pub struct SharedPtr(pub u32);

impl SharedPtr {
    /// The address `bytes` bytes further on.
    #[inline(always)]
    pub fn add(self, bytes: u32) -> SharedPtr {
        SharedPtr(self.0 + bytes)
    }

    /// The next address at or after this one that is a multiple of `align` (a power of two).
    #[inline(always)]
    pub fn align_up(self, align: u32) -> SharedPtr {
        SharedPtr((self.0 + align - 1) & !(align - 1))
    }

    /// Loads 16 bytes as four 32-bit words in one access.
    ///
    /// # Safety
    /// As [`SharedPtr::load_f32`], and the address must be 16-byte aligned.
    #[inline(always)]
    pub unsafe fn load_v16(self) -> crate::mem::Vec16 {
        let (a, b, c, d): (u32, u32, u32, u32);
        asm!(
            "ld.shared.v4.u32 {{{a}, {b}, {c}, {d}}}, [{p}];",
            a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
            p = in(reg32) self.0,
            options(readonly, nostack),
        );
        [a, b, c, d]
    }

    /// The address `index` f32 elements further on.
    #[inline(always)]
    pub fn offset_f32(self, index: u32) -> SharedPtr {
        SharedPtr(self.0 + index * 4)
    }

    /// Loads one f32.
    ///
    /// # Safety
    /// The address must lie inside a shared array of this block, 4-byte aligned, and every write
    /// to it by another thread must be ordered before this load by a barrier.
    #[inline(always)]
    pub unsafe fn load_f32(self) -> f32 {
        let out: f32;
        asm!("ld.shared.f32 {o}, [{a}];", o = out(reg32) out, a = in(reg32) self.0, options(readonly, nostack));
        out
    }

    /// `ldmatrix.sync.aligned.m8n8.x4.shared.b16`: four 8 x 8 matrices of 16-bit elements, lane
    /// `l` giving (at `self`) the address of row `l % 8` of matrix `l / 8`; register `i` of lane
    /// `l` receives elements `2 (l % 4)` and `+ 1` of row `l / 4` of matrix `i` (the `mma`
    /// fragment layout).
    ///
    /// # Safety
    /// All 32 lanes of the warp execute it together (`.aligned`), each with a 16-byte aligned
    /// shared address of 16 readable bytes; sm_75 or later.
    #[inline(always)]
    pub unsafe fn ldmatrix_x4(self) -> [u32; 4] {
        let (a, b, c, d): (u32, u32, u32, u32);
        asm!(
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{a}, {b}, {c}, {d}}}, [{p}];",
            a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
            p = in(reg32) self.0,
            options(readonly, nostack),
        );
        [a, b, c, d]
    }

    /// Stores four 8 x 8 matrices of 16-bit elements (`stmatrix ... x4`, sm_90): lanes `8 i ..
    /// 8 i + 7` give the 16-byte rows of matrix `i`, and `fragments[i]` is this lane's pair of
    /// matrix `i`, row `lane / 4`, columns `2 (lane % 4)` and `+ 1`, low half first: the layout
    /// of an mma accumulator tile's rounded pairs.
    ///
    /// # Safety
    /// All 32 lanes of the warp execute it together (`.aligned`), each with a 16-byte aligned
    /// shared address of 16 writable bytes that no other thread accesses until a barrier.
    #[inline(always)]
    pub unsafe fn stmatrix_x4(self, fragments: [u32; 4]) {
        asm!(
            "stmatrix.sync.aligned.m8n8.x4.shared.b16 [{p}], {{{a}, {b}, {c}, {d}}};",
            p = in(reg32) self.0,
            a = in(reg32) fragments[0], b = in(reg32) fragments[1], c = in(reg32) fragments[2], d = in(reg32) fragments[3],
            options(nostack),
        );
    }

    /// Loads two consecutive f32 in one 8-byte access.
    ///
    /// # Safety
    /// As [`SharedPtr::load_f32`], and the address must be 8-byte aligned.
    #[inline(always)]
    pub unsafe fn load_f32x2(self) -> [f32; 2] {
        let (a, b): (f32, f32);
        asm!(
            "ld.shared.v2.f32 {{{a}, {b}}}, [{p}];",
            a = out(reg32) a, b = out(reg32) b,
            p = in(reg32) self.0,
            options(readonly, nostack),
        );
        [a, b]
    }

    /// Loads four consecutive f32 in one 16-byte access.
    ///
    /// # Safety
    /// As [`SharedPtr::load_f32`], and the address must be 16-byte aligned.
    #[inline(always)]
    pub unsafe fn load_f32x4(self) -> [f32; 4] {
        let (a, b, c, d): (f32, f32, f32, f32);
        asm!(
            "ld.shared.v4.f32 {{{a}, {b}, {c}, {d}}}, [{p}];",
            a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
            p = in(reg32) self.0,
            options(readonly, nostack),
        );
        [a, b, c, d]
    }

    /// Stores four consecutive f32 in one 16-byte access.
    ///
    /// # Safety
    /// As [`SharedPtr::store_f32`], and the address must be 16-byte aligned.
    #[inline(always)]
    pub unsafe fn store_f32x4(self, v: [f32; 4]) {
        asm!(
            "st.shared.v4.f32 [{p}], {{{a}, {b}, {c}, {d}}};",
            p = in(reg32) self.0,
            a = in(reg32) v[0], b = in(reg32) v[1], c = in(reg32) v[2], d = in(reg32) v[3],
            options(nostack),
        );
    }

    /// Stores two consecutive f32 in one 8-byte access.
    ///
    /// # Safety
    /// As [`SharedPtr::store_f32`], and the address must be 8-byte aligned.
    #[inline(always)]
    pub unsafe fn store_f32x2(self, v: [f32; 2]) {
        asm!(
            "st.shared.v2.f32 [{p}], {{{a}, {b}}};",
            p = in(reg32) self.0, a = in(reg32) v[0], b = in(reg32) v[1],
            options(nostack),
        );
    }

    /// Stores one 32-bit word.
    ///
    /// # Safety
    /// As [`SharedPtr::store_f32`].
    #[inline(always)]
    pub unsafe fn store_u32(self, value: u32) {
        asm!("st.shared.u32 [{a}], {v};", a = in(reg32) self.0, v = in(reg32) value, options(nostack));
    }

    /// Stores one f32.
    ///
    /// # Safety
    /// The address must lie inside a shared array of this block, 4-byte aligned; readers in other
    /// threads must be ordered after this store by a barrier.
    #[inline(always)]
    pub unsafe fn store_f32(self, value: f32) {
        asm!("st.shared.f32 [{a}], {v};", a = in(reg32) self.0, v = in(reg32) value, options(nostack));
    }
}
