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
