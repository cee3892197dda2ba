//! Tensor maps for the Hopper copy engine (TMA): `cuTensorMapEncodeTiled`, looked up from the
//! driver at run time (`cuGetProcAddress`, CUDA 12.0 and later), since `cust` does not bind it.

use std::ffi::{c_int, c_void};

use crate::{DtypeKind, Error, Result};

/// A `CUtensorMap`: 128 opaque bytes, 64-byte aligned, passed to a kernel by value.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct TensorMap(pub [u64; 16]);

type EncodeTiled = unsafe extern "C" fn(
    map: *mut TensorMap,
    data_type: c_int,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    box_dims: *const u32,
    element_strides: *const u32,
    interleave: c_int,
    swizzle: c_int,
    l2_promotion: c_int,
    oob_fill: c_int,
) -> c_int;

// CUtensorMapDataType, CUtensorMapSwizzle, CUtensorMapL2promotion values (cuda.h).
const DATA_TYPE_FLOAT16: c_int = 6;
const DATA_TYPE_BFLOAT16: c_int = 9;
const SWIZZLE_128B: c_int = 3;
const L2_PROMOTION_128B: c_int = 2;

/// The driver's tensor-map encoder.
#[derive(Clone, Copy)]
pub struct TmaEncoder {
    encode: EncodeTiled,
}

impl TmaEncoder {
    /// Looks `cuTensorMapEncodeTiled` up in the driver. A context must be current.
    pub fn load() -> Result<Self> {
        let mut function: *mut c_void = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name and a place for the pointer; 12000 = the CUDA 12.0 ABI.
        let status =
            unsafe { cust::sys::cuGetProcAddress(c"cuTensorMapEncodeTiled".as_ptr(), &mut function, 12000, 0) };
        if status != cust::sys::cudaError_enum::CUDA_SUCCESS || function.is_null() {
            return Err(Error::InvalidConfig(format!(
                "the CUDA driver has no cuTensorMapEncodeTiled ({status:?}); TMA needs CUDA 12.0 or later"
            )));
        }
        // SAFETY: the driver's function of that name has this signature (cuda.h, CUDA 12.0).
        Ok(TmaEncoder { encode: unsafe { std::mem::transmute::<*mut c_void, EncodeTiled>(function) } })
    }

    /// The map of a row-major `[rows, cols]` matrix of 16-bit `dtype` at device address
    /// `address`, copied in boxes of `box_cols` x `box_rows` with 128-byte swizzle (the layout
    /// `wgmma` reads; `box_cols * 2` must be 128) and zeros past the matrix.
    pub fn encode_2d(
        &self,
        dtype: DtypeKind,
        address: u64,
        rows: usize,
        cols: usize,
        box_rows: u32,
        box_cols: u32,
    ) -> Result<TensorMap> {
        let data_type = match dtype {
            DtypeKind::Bf16 => DATA_TYPE_BFLOAT16,
            DtypeKind::F16 => DATA_TYPE_FLOAT16,
            DtypeKind::F32 => return Err(Error::InvalidConfig("no TMA path for f32".into())),
        };
        let dims = [cols as u64, rows as u64];
        let strides = [(cols * dtype.size_bytes()) as u64];
        let box_dims = [box_cols, box_rows];
        let element_strides = [1u32, 1];
        let mut map = TensorMap([0; 16]);
        // SAFETY: every pointer refers to a live local of the documented length (rank 2: two dims,
        // one stride); the driver only writes `map`.
        let status = unsafe {
            (self.encode)(
                &mut map,
                data_type,
                2,
                address as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                box_dims.as_ptr(),
                element_strides.as_ptr(),
                0,
                SWIZZLE_128B,
                L2_PROMOTION_128B,
                0,
            )
        };
        if status != 0 {
            return Err(Error::InvalidConfig(format!(
                "cuTensorMapEncodeTiled failed ({status}) for a [{rows}, {cols}] {dtype} matrix at {address:#x}, box {box_rows} x {box_cols}"
            )));
        }
        Ok(map)
    }
}
