//! The crate's one error type. Every failure is a value: no input makes the library panic.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not a valid attention layer.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// No preset of that name.
    #[error("unknown model preset `{name}`; known presets: {known}")]
    UnknownPreset { name: String, known: String },
    /// No dtype of that name.
    #[error("unknown dtype `{0}`; expected bf16, f16 or f32")]
    UnknownDtype(String),
    /// A buffer has the wrong number of elements.
    #[error("{what}: expected {expected} elements, got {actual}")]
    Length { what: &'static str, expected: usize, actual: usize },
    /// A buffer is shorter than the call needs.
    #[error("{what}: needs at least {needed} elements for this call, the buffer has {actual}")]
    TooShort { what: &'static str, needed: usize, actual: usize },
    /// A device pointer is not aligned to its element type.
    #[error("{what}: device address {address:#x} is not aligned to {align} bytes")]
    Misaligned { what: &'static str, address: u64, align: usize },
    /// A size does not fit the index types used (usize on the host, u32 in the kernel).
    #[error("size overflow: {0}")]
    Overflow(String),
    /// A CUDA driver call failed.
    #[error("CUDA error while {context}: {}", cuda_message(.source))]
    Cuda { context: String, source: cust::error::CudaError },
    /// A driver call that `cust` does not wrap failed (graphs, fills, function attributes).
    #[error("CUDA error while {context}: {status}")]
    Driver { context: String, status: String },
    /// A checkpoint tensor is missing or not what the layer needs.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A model's `config.json` is not one this library can use.
    #[error("model config {path}: {reason}")]
    ModelConfig { path: PathBuf, reason: String },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Adds "while ..." context to `cust` results, turning them into [`Error::Cuda`].
pub trait CudaResultExt<T> {
    /// `Err(e)` becomes `Error::Cuda { context: context(), source: e }`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CudaResultExt<T> for cust::error::CudaResult<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Cuda { context: context(), source })
    }
}

/// The driver's text for `e`, or its code name when the driver cannot give one: cust's `Display`
/// asks the driver and returns `fmt::Error` when that fails (no driver, or a stub), which would
/// make `println!("{err}")` panic.
fn cuda_message(e: &cust::error::CudaError) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    match write!(text, "{e}") {
        Ok(()) => text,
        Err(_) => format!("{e:?}"),
    }
}
