//! Global-memory loads and stores, scalar and 16-byte vectors (as in `cuda_std::mem`).

use core::arch::asm;

/// Four 32-bit words loaded together: one 16-byte transaction per thread.
pub type Vec16 = [u32; 4];

/// 16-byte load through the read-only (non-coherent) path: `ld.global.nc.v4.u32`.
///
/// # Safety
/// `ptr` must be a global-memory address, 16-byte aligned, with 16 readable bytes that no thread
/// writes during the kernel.
#[inline(always)]
pub unsafe fn load_nc_v16(ptr: *const u8) -> Vec16 {
    let (a, b, c, d): (u32, u32, u32, u32);
    asm!(
        "ld.global.nc.v4.u32 {{{a}, {b}, {c}, {d}}}, [{p}];",
        a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
        p = in(reg64) ptr,
        options(pure, readonly, nostack),
    );
    [a, b, c, d]
}

/// 16-byte load through the coherent path: `ld.global.v4.u32`. For inputs another kernel may
/// write while this one runs: under programmatic dependent launch ([`crate::dependency`]) the
/// previous kernel may still be writing `x` when this one starts, and `ptxas` may schedule a
/// non-coherent load ([`load_nc_v16`], which promises data constant for the kernel's lifetime)
/// above the wait for it (measured: the mma.sync kernel's first `x` loads moved above
/// `griddepcontrol.wait` and read a half-written `x`).
///
/// # Safety
/// `ptr` must be a global-memory address, 16-byte aligned, with 16 readable bytes; written, if
/// during the kernel, only before what this thread has waited for.
#[inline(always)]
pub unsafe fn load_v16(ptr: *const u8) -> Vec16 {
    let (a, b, c, d): (u32, u32, u32, u32);
    asm!(
        "ld.global.v4.u32 {{{a}, {b}, {c}, {d}}}, [{p}];",
        a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
        p = in(reg64) ptr,
        options(readonly, nostack),
    );
    [a, b, c, d]
}

/// Coherent scalar load of a 16-bit value (`ld.global.u16`); see [`load_v16`].
///
/// # Safety
/// `ptr` must be a 2-byte aligned global address, written (if during the kernel) only before
/// what this thread has waited for.
#[inline(always)]
pub unsafe fn load_u16(ptr: *const u16) -> u16 {
    let out: u16;
    asm!("ld.global.u16 {o}, [{p}];", o = out(reg16) out, p = in(reg64) ptr, options(readonly, nostack));
    out
}

/// Coherent scalar load of a 32-bit value (`ld.global.u32`); see [`load_v16`].
///
/// # Safety
/// As [`load_u16`], 4-byte aligned.
#[inline(always)]
pub unsafe fn load_u32(ptr: *const u32) -> u32 {
    let out: u32;
    asm!("ld.global.u32 {o}, [{p}];", o = out(reg32) out, p = in(reg64) ptr, options(readonly, nostack));
    out
}

/// Read-only scalar load of a 16-bit value: `ld.global.nc.u16`.
///
/// # Safety
/// `ptr` must be a 2-byte aligned global address, not written during the kernel.
#[inline(always)]
pub unsafe fn load_nc_u16(ptr: *const u16) -> u16 {
    let out: u16;
    asm!("ld.global.nc.u16 {o}, [{p}];", o = out(reg16) out, p = in(reg64) ptr, options(pure, readonly, nostack));
    out
}

/// Read-only scalar load of a 32-bit value: `ld.global.nc.u32`.
///
/// # Safety
/// `ptr` must be a 4-byte aligned global address, not written during the kernel.
#[inline(always)]
pub unsafe fn load_nc_u32(ptr: *const u32) -> u32 {
    let out: u32;
    asm!("ld.global.nc.u32 {o}, [{p}];", o = out(reg32) out, p = in(reg64) ptr, options(pure, readonly, nostack));
    out
}

/// Scalar store of a 16-bit value: `st.global.u16`.
///
/// # Safety
/// `ptr` must be a 2-byte aligned, writable global address that no other thread accesses
/// during the kernel.
#[inline(always)]
pub unsafe fn store_u16(ptr: *mut u16, value: u16) {
    asm!("st.global.u16 [{p}], {v};", p = in(reg64) ptr, v = in(reg16) value, options(nostack));
}

/// Scalar store of a 32-bit value: `st.global.u32`.
///
/// # Safety
/// `ptr` must be a 4-byte aligned, writable global address that no other thread accesses
/// during the kernel.
#[inline(always)]
pub unsafe fn store_u32(ptr: *mut u32, value: u32) {
    asm!("st.global.u32 [{p}], {v};", p = in(reg64) ptr, v = in(reg32) value, options(nostack));
}

/// Asks the copy engine to bring `bytes` bytes from `ptr` into L2 (`cp.async.bulk.prefetch.L2`,
/// sm_90; a no-op when built for sm_80). Nothing waits for it and nothing is written: a later
/// load of the range may find it in L2.
///
/// # Safety
/// `ptr` must be a 16-byte aligned global address of `bytes` readable bytes, `bytes` a multiple
/// of 16.
#[inline(always)]
pub unsafe fn prefetch_l2(ptr: *const u8, bytes: u32) {
    #[cfg(target_feature = "sm_90a")]
    asm!("cp.async.bulk.prefetch.L2.global [{p}], {n};", p = in(reg64) ptr, n = in(reg32) bytes, options(nostack));
    #[cfg(not(target_feature = "sm_90a"))]
    let _ = (ptr, bytes);
}

/// Asks for the 128-byte line of `ptr` to be brought into L2 (`prefetch.global.L2`): one
/// ordinary memory instruction, where [`prefetch_l2`] is one copy-engine operation (which costs
/// more to issue: 384 of them per block, one per 128-byte piece, made the 64 x 128 `wgmma`
/// kernel ~20 % slower).
///
/// # Safety
/// `ptr` must be a global address inside an allocation.
#[inline(always)]
pub unsafe fn prefetch_l2_line(ptr: *const u8) {
    asm!("prefetch.global.L2 [{p}];", p = in(reg64) ptr, options(nostack));
}

/// 8-byte store: `st.global.v2.u32`.
///
/// # Safety
/// `ptr` must be an 8-byte aligned, writable global address whose 8 bytes no other thread
/// accesses during the kernel.
#[inline(always)]
pub unsafe fn store_v8(ptr: *mut u8, value: [u32; 2]) {
    asm!(
        "st.global.v2.u32 [{p}], {{{a}, {b}}};",
        p = in(reg64) ptr, a = in(reg32) value[0], b = in(reg32) value[1],
        options(nostack),
    );
}

/// 16-byte store: `st.global.v4.u32`.
///
/// # Safety
/// `ptr` must be a 16-byte aligned, writable global address whose 16 bytes no other thread
/// accesses during the kernel.
#[inline(always)]
pub unsafe fn store_v16(ptr: *mut u8, value: Vec16) {
    asm!(
        "st.global.v4.u32 [{p}], {{{a}, {b}, {c}, {d}}};",
        p = in(reg64) ptr,
        a = in(reg32) value[0], b = in(reg32) value[1], c = in(reg32) value[2], d = in(reg32) value[3],
        options(nostack),
    );
}

/// 16-byte store of four f32: `st.global.v4.f32`.
///
/// # Safety
/// `ptr` must be a 16-byte aligned, writable global address whose 16 bytes no other thread
/// accesses during the kernel without synchronising with this thread.
#[inline(always)]
pub unsafe fn store_f32x4(ptr: *mut f32, value: [f32; 4]) {
    asm!(
        "st.global.v4.f32 [{p}], {{{a}, {b}, {c}, {d}}};",
        p = in(reg64) ptr,
        a = in(reg32) value[0], b = in(reg32) value[1], c = in(reg32) value[2], d = in(reg32) value[3],
        options(nostack),
    );
}

/// Scalar f32 store: `st.global.f32`.
///
/// # Safety
/// As [`store_f32x4`], 4-byte aligned.
#[inline(always)]
pub unsafe fn store_f32(ptr: *mut f32, value: f32) {
    asm!("st.global.f32 [{p}], {v};", p = in(reg64) ptr, v = in(reg32) value, options(nostack));
}

/// 16-byte load of four f32 cached in L2 only (`ld.global.cg.v4.f32`): it sees what other
/// blocks wrote before a release this thread's block has acquired, never a stale L1 line.
///
/// # Safety
/// `ptr` must be a 16-byte aligned global address with 16 readable bytes, written (if at all)
/// before such a release.
#[inline(always)]
pub unsafe fn load_cg_f32x4(ptr: *const f32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!(
        "ld.global.cg.v4.f32 {{{a}, {b}, {c}, {d}}}, [{p}];",
        a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
        p = in(reg64) ptr,
        options(readonly, nostack),
    );
    [a, b, c, d]
}

/// Scalar f32 load cached in L2 only: `ld.global.cg.f32` (see [`load_cg_f32x4`]).
///
/// # Safety
/// As [`load_cg_f32x4`], 4-byte aligned.
#[inline(always)]
pub unsafe fn load_cg_f32(ptr: *const f32) -> f32 {
    let out: f32;
    asm!("ld.global.cg.f32 {o}, [{p}];", o = out(reg32) out, p = in(reg64) ptr, options(readonly, nostack));
    out
}

/// A flag's value as the GPU sees it now: `ld.relaxed.gpu.global.u32` (re-read at every call,
/// so it may be polled).
///
/// # Safety
/// `ptr` must be a 4-byte aligned global address.
#[inline(always)]
pub unsafe fn load_relaxed_gpu_u32(ptr: *const u32) -> u32 {
    let out: u32;
    asm!("ld.relaxed.gpu.global.u32 {o}, [{p}];", o = out(reg32) out, p = in(reg64) ptr, options(nostack));
    out
}

/// Sets a flag for the whole GPU: `st.relaxed.gpu.global.u32`; a [`fence_acq_rel_gpu`] before
/// it makes it a release of what this thread (and, after a barrier, its block) wrote.
///
/// # Safety
/// `ptr` must be a 4-byte aligned, writable global address.
#[inline(always)]
pub unsafe fn store_relaxed_gpu_u32(ptr: *mut u32, value: u32) {
    asm!("st.relaxed.gpu.global.u32 [{p}], {v};", p = in(reg64) ptr, v = in(reg32) value, options(nostack));
}

/// Adds `value` to a flag for the whole GPU and returns what it held before:
/// `atom.relaxed.gpu.global.add.u32` (each such add sees every earlier one).
///
/// # Safety
/// `ptr` must be a 4-byte aligned, writable global address.
#[inline(always)]
pub unsafe fn add_relaxed_gpu_u32(ptr: *mut u32, value: u32) -> u32 {
    let old: u32;
    asm!(
        "atom.relaxed.gpu.global.add.u32 {o}, [{p}], {v};",
        o = out(reg32) old, p = in(reg64) ptr, v = in(reg32) value,
        options(nostack),
    );
    old
}

/// `fence.acq_rel.gpu`: orders this thread's memory accesses before it against those after it,
/// for every thread of the GPU (with a relaxed flag store after it: a release; with a relaxed
/// flag load before it: an acquire).
///
/// # Safety
/// None beyond its cost; `unsafe` as the other memory primitives.
#[inline(always)]
pub unsafe fn fence_acq_rel_gpu() {
    asm!("fence.acq_rel.gpu;", options(nostack));
}
