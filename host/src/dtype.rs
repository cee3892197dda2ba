//! The storage dtypes: bf16 and f16 (`half` 1.x, whose types `cust` can copy to the device) and f32.

use std::fmt;
use std::str::FromStr;

use cust::memory::DeviceCopy;

pub use half::{bf16, f16};

/// A dtype the layer stores its tensors in. Arithmetic is always fp32.
pub trait Dtype: DeviceCopy + Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Which dtype this is, at run time.
    const KIND: DtypeKind;
    /// Exact widening to f32.
    fn to_f32(self) -> f32;
    /// Rounding to nearest even (IEEE), as the GPU's `cvt.rn` does.
    fn from_f32(value: f32) -> Self;
}

impl Dtype for bf16 {
    const KIND: DtypeKind = DtypeKind::Bf16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

impl Dtype for f16 {
    const KIND: DtypeKind = DtypeKind::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

impl Dtype for f32 {
    const KIND: DtypeKind = DtypeKind::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

/// The dtype as a value (for the CLI, checkpoints and messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtypeKind {
    Bf16,
    F16,
    F32,
}

impl DtypeKind {
    /// The same dtype as the kernel ABI names it.
    pub fn abi(self) -> kernel_abi::Dtype {
        match self {
            DtypeKind::Bf16 => kernel_abi::Dtype::Bf16,
            DtypeKind::F16 => kernel_abi::Dtype::F16,
            DtypeKind::F32 => kernel_abi::Dtype::F32,
        }
    }

    /// Every dtype.
    pub const ALL: [DtypeKind; 3] = [DtypeKind::Bf16, DtypeKind::F16, DtypeKind::F32];

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DtypeKind::Bf16 => "bf16",
            DtypeKind::F16 => "f16",
            DtypeKind::F32 => "f32",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DtypeKind::Bf16 | DtypeKind::F16 => 2,
            DtypeKind::F32 => 4,
        }
    }

    /// The relative Frobenius error against the float64 reference that the tests allow.
    pub fn error_bound(self) -> f64 {
        match self {
            DtypeKind::Bf16 => 1.5e-2,
            DtypeKind::F16 => 3e-3,
            DtypeKind::F32 => 1e-5,
        }
    }
}

impl fmt::Display for DtypeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DtypeKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        DtypeKind::ALL
            .into_iter()
            .find(|d| d.name() == s.to_ascii_lowercase())
            .ok_or_else(|| crate::Error::UnknownDtype(s.to_string()))
    }
}
