//! Storage dtypes: every kernel reads and writes one of these and computes in fp32.

use crate::{float, mem};

/// bf16 storage (the bits of a `half::bf16` on the host).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Bf16(pub u16);

/// f16 storage (the bits of a `half::f16` on the host).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F16(pub u16);

/// A storage dtype computed in fp32.
pub trait Element: Copy {
    /// Elements per 16-byte vector access.
    const VEC: usize;

    /// Loads element `ptr[0]` as f32.
    ///
    /// # Safety
    /// `ptr` must point to a readable, aligned element in global memory not written during the kernel.
    unsafe fn load(ptr: *const Self) -> f32;

    /// Loads element `ptr[0]` of an input another kernel may write (`x`) as f32, through the
    /// coherent path ([`mem::load_v16`] says why).
    ///
    /// # Safety
    /// `ptr` must point to a readable, aligned element in global memory, written (if during the
    /// kernel) only before the wait for the previous kernel.
    unsafe fn load_x(ptr: *const Self) -> f32;

    /// Widens the `VEC` elements of a raw 16-byte vector to f32 (the rest zero). Loads kept raw
    /// until use hold 4 registers instead of 8.
    fn unpack(raw: mem::Vec16) -> [f32; 8];

    /// Rounds `value` to this dtype (nearest even) and stores it.
    ///
    /// # Safety
    /// `ptr` must be an aligned, writable global address no other thread accesses during the kernel.
    unsafe fn store(ptr: *mut Self, value: f32);
}

/// Splits a 16-byte vector of 16-bit values into eight f32.
#[inline(always)]
fn unpack_halves(raw: mem::Vec16, convert: impl Fn(u16) -> f32) -> [f32; 8] {
    core::array::from_fn(|i| convert((raw[i / 2] >> (16 * (i % 2))) as u16))
}

impl Element for Bf16 {
    const VEC: usize = 8;

    #[inline(always)]
    unsafe fn load(ptr: *const Self) -> f32 {
        float::bf16_to_f32(mem::load_nc_u16(ptr.cast()))
    }

    #[inline(always)]
    unsafe fn load_x(ptr: *const Self) -> f32 {
        float::bf16_to_f32(mem::load_u16(ptr.cast()))
    }

    #[inline(always)]
    fn unpack(raw: mem::Vec16) -> [f32; 8] {
        unpack_halves(raw, float::bf16_to_f32)
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut Self, value: f32) {
        mem::store_u16(ptr.cast(), float::f32_to_bf16(value))
    }
}

impl Element for F16 {
    const VEC: usize = 8;

    #[inline(always)]
    unsafe fn load(ptr: *const Self) -> f32 {
        float::f16_to_f32(mem::load_nc_u16(ptr.cast()))
    }

    #[inline(always)]
    unsafe fn load_x(ptr: *const Self) -> f32 {
        float::f16_to_f32(mem::load_u16(ptr.cast()))
    }

    #[inline(always)]
    fn unpack(raw: mem::Vec16) -> [f32; 8] {
        unpack_halves(raw, float::f16_to_f32)
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut Self, value: f32) {
        mem::store_u16(ptr.cast(), float::f32_to_f16(value))
    }
}

impl Element for f32 {
    const VEC: usize = 4;

    #[inline(always)]
    unsafe fn load(ptr: *const Self) -> f32 {
        f32::from_bits(mem::load_nc_u32(ptr.cast()))
    }

    #[inline(always)]
    unsafe fn load_x(ptr: *const Self) -> f32 {
        f32::from_bits(mem::load_u32(ptr.cast()))
    }

    #[inline(always)]
    fn unpack(raw: mem::Vec16) -> [f32; 8] {
        core::array::from_fn(|i| if i < 4 { f32::from_bits(raw[i]) } else { 0.0 })
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut Self, value: f32) {
        mem::store_u32(ptr.cast(), value.to_bits())
    }
}
