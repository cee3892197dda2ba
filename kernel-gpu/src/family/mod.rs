//! The kernel families' bodies, each a short composition of named steps; the entry points that
//! run them are declared in [`crate::kernels`] from the kernel ABI's list.

pub mod fallback;
pub mod gemv;
pub mod mma;
#[cfg(target_feature = "sm_90a")]
pub mod wgmma;
